"""Command line: ``python -m aia_ext`` / ``aia-ext``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aia-ext",
        description="Complete incomplete TLS certificate chains via AIA caIssuers.",
    )
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"aia_ext {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("demo", help="show an incomplete chain failing, then completed (local)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._private.demo import run_demo

        return run_demo(sys.stdout)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
