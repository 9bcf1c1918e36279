"""Issue 31: aia_ext as a guest in other people's processes.

Monkey-patching runtimes (gevent, eventlet), logging handlers that ship over
TLS, a notebook kernel.  The runtimes patch the whole process, so each case
runs in a fresh interpreter (``run_python``), against the lab's servers on
127.0.0.1, under both engines.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import ssl
import sys
import time
from typing import Any

import pytest

import aia_ext

from .helpers import closed, fetches_of, run_python

#: What a child prints, as JSON, after three concurrent requests through the runtime.
_GREEN_CHILD = """
import json, sys
runtime, order, root, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if order == "aia-first":
    import aia_ext
if runtime == "gevent":
    from gevent import monkey
    monkey.patch_all()
else:
    import eventlet
    eventlet.monkey_patch()
import socket, ssl
import aia_ext
ctx = ssl.create_default_context(cafile=root)
if order != "inject":
    aia_ext.enable(ctx)

def get(_=None):
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
            return tls.recv(200)[-3:].decode()

if runtime == "gevent":
    import gevent
    jobs = [gevent.spawn(get) for _ in range(3)]
    gevent.joinall(jobs, raise_error=True)
    results = [job.value for job in jobs]
else:
    results = list(eventlet.GreenPool().imap(get, range(3)))
print(json.dumps({"engine": aia_ext.engine_of(ctx), "results": results}))
"""


@pytest.mark.parametrize("order", ["inject", "aia-first", "patch-first"])
@pytest.mark.parametrize("runtime", ["gevent", "eventlet"])
def test_green_runtimes_complete_chains(runtime, order, engine, make_chain, server, aia,
                                        root_file, tmp_path):
    """Under AIA_EXT_INJECT=1 gevent's contexts raised "multiple bases have instance
    lay-out conflict" (native) or were silently left alone (fallback), and enable()
    made every handshake fail; eventlet's were never enabled under the fallback."""
    if importlib.util.find_spec(runtime) is None:  # not imported here: it patches, it warns
        pytest.skip(f"{runtime} is not installed here")
    chain = make_chain()
    srv = server(chain.leaf)
    result = run_python(_GREEN_CHILD, tmp_path, runtime, order, root_file, str(srv.port),
                        AIA_EXT_INJECT="1" if order == "inject" else "0",
                        AIA_EXT_ENGINE=engine, PYTHONWARNINGS="ignore::DeprecationWarning")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"engine": engine, "results": ["ok\n"] * 3}
    assert fetches_of(aia, chain) == 1
    if order != "aia-first":
        # The hook waits for ssl's first import (issue 31, item 3), which the
        # runtime itself makes: it no longer finds ssl imported before it.
        assert "after ssl has already been imported" not in result.stderr


# ---- Logging that ships over TLS ------------------------------------------------


class _Shipped(logging.Handler):
    """A log shipper over TLS to the lab's server, counting what it shipped: what
    ``HTTPHandler(secure=True)`` does per record (one HTTPS request over a new
    connection), except that it closes the connection, which HTTPHandler leaves to
    the garbage collector (a ResourceWarning under ``-W error``)."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        super().__init__()
        self.port = port
        self.context = context
        self.shipped = 0
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        import http.client
        import urllib.parse

        self.shipped += 1
        connection = http.client.HTTPSConnection("localhost", self.port, context=self.context,
                                                 timeout=30)
        try:
            query = urllib.parse.urlencode({"msg": record.getMessage()})
            connection.request("GET", f"/log?{query}")
            connection.getresponse().read()
        except Exception:  # noqa: BLE001 - as logging's handlers report their failures
            self.handleError(record)
        finally:
            connection.close()

    def handleError(self, record: logging.LogRecord) -> None:
        self.errors.append(sys.exc_info()[1])  # type: ignore[arg-type]


@pytest.mark.parametrize("first", ["application", "aia_ext"])
@pytest.mark.parametrize("level", [logging.DEBUG, logging.WARNING])
@pytest.mark.parametrize("served", ["leaf-only", "complete", "dead-aia"])
def test_a_log_shipper_over_tls_does_not_recurse(served, level, first, make_chain, server,
                                                 aia, root_file):
    """One record made a handshake; aia_ext logged from inside it; that record was
    shipped over another handshake, and so on until RecursionError (issue 31, item 2).
    aia_ext never logs from a handshake made while one of its own records is being
    emitted on that thread: a record of aia_ext's is shipped once, whatever the
    handshake that ships it does; an application's record is shipped with what aia_ext
    said about its handshake, and that is all."""
    chain = make_chain(serve=served != "dead-aia")
    srv = server(chain.leaf, chain.intermediates if served == "complete" else ())
    handler = _Shipped(srv.port, aia_ext.create_default_context(cafile=root_file))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    said: list[logging.LogRecord] = []
    recorder = logging.Handler()
    recorder.emit = said.append  # type: ignore[method-assign]
    logging.getLogger("aia_ext").addHandler(recorder)
    try:
        if first == "application":
            logging.getLogger("app").warning("one record")
        else:  # as aia_ext's modules log: through their own loggers
            from aia_ext._private import api

            api.log.warning("one record")
    finally:
        root.removeHandler(handler)
        logging.getLogger("aia_ext").removeHandler(recorder)
        root.setLevel(old_level)
    refused = served == "dead-aia"
    assert all(isinstance(e, ssl.SSLCertVerificationError) for e in handler.errors)
    assert len(handler.errors) == (handler.shipped if refused else 0)
    deadline = time.monotonic() + 5  # the server counts a failed handshake when it ends
    while sum(srv.handshakes.values()) < handler.shipped and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sum(srv.handshakes.values()) == handler.shipped  # one handshake per shipment
    ours = [r for r in said if r.levelno >= level and r.name != "aia_ext._private.api"]
    if first == "aia_ext":
        assert handler.shipped == 1 and ours == []
    else:
        # The application's record, and aia_ext's records of that one handshake.
        assert handler.shipped == 1 + len(ours)


# ---- Contexts made before inject_into_ssl() ---------------------------------------


def test_inject_names_the_modules_whose_contexts_it_cannot_reach(tmp_path, engine):
    """Issue 31, item 7: aiohttp makes its default context when imported, so injecting
    afterwards silently changes nothing for it; one WARNING names the module."""
    code = ("import logging, sys, types, ssl\n"
            "logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format='%(message)s')\n"
            "early = types.ModuleType('early_client')\n"
            "early.CONTEXT = ssl.create_default_context()\n"
            "early.VERIFY_NONE = ssl._create_unverified_context()\n"
            "sys.modules['early_client'] = early\n"
            "import aia_ext\n"
            "aia_ext.inject_into_ssl()\n"
            "aia_ext.extract_from_ssl()\n"
            "aia_ext.inject_into_ssl()\n")
    result = run_python(code, tmp_path, AIA_EXT_ENGINE=engine)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "early_client" in line]
    assert len(lines) == 1, result.stdout  # once, and not for the CERT_NONE context
    assert "early_client.CONTEXT" in lines[0] and "enable()" in lines[0]


# ---- A notebook kernel -------------------------------------------------------------


def _run_cells(cells: list[str], env: dict[str, str]) -> tuple[list[str], list[str]]:
    """Run cells in a real ipykernel; (each cell's stdout, the error names raised)."""
    jupyter_client = pytest.importorskip("jupyter_client")
    pytest.importorskip("ipykernel")
    import os

    # ipykernel's own kernelspec, installed with it in this environment; jupyter_client
    # runs its "python" as this interpreter.
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel(env={**os.environ, **env})
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        outputs, errors = [], []
        for cell in cells:
            texts: list[str] = []
            reply = client.execute_interactive(
                cell, timeout=60, output_hook=lambda msg, texts=texts: texts.append(
                    msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None)
            if reply["content"]["status"] != "ok":
                errors.append(reply["content"]["ename"])
            outputs.append("".join(texts))
        return outputs, errors
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


@pytest.mark.parametrize("fetch_on_event_loop", [True, False])
def test_a_notebook_cell_completes_a_chain_without_a_warning(fetch_on_event_loop, engine,
                                                             make_chain, server, aia,
                                                             root_file):
    """Issue 31, item 4: ipykernel runs each cell inside its event loop, so a synchronous
    requests.get() there counted as "on an event loop": it printed the stall WARNING,
    whose advice (fetch_on_event_loop=False) then made every such cell fail.  A socket's
    handshake is a synchronous caller's, whatever runs in its thread."""
    chain = make_chain()
    srv = server(chain.leaf)
    outputs, errors = _run_cells([
        "import asyncio, logging, sys, urllib.request\n"
        "import aia_ext\n"
        "logging.basicConfig(level=logging.WARNING, stream=sys.stdout)\n"
        "print('loop running:', asyncio.get_running_loop().is_running())",
        f"ctx = aia_ext.create_default_context(cafile={root_file!r}, "
        f"fetch_on_event_loop={fetch_on_event_loop})\n"
        f"print(urllib.request.urlopen({srv.url!r}, context=ctx).read())",
    ], {"AIA_EXT_ENGINE": engine})
    assert errors == []
    assert outputs[0].strip() == "loop running: True"
    assert outputs[1].strip() == "b'ok\\n'"  # and nothing else: no WARNING
    assert fetches_of(aia, chain) == 1


def test_a_coroutine_on_the_loop_is_still_told(engine, make_chain, server, aia, root_file,
                                               caplog):
    """What a notebook's synchronous cell no longer hears, a coroutine's transport still
    does: ssl=ctx on asyncio fetches inside the handshake, on the loop's thread."""
    import asyncio

    from aia_ext._private.chase import core

    core._loop_warned.clear()
    chain = make_chain()
    srv = server(chain.leaf)
    ctx = aia_ext.create_default_context(cafile=root_file)

    async def main() -> None:
        _reader, writer = await asyncio.open_connection(*srv.address, ssl=ctx,
                                                       server_hostname="localhost")
        await closed(writer)

    with caplog.at_level(logging.WARNING, logger="aia_ext"):
        asyncio.run(main())
    assert "blocking the loop" in caplog.text
    refusing = aia_ext.create_default_context(cafile=root_file, fetch_on_event_loop=False)
    chain2 = make_chain()
    srv2 = server(chain2.leaf)

    async def refused() -> Any:
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await asyncio.open_connection(*srv2.address, ssl=refusing,
                                          server_hostname="localhost")
        return info.value.verify_code

    assert asyncio.run(refused()) == 20
    assert fetches_of(aia, chain2) == 0

