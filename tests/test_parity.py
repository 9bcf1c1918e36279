"""Issue 13: both engines give the same verdict, from the context's own settings.

Every test runs a real handshake under each engine and expects OpenSSL's code
from both: the fallback (cryptography's verifier plus rules.py) must refuse
whatever this interpreter's OpenSSL refuses on the same context, and accept
what it accepts where the context says so.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

import aia_ext
from aia_ext._private.testing import issue, write_pem

from .helpers import PARTIAL_CHAIN as PARTIAL
from .helpers import verify_code

STRICT = ssl.VERIFY_X509_STRICT
#: OpenSSL added the key-identifier checks to X509_STRICT in 3.0; the fallback
#: applies the interpreter's list (1.1.1's or 3.0's).
STRICT_CHECKS_SKI = ssl.OPENSSL_VERSION_INFO >= (3,)

def weak_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


def context(cafile: str, flags_on: int = 0, flags_off: int = 0) -> ssl.SSLContext:
    ctx = aia_ext.create_default_context(cafile=cafile)
    ctx.verify_flags = (ctx.verify_flags | flags_on) & ~flags_off
    return ctx


# ---- Key strength at the context's security level -------------------------

def test_weak_leaf_key_is_refused_at_level_2(root, root_file, server):
    intermediate = issue("Intermediate", root, ca=True)
    leaf = issue("localhost", intermediate, dns=["localhost"], key=weak_rsa())  # type: ignore[arg-type]
    srv = server(leaf, [intermediate], security_level=0)
    assert verify_code(context(root_file), srv) == 66  # EE certificate key too weak


def test_weak_leaf_key_passes_where_the_context_lowers_its_level(root, root_file, server):
    intermediate = issue("Intermediate", root, ca=True)
    leaf = issue("localhost", intermediate, dns=["localhost"], key=weak_rsa())  # type: ignore[arg-type]
    srv = server(leaf, [intermediate], security_level=0)
    ctx = context(root_file)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=1")  # 1024-bit RSA is 80 bits: enough at level 1
    # Where ssl does not show the level (3.9, PyPy), the fallback reads it from the
    # cipher string set on the context.
    expected = 0
    assert verify_code(ctx, srv) == expected


def test_weak_intermediate_key_is_refused(root, root_file, server):
    intermediate = issue("Weak Intermediate", root, ca=True, key=weak_rsa())  # type: ignore[arg-type]
    leaf = issue("localhost", intermediate, dns=["localhost"])
    srv = server(leaf, [intermediate], security_level=0)
    assert verify_code(context(root_file), srv) == 67


# ---- VERIFY_X509_STRICT and VERIFY_X509_PARTIAL_CHAIN, as set on the context -

def test_strict_flag_is_honoured_as_set(server, tmp_path, engine):
    root = issue("Root without SKI", ca=True, subject_key_id=False)
    intermediate = issue("Intermediate", root, ca=True)
    leaf = issue("localhost", intermediate, dns=["localhost"])
    srv = server(leaf, [intermediate])
    cafile = write_pem(tmp_path / "root.pem", root)
    ctx = context(cafile, flags_off=STRICT)
    assert verify_code(ctx, srv) == 0
    # The same context, now strict: a verdict cached without the flag must not answer.
    ctx.verify_flags |= STRICT
    # 86: Missing Subject Key Identifier; the fallback applies the interpreter's list.
    expected = 86 if STRICT_CHECKS_SKI else 0
    assert verify_code(ctx, srv) == expected


def test_partial_chain_flag_is_honoured_as_set(root, server, tmp_path):
    intermediate = issue("Intermediate", root, ca=True)
    leaf = issue("localhost", intermediate, dns=["localhost"])
    srv = server(leaf, [intermediate])
    only_intermediate = write_pem(tmp_path / "intermediate.pem", intermediate)
    # Without PARTIAL_CHAIN, a trusted certificate that is not self-signed is not
    # an anchor: its own issuer is looked for and not found.
    assert verify_code(context(only_intermediate, flags_off=PARTIAL), srv) == 2
    assert verify_code(context(only_intermediate, flags_on=PARTIAL), srv) == 0


# ---- Host names as OpenSSL matches them -------------------------------------

@pytest.mark.parametrize("pattern,hostname,expected", [
    ("*.test", "a.test", 62),  # a wildcard needs two labels after it
    ("*.a.test", "b.a.test", 0),
    ("a*.b.test", "ab.b.test", 62),  # CPython asks for no partial wildcards
    ("*.b.test", "x.y.b.test", 62),  # one label only
])
def test_wildcards_match_as_openssl_matches_them(pattern, hostname, expected, root, root_file,
                                                  server):
    intermediate = issue("Intermediate", root, ca=True)
    leaf = issue("leaf", intermediate, dns=[pattern])
    assert verify_code(context(root_file), server(leaf, [intermediate]), hostname) == expected


def test_ip_address_mismatch_is_code_64(make_chain, server, root_file):
    chain = make_chain()
    srv = server(chain.leaf, chain.intermediates)
    assert verify_code(context(root_file), srv, "127.0.0.2") == 64


# ---- CRL flags: honoured by OpenSSL, refused (never ignored) by the fallback -

@pytest.mark.parametrize("flag", [ssl.VERIFY_CRL_CHECK_LEAF, ssl.VERIFY_CRL_CHECK_CHAIN])
def test_crl_flags_without_crls_refuse(flag, make_chain, server, root_file):
    chain = make_chain()
    srv = server(chain.leaf, chain.intermediates)
    ctx = context(root_file, flags_on=flag)
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        with socket.create_connection(srv.address, timeout=30) as raw:
            ctx.wrap_socket(raw, server_hostname="localhost").close()
    assert info.value.verify_code == 3  # unable to get certificate CRL


# ---- The fallback's verdict cache never answers for something else ----------

@pytest.mark.fallback_only
def test_a_cached_verdict_is_reused_silently(make_chain, server, root_file, caplog,
                                            monkeypatch):
    """Issue 30, item 6: the hot path logs what aia_ext did, not that it did nothing."""
    from aia_ext._private.engines.fallback import verify

    runs = []
    real = verify.verify
    monkeypatch.setattr(verify, "verify", lambda *a: runs.append(1) or real(*a))
    chain = make_chain()
    srv = server(chain.leaf, chain.intermediates)
    ctx = context(root_file)
    assert verify_code(ctx, srv) == 0
    assert len(runs) == 1  # OpenSSL ran once
    with caplog.at_level(logging.DEBUG, logger="aia_ext"):
        for _ in range(3):
            assert verify_code(ctx, srv) == 0
    assert len(runs) == 1  # the cached verdict answered
    assert caplog.text == ""


@pytest.mark.fallback_only
def test_a_cached_verdict_does_not_answer_for_another_name(make_chain, server, root_file):
    chain = make_chain()
    srv = server(chain.leaf, chain.intermediates)
    ctx = context(root_file)
    assert verify_code(ctx, srv) == 0
    assert verify_code(ctx, srv, "other.example") == 62


@pytest.mark.fallback_only
def test_a_cached_verdict_ends_with_the_certificates_validity(root, root_file, server):
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc)
    intermediate = issue("Intermediate", root, ca=True)
    leaf = issue("localhost", intermediate, dns=["localhost"],
                 not_after=now + datetime.timedelta(seconds=2))
    srv = server(leaf, [intermediate])
    ctx = context(root_file)
    assert verify_code(ctx, srv) == 0
    time.sleep(max(0.0, (now - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
                   + 3.0))
    assert verify_code(ctx, srv) == 10  # certificate has expired


@pytest.mark.fallback_only
def test_the_trust_store_is_rebuilt_when_the_context_trusts_more(make_chain, server, root_file,
                                                                 tmp_path):
    other_root = issue("Other root", ca=True)
    chain = make_chain(issuer_root=other_root)
    srv = server(chain.leaf, chain.intermediates)
    ctx = context(root_file)
    assert verify_code(ctx, srv) == 20
    ctx.load_verify_locations(write_pem(tmp_path / "other.pem", other_root))
    assert verify_code(ctx, srv) == 0


@pytest.mark.fallback_only
def test_the_verdict_cache_is_bounded():
    from aia_ext._private.engines.fallback import verdicts

    far = time.time() + 3600
    for i in range(verdicts.MAX_ENTRIES + 50):
        verdicts.put(("key", i), (b"x",), 0.0, far)
    assert verdicts.size() == verdicts.MAX_ENTRIES
    assert verdicts.get(("key", 0)) is None  # the least recently used went first
    assert verdicts.get(("key", verdicts.MAX_ENTRIES + 49)) == (b"x",)
    aia_ext.clear_cache()
    assert verdicts.size() == 0


# ---- Every kind of failure closes the connection: no byte leaves --------------

def _failing(kind, engine, root, root_file, make_chain, server, tmp_path):
    """(server, context, hostname) that fail verification in the way ``kind`` names."""
    if kind == "strict" and not STRICT_CHECKS_SKI:
        kind = "hostname"  # OpenSSL 1.1.1's X509_STRICT has no key-identifier checks
    if kind == "weak-key":
        intermediate = issue("Intermediate", root, ca=True)
        leaf = issue("localhost", intermediate, dns=["localhost"], key=weak_rsa())  # type: ignore[arg-type]
        return server(leaf, [intermediate], security_level=0), context(root_file), "localhost"
    if kind == "crl-flags":
        chain = make_chain()
        return (server(chain.leaf, chain.intermediates),
                context(root_file, flags_on=ssl.VERIFY_CRL_CHECK_LEAF), "localhost")
    if kind == "strict":
        bare = issue("Root without SKI", ca=True, subject_key_id=False)
        intermediate = issue("Intermediate", bare, ca=True)
        leaf = issue("localhost", intermediate, dns=["localhost"])
        cafile = write_pem(tmp_path / "bare.pem", bare)
        return server(leaf, [intermediate]), context(cafile, flags_on=STRICT), "localhost"
    chain = make_chain()  # "hostname"
    return server(chain.leaf, chain.intermediates), context(root_file), "other.example"


#: A verifier exception (cryptography's ValueError for an underscore in a name)
#: is the fallback's alone; tests/test_fallback.py closes that case the same way.
KINDS = ["weak-key", "crl-flags", "strict", "hostname"]


def _server_saw_no_data(srv) -> None:
    deadline = time.monotonic() + 5
    while sum(srv.handshakes.values()) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # let the server read whatever the client might have sent
    assert sum(srv.app_bytes) == 0


@pytest.mark.parametrize("handshake_on_connect", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_no_byte_leaves_after_any_failure(kind, handshake_on_connect, engine, root, root_file,
                                          make_chain, server, tmp_path):
    srv, ctx, hostname = _failing(kind, engine, root, root_file, make_chain, server, tmp_path)
    tls = None
    with socket.create_connection(srv.address, timeout=30) as raw:
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                tls = ctx.wrap_socket(raw, server_hostname=hostname,
                                      do_handshake_on_connect=handshake_on_connect)
                tls.do_handshake()
            if tls is not None:
                with pytest.raises(OSError):  # a caller that swallowed the error
                    tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        finally:
            if tls is not None:
                tls.close()  # as ssl leaves it to the caller after a failed handshake
    _server_saw_no_data(srv)


@pytest.mark.parametrize("kind", KINDS)
def test_no_byte_leaves_after_any_failure_on_asyncio(kind, engine, root, root_file, make_chain,
                                                     server, tmp_path):
    srv, ctx, hostname = _failing(kind, engine, root, root_file, make_chain, server, tmp_path)

    async def main() -> None:
        with pytest.raises(ssl.SSLCertVerificationError):
            _reader, writer = await asyncio.open_connection(*srv.address, ssl=ctx,
                                                            server_hostname=hostname)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()

    asyncio.run(main())
    _server_saw_no_data(srv)
