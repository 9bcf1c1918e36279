"""Fail on documentation links and design references that point nowhere.

- Markdown links in README.md, CHANGELOG.md, SECURITY.md and docs/*.md: a relative
  target must exist, and a ``#fragment`` must match a heading of the target
  (GitHub's anchor rule: lower case, punctuation dropped, spaces to hyphens).
- Citations in code and scripts: ``docs/NAME.md`` must exist, and a quoted
  section after it (``docs/design.md, "Layers"``) must start a heading there;
  ``invariant N`` must be one of design.md's numbered invariants.
"""

from __future__ import annotations

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CITATION = re.compile(r'docs/([\w-]+\.md)(?:,\s*"([^"]+)")?')
INVARIANT = re.compile(r"invariant\s+(\d+)")
CODE_FILES = ("src/**/*.py", "src/**/*.pyi", "csrc/*", "tests/**/*.py", "benchmarks/*",
              "fuzz/*", ".ci/*", "pyproject.toml", "cibuildwheel.toml", "setup.py")


def slug(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(path: pathlib.Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    out, fenced = [], False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            out.append(line.lstrip("#").strip())
    return out


def check_markdown(problems: list[str]) -> None:
    documents = [ROOT / n for n in ("README.md", "CHANGELOG.md", "SECURITY.md")]
    documents += sorted((ROOT / "docs").glob("*.md"))
    for doc in documents:
        text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            path_part, _, fragment = target.partition("#")
            dest = (doc.parent / path_part).resolve() if path_part else doc
            where = f"{doc.relative_to(ROOT)}: link {target}"
            if not dest.exists():
                problems.append(f"{where}: {path_part} does not exist")
            elif fragment and dest.suffix == ".md" and fragment not in map(slug, headings(dest)):
                problems.append(f"{where}: no heading #{fragment} in {dest.relative_to(ROOT)}")


def check_citations(problems: list[str]) -> None:
    design = ROOT / "docs" / "design.md"
    numbered = set(re.findall(r"^(\d+)\. \*\*", design.read_text(encoding="utf-8"), re.M))
    files = {p for pattern in CODE_FILES for p in ROOT.glob(pattern) if p.is_file()}
    for path in sorted(files):
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.name == "check_links.py":
            continue
        for name, section in CITATION.findall(text):
            doc = ROOT / "docs" / name
            where = f"{path.relative_to(ROOT)}: docs/{name}"
            if not doc.exists():
                problems.append(f"{where} does not exist")
            elif section and not any(h.startswith(section) for h in headings(doc)):
                problems.append(f'{where}: no section starting "{section}"')
        for number in INVARIANT.findall(text):
            if number not in numbered:
                problems.append(f"{path.relative_to(ROOT)}: invariant {number} is not in "
                                "docs/design.md")
        if re.search(r"DESIGN\.md", text):
            problems.append(f"{path.relative_to(ROOT)}: cites DESIGN.md, which is not here")


def main() -> int:
    problems: list[str] = []
    check_markdown(problems)
    check_citations(problems)
    for problem in problems:
        print(problem)
    print(f"links and design references: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
