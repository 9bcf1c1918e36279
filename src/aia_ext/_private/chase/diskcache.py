"""The opt-in disk cache: issuers that completed a verified chain, shared between processes.

Enabled with ``cache_dir=`` or ``AIA_EXT_CACHE_DIR``.  Like .NET's, it stores
only certificates that completed a chain which then verified, so a fetch
that led nowhere never reaches the disk.  One file per caIssuers URL, named
by the URL's SHA-256, holding a marker line, the URL and PEM certificates.

The directory is another input a handshake reads, so it is handled as one:

- a directory another user owns, or that group or others can write, is
  refused (memory cache only) with one WARNING, as OpenSSH refuses such a
  ``~/.ssh`` (StrictModes); so is a path that is not a directory.  The check
  is made on every read and write, on the directory that is actually used:
  it is opened (through a symlink, if the path is one; a missing one is
  created with mode 0700 first), its descriptor is checked, and entries are
  read, written, renamed and deleted relative to that descriptor, so the
  directory cannot change between the check and the use (issue 26, item 7:
  a directory another user created in a shared /tmp before the first write
  was used, and the check was made once per path);
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
import os
import secrets
import stat
import threading
import time

from ..der import ParsedCertificate
from ..errors import FetchError
from ..logtext import escape, get_logger
from ..options import untrusted_reason
from .response import certificates_in_response

log = get_logger(__name__)

_MAGIC = "# aia_ext disk cache v1"
#: The line, after the URL, of an answer that came from a private destination.
_PRIVATE = b"# private: "
#: Bytes read from one entry at most.
MAX_ENTRY_BYTES = 256 * 1024
#: Directories whose trust was decided, remembered (the options of a process
#: name a handful; the bound keeps a hostile caller from growing it).
MAX_DIRECTORIES = 64

_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()

#: Whether entries can be opened relative to a directory descriptor (POSIX).
_DIR_FD = os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY")


def _name(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest() + ".pem"


def entry_path(directory: str, url: str) -> str:
    """Where the entry for ``url`` lives in ``directory``."""
    return os.path.join(directory, _name(url))


def _pem(der: bytes) -> str:
    text = base64.b64encode(der).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def _refuse(directory: str, reason: str) -> None:
    """One WARNING per directory and reason; the memory cache is used alone."""
    with _warned_lock:
        if (directory, reason) in _warned:
            return
        if len(_warned) >= MAX_DIRECTORIES:
            _warned.clear()
        _warned.add((directory, reason))
    log.warning("aia_ext disk cache: refusing %s: %s; using the memory cache only",
                escape(directory), reason)


class _Directory:
    """The cache directory, opened and checked for one use; a context manager.

    ``fd`` is its descriptor where entries can be opened relative to one
    (``None`` elsewhere: Windows, which has no modes to check either).
    """

    def __init__(self, directory: str, fd: int | None) -> None:
        self.path = directory
        self.fd = fd

    def __enter__(self) -> _Directory:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)

    def entry(self, name: str) -> str:
        """What to pass as a path for ``name`` (with ``dir_fd=self.fd``)."""
        return name if self.fd is not None else os.path.join(self.path, name)


def _open(directory: str, create: bool) -> _Directory | None:
    """``directory`` opened and checked now, or None (missing, or refused with a WARNING)."""
    if create:
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            log.debug("disk cache: cannot create %s: %s", escape(directory), escape(exc))
            return None
    try:
        if _DIR_FD:
            flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
            fd: int | None = os.open(directory, flags)
            info = os.fstat(fd)  # type: ignore[arg-type]
        else:
            fd, info = None, os.stat(directory)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        _refuse(directory, "it is not a directory")
        return None
    except OSError as exc:
        _refuse(directory, f"cannot open it ({exc.strerror or exc})")
        return None
    reason = untrusted_reason(info)
    if reason is not None:
        if fd is not None:
            os.close(fd)
        _refuse(directory, reason)
        return None
    return _Directory(directory, fd)


def _read(where: _Directory, name: str, limit: int = MAX_ENTRY_BYTES) -> bytes | None:
    """The bytes of a regular file (``limit`` + 1 at most, so that a larger one
    shows as such), without following links or blocking."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    path = where.entry(name)
    try:
        fd = os.open(path, flags, dir_fd=where.fd)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP for a symlink, EACCES, ENXIO for a socket...
        log.debug("disk cache: cannot open %s: %s", escape(path), escape(exc))
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            log.debug("disk cache: ignoring %s (not a regular file)", escape(path))
            return None
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        log.debug("disk cache: cannot read %s: %s", escape(path), escape(exc))
        return None
    finally:
        os.close(fd)


def load(directory: str, url: str) -> tuple[ParsedCertificate, ...] | None:
    """The unexpired certificates cached for ``url``, or None."""
    loaded = load_entry(directory, url)
    return None if loaded is None else loaded[0]


def load_entry(directory: str, url: str) -> tuple[tuple[ParsedCertificate, ...], str | None] | None:
    """The unexpired certificates cached for ``url`` and, when they came from a private
    destination, the refusal ``allow_private=False`` gives it; or None."""
    where = _open(directory, create=False)
    if where is None:
        return None
    with where:
        path = _name(url)
        data = _read(where, path)
    if data is None:
        return None
    header, _, body = data.partition(b"\n")
    url_line, _, body = body.partition(b"\n")
    if len(data) > MAX_ENTRY_BYTES or header.decode("latin-1") != _MAGIC \
            or url_line.decode("latin-1") != f"# url: {url}":
        log.debug("disk cache: ignoring %s (not an aia_ext entry for %s)", path, escape(url))
        return None
    private = None
    if body.startswith(_PRIVATE):
        private_line, _, body = body.partition(b"\n")
        private = private_line[len(_PRIVATE):].decode("ascii", "replace")
    try:
        certs = tuple(certificates_in_response(body))
    except FetchError as exc:
        log.debug("disk cache: ignoring %s (%s)", escape(path), escape(exc))
        return None
    if min(c.not_after for c in certs) <= time.time():
        log.debug("disk cache: %s has expired", escape(path))
        return None
    return certs, private


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
    where = _open(directory, create=False)
    if where is None:
        return
    with where:
        try:
            os.unlink(where.entry(_name(url)), dir_fd=where.fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.debug("disk cache: cannot delete the entry for %s: %s", escape(url), escape(exc))


def store(directory: str, url: str, certs: list[bytes], private: str | None = None) -> None:
    """Write ``certs`` (DER) for ``url`` atomically; failures are logged, not raised.
    ``private``: the refusal allow_private=False gives the destination they came from."""
    if not certs or "\n" in url or "\r" in url:
        return
    origin = ""
    if private is not None:
        origin = _PRIVATE.decode() + "".join(c if c.isprintable() and c.isascii() else "?"
                                             for c in private) + "\n"
    content = f"{_MAGIC}\n# url: {url}\n{origin}" + "".join(_pem(d) for d in certs)
    where = _open(directory, create=True)
    if where is None:
        return
    with where:
        try:
            _write_atomically(where, _name(url), content.encode("ascii"))
        except OSError as exc:
            log.debug("disk cache: cannot write an entry for %s in %s: %s", escape(url),
                      escape(directory), escape(exc))
            return
    log.debug("disk cache: stored %d certificate(s) for %s", len(certs), escape(url))


def read_file(directory: str, name: str, limit: int) -> bytes | None:
    """A named file of the cache directory (the CCADB pool), read under the same
    checks as entries; None if it, or a usable directory, is missing.  A file
    over ``limit`` bytes is returned with ``limit`` + 1 bytes: the caller refuses it."""
    where = _open(directory, create=False)
    if where is None:
        return None
    with where:
        return _read(where, name, limit)


def write_file(directory: str, name: str, data: bytes) -> None:
    """Write a named file of the cache directory atomically; OSError (or
    ValueError for a refused directory) when it cannot be written."""
    where = _open(directory, create=True)
    if where is None:
        raise ValueError(f"the cache directory {directory} cannot be used (see the warning)")
    with where:
        _write_atomically(where, name, data)


def _write_atomically(where: _Directory, name: str, data: bytes) -> None:
    # A new file of our own (O_EXCL, never through a link), then one rename:
    # readers in other processes see the old entry or the new one.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    temporary = where.entry(f".tmp-{secrets.token_hex(8)}.pem")
    fd = os.open(temporary, flags, 0o600, dir_fd=where.fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, where.entry(name), src_dir_fd=where.fd, dst_dir_fd=where.fd)
    except BaseException:
        os.unlink(temporary, dir_fd=where.fd)
        raise
