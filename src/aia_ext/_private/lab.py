"""A broken-chain lab on 127.0.0.1, to keep and test against (issue 25).

A private root CA, an intermediate served over HTTP at the leaf's caIssuers
URL, and an HTTPS server that sends only its leaf: the shape aia_ext exists
for, without the internet.  ``aia_ext.testing.Lab`` is its public face, and
``aia-ext demo --serve`` keeps one running for the docs' examples.
"""

from __future__ import annotations

import os
import tempfile
from types import TracebackType

from .testing import AIAServer, TLSServer, issue, write_pem


class Lab:
    """Servers and files of one lab; a context manager (``start()``/``close()`` too).

    ``directory`` keeps ``root.pem`` (the trust anchor to pass as ``cafile``)
    and ``intermediate.pem``; a temporary directory, removed on close, when
    not given.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None,
                 hostname: str = "localhost") -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="aia-ext-lab-")
            self.directory = self._tmp.name
        else:
            self.directory = os.fspath(directory)
            os.makedirs(self.directory, exist_ok=True)
        self.hostname = hostname
        self._aia = AIAServer()
        self.root = issue("aia_ext Lab Root CA", ca=True)
        self.intermediate = issue("aia_ext Lab Intermediate CA", self.root, ca=True)
        #: The leaf's caIssuers URL, served by the lab's HTTP server.
        self.ca_issuers_url = self._aia.serve("/lab-intermediate.der", self.intermediate.der)
        self.leaf = issue(hostname, self.intermediate, aia=[self.ca_issuers_url],
                          dns=[hostname], ips=["127.0.0.1"])
        #: The trust anchor, for ``cafile=``.
        self.root_file = write_pem(os.path.join(self.directory, "root.pem"), self.root)
        #: The intermediate, for ``intermediates=`` (what a server should have sent).
        self.intermediate_file = write_pem(os.path.join(self.directory, "intermediate.pem"),
                                           self.intermediate)
        self._tls = TLSServer(self.leaf)
        self._started = False

    @property
    def port(self) -> int:
        """The HTTPS server's port on 127.0.0.1."""
        return self._tls.port

    @property
    def url(self) -> str:
        """``https://localhost:PORT/``: answers every GET with ``200 ok``."""
        return f"https://{self.hostname}:{self.port}/"

    @property
    def fetches(self) -> int:
        """How many times the caIssuers URL was fetched."""
        return int(self._aia.hits["/lab-intermediate.der"])

    def start(self) -> Lab:
        if not self._started:
            self._aia.__enter__()
            self._tls.__enter__()
            self._started = True
        return self

    def close(self) -> None:
        if self._started:
            self._tls.close()
            self._aia.close()
            self._started = False
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
