"""OpenSSL's own verifier, ``X509_verify_cert``, reached through cryptography's OpenSSL.

The fallback engine runs where the interpreter's OpenSSL cannot be reached
(python-build-standalone, static builds).  cryptography ships an OpenSSL of
its own and exposes the X.509 store and verification functions through its
cffi binding (``cryptography.hazmat.bindings.openssl.binding``), the same
door pyOpenSSL's ``X509StoreContext`` goes through.  Verifying with it gives
OpenSSL's verdicts and verify codes on the same certificates and settings
(issue 20): criticality, key types, name forms and trust-anchor forms are
judged by the same code that judges them in a plain ``ssl`` handshake.
cryptography's own verifier applies the CA/Browser Forum profile and refused
chains OpenSSL accepts (a CA whose basicConstraints is not critical, a
self-signed leaf given as the anchor, Ed25519 keys).

What the binding does not expose is emulated next to it (verify.py and
rules.py): the security level (``X509_VERIFY_PARAM_set_auth_level`` is not
bound) and the interpreter's own numbering and wording.

This module holds raw pointers; every one is owned by a Python object with
``ffi.gc`` or freed before the function that made it returns.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

from ...errors import MissingDependencyError
from ...logtext import escape, get_logger

log = get_logger(__name__)

#: The functions this module calls; checked once, so that a cryptography
#: release that drops one fails with a clear error instead of mid-handshake.
REQUIRED = (
    "BIO_new_mem_buf", "BIO_new", "BIO_s_mem", "BIO_get_mem_data", "BIO_free",
    "d2i_X509_bio", "i2d_X509_bio", "X509_free", "X509_up_ref",
    "X509_STORE_new", "X509_STORE_free", "X509_STORE_add_cert", "X509_STORE_load_locations",
    "X509_STORE_set1_param", "X509_STORE_set_purpose",
    "X509_STORE_CTX_new", "X509_STORE_CTX_free", "X509_STORE_CTX_init",
    "X509_STORE_CTX_get_error", "X509_STORE_CTX_get_error_depth",
    "X509_STORE_CTX_get1_chain", "X509_STORE_CTX_get_current_cert", "X509_verify_cert",
    "X509_verify_cert_error_string",
    "X509_VERIFY_PARAM_new", "X509_VERIFY_PARAM_free", "X509_VERIFY_PARAM_set1_host",
    "X509_VERIFY_PARAM_set1_ip", "X509_VERIFY_PARAM_set_hostflags",
    "X509_VERIFY_PARAM_set_flags", "X509_VERIFY_PARAM_set_time",
    "sk_X509_new_null", "sk_X509_push", "sk_X509_num", "sk_X509_value", "sk_X509_free",
    "ERR_clear_error", "X509_PURPOSE_SSL_SERVER",
)


def _load_binding() -> tuple[Any, Any]:
    try:
        from cryptography.hazmat.bindings.openssl.binding import Binding
    except ImportError as exc:  # pragma: no cover - the engine checks importability first
        raise MissingDependencyError(
            "the fallback engine needs cryptography's OpenSSL binding "
            f"(pip install 'aia-ext[cryptography]'): {exc}") from exc
    lib = Binding.lib
    missing = [name for name in REQUIRED if not hasattr(lib, name)]
    if missing:
        raise MissingDependencyError(
            "this cryptography release does not expose OpenSSL's verification functions "
            f"the fallback engine needs ({', '.join(missing)}); install a release listed "
            "in docs/engines.md")
    return Binding.ffi, lib


ffi, lib = _load_binding()

#: OpenSSL's name of the library doing the verifying, for logs and docs.
VERSION = ffi.string(lib.OpenSSL_version(0)).decode("ascii", "replace") \
    if hasattr(lib, "OpenSSL_version") else "OpenSSL"

#: Certificates bigger than this are parsed each time rather than cached: real
#: ones are 1-2 KiB and the cache's memory must stay bounded whatever servers send.
_CACHED_BYTES = 16 * 1024
_CACHE_ENTRIES = 1024


class Certificate:
    """One parsed certificate (an ``X509 *``) and its DER."""

    __slots__ = ("__weakref__", "der", "ptr")

    def __init__(self, der: bytes) -> None:
        self.der = der
        self.ptr = ffi.gc(_d2i(der), lib.X509_free)


def _d2i(der: bytes) -> Any:
    # A memory BIO reads its buffer after BIO_new_mem_buf returns.  Passed as
    # bytes, PyPy's cffi hands the call a temporary copy, freed on return
    # (CPython passes the object's own storage); from_buffer pins the bytes for
    # as long as `data` lives.  Without it, d2i read freed memory on PyPy under
    # concurrent handshakes, and a good intermediate was refused as unreadable.
    data = ffi.from_buffer(der)
    bio = lib.BIO_new_mem_buf(data, len(der))
    if bio == ffi.NULL:
        raise MemoryError("BIO_new_mem_buf failed")
    try:
        cert = lib.d2i_X509_bio(bio, ffi.NULL)
    finally:
        lib.BIO_free(bio)
        lib.ERR_clear_error()
        del data
    if cert == ffi.NULL:
        raise ValueError("OpenSSL cannot read this certificate")
    return cert


def _i2d(cert: Any) -> bytes:
    bio = lib.BIO_new(lib.BIO_s_mem())
    if bio == ffi.NULL:
        raise MemoryError("BIO_new failed")
    try:
        if lib.i2d_X509_bio(bio, cert) != 1:
            raise ValueError("OpenSSL cannot encode this certificate")
        out = ffi.new("char **")
        size = lib.BIO_get_mem_data(bio, out)
        return bytes(ffi.buffer(out[0], size))
    finally:
        lib.BIO_free(bio)
        lib.ERR_clear_error()


_parsed_lock = threading.Lock()
_parsed: OrderedDict[bytes, Certificate] = OrderedDict()


def certificate(der: bytes) -> Certificate:
    """The parsed certificate for ``der``; served ones repeat on every connection.

    :raises ValueError: OpenSSL cannot read it.
    """
    if len(der) > _CACHED_BYTES:
        return Certificate(der)
    with _parsed_lock:
        cached = _parsed.get(der)
        if cached is not None:
            _parsed.move_to_end(der)
            return cached
    parsed = Certificate(der)
    with _parsed_lock:
        _parsed[der] = parsed
        while len(_parsed) > _CACHE_ENTRIES:
            _parsed.popitem(last=False)
    return parsed


def error_string(code: int) -> str:
    """OpenSSL's wording of a verify code, from cryptography's OpenSSL."""
    text = lib.X509_verify_cert_error_string(code)
    return ffi.string(text).decode("ascii", "replace") if text != ffi.NULL else ""


# ---- Peer names, as CPython hands them to OpenSSL ----------------------------

_IPV4 = re.compile(r"\s*[+-]?\d+\.[+-]?\d+\.[+-]?\d+\.[+-]?\d+\s*")


def ip_of(name: str) -> bytes | None:
    """The address CPython's ``_ssl`` reads ``name`` as (``a2i_IPADDRESS``), or None.

    CPython checks an IP literal with ``X509_VERIFY_PARAM_set1_ip`` and any
    other name with ``set1_host``.  OpenSSL's reader takes four decimal
    fields for IPv4 (leading zeros included) and RFC 4291 text for IPv6.
    """
    if ":" in name:
        try:
            return ipaddress.IPv6Address(name).packed
        except ValueError:
            return None
    if not _IPV4.fullmatch(name):
        return None
    fields = [int(part) for part in name.strip().split(".")]
    if any(not 0 <= value <= 255 for value in fields):
        return None
    return bytes(fields)


_host_lock = threading.Lock()
_hosts_accepted: OrderedDict[str, bool] = OrderedDict()


def accepts_host(name: str) -> bool:
    """Whether this OpenSSL's ``X509_VERIFY_PARAM_set1_host`` takes ``name``.

    OpenSSL 4.0 refuses names that are not valid host names (a trailing dot,
    an empty label, a space); OpenSSL 3.x, the interpreter's, takes them and
    compares them as they are.  verify.py checks such names itself.
    """
    with _host_lock:
        known = _hosts_accepted.get(name)
    if known is not None:
        return known
    raw = name.encode("ascii", "surrogateescape")
    param = _checked(lib.X509_VERIFY_PARAM_new(), "X509_VERIFY_PARAM_new")
    try:
        accepted = bool(lib.X509_VERIFY_PARAM_set1_host(param, raw, len(raw)) == 1)
    finally:
        lib.X509_VERIFY_PARAM_free(param)
        lib.ERR_clear_error()
    with _host_lock:
        _hosts_accepted[name] = accepted
        while len(_hosts_accepted) > _CACHE_ENTRIES:
            _hosts_accepted.popitem(last=False)
    return accepted


_subject_lock = threading.Lock()
_checks_subject: bool | None = None


def checks_subject_name() -> bool:
    """Whether this OpenSSL's host check falls back to the subject's common name.

    OpenSSL 1.1.1 to 4.0 match a peer name against the subject CN when the
    certificate has no DNS name in its subjectAltName (unless the caller
    sets X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, ``hostname_checks_common_name
    = False``); the OpenSSL 4.1 in cryptography 51 no longer does, so a
    CN-only leaf that plain ``ssl`` accepts would be refused with 62.
    Learned once per process, by verifying a throwaway CN-only certificate
    for its own name (issue 30, item 4); verify.py checks such names itself
    where this says False.
    """
    global _checks_subject
    with _subject_lock:
        if _checks_subject is None:
            _checks_subject = _probe_subject_name()
        return _checks_subject


def _probe_subject_name() -> bool:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "probe.invalid")])
    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - day).not_valid_after(now + day)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    probe = Certificate(cert.public_bytes(serialization.Encoding.DER))
    trust = TrustSet(0, [probe], (), ())
    outcome = verify(trust.store(Config(0, "probe.invalid", None, 0x4, None)), probe, ())
    return outcome.code == 0


# ---- Trust sets and stores ---------------------------------------------------

class Config(NamedTuple):
    """What one verification's X509_VERIFY_PARAM holds (libssl's ssl_verify_cert_chain)."""

    flags: int  # the context's verify_flags
    host: str | None  # checked with set1_host (check_hostname on, not an IP)
    ip: bytes | None  # checked with set1_ip
    hostflags: int  # the context's _host_flags (CPython keeps its own copy)
    at: int | None  # POSIX time to verify at, or None for now


class TrustSet:
    """A context's trust material in cryptography's OpenSSL, with stores built from it.

    ``certificates`` are added to each store (the context's CA certificates);
    ``directories`` are looked up lazily by subject hash, as OpenSSL reads a
    capath; ``files`` are PEM data OpenSSL's own file reader must load (CRLs,
    certificates with trust settings), written to a private temporary file
    while a store is built.
    """

    #: Stores kept per trust set (one per configuration: peer name, flags, time).
    MAX_STORES = 64

    def __init__(self, generation: int, certificates: Sequence[Certificate],
                 directories: Sequence[str], files: Sequence[bytes]) -> None:
        self.generation = generation
        self.certificates = tuple(certificates)
        self.directories = tuple(directories)
        self.files = tuple(files)
        self._stores: OrderedDict[Config, Any] = OrderedDict()
        self._lock = threading.Lock()

    def store(self, config: Config) -> Any:
        """An ``X509_STORE *`` holding this trust set, its parameters set for ``config``.

        A store's parameters are set once, when it is built: OpenSSL merges
        later ones into earlier ones (``X509_VERIFY_PARAM_set1`` keeps a
        host and ORs flags), so a store is never reconfigured, only shared.
        """
        with self._lock:
            store = self._stores.get(config)
            if store is not None:
                self._stores.move_to_end(config)
                return store
        store = self._build(config)
        with self._lock:
            self._stores[config] = store
            while len(self._stores) > self.MAX_STORES:
                self._stores.popitem(last=False)
        return store

    def _build(self, config: Config) -> Any:
        store = ffi.gc(_checked(lib.X509_STORE_new(), "X509_STORE_new"), lib.X509_STORE_free)
        param = ffi.gc(_checked(lib.X509_VERIFY_PARAM_new(), "X509_VERIFY_PARAM_new"),
                       lib.X509_VERIFY_PARAM_free)
        _ok(lib.X509_VERIFY_PARAM_set_flags(param, config.flags), "set_flags")
        lib.X509_VERIFY_PARAM_set_hostflags(param, config.hostflags)  # void
        if config.host is not None:
            host = config.host.encode("ascii", "surrogateescape")
            _ok(lib.X509_VERIFY_PARAM_set1_host(param, host, len(host)), "set1_host")
        if config.ip is not None:
            _ok(lib.X509_VERIFY_PARAM_set1_ip(param, config.ip, len(config.ip)), "set1_ip")
        if config.at is not None:
            lib.X509_VERIFY_PARAM_set_time(param, config.at)
        _ok(lib.X509_STORE_set1_param(store, param), "X509_STORE_set1_param")
        # A client verifying a server: libssl's "ssl_server" purpose, whose
        # trust setting OpenSSL infers from it (X509_STORE_CTX_init).
        _ok(lib.X509_STORE_set_purpose(store, lib.X509_PURPOSE_SSL_SERVER), "set_purpose")
        for blob in self.files:
            _load_file_data(store, blob)
        for cert in self.certificates:
            _ok(lib.X509_STORE_add_cert(store, cert.ptr), "X509_STORE_add_cert")
        for directory in self.directories:
            # A directory that cannot be added is a capath OpenSSL would find
            # nothing in either; the verdict shows it.
            if lib.X509_STORE_load_locations(store, ffi.NULL, os.fsencode(directory)) != 1:
                log.debug("fallback: capath %s could not be added", escape(directory))
        lib.ERR_clear_error()
        return store


def _checked(pointer: Any, what: str) -> Any:
    if pointer == ffi.NULL:
        lib.ERR_clear_error()
        raise MemoryError(f"{what} failed")
    return pointer


def _ok(result: int, what: str) -> None:
    if result != 1:
        lib.ERR_clear_error()
        raise ValueError(f"OpenSSL refused {what}")


def _load_file_data(store: Any, data: bytes) -> None:
    """Load PEM ``data`` with OpenSSL's own file reader (``X509_load_cert_crl_file``)."""
    fd, path = tempfile.mkstemp(prefix="aia-ext-trust-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if lib.X509_STORE_load_locations(store, os.fsencode(path), ffi.NULL) != 1:
            log.debug("fallback: OpenSSL loaded nothing from a CA file's CRLs or trust settings")
    finally:
        os.unlink(path)
        lib.ERR_clear_error()


# ---- One verification ----------------------------------------------------------

class Outcome(NamedTuple):
    """What one ``X509_verify_cert`` said."""

    code: int  # 0, or the X509_V_ERR_* code
    depth: int  # the error depth
    chain: tuple[bytes, ...]  # the chain it built (DER, leaf first), whole or partial
    current: bytes | None  # the certificate the error is about


def verify(store: Any, leaf: Certificate, untrusted: Sequence[Certificate]) -> Outcome:
    """Run ``X509_verify_cert`` once: ``leaf`` with ``untrusted`` as chain material.

    As libssl does, the untrusted stack holds the leaf too.  Fails closed:
    a failure that reports no error is code 1 (unspecified).
    """
    stack = _checked(lib.sk_X509_new_null(), "sk_X509_new_null")
    ctx = ffi.NULL
    try:
        for cert in (leaf, *untrusted):
            if lib.sk_X509_push(stack, cert.ptr) <= 0:
                raise MemoryError("sk_X509_push failed")
        ctx = _checked(lib.X509_STORE_CTX_new(), "X509_STORE_CTX_new")
        _ok(lib.X509_STORE_CTX_init(ctx, store, leaf.ptr, stack), "X509_STORE_CTX_init")
        ok = lib.X509_verify_cert(ctx) == 1
        code = 0 if ok else (lib.X509_STORE_CTX_get_error(ctx) or 1)
        depth = lib.X509_STORE_CTX_get_error_depth(ctx)
        known = {c.ptr: c.der for c in (leaf, *untrusted)}
        chain = _chain_ders(lib.X509_STORE_CTX_get1_chain(ctx), known)
        current = None
        if not ok:
            pointer = lib.X509_STORE_CTX_get_current_cert(ctx)
            if pointer != ffi.NULL:
                current = known.get(pointer) or _i2d(pointer)
        return Outcome(code, depth, chain, current)
    finally:
        if ctx != ffi.NULL:
            lib.X509_STORE_CTX_free(ctx)
        lib.sk_X509_free(stack)  # the certificates are owned by their Python objects
        lib.ERR_clear_error()


def _chain_ders(stack: Any, known: dict[Any, bytes]) -> tuple[bytes, ...]:
    if stack == ffi.NULL:
        return ()
    try:
        ders = []
        for i in range(lib.sk_X509_num(stack)):
            pointer = lib.sk_X509_value(stack, i)
            ders.append(known.get(pointer) or _i2d(pointer))
        return tuple(ders)
    finally:
        for i in range(lib.sk_X509_num(stack)):
            lib.X509_free(lib.sk_X509_value(stack, i))  # get1_chain took a reference each
        lib.sk_X509_free(stack)
