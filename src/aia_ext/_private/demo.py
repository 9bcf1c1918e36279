"""``python -m aia_ext demo``: the incomplete-chain problem and its fix, on loopback.

It builds a throwaway PKI (root -> intermediate -> leaf, the leaf's caIssuers
URL pointing at a local HTTP server), starts an HTTPS server that sends only
its leaf, and makes the same request twice: with plain ``ssl`` (fails with
verify code 20) and with aia_ext (succeeds after one fetch).  No internet.
"""

from __future__ import annotations

import functools
import http.client
import logging
import os
import shlex
import ssl
import tempfile
from typing import Callable, TextIO

from .api import create_default_context
from .engines import describe
from .testing import AIAServer, TLSServer, issue, write_pem


class _FetchLog(logging.Handler):
    """Collects aia_ext's DEBUG lines about fetches, to show what happened."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _get(context: ssl.SSLContext, port: int) -> tuple[bytes, list[str]]:
    """GET / over HTTPS; the body and the verified chain's subjects (3.10+)."""
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=30)
    try:
        conn.connect()
        chain: list[str] = []
        sslobj = getattr(conn.sock, "_sslobj", None)
        if sslobj is not None and hasattr(sslobj, "get_verified_chain"):
            for cert in sslobj.get_verified_chain():
                subject = cert.get_info()["subject"]
                chain.append(", ".join("=".join(attr) for rdn in subject for attr in rdn))
        conn.request("GET", "/")
        return conn.getresponse().read(), chain
    finally:
        conn.close()


def run_demo(out: TextIO) -> int:
    """Run the demo, writing to ``out``; returns the process exit code."""
    say: Callable[[str], None] = lambda line: print(line, file=out)  # noqa: E731
    with AIAServer() as aia, tempfile.TemporaryDirectory(prefix="aia-ext-demo-") as tmp:
        root = issue("aia_ext Demo Root CA", ca=True)
        intermediate = issue("aia_ext Demo Intermediate CA", root, ca=True)
        url = aia.serve("/demo-intermediate.der", intermediate.der)
        leaf = issue("localhost", intermediate, aia=[url], dns=["localhost"], ips=["127.0.0.1"])
        root_file = write_pem(os.path.join(tmp, "root.pem"), root)

        with TLSServer(leaf) as server:
            say("aia_ext demo: everything below runs on 127.0.0.1, no internet needed.")
            say(f"  engine:            {describe()}")
            say(f"  trusted root:      {root.subject}  ({root_file})")
            say(f"  HTTPS server:      https://localhost:{server.port}/ sends ONLY its leaf")
            say(f"                     ({leaf.subject}, issued by {intermediate.subject})")
            say(f"  leaf's caIssuers:  {url}")
            say("")

            say("1) plain ssl.create_default_context(cafile=root.pem):")
            plain = ssl.create_default_context(cafile=root_file)
            try:
                _get(plain, server.port)
            except ssl.SSLCertVerificationError as exc:
                say(f"   FAILED as expected: verify code {exc.verify_code} ({exc.verify_message})")
            else:
                say("   unexpectedly succeeded")
                return 1

            say("")
            say("2) aia_ext.create_default_context(cafile=root.pem):")
            handler = _FetchLog()
            logger = logging.getLogger("aia_ext")
            previous = logger.level
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
            try:
                context = create_default_context(cafile=root_file)
                try:
                    body, chain = _get(context, server.port)
                except ssl.SSLError as exc:
                    say(f"   FAILED: {exc}")
                    return 1
            finally:
                logger.removeHandler(handler)
                logger.setLevel(previous)
            say(f"   OK: HTTP response {body!r}")
            for line in handler.lines:
                if line.startswith("fetched "):
                    say(f"   {line}")
            say(f"   the AIA server was asked {aia.hits['/demo-intermediate.der']} time(s) "
                f"for {intermediate.subject}")
            if chain:
                say("   verified chain: " + "  ->  ".join(chain))
            say("")
            say("3) the same again: the issuer now comes from the in-memory cache")
            _get(context, server.port)
            say(f"   OK; AIA server requests so far: {aia.hits['/demo-intermediate.der']}")
    say("")
    say("The fetched intermediate was used as untrusted chain material only; the")
    say("trusted root and every other verification setting stayed as they were.")
    return 0


def serve_lab(out: TextIO, directory: str | None, problem: str | None = None) -> int:
    """``aia-ext demo --serve``: keep a lab up until interrupted (issues 25 and 32)."""
    import signal
    import threading

    from .lab import PROBLEMS, Lab

    assert problem is None or problem in PROBLEMS

    directory = directory or tempfile.mkdtemp(prefix="aia-ext-lab-")
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with Lab(directory, problem=problem) as lab:  # type: ignore[arg-type]
            say = functools.partial(print, file=out)
            say("aia_ext lab on 127.0.0.1 (Ctrl-C stops it; the files stay):")
            say(f"  engine:                {describe()}")
            say(f"  problem:               {problem or 'none (only the intermediate is missing)'}")
            say(f"  aia_ext verify code:   {lab.expected_verify_code}")
            say(f"  root CA (cafile):      {lab.root_file}")
            say(f"  intermediate:          {lab.intermediate_file}")
            say(f"  HTTPS, leaf only:      {lab.url}")
            say(f"  caIssuers URL:         {lab.ca_issuers_url}")
            say("  docs/usage.md's examples trust the system store, so in the shell that runs")
            say("  them make this lab's root that store, and use this lab's URL for theirs:")
            say(f"    export SSL_CERT_FILE={shlex.quote(lab.root_file)}")
            say(f"    (https://example.com/ -> {lab.url})")
            say(f"  try:  aia-ext check {lab.url} --cafile {shlex.quote(lab.root_file)}",
                flush=True)
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("lab stopped", file=out)
    return 0
