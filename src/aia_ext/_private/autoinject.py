"""``AIA_EXT_INJECT=1``: injection at interpreter start, for tools you cannot change (pip).

The wheel installs ``aia_ext-inject.pth`` into site-packages; Python's ``site``
module runs its one line at every start.  With the variable unset (or "0")
that line reads one environment variable and imports nothing, so ``ssl`` is
not even loaded; set, it imports this module, which calls
``inject_into_ssl()``.  A failure is one line on stderr, never a failed start.
"""

from __future__ import annotations

import sys

from .inject import inject_into_ssl


def _inject() -> None:
    try:
        inject_into_ssl()
    except Exception as exc:  # noqa: BLE001 - never break an interpreter's start
        print(f"aia_ext: AIA_EXT_INJECT is set, but injection failed: {exc}", file=sys.stderr)


_inject()
