"""Issue 30, item 5: a warm handshake makes no blocking system call on an event loop.

anyio's suite runs under blockbuster, which raises in the loop's thread on a
blocking call (``os.stat``, file reads, ``time.sleep``...); the fallback
stat-ed the default certificate directory on every handshake, and so refused
every connection there.  The first handshake of a context may import and
read files; those after it, accepted or refused, do nothing of the kind on
either engine.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import pytest

import aia_ext
from aia_ext._private.testing import write_pem

from .helpers import closed, subject_hash, verify_code

blockbuster = pytest.importorskip("blockbuster")


async def _request(ctx: ssl.SSLContext, address: tuple[str, int]) -> Any:
    try:
        reader, writer = await asyncio.open_connection(*address, ssl=ctx,
                                                       server_hostname="localhost")
    except ssl.SSLCertVerificationError as exc:
        return exc.verify_code
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = await reader.read()
    finally:
        await closed(writer)
    return data[-3:]


def test_warm_handshakes_make_no_blocking_call(make_chain, server, root, root_file,
                                               tmp_path):
    chain = make_chain()
    complete = server(chain.leaf, chain.intermediates)
    capath = tmp_path / "capath"
    capath.mkdir()
    write_pem(capath / subject_hash(root), root)
    contexts = [
        aia_ext.create_default_context(cafile=root_file),
        aia_ext.create_default_context(capath=str(capath)),
        aia_ext.create_default_context(),  # the system's store: the default paths
    ]

    async def main() -> list[Any]:
        cold = [await _request(ctx, complete.address) for ctx in contexts]
        with blockbuster.blockbuster_ctx():
            for _ in range(3):
                warm = [await _request(ctx, complete.address) for ctx in contexts]
                assert warm == cold
        return cold

    assert asyncio.run(main()) == [b"ok\n", b"ok\n", 20]


@pytest.mark.fallback_only
def test_a_directory_the_trust_set_reads_is_looked_at_again(make_chain, server, root,
                                                            tmp_path, monkeypatch):
    """Not on every handshake, but still: a capath gaining the root is seen within
    RECHECK_SECONDS, as OpenSSL's lazy lookup would see the new file at once."""
    from aia_ext._private.engines.fallback import trust_store

    monkeypatch.setattr(trust_store, "RECHECK_SECONDS", 0.2)
    chain = make_chain()
    srv = server(chain.leaf, chain.intermediates)
    capath = tmp_path / "capath"
    capath.mkdir()
    ctx = aia_ext.create_default_context(capath=str(capath))

    assert verify_code(ctx, srv) == 20
    write_pem(capath / subject_hash(root), root)
    time.sleep(0.3)
    assert verify_code(ctx, srv) == 0
