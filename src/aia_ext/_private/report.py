"""Per-connection reports: what AIA chasing did during one verification.

The engine that verified a connection says which chase belongs to it (the
native engine stores the chase id in the connection's own SSL ex_data; the
fallback engine on the socket object), so ``report(conn)`` finds exactly this
connection's chase, and a connection that needed none has no report.
"""

from __future__ import annotations

import ssl

from . import binding, engines
from .chase import finished
from .records import AddedCertificate, FailedAttempt, Report, from_chase

__all__ = ["AddedCertificate", "FailedAttempt", "Report", "from_chase", "report"]

def report(conn: object) -> Report | None:
    """The AIA report of ``conn``'s handshake, or None if no chasing was needed.

    ``conn`` is an ``ssl.SSLSocket`` or ``ssl.SSLObject`` whose context is
    enabled, after its handshake, or the ``_ssl._SSLSocket`` inside either
    (what httpx/httpcore return as ``get_extra_info("ssl_object")``).
    Reports of the most recent 1,024 chases are kept; an older one is None too.

    :raises TypeError: ``conn`` is not a TLS connection object.
    """
    for engine in engines.ALL:
        found = engine.chase_of(conn)
        if found is not None:
            break
    else:
        if not _is_connection(conn):
            raise TypeError("expected an ssl.SSLSocket or ssl.SSLObject, "
                            f"got {type(conn).__name__}")
        return None
    state = finished.get(found.chase_id) if found.chase_id else None
    return from_chase(state, found.verified_chain) if state is not None else None


def _is_connection(conn: object) -> bool:
    if isinstance(conn, (ssl.SSLSocket, ssl.SSLObject)):
        return True
    try:
        return isinstance(conn, binding.low_level_socket_type())
    except ImportError:  # pragma: no cover
        return False
