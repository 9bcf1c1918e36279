"""The public functions: enable, disable, is_enabled, engine_of, create_default_context,
and the ``aia_ext.SSLContext`` class.

Options are validated here, once, into an ``Options`` value that every layer
below receives; which engine acts is asked of engines/, never decided here.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping

from . import engines
from .engines import VerifyingContext, register_combiner
from .errors import UnsupportedPlatformError
from .logtext import get_logger
from .options import DEFAULT, Options, documented, make_options
from .stdlib_ssl import (
    STDLIB_CONTEXT,
    is_standard_context,
    load_pem_file_data,
    new_plain_context,
    record_trust_sources,
    trust_sources,
)

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any, Union, overload

if TYPE_CHECKING:
    from OpenSSL.SSL import Context as PyOpenSSLContext
    from typing_extensions import Unpack

    from .engines import EngineName
    from .options import OptionsKwargs

log = get_logger(__name__)

if TYPE_CHECKING:
    StrPath = Union[str, "os.PathLike[str]"]
else:
    def overload(function: Any) -> Any:
        # typing's, without importing typing: the variants are for type checkers,
        # and the last definition is the function.
        return function


class SSLContext(VerifyingContext):
    """An ``ssl.SSLContext`` with AIA chasing, whichever engine this interpreter allows.

    Where the native engine binds, it is simply enabled.  Elsewhere (or with
    ``AIA_EXT_ENGINE=fallback``) its sockets verify the served chain after the
    handshake, before ``do_handshake()`` returns (docs/engines.md).
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> SSLContext:
        # As given: ssl.py's own default protocol applies (it differs by version).
        context = super().__new__(cls, *args, **kwargs)
        engines.select().enable(context, DEFAULT)
        return context


def _require_context(context: object) -> None:
    if not is_standard_context(context):
        raise TypeError(
            f"expected an ssl.SSLContext, got {type(context).__module__}.{type(context).__name__}"
        )


def is_truststore_class(cls: type) -> bool:
    """Whether ``cls`` is truststore's ``SSLContext``, which wraps a standard context:
    truststore itself, or a copy vendored into another package (pip's is
    ``pip._vendor.truststore``)."""
    return "truststore" in cls.__module__.split(".")


def _connecting_context(context: Any) -> Any:
    """The context that really makes connections for ``context``.

    A ``truststore.SSLContext`` wraps a standard context (``_ctx``) which makes
    every connection; enabling the wrapper itself would change nothing
    (issue 14: enable() silently did nothing).  Anything else is itself.
    """
    if not is_truststore_class(type(context)):
        return context
    inner = getattr(context, "_ctx", None)
    if not is_standard_context(inner):
        raise TypeError(
            "this truststore.SSLContext keeps no standard context aia_ext can enable; use "
            "aia_ext.inject_into_ssl() before creating it (it composes with truststore)")
    return inner


def _adopt_existing(context: ssl.SSLContext) -> None:
    """Make an existing standard context an aia_ext.SSLContext, in place.

    The class is switched, as ``create_default_context()`` does for a fresh
    one: a plain ``ssl.SSLContext`` becomes ``aia_ext.SSLContext``; a
    subclass (gevent's, eventlet's, a user's) becomes a class deriving from
    both, its own methods still running, ours creating its connections.  A
    class that cannot be derived from (one that forbids subclassing) or whose
    layout Python will not switch is the one case left unsupported.  The
    context's socket classes are left as they are: the fallback verifies in
    the low-level connection every socket class calls.
    """
    cls = type(context)
    if isinstance(context, VerifyingContext):
        return
    try:
        context.__class__ = SSLContext if cls is STDLIB_CONTEXT else _combined_class(cls)
    except (TypeError, AttributeError) as exc:
        # A class that forbids subclassing, another layout, or one whose
        # __class__ is a read-only property (truststore's, vendored or not).
        raise UnsupportedPlatformError(
            f"{cls.__module__}.{cls.__name__} cannot become an aia_ext.SSLContext in place "
            f"({exc}); the fallback engine creates the context's connections. Create it "
            "with aia_ext.inject_into_ssl() in force, or use aia_ext.SSLContext") from exc
    vars(context)[_ORIGINAL_KEY] = cls  # for disable()
    hidden = context.cert_store_stats().get("x509", 0) - len(context.get_ca_certs())
    if hidden > 0:
        # get_ca_certs() lists CA certificates only: a server certificate
        # loaded as its own trust anchor before enable() is out of sight of
        # the fallback's verifier (engines/fallback/sources.py).
        log.warning("aia_ext.enable(): %d certificate(s) loaded into this context before it "
                    "was enabled are not CA certificates, and the fallback engine cannot "
                    "read them back; load them after enable(), or create the context with "
                    "aia_ext.create_default_context(cafile=...)", hidden)


#: Where a context switched in place keeps its own class.
_ORIGINAL_KEY = "_aia_original_class"


def _restore_class(context: Any) -> None:
    """Undo ``_adopt_existing()``: the context's own class again."""
    cls = vars(context).pop(_ORIGINAL_KEY, None)
    if cls is not None:
        context.__class__ = cls


_combined: dict[type, type] = {}


@register_combiner
def _combined_class(cls: type) -> type:
    combined = _combined.get(cls)
    if combined is None:
        combined = _combined[cls] = type(cls.__name__, (SSLContext, cls), {
            "__module__": cls.__module__, "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__, "__new__": cls.__new__})
    return combined


@overload
def enable(context: ssl.SSLContext, **options: Unpack[OptionsKwargs]) -> ssl.SSLContext: ...
@overload
def enable(context: PyOpenSSLContext,  # noqa: F811 - a variant (overload, above)
           **options: Unpack[OptionsKwargs]) -> PyOpenSSLContext: ...
@documented
def enable(context: Any, **options: Any) -> Any:  # noqa: F811 - the implementation
    """Install AIA chasing on ``context`` in place and return it.

    ``context`` is an ``ssl.SSLContext`` or an ``OpenSSL.SSL.Context``
    (pyOpenSSL).  Enabling again replaces the options; nothing else about the
    context's verification changes.

    :raises TypeError: ``context`` is neither, or an option name is unknown.
    :raises ValueError: an option's value is out of range.
    :raises UnsupportedPlatformError: under the fallback engine, a subclass of
        ``ssl.SSLContext`` that cannot be derived from.
    """
    return enable_with(context, make_options(options))


def enable_with(context: Any, options: Options) -> Any:
    """``enable()`` with options already validated."""
    target = context
    if not engines.is_pyopenssl_context(context):
        _require_context(context)
        target = _connecting_context(context)
    engine = engines.for_context(target)
    if engine.needs_context_class and is_standard_context(target):
        _adopt_existing(target)  # the fallback engine verifies in the context's sockets
    engine.enable(target, options)
    return context


def enable_given(context: Any, given: Mapping[str, Any]) -> Any:
    """``enable()`` for a context handed to an integration: a context already enabled
    keeps its options unless options are given (they then replace them)."""
    if given or not is_enabled(context):
        return enable_with(context, make_options(given))
    return context


def disable(context: ssl.SSLContext | PyOpenSSLContext) -> Any:
    """Remove AIA chasing from ``context`` (a no-op if it was not enabled); returns it.

    A context ``enable()`` switched to ``aia_ext.SSLContext`` gets its own class back.
    """
    target = context
    if not engines.is_pyopenssl_context(context):
        _require_context(context)
        target = _connecting_context(context)
    engine = engines.enabled_engine(target)
    if engine is not None:
        engine.disable(target)
        _restore_class(target)
    return context


def is_enabled(context: ssl.SSLContext | PyOpenSSLContext) -> bool:
    """Whether ``enable()`` is in force on ``context``."""
    return engine_of(context) is not None


def engine_of(context: ssl.SSLContext | PyOpenSSLContext) -> EngineName | None:
    """Which engine chases on ``context``: "native", "fallback", "pyopenssl", or None."""
    if not engines.is_pyopenssl_context(context):
        _require_context(context)
        context = _connecting_context(context)
    engine = engines.enabled_engine(context)
    return engine.name if engine is not None else None


def adopt(context: ssl.SSLContext, options: Options,
          always_switch: bool = False) -> ssl.SSLContext:
    """Enable a freshly made standard context with the selected engine, in place.

    An engine that creates the context's connections needs it to be an
    ``aia_ext.SSLContext`` (``always_switch`` asks for that whatever the
    engine).  The layouts are identical (no new slots), so the class is
    switched and every default this Python version chose is kept; a subclass
    (gevent's and eventlet's green contexts) becomes a class deriving from
    both, as with ``enable()``.
    """
    engine = engines.select()
    if always_switch or engine.needs_context_class:
        if type(context) is STDLIB_CONTEXT:
            context.__class__ = SSLContext
        else:
            _adopt_existing(context)
    engine.enable(context, options)
    return context


def derive_context(base: ssl.SSLContext, *, verify: bool,
                   trust: str | os.PathLike[str] | None = None,
                   also_trust: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """A new client context like ``base``: same options, flags and protocol versions.

    ``verify=False``: no verification, and so no AIA (nothing is fetched when
    nobody verifies).  Otherwise AIA-enabled with ``base``'s options, trusting
    ``trust`` (a CA file or directory) if given, else what ``base`` trusts
    plus ``also_trust`` if given.  ``base`` is only read.
    """
    context = new_plain_context(ssl.PROTOCOL_TLS_CLIENT)
    context.options = base.options
    context.minimum_version = base.minimum_version
    context.maximum_version = base.maximum_version
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context.verify_flags = base.verify_flags
    engine = engines.enabled_engine(base)
    options = (engine.options_of(base) if engine is not None else None) or DEFAULT
    # Enabled before anything is loaded, so that the context records what it
    # loads (the fallback engine reads it back: engines/fallback/sources.py).
    adopt(context, options, always_switch=True)
    if trust is not None:
        _load_path(context, trust)
        return context
    sources = trust_sources(base)
    ders = list(dict.fromkeys([*base.get_ca_certs(binary_form=True), *sources.certificates]))
    if ders:
        # PEM, not concatenated DER: PyPy 3.11's _ssl raises at the end of DER
        # data with OpenSSL 3.5 ("not enough data"), where PEM ends cleanly.
        context.load_verify_locations(cadata="".join(ssl.DER_cert_to_PEM_cert(d) for d in ders))
    if sources.default_paths:
        context.set_default_verify_paths()
    for capath in sources.capaths:
        context.load_verify_locations(capath=capath)
    for blocks in sources.files:
        load_pem_file_data(context, blocks)
    if also_trust is not None:
        _load_path(context, also_trust)
    return context


def _load_path(context: ssl.SSLContext, path: str | os.PathLike[str]) -> None:
    """A CA file, or a hashed directory (as requests' ``verify=`` may name either)."""
    where = os.fspath(path)
    if os.path.isdir(where):
        context.load_verify_locations(capath=where)
    else:
        context.load_verify_locations(cafile=where)


def _system_store_has_certificates(context: ssl.SSLContext) -> str | None:
    """Where the system trust store was found, or None if it is empty."""
    if context.get_ca_certs():
        return "certificates loaded into the context"
    paths = ssl.get_default_verify_paths()
    if paths.cafile and os.path.isfile(paths.cafile) and os.path.getsize(paths.cafile) > 0:
        return paths.cafile
    if paths.capath and os.path.isdir(paths.capath):
        with os.scandir(paths.capath) as entries:
            if any(entry.is_file() for entry in entries):
                return paths.capath
    return None


@documented
def create_default_context(
    purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH,
    *,
    cafile: StrPath | None = None,
    capath: StrPath | None = None,
    cadata: str | bytes | None = None,
    **options: Unpack[OptionsKwargs],
) -> ssl.SSLContext:
    """``ssl.create_default_context()`` with AIA chasing enabled.

    With no CA argument, the system trust store is used when it holds
    certificates, and certifi's bundle otherwise; the choice is logged at
    DEBUG.  Every default of this Python version is kept (``VERIFY_X509_STRICT``
    and ``VERIFY_X509_PARTIAL_CHAIN`` on 3.13+).  The result is an
    ``aia_ext.SSLContext``.
    """
    return create_default_context_with(purpose, cafile, capath, cadata,
                                       make_options(options))


def create_default_context_with(purpose: ssl.Purpose, cafile: StrPath | None,
                                capath: StrPath | None, cadata: str | bytes | None,
                                options: Options) -> ssl.SSLContext:
    """``create_default_context()`` with options already validated."""
    default_paths = cafile is None and capath is None and cadata is None
    system_store = False
    if not default_paths:
        context = ssl.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)
    else:
        context = ssl.create_default_context(purpose)
        source = _system_store_has_certificates(context)
        if source is None:
            import certifi  # only when the system store is empty

            context.load_verify_locations(cafile=certifi.where())
            log.debug("system trust store is empty; using certifi (%s)", certifi.where())
        else:
            system_store = True
            log.debug("using the system trust store (%s)", source)
    adopt(context, options, always_switch=True)
    # What get_ca_certs() cannot list (default paths, a capath, a CA file's
    # non-CA certificates and CRLs), for an engine that reads the trust
    # store itself; loaded before the context became ours.
    record_trust_sources(context, default_paths=system_store)
    if isinstance(context, VerifyingContext):
        context.record_loaded(cafile, capath, cadata)
    return context


def clear_cache() -> None:
    """Forget every cached AIA response in this process (fetches under way finish),
    the learned intermediates, and the fallback engine's cached verdicts.

    Disk-cache entries stay; remove the directory's files to forget them too.
    """
    # These modules are light; the chase's fetch path is not imported by this.
    from . import binding
    from .chase.cache import cache
    from .chase.learned import store
    from .engines.fallback import verdicts

    cache.clear()
    store.clear()
    binding.forget_learned()
    verdicts.clear()
