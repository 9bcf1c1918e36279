"""HTTP/1.1 for one caIssuers GET, on h11: the request out, a strictly parsed, bounded response in.

Sans-IO: ``request()`` gives the bytes to send and ``reader()`` a generator
that asks for reads (it yields how many bytes it wants and is sent what came,
b"" at end of stream) and returns the response; ``exchange()`` drives both
over blocking ``send``/``recv`` callables, the asyncio fetcher (afetch.py)
over a stream.  The caller enforces time; this module enforces everything
about the bytes.  The response comes from a server named by a
certificate nobody has verified (docs/design.md, invariant 5), so:

- framing is h11's, which rejects what RFC 9112 forbids (a negative or
  non-hex chunk size, conflicting lengths, obsolete line folding, header
  injection) instead of guessing as ``http.client`` does;
- the status line and headers may take ``MAX_HEAD`` bytes, the body
  ``max_body``, and the whole exchange ``max_body * 2 + MAX_HEAD`` raw bytes
  (chunk framing included), checked before each read, so memory stays bounded
  whatever the framing;
- the number of parser events is bounded, so a body of one-byte chunks
  cannot buy unbounded CPU;
- any malformed input is a ``FetchError`` with a reason, never another exception.

h11 is the parser httpx's core (httpcore) is built on; docs/design.md says
why it is used rather than ``http.client`` or a parser of our own.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Callable, NamedTuple

import h11

from ..errors import FetchError

#: Status line plus headers, at most.  Real AIA responses send under 1 KiB.
MAX_HEAD = 16 * 1024
#: Parser events (response head, body pieces, 1xx responses) per response.
#: A real response has a handful; each costs the parser ~15 microseconds.
MAX_EVENTS = 2048
#: Bytes asked of the socket at once.
READ_SIZE = 16 * 1024

_ACCEPT = (
    "application/pkix-cert, application/pkcs7-mime, application/x-x509-ca-cert, "
    "application/x-pkcs7-certificates, application/x-pem-file;q=0.9, */*;q=0.1"
)
_USER_AGENT = "aia_ext (AIA caIssuers fetch)"
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Response(NamedTuple):
    status: int
    reason: str
    location: str  # the Location header of a redirect, "" otherwise
    body: bytes  # read only for a 200


def request(target: str, host: str) -> tuple[h11.Connection, bytes]:
    """A GET of ``target`` (origin- or absolute-form) with Host ``host``: (the
    connection state to read the response with, the bytes to send).

    Exactly these headers are sent: Host, Accept, Accept-Encoding (identity),
    User-Agent and Connection (close): no cookies, credentials or anything
    else a client might hold.
    """
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    try:
        data = conn.send(h11.Request(method="GET", target=target, headers=[
            ("Host", host), ("Accept", _ACCEPT), ("Accept-Encoding", "identity"),
            ("User-Agent", _USER_AGENT), ("Connection", "close"),
        ]))
        data += conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError as exc:  # a target or host h11 will not write
        raise FetchError("refused by policy: malformed URL", str(exc)) from None
    return conn, data


def exchange(send: Callable[[bytes], None], recv: Callable[[int], bytes], target: str,
             host: str, max_body: int) -> Response:
    """GET ``target`` with Host ``host`` over blocking I/O; the bounded response."""
    conn, data = request(target, host)
    send(data)
    steps = reader(conn, max_body)
    size = next(steps)
    while True:
        try:
            size = steps.send(recv(size))
        except StopIteration as done:
            response: Response = done.value
            return response


def reader(conn: h11.Connection, max_body: int) -> Generator[int, bytes, Response]:
    """The response, read under every budget: yields read sizes, is sent the data."""
    raw_budget = 2 * max_body + MAX_HEAD
    raw = 0
    events = 0
    head: h11.Response | None = None
    body: list[bytes] = []
    size = 0
    while True:
        events += 1
        if events > MAX_EVENTS:
            raise FetchError("bad HTTP response", f"more than {MAX_EVENTS} framing events")
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if head is None and "too long" in str(exc):  # h11: "Receive buffer too long"
                raise FetchError("bad HTTP response",
                                 f"response head exceeds {MAX_HEAD} bytes") from None
            raise FetchError("bad HTTP response", _describe(exc)) from None
        if event is h11.NEED_DATA:
            if raw > raw_budget:
                raise FetchError("too large", f"more than {raw_budget} bytes on the wire")
            data = yield min(READ_SIZE, raw_budget + 1 - raw)
            raw += len(data)
            try:
                conn.receive_data(data)  # b"" tells h11 the stream ended
            except RuntimeError as exc:  # receive after an EOF h11 already saw
                raise FetchError("bad HTTP response", str(exc)) from None
            continue
        if isinstance(event, h11.InformationalResponse):
            continue  # 1xx: the real response follows
        if isinstance(event, h11.Response):
            head = event
            early = _check_head(event, max_body)
            if early is not None:
                return early
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > max_body:
                raise FetchError("too large", f"body exceeds {max_body} bytes")
            body.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return Response(head.status_code, _text(head.reason), "", b"".join(body))
        elif isinstance(event, h11.ConnectionClosed):
            raise FetchError("bad HTTP response", "connection closed before the response ended")
        else:  # PAUSED cannot happen for a client's first response
            raise FetchError("bad HTTP response", f"unexpected {type(event).__name__}")


def _check_head(response: h11.Response, max_body: int) -> Response | None:
    """Refuse what the head alone condemns; a final Response when no body is needed."""
    if response.http_version not in (b"1.0", b"1.1"):
        raise FetchError("bad HTTP response", f"HTTP version {_text(response.http_version)!r}")
    headers = {name: value for name, value in response.headers}
    status = response.status_code
    if status in REDIRECTS:
        location = headers.get(b"location")
        return Response(status, _text(response.reason), _text(location or b""), b"")
    if status != 200:
        return Response(status, _text(response.reason), "", b"")
    declared = headers.get(b"content-length")
    # h11 has already refused a malformed or conflicting Content-Length.
    if declared is not None and int(declared) > max_body:
        raise FetchError("too large", f"Content-Length {int(declared)} > {max_body}")
    coding = headers.get(b"content-encoding", b"identity").strip().lower()
    if coding != b"identity":
        # Never inflate: a few bytes of gzip can be gigabytes of body.
        raise FetchError("bad HTTP response", f"Content-Encoding {_text(coding)!r} refused")
    return None


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def _describe(exc: h11.RemoteProtocolError) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
