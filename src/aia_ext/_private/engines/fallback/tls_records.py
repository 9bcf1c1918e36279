"""TLS bytes the fallback engine reads and writes itself: Certificate messages and alerts.

The message callback ``_ssl`` offers (``SSLContext._msg_callback``) hands over
each handshake message as bytes.  The fallback reads the server's
certificates out of the Certificate message, and when it refuses them it
writes the fatal alert OpenSSL would have sent, before shutting the socket.
"""

from __future__ import annotations

import _socket
import struct

from ...logtext import get_logger

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)

#: TLS content types and handshake message types (RFC 8446 section 5.1, 4).
HANDSHAKE = 22
_ALERT = 21
SERVER_HELLO = 2
CERTIFICATE = 11
#: The protocol version numbers of TLS 1.2 and 1.3.
TLS1_2, TLS1_3 = 0x0303, 0x0304
#: An alert record's body: a level and a description (RFC 8446 section 6).
_ALERT_LENGTH = 2
_FATAL = 2


def is_certificate(content_type: int, data: bytes) -> bool:
    return content_type == HANDSHAKE and data[:1] == bytes((CERTIFICATE,))


def certificates_in_message(data: bytes, tls13: bool) -> list[bytes]:
    """The DER certificates of a TLS Certificate handshake message (with its header).

    RFC 8446 4.4.2 (a request context, then entries with extensions) and
    RFC 5246 7.4.2 (a list of certificates); each length is checked against
    what is left, so a short or inconsistent message yields what parsed.
    """
    pos, end = 4, len(data)  # after msg_type and the 3-byte length
    if tls13:
        if pos >= end:
            return []
        pos += 1 + data[pos]  # certificate_request_context
    if pos + 3 > end:
        return []
    end = min(end, pos + 3 + int.from_bytes(data[pos:pos + 3], "big"))
    pos += 3
    ders: list[bytes] = []
    while pos + 3 <= end:
        size = int.from_bytes(data[pos:pos + 3], "big")
        pos += 3
        if size == 0 or pos + size > end:
            break
        ders.append(data[pos:pos + size])
        pos += size
        if tls13:
            if pos + 2 > end:
                break
            pos += 2 + int.from_bytes(data[pos:pos + 2], "big")
    return ders


#: The TLS alert OpenSSL sends for a verify code (ssl/statem/statem_lib.c,
#: ssl_x509err2alert); anything else is certificate_unknown (46).
_ALERTS = {
    **dict.fromkeys((2, 3, 18, 19, 20, 21, 22, 24, 25, 33, 79), 48),  # unknown_ca
    **dict.fromkeys((10, 12), 45),  # certificate_expired
    **dict.fromkeys((6, 9, 11, 13, 14, 15, 16, 27, 28, 62, 63, 64, 65, 66, 67, 68, 94),
                    42),  # bad_certificate
    23: 44,  # certificate_revoked
    **dict.fromkeys((4, 5, 7, 8), 51),  # decrypt_error
    26: 43,  # unsupported_certificate
    **dict.fromkeys((1, 17, 69, 70), 80),  # internal_error
}
_CERTIFICATE_UNKNOWN = 46


def _socket_of(conn: Any) -> _socket.socket | None:
    """The socket under a connection (its owner: an SSLSocket, or the raw socket some
    wrappers give ``_ssl``, gevent's); None for an SSLObject's."""
    owner = getattr(conn, "owner", None)
    return owner if isinstance(owner, _socket.socket) else None


def send_alert(conn: Any, version: int, code: int) -> None:
    """Write the fatal alert OpenSSL sends for verify ``code``, unencrypted.

    Only in a connection's first handshake: the server has read no encrypted
    record from this client yet, so OpenSSL accepts a plain alert under TLS
    1.3 too (RFC 8446 section 5; OpenSSL's ALLOW_PLAIN_ALERTS state) and
    reports "alert unknown ca" as with plain ``ssl``.  In a renegotiation
    the records are encrypted, and a plain one would be read as garbage.
    """
    sock = _socket_of(conn)
    if sock is None:
        return  # an SSLObject's owner sends nothing after a failed call (shut())
    record_version = min(version, TLS1_2)  # TLS 1.3 records say TLS 1.2 (RFC 8446 5.1)
    alert = struct.pack("!BHHBB", _ALERT, record_version, _ALERT_LENGTH, _FATAL,
                        _ALERTS.get(code, _CERTIFICATE_UNKNOWN))
    try:
        _socket.socket.send(sock, alert)
    except OSError as exc:
        log.debug("fallback: could not send the alert to a refused server: %s", exc)


def shut(conn: Any) -> None:
    """End a socket's traffic both ways, leaving the descriptor to its owner.

    OpenSSL's next write on it fails, so nothing else leaves: neither the
    client's Finished (and its certificate under TLS 1.3) nor application
    data.  An SSLObject has no socket: its owner sends the bytes OpenSSL
    wrote only when a call succeeded, and every call on a refused connection
    raises (connection.py).
    """
    sock = _socket_of(conn)
    if sock is None:
        return
    try:
        _socket.socket.shutdown(sock, _socket.SHUT_RDWR)
    except OSError as exc:
        log.debug("fallback: could not shut a refused connection down: %s", exc)
