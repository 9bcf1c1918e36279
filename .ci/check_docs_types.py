"""Type-check every Python block of README.md and docs/*.md with ``mypy --strict``.

Users copy these blocks into typed code bases; a block that needs a cast or
an ``assert`` there must show it (issue 32, item 10).  tests/test_docs.py runs
the same blocks; this checks their types, each block as its own module.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def main() -> int:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    with tempfile.TemporaryDirectory() as directory:
        written = 0
        for document in documents:
            for number, match in enumerate(FENCE.finditer(document.read_text("utf-8")), 1):
                name = re.sub(r"\W", "_", document.stem.lower())
                (pathlib.Path(directory) / f"{name}_block_{number}.py").write_text(match.group(1))
                written += 1
        print(f"type-checking {written} documentation blocks")
        command = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", directory]
        return subprocess.run(command, check=False).returncode  # noqa: S603 - our own files


if __name__ == "__main__":
    sys.exit(main())
