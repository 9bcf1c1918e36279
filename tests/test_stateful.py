"""Issue 30: random sequences of connection calls, every outcome compared with plain ssl.

A hypothesis state machine creates contexts, enables and disables aia_ext on
them, injects and extracts, wraps connections (sockets and SSLObjects), swaps
their contexts, handshakes, writes, reads, renegotiates, resumes sessions
and closes, against real servers on 127.0.0.1.  Every call runs in three
worlds:

- ``aia``: the contexts are aia_ext's (the engine under test);
- ``plain``: plain ``ssl`` contexts with the same trust and mode, against
  the same servers;
- ``done``: plain ``ssl`` again, against servers that send the intermediate
  the leaf-only server leaves out.

The aia world must give, for every call, what ``plain`` gives, except where
aia_ext completes a chain: a connection whose first verification happens
while aia_ext is enabled on its context (and that context trusts the root)
must behave as in ``done``; under the fallback, only if aia_ext was also enabled
on the context that made the connection.  Renegotiations go to complete chains only, on
which both references agree.

``AIA_EXT_STATEFUL_EXAMPLES`` sets the number of sequences (default 25 per
engine, up to 30 calls each after three set-up ones).
"""

from __future__ import annotations

import os
import ssl
import sys
from typing import Any, ClassVar

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

import aia_ext  # noqa: E402
from aia_ext._private import engines  # noqa: E402
from aia_ext._private.stdlib_ssl import new_plain_context  # noqa: E402

from .connections import TRANSPORTS, ask, open_connection  # noqa: E402
from .connections import outcome as _outcome  # noqa: E402
from .renegotiation import renegotiation_available  # noqa: E402

pytestmark = pytest.mark.skipif(renegotiation_available() is not None,
                                reason=str(renegotiation_available()))

WORLDS = ("plain", "done", "aia")
FIRST = ("good", "leaf_only", "untrusted", "other_name", "good13")
RENEGOTIATE_TO = ("good", "untrusted", "other_name")
EXAMPLES = int(os.environ.get("AIA_EXT_STATEFUL_EXAMPLES", "25"))
#: Connections open at once per world, at most.
MAX_OPEN = 4
IS_PYPY = sys.implementation.name == "pypy"


class _Servers:
    """The worlds' servers: ``done`` gets the leaf-only certificate with its intermediate."""

    def __init__(self, lab: Any) -> None:
        self.lab = lab

    def address(self, world: str, first: str) -> tuple[str, int]:
        version = ssl.TLSVersion.TLSv1_3 if first == "good13" else ssl.TLSVersion.TLSv1_2
        name = "good" if first == "good13" else first
        return self.lab.get(name, version, complete=world == "done").address


class Connection:
    def __init__(self, worlds: dict[str, Any], version: str,
                 reference: str | None = None, made_enabled: bool = False) -> None:
        self.worlds = worlds
        self.version = version
        #: Whether aia_ext was enabled on the aia world's context when the
        #: connection was made: under the fallback, one made by a plain context
        #: stays plain ssl's (docs/engines.md).
        self.made_enabled = made_enabled
        #: Whether, under the fallback, this connection's session history holds
        #: a session no verified connection produced: the fallback does not
        #: offer one (docs/engines.md), so what CPython's session checks see
        #: differs from plain ssl's, here and on connections resumed from it.
        self.declined = False
        #: The world the aia one follows, chosen at its first verification (or
        #: inherited with a session); the other reference world is closed then.
        self.reference = reference
        self.outstanding = 0  # PINGs written and not yet answered
        self.failed = False  # a call failed: reads return at once
        self.closed = False


class Context:
    def __init__(self, worlds: dict[str, ssl.SSLContext], trust: str) -> None:
        self.worlds = worlds
        self.trust = trust


class Sequences(RuleBasedStateMachine):
    """The machine; ``pki`` is set on the class by the test below."""

    pki: dict[str, Any]
    servers: _Servers
    contexts = Bundle("contexts")
    connections = Bundle("connections")

    #: Sequences run and calls made, for the test's report.
    counts: ClassVar[dict[str, int]] = {"sequences": 0, "calls": 0, "verifications": 0}

    def __init__(self) -> None:
        super().__init__()
        # Each sequence starts from a fresh process state, so that hypothesis
        # can replay it: learned intermediates and cached answers would
        # otherwise complete a chain the first run fetched.
        aia_ext.extract_from_ssl()
        aia_ext.clear_cache()
        self.counts["sequences"] += 1
        self.open: list[Connection] = []
        self.trust_of: dict[int, str] = {}  # id of an aia-world context -> its trust

    # -- contexts and the engine

    @initialize(target=contexts)
    def first_context(self) -> Context:
        return self.new_context("root", True)

    @initialize(target=contexts, trust=st.sampled_from(["root", "stranger"]),
                verify=st.booleans())
    def second_context(self, trust: str, verify: bool) -> Context:
        return self.new_context(trust, verify)

    @rule(target=contexts, trust=st.sampled_from(["root", "stranger"]), verify=st.booleans())
    def new_context(self, trust: str, verify: bool) -> Context:
        cafile = self.pki["root_file"] if trust == "root" else self.pki["stranger_file"]
        worlds: dict[str, ssl.SSLContext] = {}
        for world in WORLDS:
            # ssl's own function: under injection, aia_ext's world gets it enabled.
            ctx = (ssl.create_default_context(cafile=cafile) if world == "aia"
                   else _plain(cafile))
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            worlds[world] = ctx
        self.trust_of[id(worlds["aia"])] = trust
        return Context(worlds, trust)

    @rule(context=contexts)
    def enable(self, context: Context) -> None:
        aia_ext.enable(context.worlds["aia"])

    @rule(context=contexts)
    def disable(self, context: Context) -> None:
        aia_ext.disable(context.worlds["aia"])

    @rule()
    def inject(self) -> None:
        aia_ext.inject_into_ssl()

    @rule()
    def extract(self) -> None:
        aia_ext.extract_from_ssl()

    # -- connections

    @precondition(lambda self: len(self.open) < MAX_OPEN)
    @rule(target=connections, context=contexts, first=st.sampled_from(FIRST),
          transport=st.sampled_from(TRANSPORTS))
    def wrap(self, context: Context, first: str, transport: str) -> Connection:
        servers = self.servers
        worlds = {w: open_connection(context.worlds[w], servers.address(w, first), transport)
                  for w in WORLDS}
        conn = Connection(worlds, "1.3" if first == "good13" else "1.2",
                          made_enabled=aia_ext.is_enabled(context.worlds["aia"]))
        self.open.append(conn)
        return conn

    @initialize(target=connections, context=contexts, first=st.sampled_from(FIRST),
                transport=st.sampled_from(TRANSPORTS))
    def first_connection(self, context: Context, first: str, transport: str) -> Connection:
        return self.wrap(context, first, transport)

    @precondition(lambda self: len(self.open) < MAX_OPEN)
    @rule(target=connections, earlier=connections, context=contexts,
          transport=st.sampled_from(TRANSPORTS))
    def resume(self, earlier: Connection, context: Context, transport: str) -> Connection:
        """A new connection offered the session of an earlier one; CPython refuses a
        session of another context, in every world alike."""
        first = "good13" if earlier.version == "1.3" else "good"
        servers = self.servers
        worlds: dict[str, Any] = {}
        results = {}
        for w in _names(earlier):
            def connect(w: str = w) -> None:
                session = None if earlier.closed else earlier.worlds[w].session
                worlds[w] = open_connection(context.worlds[w], servers.address(w, first),
                                            transport, session=session)
            results[w] = outcome(connect)
        new = Connection(worlds, earlier.version, earlier.reference,
                         made_enabled=aia_ext.is_enabled(context.worlds["aia"]))
        new.declined = engines.select() is engines.FALLBACK and (
            earlier.declined or earlier.failed or not earlier.made_enabled)
        if not new.declined:
            self._compare(new, results)
        if not results or len(worlds) < len(results):  # refused in one world at least
            for conn in worlds.values():
                conn.close()
            new.closed = True
        else:
            self.open.append(new)
        return new

    @rule(conn=connections, context=contexts)
    def swap(self, conn: Connection, context: Context) -> None:
        if conn.closed:
            return
        results = {}
        for w in conn.worlds:
            def swap_one(w: str = w) -> None:
                conn.worlds[w].context = context.worlds[w]
            results[w] = outcome(swap_one)
        self._compare(conn, results)

    @rule(conn=connections)
    def handshake(self, conn: Connection) -> None:
        self._drive(conn, lambda c: c.do_handshake())

    @rule(conn=connections)
    def write(self, conn: Connection) -> None:
        if self._drive(conn, lambda c: c.sendall(b"PING\n")):
            conn.outstanding += 1

    @rule(conn=connections)
    def read(self, conn: Connection) -> None:
        if conn.outstanding or conn.failed:  # else nothing would ever arrive
            if self._drive(conn, _read_line) and conn.outstanding:
                conn.outstanding -= 1

    @rule(conn=connections, to=st.sampled_from(RENEGOTIATE_TO))
    def renegotiate(self, conn: Connection, to: str) -> None:
        if not conn.outstanding:  # else the answer read would be a PONG
            self._drive(conn, lambda c: ask(c, b"RENEG " + to.encode()))

    @rule(conn=consumes(connections))
    def close(self, conn: Connection) -> None:
        self._close(conn)

    # -- checking

    def _drive(self, conn: Connection, call: Any) -> bool:
        """Run ``call`` on the connection in every world it runs in; True when it did."""
        if conn.closed:
            return False
        if conn.failed and IS_PYPY:
            # See _agree(): what PyPy's own ssl does next varies, even to success.
            self._close(conn)
            return False
        self.counts["calls"] += 1
        if conn.reference is None:
            self.counts["verifications"] += 1
            # The first call that may verify: the aia world follows `done` when
            # aia_ext completes chains on the context it is verified against now.
            ctx = conn.worlds["aia"].context
            completes = (aia_ext.is_enabled(ctx) and self.trust_of.get(id(ctx)) == "root"
                         and (conn.made_enabled or engines.select() is not engines.FALLBACK))
            conn.reference = "done" if completes else "plain"
            other = "plain" if completes else "done"
            conn.worlds.pop(other).close()
        results = {w: outcome(lambda w=w: call(conn.worlds[w])) for w in conn.worlds}
        self._compare(conn, results)
        if results["aia"][0] != "ok" or any(_pypy_noise(r) for r in results.values()):
            conn.failed = True
        return results["aia"][0] == "ok"

    def _compare(self, conn: Connection, results: dict[str, tuple[Any, ...]]) -> None:
        for world, result in results.items():
            assert _agree(result, results["aia"], conn.failed), (world, results)

    def _close(self, conn: Connection) -> None:
        if not conn.closed:
            for world_conn in conn.worlds.values():
                world_conn.close()
            conn.closed = True
        if conn in self.open:
            self.open.remove(conn)

    @invariant()
    def never_more_than_max_open(self) -> None:
        assert len(self.open) <= MAX_OPEN

    def teardown(self) -> None:
        for conn in list(self.open):
            self._close(conn)
        aia_ext.extract_from_ssl()


def _agree(reference: tuple[Any, ...], ours: tuple[Any, ...], failed_before: bool) -> bool:
    """Whether two worlds' outcomes of one call agree.

    On a connection that failed before, every call must fail again in both
    worlds, but which error the socket gives then depends on TCP timing, in
    plain ssl as well (``SSLEOFError``, ``ConnectionResetError``, a read of
    ``b""``): there the failure is compared, not its type.
    """
    if reference == ours:
        return True
    if failed_before:
        return _dead(reference) and _dead(ours)
    return _pypy_noise(reference) or _pypy_noise(ours)


def _dead(result: tuple[Any, ...]) -> bool:
    return result[0] != "ok" or result == ("ok", b"")


def _pypy_noise(result: tuple[Any, ...]) -> bool:
    """A refusal with verify code 0 ("ok") from PyPy's own ``_ssl``.

    PyPy 7.3.11's ``_ssl``, with no aia_ext enabled, gives it with two
    connections open to one renegotiating server: on a renegotiation to a
    certificate the other connection refused (code 20), even on one to a
    certificate its context trusts, and the next ``do_handshake()`` may then
    succeed (an error left over from the other connection, it seems).  CPython
    gives the connection's own verdict every time.  Such a result says nothing
    about the call, so it is not compared, and the connection is not used again
    on PyPy.
    """
    return IS_PYPY and result[:2] == ("refused", 0)


def _empty_error_queue() -> None:
    """PyPy's ``_ssl`` asks ``SSL_get_error()`` about a read without emptying the
    thread's OpenSSL error queue first, which SSL_get_error(3) requires ("The current
    thread's error queue must be empty before the TLS/SSL I/O operation is
    attempted"): a refusal one connection left there turns another connection's
    WANT_READ inside a renegotiation into a refusal.  Found on PyPy 3.9: a CERT_NONE
    connection of the plain world "refused" (code 20, its own verify result) right
    after another connection's refusal, where the aia world accepted, as plain ssl
    does on CPython.  The queue is emptied before every call, in every world alike.
    Here, not in ``connections.outcome()``: tests/test_fail_closed.py compares the
    call after a refusal, which PyPy's ``_ssl`` fails again from that same queue
    (a docs/engines.md row the fallback follows); this machine never calls a
    connection again after a failure on PyPy (``_drive``)."""
    if IS_PYPY:
        from _pypy_openssl import lib  # type: ignore[import-not-found]

        lib.ERR_clear_error()


def outcome(call: Any) -> tuple[Any, ...]:
    _empty_error_queue()
    return _outcome(call)


def _names(conn: Connection) -> tuple[str, ...]:
    """The worlds a connection runs in: all three until its reference is chosen."""
    return WORLDS if conn.reference is None else (conn.reference, "aia")


def _plain(cafile: str) -> ssl.SSLContext:
    ctx = new_plain_context(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile)
    return ctx


def _read_line(conn: Any) -> bytes:
    answer = b""
    while not answer.endswith(b"\n"):
        data = conn.recv(64)
        if not data:
            return answer
        answer += data
    return answer


def test_random_sequences_behave_as_plain_ssl(reneg_lab, engine):
    Sequences.pki = reneg_lab.pki
    Sequences.servers = _Servers(reneg_lab)
    runner = Sequences.TestCase()
    runner.settings = settings(max_examples=EXAMPLES, stateful_step_count=30, deadline=None,
                               derandomize=False, database=None,
                               suppress_health_check=list(HealthCheck))
    Sequences.counts.update(sequences=0, calls=0, verifications=0)
    try:
        runner.runTest()
    finally:
        aia_ext.extract_from_ssl()
    print(f"{engine}: {Sequences.counts}")  # shown with -s, and in CI's log
    assert Sequences.counts["sequences"] >= EXAMPLES
