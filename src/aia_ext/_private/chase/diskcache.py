"""The opt-in disk cache: issuers that completed a verified chain, shared between processes.

Enabled with ``cache_dir=`` or ``AIA_EXT_CACHE_DIR``.  Like .NET's, it stores
only certificates that completed a chain which then verified, so a fetch
that led nowhere never reaches the disk.  One file per caIssuers URL, named
by the URL's SHA-256, holding a marker line, the URL and PEM certificates.

The directory is another input a handshake reads, so it is handled as one:

- a directory another user owns, or that group or others can write, is
  refused (memory cache only) with one WARNING, as OpenSSH refuses such a
  ``~/.ssh`` (StrictModes); so is a path that is not a directory;
- entries are opened with ``O_NOFOLLOW | O_NONBLOCK`` and must be regular
  files: a symlink, FIFO or device planted there is ignored and can neither
  redirect the read nor block the handshake;
- a file that is truncated, corrupted, foreign or for another URL is ignored
  (DEBUG); one whose certificates cannot extend the chain, or that was used
  by a verification that then failed, is deleted, and the network is asked;
- writes are atomic (a temporary file in the same directory, then
  ``os.replace``), so several processes can share a directory.

Entries expire at the earliest notAfter of their certificates.  Whatever a
file holds is only ever untrusted chain material (docs/design.md, invariant 1).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
import tempfile
import threading
import time

from ..der import ParsedCertificate
from ..errors import FetchError
from ..logtext import escape
from .response import certificates_in_response

log = logging.getLogger(__name__)

_MAGIC = "# aia_ext disk cache v1"
#: Bytes read from one entry at most.
MAX_ENTRY_BYTES = 256 * 1024
#: Directories whose trust was decided, remembered (the options of a process
#: name a handful; the bound keeps a hostile caller from growing it).
MAX_DIRECTORIES = 64

_verdicts: dict[str, bool] = {}
_verdicts_lock = threading.Lock()


def _path(directory: str, url: str) -> str:
    return os.path.join(directory, hashlib.sha256(url.encode()).hexdigest() + ".pem")


def _pem(der: bytes) -> str:
    text = base64.b64encode(der).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def _untrusted_reason(directory: str) -> str | None:
    """Why ``directory`` must not be used as a cache, or None if it may."""
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        return None  # created, with mode 0700, on the first write
    except OSError as exc:
        return f"cannot stat it ({exc.strerror or exc})"
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a directory"
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None:  # Windows: ACLs, not modes; nothing portable to check
        return None
    uid = geteuid()
    if info.st_uid not in (uid, 0):  # root may own it: only root could then write it
        return f"it is owned by uid {info.st_uid}, not by this user (uid {uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"group or others can write to it (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def usable(directory: str) -> bool:
    """Whether ``directory`` may be read and written; one WARNING when it may not."""
    with _verdicts_lock:
        verdict = _verdicts.get(directory)
    if verdict is not None:
        return verdict
    reason = _untrusted_reason(directory)
    if reason is not None:
        log.warning("aia_ext disk cache: refusing %s: %s; using the memory cache only",
                    escape(directory), reason)
    with _verdicts_lock:
        if len(_verdicts) >= MAX_DIRECTORIES:
            _verdicts.clear()
        _verdicts[directory] = reason is None
    return reason is None


def _read(path: str) -> bytes | None:
    """The bytes of a regular file at ``path``, without following links or blocking."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP for a symlink, EACCES, ENXIO for a socket...
        log.debug("disk cache: cannot open %s: %s", path, exc)
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            log.debug("disk cache: ignoring %s (not a regular file)", path)
            return None
        chunks, size = [], 0
        while size <= MAX_ENTRY_BYTES:
            chunk = os.read(fd, MAX_ENTRY_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        log.debug("disk cache: cannot read %s: %s", path, exc)
        return None
    finally:
        os.close(fd)


def load(directory: str, url: str) -> tuple[ParsedCertificate, ...] | None:
    """The unexpired certificates cached for ``url``, or None."""
    if not usable(directory):
        return None
    path = _path(directory, url)
    data = _read(path)
    if data is None:
        return None
    header, _, body = data.partition(b"\n")
    url_line, _, body = body.partition(b"\n")
    if len(data) > MAX_ENTRY_BYTES or header.decode("latin-1") != _MAGIC \
            or url_line.decode("latin-1") != f"# url: {url}":
        log.debug("disk cache: ignoring %s (not an aia_ext entry for %s)", path, escape(url))
        return None
    try:
        certs = tuple(certificates_in_response(body))
    except FetchError as exc:
        log.debug("disk cache: ignoring %s (%s)", path, exc)
        return None
    if min(c.not_after for c in certs) <= time.time():
        log.debug("disk cache: %s has expired", path)
        return None
    return certs


def issued_child(child: bytes, candidates: list[bytes]) -> bool:
    """Whether one of ``candidates`` (DER) signed ``child`` (DER).

    A file on disk is not what the URL serves until shown otherwise; checking
    the signature here lets a wrong entry be dropped and the network asked
    within the same verification.  cryptography is needed for it (loaded on
    the first disk hit only); where it is missing, a name match is accepted and
    a verification that then fails drops the entry (``discard``).
    """
    try:
        from cryptography import x509  # ~50 ms: only once a disk entry is used
    except ImportError:  # pragma: no cover - PyPy without cryptography
        return True
    try:
        certificate = x509.load_der_x509_certificate(child)
    except ValueError:
        return False
    for der in candidates:
        try:
            certificate.verify_directly_issued_by(x509.load_der_x509_certificate(der))
        except Exception:  # noqa: BLE001, S112 - any refusal or unreadable key: not the issuer
            continue
        return True
    return False


def discard(directory: str, url: str) -> None:
    """Delete the entry for ``url`` (a no-op if there is none)."""
    if not usable(directory):
        return
    try:
        os.unlink(_path(directory, url))
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.debug("disk cache: cannot delete the entry for %s: %s", escape(url), exc)


def store(directory: str, url: str, certs: list[bytes]) -> None:
    """Write ``certs`` (DER) for ``url`` atomically; failures are logged, not raised."""
    if not certs or "\n" in url or "\r" in url or not usable(directory):
        return
    content = f"{_MAGIC}\n# url: {url}\n" + "".join(_pem(d) for d in certs)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pem", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(content)
            os.replace(tmp, _path(directory, url))
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        log.debug("disk cache: cannot write an entry for %s in %s: %s", escape(url), directory,
                  exc)
        return
    log.debug("disk cache: stored %d certificate(s) for %s", len(certs), escape(url))
