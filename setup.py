# Metadata lives in pyproject.toml; this file only wires the cffi extension
# and the AIA_EXT_INJECT .pth hook.
#
# The extension uses the limited API, so one abi3 wheel serves CPython 3.9+
# (free-threaded builds have no limited API: they build from the sdist).
import os
import sys
import sysconfig

from setuptools import setup
from setuptools.command.build_py import build_py


class build_py_with_pth(build_py):
    """Also put src/aia_ext-inject.pth at the top of the wheel (site-packages).

    It is the AIA_EXT_INJECT=1 hook (aia_ext/_private/autoinject.py); a .pth is
    only read from a site directory, so it cannot live inside the package.
    """

    def run(self) -> None:
        super().run()
        self.copy_file(os.path.join("src", "aia_ext-inject.pth"),
                       os.path.join(self.build_lib, "aia_ext-inject.pth"))


options = {}
if sys.implementation.name == "cpython" and not sysconfig.get_config_var("Py_GIL_DISABLED"):
    options["bdist_wheel"] = {"py_limited_api": "cp39"}

setup(cffi_modules=["csrc/build_native.py:ffibuilder"], options=options,
      cmdclass={"build_py": build_py_with_pth})
