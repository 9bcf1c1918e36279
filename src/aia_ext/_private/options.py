"""The keyword options of ``enable()``, ``create_default_context()``, ``inject_into_ssl()``
and ``diagnose()``: validated once, at the public boundary, into one ``Options`` value.

The defaults follow the fetch policy in docs/design.md ("Fetch policy": Chromium's
limits, halved where a Python caller blocks on them); docs/usage.md has the
table for users.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

from .pool import EMPTY, IntermediatesPool

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms)
if TYPE_CHECKING:
    from dataclasses import Field
    from typing import Any, Callable, ClassVar, TypedDict, TypeVar, Union

if TYPE_CHECKING:
    from .der import ParsedCertificate

if TYPE_CHECKING:
    #: ``fetcher(url, timeout) -> bytes``: replaces the built-in HTTP client.
    Fetcher = Callable[[str, float], Union[bytes, bytearray, memoryview]]
    #: ``url_filter(url) -> bool``: False refuses the URL (and every redirect hop).
    UrlFilter = Callable[[str], bool]
    #: What ``intermediates=`` accepts: a path, PEM/DER/PKCS#7 bytes, or a sequence of those.
    IntermediatesSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview,
                                Sequence[Union[str, "os.PathLike[str]", bytes, bytearray,
                                               memoryview]]]

    _F = TypeVar("_F", bound=Callable[..., Any])

    class OptionsKwargs(TypedDict, total=False):
        """The keyword options, for ``**options: Unpack[OptionsKwargs]``.

        A misspelt option is then a type error under ``mypy --strict``, as well
        as a ``TypeError`` at run time.
        """

        timeout: float
        deadline: float
        max_response_bytes: int
        max_fetches: int
        max_urls_per_cert: int
        max_redirects: int
        allow_https: bool
        allow_private: bool
        url_filter: UrlFilter | None
        fetcher: Fetcher | None
        fetch_on_event_loop: bool
        intermediates: IntermediatesSource
        learn_intermediates: bool
        cache_dir: str | os.PathLike[str] | None
else:
    def __getattr__(name: str) -> Any:
        # OptionsKwargs is for type checkers, and typing costs ~3 ms of import:
        # made when asked for (tests/test_options.py reads its annotations).
        if name == "OptionsKwargs":
            return _options_kwargs()
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _options_kwargs() -> type:
    """OptionsKwargs at run time: its keys; the types are the type checker's (above)."""
    from typing import TypedDict

    return TypedDict("OptionsKwargs", dict.fromkeys(FIELDS, object),  # type: ignore[operator,no-any-return]
                     total=False)


#: The fields of ``Options``, in order (its positional parameters, its repr).
FIELDS = ("timeout", "deadline", "max_response_bytes", "max_fetches", "max_urls_per_cert",
          "max_redirects", "allow_https", "allow_private", "url_filter", "fetcher",
          "fetch_on_event_loop", "intermediates", "learn_intermediates", "cache_dir")


class _DataclassFields:
    """``Options.__dataclass_fields__``, built on first use.

    ``Options`` behaves as the frozen dataclass it was documented as
    (``dataclasses.fields()``, ``replace()`` and ``asdict()`` work on it) without
    importing ``dataclasses`` on ``import aia_ext``: that import, with
    ``inspect``, and the generated methods cost about 12 ms of a ~35 ms import
    (issue 25; docs/design.md, "Import time").  The fields are those of a
    dataclass of the same shape, made here when first asked for.
    """

    def __init__(self) -> None:
        self._fields: dict[str, Any] | None = None

    def __get__(self, instance: object, owner: type | None = None) -> dict[str, Any]:
        if self._fields is None:
            import dataclasses

            shadow = dataclasses.make_dataclass(
                "Options", [(name, object, dataclasses.field(default=getattr(DEFAULT, name)))
                            for name in FIELDS], frozen=True)
            self._fields = vars(shadow)["__dataclass_fields__"]
        return self._fields


class Options:
    """The fetch policy of one enabled context: validated, immutable.

    Build it from keywords with ``make_options``; every public function does
    that once and hands the value down.  Frozen, hashable and comparable, and
    a dataclass to ``dataclasses.fields()``, ``replace()`` and ``asdict()``.

    :ivar timeout: seconds one fetch may take (connect, redirects and body).
    :ivar deadline: seconds all fetches of one verification may take together.
    :ivar max_response_bytes: largest AIA response read.
    :ivar max_fetches: network fetches per verification.
    :ivar max_urls_per_cert: caIssuers URLs tried per certificate.
    :ivar max_redirects: redirects followed per fetch, each re-checked.
    :ivar allow_https: fetch https caIssuers URLs too (never with AIA themselves).
    :ivar allow_private: connect to loopback and private addresses (internal CAs).
    :ivar url_filter: ``url -> bool``; False refuses the URL and every redirect hop.
    :ivar fetcher: ``(url, timeout) -> bytes`` replacing the built-in HTTP client.
    :ivar fetch_on_event_loop: allow network fetches in a transport's handshake (an
        SSLObject: asyncio, anyio) on a thread running an event loop (False: only the pool
        and the caches there; a synchronous caller's socket is not affected).
    :ivar intermediates: known intermediates, untrusted, tried before any fetch.
    :ivar learn_intermediates: remember the intermediates of verified paths, untrusted,
        and try them before any fetch (False: none learned or used).
    :ivar cache_dir: directory of the opt-in disk cache (None: memory only).
    """

    __slots__ = FIELDS
    if TYPE_CHECKING:
        # typeshed's DataclassInstance protocol: what dataclasses.fields(),
        # replace() and asdict() take, so they type-check on Options (issue 32).
        __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
    else:
        __dataclass_fields__ = _DataclassFields()

    timeout: float
    deadline: float
    max_response_bytes: int
    max_fetches: int
    max_urls_per_cert: int
    max_redirects: int
    allow_https: bool
    allow_private: bool
    url_filter: UrlFilter | None
    fetcher: Fetcher | None
    fetch_on_event_loop: bool
    intermediates: IntermediatesPool
    learn_intermediates: bool
    cache_dir: str | None

    def __init__(self, timeout: float = 5.0, deadline: float = 10.0,
                 max_response_bytes: int = 64 * 1024, max_fetches: int = 8,
                 max_urls_per_cert: int = 5, max_redirects: int = 3,
                 allow_https: bool = False, allow_private: bool = True,
                 url_filter: UrlFilter | None = None, fetcher: Fetcher | None = None,
                 fetch_on_event_loop: bool = True, intermediates: IntermediatesPool = EMPTY,
                 learn_intermediates: bool = True, cache_dir: str | None = None) -> None:
        given = locals()
        for name in FIELDS:
            object.__setattr__(self, name, given[name])

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in FIELDS)

    def __setattr__(self, name: str, value: object) -> None:
        raise _frozen(name)

    def __delattr__(self, name: str) -> None:
        raise _frozen(name)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in FIELDS)
        return f"{type(self).__qualname__}({fields})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Options)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __reduce__(self) -> tuple[type[Options], tuple[Any, ...]]:
        # pickle and copy rebuild it through __init__ (__setattr__ refuses).
        return (type(self), self._values())

    def __replace__(self, **changes: Any) -> Options:
        """``copy.replace(options, ...)`` (Python 3.13), as for a frozen dataclass.

        An unknown name is the ``TypeError`` of ``__init__``, naming it.
        """
        values = {name: getattr(self, name) for name in FIELDS}
        values.update(changes)
        return type(self)(**values)


def replace(options: Options, **changes: Any) -> Options:
    """``options`` with ``changes`` (unvalidated: for values chosen in this package)."""
    return options.__replace__(**changes)


def _frozen(name: str) -> AttributeError:
    from dataclasses import FrozenInstanceError  # what a frozen dataclass raises

    return FrozenInstanceError(f"cannot assign to field {name!r}")


DEFAULT = Options()

#: The options, as every options-taking public function's docstring lists them.
HELP = """
    Options (keywords; each is validated, a bad value is a ValueError naming it):

    - ``timeout`` (5.0): seconds one fetch may take, redirects included;
    - ``deadline`` (10.0): seconds all fetches of one verification may take;
    - ``max_response_bytes`` (65536): largest AIA response read;
    - ``max_fetches`` (8): network fetches per verification;
    - ``max_urls_per_cert`` (5): caIssuers URLs tried per certificate;
    - ``max_redirects`` (3): redirects followed, each hop re-checked;
    - ``allow_https`` (False): fetch https caIssuers URLs too;
    - ``allow_private`` (True): connect to loopback and private addresses;
    - ``url_filter`` (None): ``url -> bool``; False refuses the URL and its redirects;
    - ``fetcher`` (None): ``(url, timeout) -> bytes``, replacing the HTTP client;
    - ``fetch_on_event_loop`` (True): False keeps network fetches out of a transport's
      handshake on a thread that runs an event loop (pool and caches only there; see
      ``aprefetch()``); a synchronous caller's socket handshake (a notebook cell's
      ``requests.get()``) fetches as anywhere else;
    - ``intermediates`` (()): path, PEM/DER/PKCS#7 bytes or a list of those: known
      intermediates, untrusted, tried before any fetch; CCADB's CSV report is read too;
    - ``learn_intermediates`` (True): remember the intermediates of verified paths
      (process-wide, untrusted) and try them before any fetch;
    - ``cache_dir`` (None, or ``AIA_EXT_CACHE_DIR``): the opt-in disk cache.
"""


def documented(function: _F) -> _F:
    """Append the options list to ``function``'s docstring (so ``help()`` shows them)."""
    if function.__doc__ is not None:  # None under python -OO
        function.__doc__ = function.__doc__.rstrip() + "\n" + HELP
    return function

# (lowest allowed, highest allowed) for the numeric options.  The upper bounds
# keep a typo from turning a bounded hostile-input path into an unbounded one.
_FLOAT_RANGES = {"timeout": (0.0, 300.0), "deadline": (0.0, 600.0)}
_INT_RANGES = {
    "max_response_bytes": (1024, 16 * 1024 * 1024),
    "max_fetches": (0, 64),
    "max_urls_per_cert": (1, 20),
    "max_redirects": (0, 10),
}
_BOOLS = ("allow_https", "allow_private", "fetch_on_event_loop", "learn_intermediates")
_CALLABLES = ("url_filter", "fetcher")
NAMES = frozenset(FIELDS)
#: Bytes read from one ``intermediates`` file at most (a Mozilla-size preload
#: set of ~1,700 intermediates is ~3 MB of PEM).
MAX_INTERMEDIATES_FILE = 64 * 1024 * 1024
#: Certificates in the whole ``intermediates`` pool at most.
MAX_INTERMEDIATES = 100_000


def _check_float(name: str, value: Any) -> float:
    low, high = _FLOAT_RANGES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or not low < value <= high:
        raise ValueError(f"{name} must be > {low:g} and <= {high:g} seconds, got {value!r}")
    return float(value)


def _check_int(name: str, value: Any) -> int:
    low, high = _INT_RANGES[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value!r}")
    return value


def make_options(given: Mapping[str, Any]) -> Options:
    """Validate keyword options once; a bad value is a ValueError naming it.

    An unknown name is a TypeError listing the known ones.  Files named by
    ``intermediates`` are read here, once, not per context or handshake.
    """
    unknown = sorted(set(given) - NAMES)
    if unknown:
        raise TypeError(
            f"unexpected option(s) {', '.join(unknown)}; known options: {', '.join(sorted(NAMES))}"
        )
    checked: dict[str, Any] = {}
    for name, value in given.items():
        if name in _FLOAT_RANGES:
            checked[name] = _check_float(name, value)
        elif name in _INT_RANGES:
            checked[name] = _check_int(name, value)
        elif name in _BOOLS:
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False, not {value!r}")
            checked[name] = value
        elif name in _CALLABLES:
            if value is not None and not callable(value):
                raise ValueError(f"{name} must be callable or None, not {type(value).__name__}")
            checked[name] = value
        elif name == "intermediates":
            checked[name] = _load_intermediates(value)
        elif name == "cache_dir":
            checked[name] = _check_cache_dir(value)
    if "cache_dir" not in given and os.environ.get("AIA_EXT_CACHE_DIR"):
        checked["cache_dir"] = _check_cache_dir(os.environ["AIA_EXT_CACHE_DIR"],
                                                "AIA_EXT_CACHE_DIR")
    return Options(**checked) if checked else DEFAULT


def _load_intermediates(value: Any) -> IntermediatesPool:
    """A path, PEM/DER/PKCS#7 bytes, or a list of those -> parsed certificates."""
    # The certificate reader is only needed when a pool is given: kept off
    # `import aia_ext` (docs/design.md, "Import time").
    from .bundle import BundleError, certificates_in_bundle
    from .ccadb import ReportError, certificates_in_report, looks_like_report

    items = value if isinstance(value, (list, tuple)) else [value]
    certs: list[ParsedCertificate] = []
    for item in items:
        if isinstance(item, (bytes, bytearray, memoryview)):
            data, where = bytes(item), "bytes"
        elif isinstance(item, (str, os.PathLike)):
            where = os.fspath(item)
            try:
                with open(where, "rb") as f:
                    data = f.read(MAX_INTERMEDIATES_FILE + 1)
                if len(data) > MAX_INTERMEDIATES_FILE:
                    raise ValueError(f"intermediates: {where} is larger than "
                                     f"{MAX_INTERMEDIATES_FILE} bytes")
            except OSError as exc:
                raise ValueError(f"intermediates: cannot read {where}: "
                                 f"{exc.strerror or exc}") from None
        else:
            raise ValueError("intermediates must be a path, PEM/DER bytes, or a list of those, "
                             f"not {type(item).__name__}")
        room = MAX_INTERMEDIATES + 1 - len(certs)
        if looks_like_report(data):  # CCADB's CSV: every row checked (ccadb.py)
            try:
                certs.extend(certificates_in_report(data, room))
            except ReportError as exc:
                raise ValueError(f"intermediates: {where}: {exc}") from None
            continue
        try:
            certs.extend(certificates_in_bundle(data, room))
        except BundleError:
            raise ValueError(f"intermediates: no certificate in {where}") from None
        if len(certs) > MAX_INTERMEDIATES:
            raise ValueError(f"intermediates: more than {MAX_INTERMEDIATES} certificates "
                             f"(at {where}); split the pool or keep the ones you need")
    return IntermediatesPool(certs)


def untrusted_reason(info: os.stat_result) -> str | None:
    """Why a directory with this status must not be used as a cache, or None if it may:
    one another user could write to, as OpenSSH refuses such a configuration."""
    import stat

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


def _check_cache_dir(value: Any, name: str = "cache_dir") -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name} must be a directory path, not {type(value).__name__}")
    path = os.path.abspath(os.fspath(value))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        # Created (mode 0700) on the first write.
        return path
    except OSError as exc:
        raise ValueError(f"{name}: cannot use {path}: {exc.strerror or exc}") from None
    # The same check as before every use (chase/diskcache.py), here too, so
    # that a directory which would be refused is refused now, with the
    # reason, and not with a WARNING nobody sees (issue 32, item 5).
    reason = untrusted_reason(info)
    if reason is not None:
        raise ValueError(f"{name}: {path} cannot be a cache: {reason}")
    return path
