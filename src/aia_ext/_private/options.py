"""Validation of the keyword options of ``enable()`` and ``create_default_context()``.

Defaults and the reasoning behind them are in README.md, "Limits and options";
they follow the fetch policy in DESIGN.md (Chromium's limits, halved where a
Python caller blocks on them).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

if TYPE_CHECKING:
    from .der import ParsedCertificate

__all__ = ["Fetcher", "Options", "UrlFilter", "make_options"]

#: ``fetcher(url, timeout) -> bytes``: replaces the built-in HTTP client.
Fetcher = Callable[[str, float], bytes]
#: ``url_filter(url) -> bool``: False refuses the URL (and every redirect hop).
UrlFilter = Callable[[str], bool]


class Options(NamedTuple):
    """The fetch policy of one enabled context.  Immutable once validated.

    A NamedTuple rather than a dataclass: ``dataclasses`` costs several
    milliseconds of import time, on every program that imports aia_ext.
    """

    timeout: float = 5.0
    deadline: float = 10.0
    max_response_bytes: int = 64 * 1024
    max_fetches: int = 8
    max_urls_per_cert: int = 5
    max_redirects: int = 3
    allow_https: bool = False
    allow_private: bool = True
    url_filter: UrlFilter | None = None
    fetcher: Fetcher | None = None
    #: Known intermediates, parsed: untrusted chain material tried before any fetch.
    intermediates: tuple[ParsedCertificate, ...] = ()
    #: Directory of the opt-in disk cache (None: memory only).
    cache_dir: str | None = None


# (lowest allowed, highest allowed) for the numeric options.  The upper bounds
# keep a typo from turning a bounded hostile-input path into an unbounded one.
_FLOAT_RANGES = {"timeout": (0.0, 300.0), "deadline": (0.0, 600.0)}
_INT_RANGES = {
    "max_response_bytes": (1024, 16 * 1024 * 1024),
    "max_fetches": (0, 64),
    "max_urls_per_cert": (1, 20),
    "max_redirects": (0, 10),
}
_BOOLS = ("allow_https", "allow_private")
_CALLABLES = ("url_filter", "fetcher")
_NAMES = frozenset(Options._fields)


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
    """Validate keyword options up front; a bad value is a ValueError naming it."""
    unknown = sorted(set(given) - _NAMES)
    if unknown:
        raise TypeError(
            f"unexpected option(s) {', '.join(unknown)}; known options: {', '.join(sorted(_NAMES))}"
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
    # A fetch never outlives the deadline: its time is min(timeout, what is left).
    return Options(**checked)


def _load_intermediates(value: Any) -> tuple[ParsedCertificate, ...]:
    """A path, PEM/DER/PKCS#7 bytes, or a list of those -> parsed certificates."""
    from .errors import FetchError
    from .parse import parse_certificates

    items = value if isinstance(value, (list, tuple)) else [value]
    certs: list[ParsedCertificate] = []
    from .der import ParsedCertificate

    for item in items:
        if isinstance(item, ParsedCertificate):  # already validated (Options._asdict())
            certs.append(item)
            continue
        if isinstance(item, (bytes, bytearray, memoryview)):
            data, where = bytes(item), "bytes"
        elif isinstance(item, (str, os.PathLike)):
            where = os.fspath(item)
            try:
                with open(where, "rb") as f:
                    data = f.read(16 * 1024 * 1024)
            except OSError as exc:
                raise ValueError(f"intermediates: cannot read {where}: "
                                 f"{exc.strerror or exc}") from None
        else:
            raise ValueError("intermediates must be a path, PEM/DER bytes, or a list of those, "
                             f"not {type(item).__name__}")
        try:
            certs.extend(parse_certificates(data))
        except FetchError:
            raise ValueError(f"intermediates: no certificate in {where}") from None
    return tuple(certs)


def _check_cache_dir(value: Any, name: str = "cache_dir") -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name} must be a directory path, not {type(value).__name__}")
    path = os.path.abspath(os.fspath(value))
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{name}: cannot use {path}: {exc.strerror or exc}") from None
    return path
