"""``python -m aia_ext`` and the ``aia-ext`` console script."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    from ._private.cli import main as run  # argparse and friends: only when run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
