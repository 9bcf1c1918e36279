"""The opt-in disk cache: issuers that completed a verified chain, shared between processes.

Enabled with ``cache_dir=`` or ``AIA_EXT_CACHE_DIR``.  Like .NET's, it stores
only certificates that completed a chain which then verified, so a fetch
that led nowhere never reaches the disk.  One file per caIssuers URL, named
by the URL's SHA-256, holding a marker line, the URL and PEM certificates.

- Writes are atomic (a temporary file in the same directory, then
  ``os.replace``), so several processes can share a directory.
- Entries expire at the earliest notAfter of their certificates.
- A file that is truncated, corrupted, foreign or for another URL is ignored
  (logged at DEBUG), never trusted: its certificates would only ever be
  untrusted chain material anyway, and OpenSSL verifies them like any other.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
import time

from ..der import ParsedCertificate
from ..errors import FetchError
from ..logtext import escape
from .response import certificates_in_response

log = logging.getLogger(__name__)

_MAGIC = "# aia_ext disk cache v1"
_MAX_FILE = 256 * 1024


def _path(directory: str, url: str) -> str:
    return os.path.join(directory, hashlib.sha256(url.encode()).hexdigest() + ".pem")


def _pem(der: bytes) -> str:
    text = base64.b64encode(der).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def load(directory: str, url: str) -> tuple[ParsedCertificate, ...] | None:
    """The unexpired certificates cached for ``url``, or None."""
    path = _path(directory, url)
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.debug("disk cache: cannot read %s: %s", path, exc)
        return None
    header, _, body = data.partition(b"\n")
    url_line, _, body = body.partition(b"\n")
    if len(data) > _MAX_FILE or header.decode("latin-1") != _MAGIC \
            or url_line.decode("latin-1") != f"# url: {url}":
        log.debug("disk cache: ignoring %s (not an aia_ext entry for %s)", path, escape(url))
        return None
    try:
        certs = tuple(certificates_in_response(body))
    except FetchError as exc:
        log.debug("disk cache: ignoring %s (%s)", path, exc)
        return None
    now = time.time()
    if min(c.not_after for c in certs) <= now:
        log.debug("disk cache: %s has expired", path)
        return None
    return certs


def store(directory: str, url: str, certs: list[bytes]) -> None:
    """Write ``certs`` (DER) for ``url`` atomically; failures are logged, not raised."""
    if not certs or "\n" in url or "\r" in url:
        return
    content = f"{_MAGIC}\n# url: {url}\n" + "".join(_pem(d) for d in certs)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pem", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(content)
            os.replace(tmp, _path(directory, url))
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        log.debug("disk cache: cannot write an entry for %s in %s: %s", escape(url), directory, exc)
        return
    log.debug("disk cache: stored %d certificate(s) for %s", len(certs), escape(url))
