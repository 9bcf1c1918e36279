# Metadata lives in pyproject.toml; this file only wires the cffi extension.
#
# The extension uses the limited API, so one abi3 wheel serves CPython 3.9+
# (free-threaded builds have no limited API: they build from the sdist).
import sys
import sysconfig

from setuptools import setup

options = {}
if sys.implementation.name == "cpython" and not sysconfig.get_config_var("Py_GIL_DISABLED"):
    options["bdist_wheel"] = {"py_limited_api": "cp39"}

setup(cffi_modules=["csrc/build_native.py:ffibuilder"], options=options)
