"""The standard library's ``ssl.SSLContext``, reached without anyone's wrapping.

Three parties may stand between a caller and the real class: truststore's
``inject_into_ssl()`` rebinds the *name* ``ssl.SSLContext`` to a subclass, our
own ``inject_into_ssl()`` wraps the class's ``__new__``, and the fallback
engine shadows ``verify_mode``/``check_hostname`` in a subclass.  This leaf
module holds the originals, captured when aia_ext is imported, so that every
other module can ask for them by name (in the manner of truststore's
``_ssl_constants``).
"""

from __future__ import annotations

import os
import ssl

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any


def _find_stdlib_class() -> type[ssl.SSLContext]:
    for cls in ssl.SSLContext.__mro__:
        if cls.__module__ == "ssl" and cls.__name__ == "SSLContext":
            return cls
    raise RuntimeError("ssl.SSLContext is not derived from the standard library's class")


#: The class defined in ssl.py, even where ``ssl.SSLContext`` names truststore's.
STDLIB_CONTEXT: type[ssl.SSLContext] = _find_stdlib_class()
#: Its C base (``_ssl._SSLContext``; PyPy's ``_cffi_ssl`` one), which holds
#: OpenSSL's own verify_mode and check_hostname.  Its descriptors are used
#: directly: ssl.py's property setters look up the name ``ssl.SSLContext`` and
#: recurse forever once truststore has rebound it to a subclass.
C_BASE: Any = STDLIB_CONTEXT.__mro__[1]
#: ``__new__`` as ssl.py defines it, before any injection wraps it.
ORIGINAL_NEW: Any = STDLIB_CONTEXT.__dict__["__new__"]


def new_plain_context(protocol: int = ssl.PROTOCOL_TLS_CLIENT) -> ssl.SSLContext:
    """A standard context that no injection (ours or truststore's) has touched.

    For aia_ext's own https fetches: a fetch must not chase AIA itself
    (docs/design.md, "Fetch policy").
    """
    new = ORIGINAL_NEW.__func__ if isinstance(ORIGINAL_NEW, staticmethod) else ORIGINAL_NEW
    context: ssl.SSLContext = new(STDLIB_CONTEXT, protocol)
    return context


def openssl_verify_mode(context: object) -> ssl.VerifyMode:
    """The verify mode OpenSSL enforces, whatever a subclass's property shows."""
    return ssl.VerifyMode(C_BASE.verify_mode.__get__(context))


def openssl_check_hostname(context: object) -> bool:
    """Whether OpenSSL checks the hostname, whatever a subclass's property shows."""
    return bool(C_BASE.check_hostname.__get__(context))


def set_openssl_verification(context: object, verify_mode: ssl.VerifyMode,
                             check_hostname: bool) -> None:
    """Set OpenSSL's own verify_mode and check_hostname, in the order ssl requires."""
    # Hostname checks need verification on, so the order depends on the direction.
    if check_hostname:
        C_BASE.verify_mode.__set__(context, verify_mode)
        C_BASE.check_hostname.__set__(context, True)
    else:
        C_BASE.check_hostname.__set__(context, False)
        C_BASE.verify_mode.__set__(context, verify_mode)


def set_openssl_verify_mode(context: object, verify_mode: ssl.VerifyMode) -> None:
    C_BASE.verify_mode.__set__(context, verify_mode)


def set_openssl_check_hostname(context: object, check_hostname: bool) -> None:
    C_BASE.check_hostname.__set__(context, check_hostname)


_combined: dict[tuple[type, type], type] = {}


def combine_classes(ours: type, theirs: type) -> type:
    """A class doing both: ``ours`` (whose methods call ``super()``) around ``theirs``.

    For socket classes another wrapper assigned to a context (truststore does);
    made once per pair.
    """
    if issubclass(theirs, ours):
        return theirs
    key = (ours, theirs)
    combined = _combined.get(key)
    if combined is None:
        combined = _combined[key] = type(f"AIA{theirs.__name__}", (ours, theirs), {})
    return combined


def is_standard_context(obj: object) -> bool:
    """Whether ``obj`` is an ``ssl.SSLContext`` (any subclass of the real class)."""
    return isinstance(obj, STDLIB_CONTEXT)


# What was loaded into a context that ``get_ca_certs()`` cannot list: the
# default verify paths and capaths are looked up lazily by OpenSSL, and a CA
# file's CRLs and certificates with trust settings are not listed at all.  An
# engine that reads the trust store itself needs to know them.
_SOURCES_KEY = "_aia_trust_sources"

# A plain class: typing.NamedTuple would import typing at `import aia_ext`.
class TrustSources:
    """What a context trusts beyond the certificates ``get_ca_certs()`` lists."""

    __slots__ = ("capaths", "certificates", "default_paths", "files")

    def __init__(self, default_paths: bool, capaths: tuple[str, ...], files: tuple[bytes, ...],
                 certificates: tuple[bytes, ...]) -> None:
        self.default_paths = default_paths  # set_default_verify_paths() / load_default_certs()
        self.capaths = capaths  # hashed directories given to load_verify_locations
        self.files = files  # PEM that only OpenSSL's file reader understands
        self.certificates = certificates  # DER loaded from files and data, CA or not


def trust_sources(context: object) -> TrustSources:
    """The sources recorded for ``context``."""
    sources = getattr(context, "__dict__", {}).get(_SOURCES_KEY)
    if not sources:
        return TrustSources(False, (), (), ())
    return TrustSources(sources[0], tuple(sources[1]), tuple(sources[2]),
                        tuple(der for group in sources[3] for der in group))


def record_trust_sources(context: object, default_paths: bool = False,
                         capath: str | None = None, files: bytes | None = None,
                         certificates: tuple[bytes, ...] = ()) -> None:
    """Note what was loaded into ``context``: the default paths, a capath, a CA file's
    CRLs and trusted certificates (PEM), certificates (DER)."""
    sources = context.__dict__.setdefault(_SOURCES_KEY, [False, [], [], []])
    sources[0] = sources[0] or default_paths
    if capath is not None:
        sources[1].append(capath)
    if files:
        sources[2].append(files)
    if certificates:
        sources[3].append(certificates)  # a group, often shared with other contexts


def load_pem_file_data(context: ssl.SSLContext, data: bytes) -> None:
    """``load_verify_locations(cafile=...)`` for PEM held in memory (CRLs, trusted
    certificates: ``cadata`` takes neither), through a private temporary file."""
    import tempfile  # rare: only for contexts derived from one that loaded CRLs

    fd, path = tempfile.mkstemp(prefix="aia-ext-trust-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        context.load_verify_locations(cafile=path)
    finally:
        os.unlink(path)
