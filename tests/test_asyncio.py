"""asyncio honesty: a fetch on the event loop's thread is reported once, and can be refused.

The handshake of an asyncio connection runs on the loop's thread, so a network
fetch inside it stalls every task.  Against a real AIA server on 127.0.0.1 that
answers after a delay.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

import aia_ext
from aia_ext._private.chase import core

from .helpers import closed, fetches_of

DELAY = 0.2


@pytest.fixture(autouse=True)
def _fresh_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "_loop_warned", core.threading.Event())


def _slow(body: bytes):
    def handler(request) -> None:
        time.sleep(DELAY)
        request.send_response(200)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    return handler


async def _connect(srv, ctx) -> None:
    _reader, writer = await asyncio.open_connection(*srv.address, ssl=ctx,
                                                    server_hostname="localhost")
    await closed(writer)


def test_a_fetch_on_the_loop_warns_once_with_the_stall(make_chain, server, aia, root_file,
                                                       caplog):
    chain = make_chain(serve=False)
    aia.serve(chain.paths[0], b"", handler=_slow(chain.intermediates[0].der))
    other = make_chain(serve=False)
    aia.serve(other.paths[0], b"", handler=_slow(other.intermediates[0].der))
    ctx = aia_ext.create_default_context(cafile=root_file)
    with caplog.at_level(logging.WARNING, logger="aia_ext"):
        asyncio.run(_connect(server(chain.leaf), ctx))
        asyncio.run(_connect(server(other.leaf), ctx))
    # Ours only: under -X dev asyncio's debug mode also warns about the slow callback.
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.name.startswith("aia_ext")]
    assert len(warnings) == 1, warnings
    assert "blocking the loop for" in warnings[0] and "aprefetch()" in warnings[0]
    stalled_ms = float(warnings[0].split("blocking the loop for ")[1].split(" ms")[0])
    assert stalled_ms >= DELAY * 1000 * 0.9
    assert fetches_of(aia, chain) == 1 and fetches_of(aia, other) == 1


def test_no_warning_off_the_loop(make_chain, server, aia, root_file, caplog):
    from .helpers import verify_code

    chain = make_chain()
    with caplog.at_level(logging.WARNING, logger="aia_ext"):
        assert verify_code(aia_ext.create_default_context(cafile=root_file),
                           server(chain.leaf)) == 0
    assert not [r for r in caplog.records
                if r.levelno == logging.WARNING and r.name.startswith("aia_ext")]


def test_fetches_can_be_kept_off_the_loop(make_chain, server, aia, root_file):
    chain = make_chain()
    srv = server(chain.leaf)
    ctx = aia_ext.create_default_context(cafile=root_file, fetch_on_event_loop=False)

    async def main() -> None:
        with pytest.raises(ssl_error()) as info:
            await _connect(srv, ctx)
        assert info.value.verify_code == 20
        assert fetches_of(aia, chain) == 0  # the loop never waited on the network
        report = await aia_ext.aprefetch(f"localhost:{srv.port}", context=ctx)
        assert report is not None and report.verified
        await _connect(srv, ctx)  # now from the cache

    asyncio.run(main())
    assert fetches_of(aia, chain) == 1


def ssl_error():
    import ssl

    return ssl.SSLCertVerificationError
