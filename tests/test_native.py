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


# ---- Issue 32, item 11: what C makes, Python owns from the start -------------------

#: The exported functions that return a pointer, and why Python never frees it: a
#: pointer C made for Python to keep goes into a holder instead (aia_ext.cdef).
_POINTERS_NOT_OWNED = {
    "aia_ext_cpython_ssl_ctx": "borrowed from the SSLContext",
    "aia_ext_cpython_ssl": "borrowed from the _SSLSocket",
    "aia_ext_offline_store_ctx": "borrowed from the holder's handle",
    "aia_ext_verify_error_string": "OpenSSL's static text",
    "aia_ext_holder_alloc": "cffi's allocator: the holder is owned as it is made",
}


def test_no_c_function_hands_over_a_pointer_python_must_free():
    """A pointer returned and then passed to ffi.gc() is lost to a KeyboardInterrupt
    landing between the two (found under LeakSanitizer, ~2.8 KiB each)."""
    import pathlib
    import re

    cdef = (pathlib.Path(native.__file__).parents[3] / "csrc" / "aia_ext.cdef")
    if not cdef.exists():
        pytest.skip("csrc/ is not beside an installed package")
    text = re.sub(r"/\*.*?\*/", "", cdef.read_text(), flags=re.S)
    returning_pointers = set(re.findall(r"\*\s*(aia_ext_\w+)\s*\(", text))
    assert returning_pointers == set(_POINTERS_NOT_OWNED)


MALLOC_STRESS = r"""
import ctypes, gc, os, random, signal, sys, tempfile, time
import aia_ext
from aia_ext.diagnosis import diagnose
from aia_ext._private.testing import issue, write_pem

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
def in_use():
    gc.collect()
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd

root = issue("Stress Root", ca=True)
inter = issue("Stress Intermediate", root, ca=True)
leaf = issue("localhost", inter, dns=["localhost"])
directory = tempfile.mkdtemp()
cafile = write_pem(os.path.join(directory, "root.pem"), root)
bundle = leaf.pem + inter.pem
interrupts = 0

def once():
    result = diagnose(bundle, cafile=cafile, hostname="localhost")
    assert result.verified, result

def ring(signum, frame):
    raise KeyboardInterrupt

for _ in range(300):
    once()
start = time.perf_counter()
for _ in range(100):
    once()
call = (time.perf_counter() - start) / 100
before = in_use()
signal.signal(signal.SIGALRM, ring)
completed = 0
for _ in range(int(sys.argv[1])):
    try:
        # One alarm per call, anywhere in it (or just after it).
        signal.setitimer(signal.ITIMER_REAL, random.uniform(0.00001, 2 * call))
        once()
        completed += 1
        time.sleep(2 * call)  # an alarm that comes later rings here
    except KeyboardInterrupt:
        interrupts += 1
signal.signal(signal.SIGALRM, signal.SIG_IGN)  # none may ring outside a try from here
signal.setitimer(signal.ITIMER_REAL, 0, 0)
for _ in range(50):  # whatever an interrupt left half done is finished or dropped
    try:
        once()
    except KeyboardInterrupt:
        interrupts += 1
print(interrupts, completed, in_use() - before)
"""


@cpython_only
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallinfo2")
def test_interrupted_offline_verifications_hold_no_memory(tmp_path):
    """Offline verifications (holders of X509s and handles) interrupted at random by
    SIGALRM raising KeyboardInterrupt: C memory in use afterwards stays where it was,
    and no lock is left held (locks.py: CPython 3.9 and 3.14 deadlocked here)."""
    from .helpers import run_python

    result = run_python(MALLOC_STRESS, tmp_path, "3000", timeout=240, AIA_EXT_ENGINE="native")
    if "mallinfo2" in result.stderr:
        pytest.skip("this C library has no mallinfo2")
    assert result.returncode == 0, result.stderr[-3000:]
    interrupts, completed, growth = map(int, result.stdout.split())
    assert interrupts >= 300 and completed >= 300
    assert growth < 512 * 1024, f"{growth} bytes still in use after {interrupts} interrupts"
