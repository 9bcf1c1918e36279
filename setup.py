# Metadata lives in pyproject.toml; this file only wires the cffi extension
# and the AIA_EXT_INJECT .pth hook, and decides whether there is an extension.
#
# The extension uses the limited API, so one abi3 wheel serves CPython 3.9+
# (free-threaded builds have no limited API: they build from the sdist).
#
# Without a C compiler or the Python headers (a slim container, a machine
# nobody installed gcc on), the package installs pure: the fallback engine,
# which needs cryptography, verifies instead of the native one, and
# aia_ext.engine_of() says so (issue 21).  The probe below decides before
# anything is built, so a failed build never leaves a half-built package.
#
#   AIA_EXT_PURE=1            build the pure py3-none-any wheel (.ci/wheels.sh)
#   AIA_EXT_REQUIRE_NATIVE=1  no pure install: a missing compiler is an error
import os
import sys
import sysconfig
import tempfile

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


_PURE_BECAUSE = None  # why the native engine is left out, when the probe failed


class build_py_with_pth(build_py):
    """Also put src/aia_ext-inject.pth at the top of the wheel (site-packages).

    It is the AIA_EXT_INJECT=1 hook (aia_ext/_private/autoinject.py); a .pth is
    only read from a site directory, so it cannot live inside the package.
    Building a pure package for want of a compiler, it also says so, once.
    """

    def run(self) -> None:
        if _PURE_BECAUSE is not None:
            sys.stderr.write(
                f"\nWARNING: aia_ext is installed without its native engine: {_PURE_BECAUSE}."
                "\nWARNING: The fallback engine (which needs cryptography) verifies instead; "
                "aia_ext.engine_of(ctx) says which engine runs. Install a C compiler and the "
                "Python headers for the native engine, or set AIA_EXT_REQUIRE_NATIVE=1 to make "
                "this an error.\n\n")
        super().run()
        self.copy_file(os.path.join("src", "aia_ext-inject.pth"),
                       os.path.join(self.build_lib, "aia_ext-inject.pth"))


def _why_no_compiler() -> "str | None":
    """None when a C extension can be compiled here; else what is missing."""
    try:
        import cffi  # noqa: F401  # the extension's generator (build requirement)
    except ImportError as exc:
        return f"cffi cannot be imported ({exc})"
    from distutils.ccompiler import new_compiler  # setuptools provides it on 3.12+
    from distutils.sysconfig import customize_compiler

    include = sysconfig.get_paths()["include"]
    if not os.path.isfile(os.path.join(include, "Python.h")):
        return f"the Python headers are not installed (no Python.h in {include})"
    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory(prefix="aia-ext-probe-") as directory:
        source = os.path.join(directory, "probe.c")
        with open(source, "w") as f:
            f.write('#include "Python.h"\nint aia_ext_probe(void) { return 0; }\n')
        try:
            compiler.compile([source], output_dir=directory, include_dirs=[include])
        except Exception:  # noqa: BLE001 - CompileError, a missing executable...
            command = " ".join(getattr(compiler, "compiler_so", None) or ["cc"])
            return f"no working C compiler ({command.split()[0]!r} cannot compile one)"
    return None


class build_ext_or_explain(build_ext):
    """A failure of the real build, after the probe passed, is a clear error."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            raise SystemExit(
                f"aia_ext: the native extension failed to build ({exc}). Install a C "
                "compiler and the Python headers, or unset AIA_EXT_REQUIRE_NATIVE and set "
                "AIA_EXT_PURE=1 for a pure install (the fallback engine).") from exc


# The strict, bounded HTTP/1.1 parser for AIA responses (docs/design.md), and
# certifi for an empty system trust store.
_COMMON = ["certifi", "h11>=0.16"]
_NATIVE_REQUIRES = [
    *_COMMON,
    "cffi>=1.17; platform_python_implementation != 'PyPy'",
    "cryptography>=42; platform_python_implementation != 'PyPy'",
    # cryptography 44+ has no PyPy 3.9 wheel, and its sdist needs Rust crates.
    # On PyPy 3.10+ it is optional (the [cryptography] extra): the native engine
    # does not use it, and not every PyPy has a wheel that loads (issue 16).
    "cryptography>=42,<44; platform_python_implementation == 'PyPy' and python_version < '3.10'",
]
# Without the extension only the fallback engine runs, and it verifies with
# cryptography's OpenSSL: required wherever this package is installed, PyPy's
# included, so that pip installs it (or says it cannot) instead of a package
# whose every context raises MissingDependencyError (issue 31, item 5).
_PURE_REQUIRES = [
    *_COMMON,
    "cryptography>=42; platform_python_implementation != 'PyPy'",
    # The releases with wheels that load there (the PyPy line of
    # docs/engines.md, "Supported Pythons and platforms").
    "cryptography>=42,<44; platform_python_implementation == 'PyPy' and python_version < '3.10'",
    "cryptography>=42,<47; platform_python_implementation == 'PyPy' and python_version >= '3.10'",
]


def _native_options() -> dict:
    if _flag("AIA_EXT_PURE"):
        if _flag("AIA_EXT_REQUIRE_NATIVE"):
            raise SystemExit("aia_ext: AIA_EXT_PURE=1 and AIA_EXT_REQUIRE_NATIVE=1 contradict")
        return {"install_requires": _PURE_REQUIRES}
    global _PURE_BECAUSE
    why = _why_no_compiler()
    if why is not None:
        if _flag("AIA_EXT_REQUIRE_NATIVE"):
            raise SystemExit(f"aia_ext: AIA_EXT_REQUIRE_NATIVE=1, but {why}.")
        _PURE_BECAUSE = why
        return {"install_requires": _PURE_REQUIRES}
    options = {"cffi_modules": ["csrc/build_native.py:ffibuilder"],
               "install_requires": _NATIVE_REQUIRES,
               "cmdclass": {"build_py": build_py_with_pth, "build_ext": build_ext_or_explain}}
    if sys.implementation.name == "cpython" and not sysconfig.get_config_var("Py_GIL_DISABLED"):
        options["options"] = {"bdist_wheel": {"py_limited_api": "cp39"}}
    return options


_options = {"cmdclass": {"build_py": build_py_with_pth}}
_options.update(_native_options())
setup(**_options)
