# Metadata lives in pyproject.toml; this file only wires the cffi extension.
from setuptools import setup

setup(cffi_modules=["csrc/build_native.py:ffibuilder"])
