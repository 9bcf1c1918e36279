"""Cases 8-16: AIA servers that answer with junk, lie, stall, flood or hang up."""

from __future__ import annotations

import gzip
import logging
import socket
import ssl
import threading
import time

import pytest

from aia_ext._private.testing import issue

from ..helpers import unique_path, verify_code
from .hostile import DEADLINE, MARGIN, bounded, settle_threads, tight_context


def _headers(handler, status=200, **headers):
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), str(value))
    handler.end_headers()


def _write(handler, data: bytes) -> None:
    try:
        handler.wfile.write(data)
        handler.wfile.flush()
    except OSError:
        pass  # the client gave up, as it should


def _der(tag: int, content: bytes) -> bytes:
    return bytes([tag, 0x83]) + len(content).to_bytes(3, "big") + content


def junk_pkcs7(inter):
    """A well-formed SignedData whose certificates set holds 1,000 junk SEQUENCEs."""
    junk = b"\x30\x06\x02\x01\x01\x02\x01\x02" * 1000
    signed_data = _der(0x30, bytes.fromhex("020101" "3100" "300b06092a864886f70d010701")
                       + _der(0xA0, junk) + b"\x31\x00")
    return _der(0x30, bytes.fromhex("06092a864886f70d010702") + _der(0xA0, signed_data))


def pem_then_junk(inter):
    return inter.pem + b"A" * (3 * 1024 * 1024)


def html_page(inter):
    return b"<html><head><title>Error</title></head><body>Service unavailable</body></html>"


def lying_length(handler, inter):
    _headers(handler, Content_Length=len(inter.der) + 5000)
    _write(handler, inter.der[: len(inter.der) // 2])  # then hang up


def reset_mid_body(handler, inter):
    _headers(handler, Content_Length=len(inter.der))
    _write(handler, inter.der[:100])
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    handler.connection.close()  # RST, not FIN


def gzip_bomb(handler, inter):
    bomb = gzip.compress(b"\0" * (10 * 1024 * 1024))  # 10 MiB inflated, ~10 KiB on the wire
    _headers(handler, Content_Encoding="gzip", Content_Length=len(bomb))
    _write(handler, bomb)


def header_flood(handler, inter):
    handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
    for i in range(5000):
        _write(handler, b"X-Flood-%d: %s\r\n" % (i, b"y" * 100))
    _write(handler, b"\r\n" + inter.der)


def long_header_line(handler, inter):
    _write(handler, b"HTTP/1.1 200 OK\r\nX-Long: " + b"z" * 200_000 + b"\r\n\r\n")


def huge_body(handler, inter):
    _headers(handler, Content_Type="application/pkix-cert")  # no length: read to EOF
    for _ in range(10 * 16):  # 10 MiB
        _write(handler, b"\x30" * 65536)


def endless_chunked(handler, inter):
    _headers(handler, Transfer_Encoding="chunked")
    for _ in range(100_000):
        _write(handler, b"10000\r\n" + b"\x30" * 0x10000 + b"\r\n")


BODIES = {  # case: body builder
    "pkcs7-1000-junk-certificates": junk_pkcs7,
    "pem-then-megabytes-of-junk": pem_then_junk,
    "empty-body": lambda inter: b"",
    "html-error-page": html_page,
}
HANDLERS = {  # case: handler(handler, intermediate)
    "content-length-lies": lying_length,
    "connection-reset-mid-body": reset_mid_body,
    "gzip-bomb": gzip_bomb,
    "header-flood": header_flood,
    "header-line-flood": long_header_line,
    "10-MiB-body": huge_body,
    "endless-chunked-body": endless_chunked,
}
# The reason the WARNING line gives for each case.
REASONS = {
    "pkcs7-1000-junk-certificates": "parse error: malformed PKCS#7: too many elements",
    "pem-then-megabytes-of-junk": "too large: Content-Length",
    "empty-body": "parse error: no certificate in the response",
    "html-error-page": "parse error: no certificate in the response",
    "content-length-lies": "bad HTTP response: peer closed connection without sending "
                           "complete message body",
    "connection-reset-mid-body": "connection error:",
    "gzip-bomb": "bad HTTP response: Content-Encoding 'gzip' refused",
    "header-flood": "bad HTTP response: response head exceeds 16384 bytes",
    "header-line-flood": "bad HTTP response: response head exceeds 16384 bytes",
    "10-MiB-body": "too large: body exceeds 65536 bytes",
    "endless-chunked-body": "too large: body exceeds 65536 bytes",
}


@pytest.mark.parametrize("case", sorted(BODIES) + sorted(HANDLERS))
def test_hostile_response_is_no_certificate(case, aia, root, root_file, server, healthy, caplog):
    inter = issue("Intermediate", root, ca=True)
    path = unique_path()
    if case in BODIES:
        url = aia.serve(path, BODIES[case](inter))
    else:
        url = aia.serve(path, b"", handler=lambda h: HANDLERS[case](h, inter))
    leaf = issue("localhost", inter, aia=[url], dns=["localhost"])
    with caplog.at_level(logging.WARNING, logger="aia_ext"), bounded():
        assert verify_code(tight_context(root_file), server(leaf)) == 20
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"{url}: {REASONS[case]}" in warnings[0]
    assert aia.hits[path] == 1
    healthy()


def test_100_concurrent_handshakes_against_a_slow_aia_server(aia, root, root_file, server,
                                                             healthy):
    inter = issue("Intermediate", root, ca=True)

    def slow(handler):
        time.sleep(DEADLINE + 1)  # longer than the whole deadline

    path = unique_path()
    url = aia.serve(path, b"", handler=slow)
    srv = server(issue("localhost", inter, aia=[url], dns=["localhost"]))
    ctx = tight_context(root_file)
    baseline = threading.active_count()
    results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def worker() -> None:
        started = time.monotonic()
        code = verify_code(ctx, srv)
        with lock:
            results.append((code, time.monotonic() - started))

    threads = [threading.Thread(target=worker) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE + 30)
    assert len(results) == 100
    assert {code for code, _ in results} == {20}
    slowest = max(elapsed for _, elapsed in results)
    assert slowest < DEADLINE + MARGIN, f"slowest handshake took {slowest:.2f}s"
    assert aia.hits[path] == 1  # one fetch for all hundred (single flight)
    # No thread of ours outlives its handshake (the AIA server's sleeping
    # handler thread is the server's, and ends on its own).
    assert settle_threads(baseline, timeout=DEADLINE + 5) <= 0
    healthy()


def test_verify_error_keeps_its_code_and_ssl_type(aia, root, root_file, server):
    inter = issue("Intermediate", root, ca=True)
    url = aia.serve(unique_path(), b"junk")
    srv = server(issue("localhost", inter, aia=[url], dns=["localhost"]))
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        with socket.create_connection(srv.address) as raw:
            tight_context(root_file).wrap_socket(raw, server_hostname="localhost")
    assert info.value.verify_code == 20
    assert info.value.verify_message == "unable to get local issuer certificate"
