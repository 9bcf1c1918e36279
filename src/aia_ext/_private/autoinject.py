"""``AIA_EXT_INJECT=1``: injection at interpreter start, for tools you cannot change (pip).

The wheel installs ``aia_ext-inject.pth`` into site-packages; Python's ``site``
module runs its one line at every start.  Unset, empty or one of the usual
false spellings (``0``, ``false``, ``no``, ``off``), that line reads one
environment variable and imports nothing, so ``ssl`` is not even loaded;
otherwise it imports this module, under a guard: an aia_ext that cannot be
imported at all is one line on stderr, never a site.py traceback.

Here the value is read fully (``1``/``true``/``yes``/``on`` inject, any other
number of zero such as ``00`` does not, anything else is named and ignored),
and injection happens only if it can work: under the selected engine the
verifier and the fetch path must import (cryptography, h11).  Otherwise one
line on stderr says why and nothing is injected, so every context keeps
OpenSSL's own verification (issue 26, item 11: a broken install used to make
every ``ssl.create_default_context()`` raise, pip included).
"""

from __future__ import annotations

import os
import sys

_ON = frozenset({"1", "true", "yes", "on", "y", "t"})
_OFF = frozenset({"", "0", "false", "no", "off", "n", "f"})


def requested(value: str | None) -> bool | None:
    """True or False for a value of AIA_EXT_INJECT; None when it is not understood."""
    text = (value or "").strip().lower()
    if text in _ON:
        return True
    if text in _OFF:
        return False
    try:
        return int(text) != 0
    except ValueError:
        return None


def _inject() -> None:
    value = os.environ.get("AIA_EXT_INJECT")
    wanted = requested(value)
    if wanted is None:
        print(f"aia_ext: AIA_EXT_INJECT={value!r} is not understood (use 1 or 0); "
              "not injecting", file=sys.stderr)
        return
    if not wanted:
        return
    try:
        from .inject import inject_into_ssl

        inject_into_ssl()
    except Exception as exc:  # noqa: BLE001 - never break an interpreter's start
        print(f"aia_ext: AIA_EXT_INJECT is set, but injection failed: {exc}", file=sys.stderr)


_inject()
