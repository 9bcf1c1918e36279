"""What was loaded into a context, as the fallback engine must know it.

``get_ca_certs()`` lists only the *CA* certificates of a context's store
(CPython skips those for which ``X509_check_ca`` fails), so a self-signed
server certificate given as the trust anchor (``cafile=`` the server's own
certificate, common for internal services) would be missing; a CA file's
CRLs and certificates with trust settings ("TRUSTED CERTIFICATE") are not
listed at all.  So the fallback reads what is loaded when it is loaded, the
way OpenSSL reads it (issue 20):

- a CA file (``X509_load_cert_crl_file``): CERTIFICATE and X509 CERTIFICATE
  blocks as certificates; TRUSTED CERTIFICATE and X509 CRL blocks kept as
  PEM for OpenSSL's own file reader (openssl.py);
- ``cadata`` (``_ssl``'s ``_add_ca_certs``): PEM certificates, a TRUSTED
  CERTIFICATE read as a plain one, or concatenated DER.

Read at load time: the file may be gone when a connection is verified (a
temporary file), and OpenSSL read it then too.  Light enough for
``import aia_ext``: no cryptography here.
"""

from __future__ import annotations

import base64
import functools
import os
from typing import Any

from ...bundle import labelled_pem_blocks
from ...der import DERError, element
from ...logtext import escape, get_logger
from ...stdlib_ssl import record_trust_sources

log = get_logger(__name__)

#: Bytes of one CA file read at most, and blocks taken from it.
MAX_CA_FILE = 16 * 1024 * 1024
MAX_BLOCKS = 100_000

_CERTIFICATE_LABELS = frozenset({b"CERTIFICATE", b"X509 CERTIFICATE"})
_SPECIAL_LABELS = frozenset({b"TRUSTED CERTIFICATE", b"X509 CRL"})
_CADATA_LABELS = _CERTIFICATE_LABELS | {b"TRUSTED CERTIFICATE"}


def _pem(label: bytes, der: bytes) -> bytes:
    body = base64.encodebytes(der)  # 76-column lines, as PEM readers accept
    return b"-----BEGIN " + label + b"-----\n" + body + b"-----END " + label + b"-----\n"


def _first_element(der: bytes) -> bytes | None:
    """The certificate at the start of ``der`` (a TRUSTED CERTIFICATE adds its trust after it)."""
    try:
        _tag, _start, _end, after = element(der, 0, len(der))
    except DERError:
        return None
    return der[:after]


@functools.lru_cache(maxsize=32)
def _file(path: str, mtime_ns: int, size: int) -> tuple[tuple[bytes, ...], bytes]:
    # Cached by path, time and size: a certifi-sized file read once is shared
    # by every context that loads it.
    del mtime_ns, size  # part of the cache key only
    with open(path, "rb") as f:
        data = f.read(MAX_CA_FILE)
    blocks = labelled_pem_blocks(data, MAX_BLOCKS, _CERTIFICATE_LABELS | _SPECIAL_LABELS)
    certificates = tuple(der for label, der in blocks if label in _CERTIFICATE_LABELS)
    special = b"".join(_pem(label, der) for label, der in blocks if label in _SPECIAL_LABELS)
    return certificates, special


def _cadata(cadata: Any) -> tuple[bytes, ...]:
    if isinstance(cadata, str):
        blocks = labelled_pem_blocks(cadata.encode("ascii", "replace"), MAX_BLOCKS,
                                     _CADATA_LABELS)
        found = (_first_element(der) if label == b"TRUSTED CERTIFICATE" else der
                 for label, der in blocks)
        return tuple(der for der in found if der)
    data = bytes(cadata)
    ders: list[bytes] = []
    pos = 0
    while pos < len(data) and len(ders) < MAX_BLOCKS:
        try:
            _tag, _start, _end, after = element(data, pos, len(data))
        except DERError:
            break  # _ssl raises on this; nothing more was loaded
        ders.append(data[pos:after])
        pos = after
    return tuple(ders)


def record_loaded(context: object, cafile: Any = None, capath: Any = None,
                  cadata: Any = None) -> None:
    """Record what ``load_verify_locations(cafile, capath, cadata)`` loaded into ``context``.

    Called after the load succeeded; what cannot be read here is left out
    (OpenSSL read it, so the verdict can only be stricter).
    """
    record_trust_sources(context, capath=os.fspath(capath) if capath is not None else None)
    if cafile is not None:
        try:
            path = os.fspath(cafile)
            path = path if isinstance(path, str) else os.fsdecode(path)
            stat = os.stat(path)
            certificates, special = _file(path, stat.st_mtime_ns, stat.st_size)
        except (OSError, ValueError, TypeError) as exc:
            log.debug("fallback: could not read the CA file back: %s", escape(exc))
        else:
            record_trust_sources(context, files=special or None, certificates=certificates)
    if cadata is not None:
        try:
            record_trust_sources(context, certificates=_cadata(cadata))
        except (TypeError, ValueError) as exc:
            log.debug("fallback: could not read cadata back: %s", escape(exc))
