#!/usr/bin/env bash
# Run the callback workload under valgrind memcheck and report leaks whose
# allocation stack passes through aia_ext's C code (_native).
#
#   bash benchmarks/valgrind.sh [ROUNDS]     (needs valgrind; apt-get install valgrind)
#
# PYTHONMALLOC=malloc makes CPython's allocations visible to valgrind; leaks
# are counted only in stacks that contain aia_ext's own frames, since the
# interpreter itself keeps much memory reachable at exit by design.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
out=$(mktemp)
PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect \
  --errors-for-leak-kinds=definite --num-callers=40 --log-file="$out" \
  python benchmarks/leak_workload.py "$rounds"
python - "$out" <<'PY'
import re, sys

text = open(sys.argv[1]).read()
blocks = re.split(r"\n==\d+== \n", text)


OUR_FILES = ("binding.c", "verify.c", "offline.c", "aia_ext._native.c")


def ours(block: str) -> bool:
    """A report belongs to aia_ext's C code when one of our frames sits below
    (is called before) any re-entry into Python through cffi; frames above
    that point are the interpreter running our Python callback.  The module
    definition cffi allocates once when the extension is imported
    (PyInit__native) lives as long as the process, as every extension's does."""
    frames = re.findall(r"(?:at|by) 0x[0-9A-F]+: (.*)", block)
    if any("PyInit__native" in f for f in frames):
        return False
    native = next((i for i, f in enumerate(frames)
                   if any(f"({name}:" in f for name in OUR_FILES) or "aia_verify" in f), None)
    python = next((i for i, f in enumerate(frames) if "cffi_call_python" in f), None)
    return native is not None and (python is None or native < python)


leaks = [b for b in blocks if "definitely lost" in b and ours(b)]
errors = [b for b in blocks
          if re.search(r"Invalid (read|write|free)|uninitialised|Mismatched free", b) and ours(b)]
summary = re.findall(r"definitely lost: [\d,]+ bytes in [\d,]+ blocks", text)
print("valgrind, whole process (interpreter included):", summary[-1] if summary else "n/a")
print(f"definite leaks allocated by aia_ext's C code: {len(leaks)}")
print(f"memory errors in aia_ext's C code: {len(errors)}")
for b in (leaks + errors)[:5]:
    print(b)
sys.exit(1 if leaks or errors else 0)
PY
