"""A broken-chain lab on 127.0.0.1, to keep and test against (issues 25 and 32).

A private root CA, an intermediate served over HTTP at the leaf's caIssuers
URL, and an HTTPS server that sends only its leaf: the shape aia_ext exists
for, without the internet.  ``problem`` adds one of the ways it goes wrong in
the field, so users can test their own error handling through public options
(issue 32, item 9).  ``aia_ext.testing.Lab`` is its public face, and
``aia-ext demo --serve`` keeps one running for the docs' examples.
"""

from __future__ import annotations

import datetime
import os
import socket
import tempfile
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, get_args

from .testing import AIAServer, Cert, TLSServer, issue, write_pem

if TYPE_CHECKING:
    import http.server

#: What can be wrong with a lab's server, beyond the intermediate it leaves out.
LabProblem = Literal["untrusted-root", "dead-ca-issuers", "slow-ca-issuers", "wrong-name",
                     "expired-leaf", "two-missing-levels"]
PROBLEMS: tuple[str, ...] = get_args(LabProblem)

#: The verify code aia_ext gives each lab (plain ``ssl`` gives 20 for every one).
_EXPECTED_CODE = {None: 0, "untrusted-root": 20, "dead-ca-issuers": 20, "slow-ca-issuers": 0,
                  "wrong-name": 62, "expired-leaf": 10, "two-missing-levels": 0}


class Lab:
    """Servers and files of one lab; a context manager (``start()``/``close()`` too).

    ``directory`` keeps ``root.pem`` (the trust anchor to pass as ``cafile``)
    and ``intermediate.pem``; a temporary directory, removed on close, when
    not given.  ``problem`` is one of ``PROBLEMS``:

    - ``"untrusted-root"``: the chain leads to a root that ``root.pem`` is not;
    - ``"dead-ca-issuers"``: the caIssuers URL's port accepts no connection;
    - ``"slow-ca-issuers"``: it answers after ``delay`` seconds (test ``timeout=``);
    - ``"wrong-name"``: the leaf names ``wrong.example``, not ``hostname``;
    - ``"expired-leaf"``: the leaf expired yesterday;
    - ``"two-missing-levels"``: two intermediates missing, each at the caIssuers
      URL of the certificate below it (two fetches).

    ``expected_verify_code`` is what aia_ext then gives (0: it verifies).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None,
                 hostname: str = "localhost", *, problem: LabProblem | None = None,
                 delay: float = 3.0) -> None:
        if problem is not None and problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {', '.join(PROBLEMS)} or None, "
                             f"not {problem!r}")
        if not 0 <= delay <= 300:
            raise ValueError(f"delay must be between 0 and 300 seconds, not {delay!r}")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="aia-ext-lab-")
            self.directory = self._tmp.name
        else:
            self.directory = os.fspath(directory)
            os.makedirs(self.directory, exist_ok=True)
        self.hostname = hostname
        self.problem = problem
        self._aia = AIAServer()
        #: The trust anchor (``root_file``).
        self.root = issue("aia_ext Lab Root CA", ca=True)
        top = issue("aia_ext Lab Untrusted Root", ca=True) if problem == "untrusted-root" \
            else self.root
        self._paths: list[str] = []
        #: The intermediates the server leaves out, the leaf's issuer first.
        self.intermediates: list[Cert] = []
        if problem == "two-missing-levels":
            upper = issue("aia_ext Lab Upper Intermediate CA", top, ca=True)
            upper_url = self._serve("/lab-upper-intermediate.der", upper)
            self.intermediates.append(upper)
            self.intermediate = issue("aia_ext Lab Intermediate CA", upper, ca=True,
                                      aia=[upper_url])
        else:
            self.intermediate = issue("aia_ext Lab Intermediate CA", top, ca=True)
        self.intermediates.insert(0, self.intermediate)
        #: The leaf's caIssuers URL (``"dead-ca-issuers"``: a port nobody listens on).
        self.ca_issuers_url = (_dead_url() if problem == "dead-ca-issuers" else
                               self._serve("/lab-intermediate.der", self.intermediate,
                                           delay if problem == "slow-ca-issuers" else 0.0))
        now = datetime.datetime.now(datetime.timezone.utc)
        named = "wrong.example" if problem == "wrong-name" else hostname
        expiry: dict[str, Any] = {}
        if problem == "expired-leaf":
            expiry = {"not_before": now - datetime.timedelta(days=30),
                      "not_after": now - datetime.timedelta(days=1)}
        self.leaf = issue(named, self.intermediate, aia=[self.ca_issuers_url], dns=[named],
                          ips=[] if problem == "wrong-name" else ["127.0.0.1"], **expiry)
        #: The trust anchor, for ``cafile=``.
        self.root_file = write_pem(os.path.join(self.directory, "root.pem"), self.root)
        #: The missing intermediates, for ``intermediates=`` (what a server should send).
        self.intermediate_file = write_pem(os.path.join(self.directory, "intermediate.pem"),
                                           *self.intermediates)
        self._tls = TLSServer(self.leaf)
        self._started = False

    def _serve(self, path: str, cert: Cert, delay: float = 0.0) -> str:
        self._paths.append(path)
        if delay <= 0:
            return self._aia.serve(path, cert.der)
        return self._aia.serve(path, b"", handler=_late(cert.der, delay))

    @property
    def expected_verify_code(self) -> int:
        """The verify code aia_ext gives this lab's server (0: verified)."""
        return _EXPECTED_CODE[self.problem]

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
        """How many times the lab's caIssuers URLs were fetched."""
        return sum(int(self._aia.hits[path]) for path in self._paths)

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


def _dead_url() -> str:
    """An http URL on 127.0.0.1 whose port was free a moment ago: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/lab-intermediate.der"


def _late(body: bytes, delay: float) -> Any:
    """An AIA handler answering ``body`` after ``delay`` seconds."""

    def handler(request: http.server.BaseHTTPRequestHandler) -> None:
        time.sleep(delay)
        try:
            request.send_response(200)
            request.send_header("Content-Type", "application/pkix-cert")
            request.send_header("Content-Length", str(len(body)))
            request.send_header("Connection", "close")
            request.end_headers()
            request.wfile.write(body)
        except OSError:
            pass  # the client gave up first, as a timeout should
        request.close_connection = True

    return handler
