#!/usr/bin/env bash
# Compile csrc/aia_ext.c for Windows (x86_64, mingw-w64) to prove the
# GetModuleHandleW/GetProcAddress path builds.  Python.h is replaced by a stub
# declaring only what aia_ext.c uses (the object header), since the Linux
# headers do not describe a Windows interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
stub=$(mktemp -d)
trap 'rm -rf "$stub"' EXIT
cat > "$stub/Python.h" <<'H'
typedef struct _object { long long ob_refcnt; void *ob_type; } PyObject;
#define PyObject_HEAD PyObject ob_base;
H
cat > "$stub/unit.c" <<'C'
#include <Python.h>
#include <stdint.h>
static int aia_ext_py_missing(uintptr_t t, uint64_t *s, void *l, void *c,
                              const unsigned char *d, int n, int depth, int e)
{ (void)t; (void)s; (void)l; (void)c; (void)d; (void)n; (void)depth; (void)e; return 0; }
static void aia_ext_py_done(uintptr_t t, uint64_t s, void *l, void *c, int ok, int e, int d)
{ (void)t; (void)s; (void)l; (void)c; (void)ok; (void)e; (void)d; }
#include "aia_ext.c"
C
x86_64-w64-mingw32-gcc -std=c99 -Wall -Wextra -Werror -Wno-unused-function \
  -I"$stub" -Icsrc -c "$stub/unit.c" -o "$stub/unit.o"
echo "Windows x86_64: csrc/aia_ext.c compiles with mingw-w64 ($(x86_64-w64-mingw32-gcc -dumpversion))"
