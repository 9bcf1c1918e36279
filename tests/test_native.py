"""The native engine drives the interpreter's own OpenSSL, or refuses clearly."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import textwrap

import pytest

from aia_ext._private import binding as native

pytestmark = pytest.mark.native_only

PYPY = sys.implementation.name == "pypy"
cpython_only = pytest.mark.skipif(
    PYPY, reason="CPython binds through _ssl.__file__; PyPy through _pypy_openssl (tested below)")


def test_bound_openssl_is_the_interpreters():
    module = native.bind()
    if PYPY:
        # PyPy's ssl.OPENSSL_VERSION_NUMBER is its build-time version; the
        # library its _ssl calls is behind _pypy_openssl.
        import _pypy_openssl

        expected = _pypy_openssl.lib.OpenSSL_version_num()
    else:
        expected = ssl.OPENSSL_VERSION_NUMBER
    assert module.lib.aia_ext_openssl_version_num() == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_bound_library_is_the_one_ssl_links():
    import _ssl

    bound = os.path.realpath(native.openssl_library_path())
    assert bound
    with open("/proc/self/maps") as maps:
        loaded = {os.path.realpath(line.split()[-1]) for line in maps if "libssl" in line}
    # Exactly one libssl is mapped, and it is the one we call into: either
    # _ssl's dependency or, for a static _ssl, _ssl itself.
    assert bound in loaded | {os.path.realpath(_ssl.__file__)}
    assert len(loaded) <= 1


def _run(code: str, engine: str = "auto") -> subprocess.CompletedProcess[str]:
    # "auto": the child chooses its engine itself, as a user's would.
    env = {k: v for k, v in os.environ.items() if k != "AIA_EXT_ENGINE"}
    env["AIA_EXT_ENGINE"] = engine
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          env=env,
                          text=True, timeout=60)


REFUSAL = """
    import ssl, _ssl
    {setup}
    import aia_ext
    ctx = ssl.create_default_context()
    for attempt in range(2):  # the refusal is stable, not a one-off
        try:
            aia_ext.enable(ctx)
        except aia_ext.UnsupportedPlatformError as exc:
            assert isinstance(exc, RuntimeError)
            print("REFUSED:", exc)
        else:
            print("ENABLED:", aia_ext.engine_of(ctx))
"""


@cpython_only
def test_unreachable_ssl_library_is_refused():
    setup = "_ssl.__file__ = '/nonexistent/_ssl.so'"
    result = _run(REFUSAL.format(setup=setup), engine="native")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("REFUSED: cannot bind to _ssl's OpenSSL: dlopen(") == 2
    assert "python-build-standalone" in result.stdout
    # Left to choose (AIA_EXT_ENGINE unset), such an interpreter gets the fallback.
    result = _run(REFUSAL.format(setup=setup))
    assert result.stdout.count("ENABLED: fallback") == 2, result.stderr


@cpython_only
def test_library_without_openssl_symbols_is_refused():
    # A loaded extension with no OpenSSL behind it looks, to the binder, like
    # an _ssl whose OpenSSL is linked statically with hidden symbols.
    if "math" in sys.builtin_module_names:
        pytest.skip("math is built into this interpreter")
    result = _run(REFUSAL.format(setup="import math; _ssl.__file__ = math.__file__"),
                  engine="native")
    assert result.returncode == 0, result.stderr
    assert "OpenSSL symbol OpenSSL_version_num is not reachable" in result.stdout


@cpython_only
def test_version_mismatch_is_refused():
    # A version that differs from the real one on every system (1.1.1w has 0x1010117f).
    result = _run(REFUSAL.format(setup="ssl.OPENSSL_VERSION_NUMBER ^= 0x10"), engine="native")
    assert result.returncode == 0, result.stderr
    assert "refusing to drive one library's SSL_CTX with another's code" in result.stdout


@pytest.mark.skipif(not PYPY, reason="PyPy's binding path")
def test_pypy_unreachable_library_is_refused():
    result = _run(REFUSAL.format(
        setup="import _pypy_openssl; _pypy_openssl.__file__ = '/nonexistent/_pypy_openssl.so'"),
        engine="native")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("REFUSED: cannot bind to _ssl's OpenSSL: dlopen(") == 2
