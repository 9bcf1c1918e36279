"""cffi build script for ``aia_ext._native`` (wired in by setup.py).

It lives outside the package so that it is not shipped.  The extension links
no OpenSSL: csrc/binding.c resolves OpenSSL at run time from the library that
Python's ``_ssl`` module loaded.  The C files are ordinary translation units
sharing csrc/aia_ext.h; cffi's generated module only includes the header.
"""

from __future__ import annotations

import pathlib
import sys
import sysconfig

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef((HERE / "aia_ext.cdef").read_text(encoding="utf-8"))

# dlopen/dlsym/dladdr live in libdl on glibc before 2.34; elsewhere in libc.
_libraries = [] if sys.platform in ("win32", "darwin") else ["dl"]

# The limited API (abi3) where the interpreter has one; csrc/ only needs
# the object header from Python.h.  Free-threaded builds have no limited API.
_limited = sys.implementation.name == "cpython" and not sysconfig.get_config_var("Py_GIL_DISABLED")

ffibuilder.set_source(
    "aia_ext._native",
    '#include "aia_ext.h"',
    # setuptools wants /-separated paths relative to setup.py (the project root).
    sources=[f"csrc/{name}" for name in ("binding.c", "verify.c", "offline.c")],
    include_dirs=["csrc"],
    libraries=_libraries,
    py_limited_api=_limited,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
