"""Escaping for text from certificates and URLs before it reaches a log line or a message.

A certificate's subject and its caIssuers URL are attacker input: a CR/LF
would forge a log line, an ESC sequence would rewrite a terminal.  Every log
call and exception message that embeds such text passes it through
``escape()`` (CWE-117).
"""

from __future__ import annotations

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
