"""aia_ext's loggers, and escaping for what certificates and URLs say in a log line.

A certificate's subject and its caIssuers URL are attacker input: a CR/LF
would forge a log line, an ESC sequence would rewrite a terminal.  Every log
call and exception message that embeds such text passes it through
``escape()`` (CWE-117).

Every module logs through ``get_logger(__name__)``: ``logging.getLogger``'s
logger for the module, made when the module first logs.  Until then neither
it nor ``logging`` is imported: ``logging`` (with ``re``, which it imports)
was the largest part of ``import aia_ext`` (~16 ms of ~40; issue 31, item 6).
When the first logger is made, the package logger gets its ``NullHandler``,
as urllib3's has: a library never writes to an application's stderr
through logging's last resort.

A module's logger stays quiet on a thread while one of aia_ext's own records
is being emitted there.  A handler that ships records over TLS
(``HTTPHandler`` with ``secure=True``, a log shipper) makes a handshake while
it emits; aia_ext logging from inside that handshake would ship again, and so
on until ``RecursionError`` (issue 31, item 2).  Other threads log as usual.
"""

from __future__ import annotations

import sys
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Any

_emitting = threading.local()
_lock = threading.Lock()
_PACKAGE = "aia_ext"


def _not_while_emitting(record: logging.LogRecord) -> bool:
    return not getattr(_emitting, "depth", 0)


def _make(name: str) -> logging.Logger:
    import logging  # on the first record a module logs

    with _lock:
        package = logging.getLogger(_PACKAGE)
        if not any(type(h) is logging.NullHandler for h in package.handlers):
            package.addHandler(logging.NullHandler())
        log = logging.getLogger(name)
        if _not_while_emitting not in log.filters:
            call_handlers = log.callHandlers

            def guarded(record: logging.LogRecord, *args: Any) -> None:
                _emitting.depth = getattr(_emitting, "depth", 0) + 1
                try:
                    call_handlers(record, *args)
                finally:
                    _emitting.depth -= 1

            log.callHandlers = guarded  # type: ignore[method-assign]
            log.addFilter(_not_while_emitting)
    return log


class ModuleLogger:
    """A module's logger: ``logging``'s, made on first use."""

    __slots__ = ("_logger", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    @property
    def logger(self) -> logging.Logger:
        if self._logger is None:
            self._logger = _make(self.name)
        return self._logger

    def _heard(self) -> bool:
        """Whether a record could reach anyone.  With no ``logging`` module in the
        process, no handler exists anywhere, and the package's ``NullHandler`` would
        keep logging's last resort quiet: the record would go nowhere, so neither it
        nor ``logging`` is made."""
        return self._logger is not None or "logging" in sys.modules

    def isEnabledFor(self, level: int) -> bool:
        return self._heard() and self.logger.isEnabledFor(level)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        if self._heard():
            self.logger.debug(msg, *args, stacklevel=2, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        if self._heard():
            self.logger.info(msg, *args, stacklevel=2, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        if self._heard():
            self.logger.warning(msg, *args, stacklevel=2, **kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        if self._heard():
            self.logger.error(msg, *args, stacklevel=2, **kwargs)

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        # Called from exception handlers, as logging's own is.
        if self._heard():
            self.logger.exception(msg, *args, stacklevel=2, **kwargs)  # noqa: LOG004



def get_logger(name: str) -> ModuleLogger:
    """The logger of module ``name`` (``logging.getLogger(name)`` once it first logs)."""
    return ModuleLogger(name)


#: Characters kept as they are: printable ASCII and printable non-ASCII.
_MAX_LENGTH = 512


def escape(text: object, limit: int = _MAX_LENGTH) -> str:
    """``text`` with control characters as ``\\xNN`` escapes, cut at ``limit`` characters."""
    value = str(text)
    if len(value) > limit:
        value = value[:limit] + "..."
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
