#!/usr/bin/env bash
# Compile csrc/*.c for Windows (x86_64, mingw-w64) to prove the
# GetModuleHandleW/GetProcAddress path builds.  Python.h is replaced by a stub
# declaring only what csrc/ uses (the object header), since the Linux headers
# do not describe a Windows interpreter; the Python callbacks, which cffi
# generates, are stubbed too.
set -euo pipefail
cd "$(dirname "$0")/.."
stub=$(mktemp -d)
trap 'rm -rf "$stub"' EXIT
cat > "$stub/Python.h" <<'H'
typedef struct _object { long long ob_refcnt; void *ob_type; } PyObject;
#define PyObject_HEAD PyObject ob_base;
H
cat > "$stub/callbacks.c" <<'C'
#include "aia_ext.h"
int aia_ext_py_missing(uintptr_t t, uint64_t *s, void *l, void *c,
                       const unsigned char *d, int n, int depth, int e)
{ (void)t; (void)s; (void)l; (void)c; (void)d; (void)n; (void)depth; (void)e; return 0; }
void aia_ext_py_done(uintptr_t t, uint64_t s, void *l, void *c, int ok, int e, int d)
{ (void)t; (void)s; (void)l; (void)c; (void)ok; (void)e; (void)d; }
int aia_ext_py_learn(uintptr_t t, const unsigned char *d, int n)
{ (void)t; (void)d; (void)n; return 0; }
C
for unit in csrc/binding.c csrc/verify.c csrc/offline.c "$stub/callbacks.c"; do
  x86_64-w64-mingw32-gcc -std=c99 -Wall -Wextra -Werror -I"$stub" -Icsrc \
    -c "$unit" -o "$stub/$(basename "$unit" .c).o"
done
x86_64-w64-mingw32-gcc -shared -o "$stub/aia_ext_check.dll" "$stub"/*.o
echo "Windows x86_64: csrc/*.c compile and link with mingw-w64 ($(x86_64-w64-mingw32-gcc -dumpversion))"
