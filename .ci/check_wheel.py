"""Fail if a built wheel contains an OpenSSL library, is neither abi3 nor a PyPy wheel,
or lacks the inject hook.

    python .ci/check_wheel.py DIR_OR_WHEEL...

aia_ext must drive the OpenSSL that Python's _ssl already loaded; a wheel
carrying its own libssl/libcrypto would make the extension call into a second
copy (docs/design.md, "Which OpenSSL to call").
"""

from __future__ import annotations

import pathlib
import re
import sys
import zipfile

FORBIDDEN = re.compile(r"(^|/)(lib)?(ssl|crypto)[-_.0-9a-z]*\.(so(\.[0-9.]+)?|dylib|dll)$", re.I)


def check(wheel: pathlib.Path) -> list[str]:
    problems = []
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    bundled = [n for n in names if FORBIDDEN.search(n)]
    if bundled:
        problems.append(f"{wheel.name}: bundles OpenSSL: {', '.join(bundled)}")
    if not any(n.startswith("aia_ext/_native") for n in names):
        problems.append(f"{wheel.name}: has no aia_ext/_native extension")
    for hook in ("aia_ext-inject.pth", "_aia_ext_hook.py"):  # AIA_EXT_INJECT=1's
        if hook not in names:
            problems.append(f"{wheel.name}: has no {hook} at its top level")
    # One abi3 wheel for every CPython; PyPy has no stable ABI: a wheel per PyPy.
    if "-cp39-abi3-" not in wheel.name and not re.search(r"-pp3\d+-pypy3\d+_pp\d+-", wheel.name):
        problems.append(f"{wheel.name}: neither an abi3 (cp39-abi3) nor a PyPy wheel")
    return problems


def main(paths: list[str]) -> int:
    wheels = []
    for path in map(pathlib.Path, paths):
        wheels += sorted(path.glob("*.whl")) if path.is_dir() else [path]
    if not wheels:
        print("check_wheel: no wheel found", file=sys.stderr)
        return 1
    problems = [p for w in wheels for p in check(w)]
    for problem in problems:
        print(f"check_wheel: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_wheel: {len(wheels)} wheel(s) OK: abi3 or PyPy, no OpenSSL inside, "
              "inject hook")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
