"""Failures the fallback engine raises, worded and numbered as this interpreter's ssl would.

A user moving from a pyenv Python to a uv Python must see the same exception:
the same ``verify_code`` (OpenSSL renumbered "invalid CA" from 24 to 79 in
3.0, and cryptography's OpenSSL is not the interpreter's), the same
``verify_message`` (CPython words host and IP mismatches itself, in
``fill_and_set_sslerror``), and the same ``str()``, ending in the
``(_ssl.c:NNNN)`` that _ssl appends.  Tests and log filters match that text
(issue 26, item 14).
"""

from __future__ import annotations

import os
import ssl
import threading

from ... import binding
from ... import x509_codes as codes
from ...errors import UnsupportedPlatformError
from ...logtext import get_logger
from ...stdlib_ssl import new_plain_context

log = get_logger(__name__)

#: X509_V_ERR_INVALID_CA before OpenSSL 3.0, and after.
_INVALID_CA_111, _INVALID_CA_3 = 24, 79


def interpreter_code(code: int) -> int:
    """``code`` from cryptography's OpenSSL, as the interpreter's OpenSSL numbers it."""
    if code == _INVALID_CA_3 and ssl.OPENSSL_VERSION_INFO < (3,):
        return _INVALID_CA_111
    return code


def _openssl_text(code: int) -> str:
    """The interpreter's OpenSSL's wording where it can be asked; else OpenSSL 3's
    (x509_codes.TEXT), else cryptography's OpenSSL's."""
    try:
        return binding.verify_error_string(code) if binding.bind() else codes.text(code)
    except UnsupportedPlatformError:
        pass
    if code in codes.TEXT:
        return codes.TEXT[code]
    from .openssl import error_string  # the interpreter's OpenSSL is out of reach

    return error_string(code) or codes.text(code)


def message(code: int, hostname: str | None) -> str:
    """The ``verify_message`` _ssl gives for ``code`` on a connection to ``hostname``."""
    if code == codes.HOSTNAME_MISMATCH and hostname is not None:
        return f"Hostname mismatch, certificate is not valid for '{hostname}'."
    if code == codes.IP_ADDRESS_MISMATCH and hostname is not None:
        return f"IP address mismatch, certificate is not valid for '{hostname}'."
    return _openssl_text(code)


def ssl_style_error(code: int, hostname: str | None,
                    detail: str = "") -> ssl.SSLCertVerificationError:
    """The ``SSLCertVerificationError`` a plain ``ssl`` handshake would raise."""
    return codes.verification_error(code, detail, message=message(code, hostname),
                                    suffix=_suffix())


_suffix_lock = threading.Lock()
_suffix_value: str | None = None
_SUFFIX = r"(\([^()]*:\d+\))\s*$"  # compiled by re on first use: not at import


_probe_started = False
#: What the probe's client raised when called again after its failed handshake.
_failed_again: tuple[type[ssl.SSLError], tuple[object, ...]] | None = None
_probe_lock = threading.Lock()  # not _suffix_lock: that one is held while probing


def learn_suffix_soon() -> None:
    """Learn the suffix in a thread now, so that no first failure pays for the probe
    (on an event loop's thread, it would stall every task for milliseconds).

    One thread per process: under injection every context is enabled, and
    each would otherwise start its own until the first probe finished.
    """
    global _probe_started
    with _probe_lock:
        if _probe_started or _suffix_value is not None:
            return
        _probe_started = True
    # Not a daemon: one killed at exit inside OpenSSL aborts the process.
    threading.Thread(target=_suffix, name="aia_ext suffix probe").start()


def _suffix() -> str:
    """What _ssl appends to a verification failure's text, learned once per process.

    The line number differs between CPython releases, so it is read off one
    real failure: an in-memory handshake between two plain contexts (no
    injection reaches them) in which the client refuses a self-signed
    server.  A few milliseconds, on the first failure only; "" if the probe
    cannot run.
    """
    global _suffix_value, _failed_again
    if _suffix_value is not None:
        return _suffix_value
    with _suffix_lock:
        if _suffix_value is None:
            try:
                import re

                failure, again = _probe_failure()
                found = re.search(_SUFFIX, str(failure))
                _failed_again = again
                _suffix_value = found.group(1) if found else ""
            except Exception:  # the wording only loses its suffix
                log.debug("fallback: could not learn _ssl's error suffix", exc_info=True)
                _suffix_value = ""
    return _suffix_value


def failed_call_error(memory: bool) -> ssl.SSLError:
    """What a call on a connection whose handshake failed raises, as this OpenSSL
    fails it: an EOF, but for a memory BIO OpenSSL 1.1.1 reports SSL_ERROR_SYSCALL
    (``SSLSyscallError``) where 3.x reports an unexpected EOF.  Learned by the probe."""
    if memory:
        _suffix()
        again = _failed_again
        if again is not None:
            return again[0](*again[1])
    # An exact int, as _ssl gives: io's EINTR check asserts one (debug builds).
    return ssl.SSLEOFError(int(ssl.SSL_ERROR_EOF), "EOF occurred in violation of protocol")


def _probe_failure() -> tuple[ssl.SSLCertVerificationError,
                              tuple[type[ssl.SSLError], tuple[object, ...]] | None]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aia_ext probe")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    server = new_plain_context(ssl.PROTOCOL_TLS_SERVER)
    import tempfile  # ~5 ms with shutil: kept off `import aia_ext`

    with tempfile.TemporaryDirectory(prefix="aia-ext-probe-") as directory:
        path = os.path.join(directory, "probe.pem")
        with open(path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        server.load_cert_chain(path)
    client = new_plain_context(ssl.PROTOCOL_TLS_CLIENT)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    tls_client = client.wrap_bio(c_in, c_out, server_hostname="probe.invalid")
    tls_server = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        try:
            tls_client.do_handshake()
        except ssl.SSLCertVerificationError as exc:
            try:
                tls_client.do_handshake()
            except ssl.SSLError as again:
                return exc, (type(again), again.args)
            return exc, None
        except ssl.SSLWantReadError:
            pass
        s_in.write(c_out.read())
        try:
            tls_server.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass
        c_in.write(s_out.read())
    raise RuntimeError("the probe handshake did not fail as expected")
