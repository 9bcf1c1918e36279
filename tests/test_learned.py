"""Issue 23: learned intermediates, as Firefox's intermediate cache keeps them.

Every case is real handshakes against real TLS servers on 127.0.0.1.  The
shape that only learning can complete: a server that sends only its leaf,
whose leaf names no caIssuers URL, issued by an intermediate that another
server's verified chain carried earlier in the process.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import textwrap

import pytest

import aia_ext
from aia_ext._private.chase import learned
from aia_ext._private.testing import Cert, issue

from .helpers import encode, handshake, unique_path, verify_code


def _pair(root: Cert, server, name: str = "Learned Intermediate", **leaf_kwargs):
    """(the full-chain server, the leaf-only server without AIA, the intermediate)."""
    intermediate = issue(name, root, ca=True)
    teacher = server(issue("localhost", intermediate, dns=["localhost"]), [intermediate])
    pupil = server(issue("localhost", intermediate, dns=["localhost"], **leaf_kwargs))
    return teacher, pupil, intermediate


def test_a_verified_chain_teaches_its_intermediate(root, root_file, server):
    teacher, pupil, _ = _pair(root, server)
    ctx = aia_ext.create_default_context(cafile=root_file)
    assert verify_code(ctx, pupil) == 20  # nothing to fetch, nothing learned yet
    assert verify_code(ctx, teacher) == 0
    assert verify_code(ctx, pupil) == 0
    # And any other context of the process, with its own trust store, uses it.
    other = aia_ext.create_default_context(cafile=root_file)
    assert verify_code(other, pupil) == 0


def test_the_report_names_the_learned_source(root, root_file, server):
    teacher, pupil, intermediate = _pair(root, server)
    ctx = aia_ext.create_default_context(cafile=root_file)
    handshake(ctx, teacher)
    with socket.create_connection(pupil.address, timeout=30) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        report = aia_ext.report(tls)
    assert report is not None and report.verified and report.network_fetches == 0
    assert [(a.der, a.source, a.url) for a in report.added] == [
        (intermediate.der, "learned", "")]
    assert "Learned Intermediate" in report.added[0].subject


def test_learned_intermediates_come_before_any_fetch(root, root_file, server, aia):
    intermediate = issue("Learned Before Fetch", root, ca=True)
    path = unique_path()
    aia.serve(path, encode([intermediate], "der"))
    teacher = server(issue("localhost", intermediate, dns=["localhost"]), [intermediate])
    pupil = server(issue("localhost", intermediate, dns=["localhost"], aia=[aia.url(path)]))
    ctx = aia_ext.create_default_context(cafile=root_file)
    assert verify_code(ctx, teacher) == 0
    assert verify_code(ctx, pupil) == 0
    assert aia.hits[path] == 0


@pytest.mark.parametrize("where", ["teacher", "pupil"])
def test_learn_intermediates_false_learns_and_uses_nothing(where, root, root_file, server):
    teacher, pupil, _ = _pair(root, server)
    on = aia_ext.create_default_context(cafile=root_file)
    off = aia_ext.create_default_context(cafile=root_file, learn_intermediates=False)
    assert verify_code(off if where == "teacher" else on, teacher) == 0
    assert verify_code(on if where == "teacher" else off, pupil) == 20
    # The opted-out context did not spoil learning for the others.
    if where == "teacher":
        assert verify_code(on, teacher) == 0
        assert verify_code(on, pupil) == 0


def test_only_the_verified_path_is_learned(root, root_file, server):
    """A certificate the server sent beyond its path is never learned."""
    intermediate = issue("Path Intermediate", root, ca=True)
    stray = issue("Stray Intermediate", root, ca=True)
    teacher = server(issue("localhost", intermediate, dns=["localhost"]), [intermediate, stray])
    pupil = server(issue("localhost", stray, dns=["localhost"]))
    ctx = aia_ext.create_default_context(cafile=root_file)
    assert verify_code(ctx, teacher) == 0
    assert verify_code(ctx, pupil) == 20
    assert intermediate.der in learned.store and stray.der not in learned.store


def test_a_failed_verification_teaches_nothing(root_file, server):
    stranger = issue("Stranger Root", ca=True)
    teacher, _pupil, intermediate = _pair(stranger, server)
    ctx = aia_ext.create_default_context(cafile=root_file)
    assert verify_code(ctx, teacher) == 20  # its root is not trusted here
    assert intermediate.der not in learned.store


def test_a_wrong_name_teaches_nothing(root, root_file, server):
    teacher, pupil, intermediate = _pair(root, server)
    ctx = aia_ext.create_default_context(cafile=root_file)
    assert verify_code(ctx, teacher, hostname="elsewhere.example") == 62
    assert intermediate.der not in learned.store
    assert verify_code(ctx, pupil) == 20


def test_an_unverified_connection_teaches_nothing(root, root_file, server):
    teacher, pupil, intermediate = _pair(root, server)
    loose = aia_ext.create_default_context(cafile=root_file)
    loose.check_hostname = False
    loose.verify_mode = ssl.CERT_NONE
    handshake(loose, teacher)
    assert intermediate.der not in learned.store
    ctx = aia_ext.create_default_context(cafile=root_file)
    assert verify_code(ctx, pupil) == 20


def test_learned_intermediates_are_never_trust_anchors(root, root_file, server, tmp_path):
    """A context that trusts only the intermediate's sibling root gains nothing."""
    teacher, pupil, _intermediate = _pair(root, server)
    ctx = aia_ext.create_default_context(cafile=root_file)
    assert verify_code(ctx, teacher) == 0
    other_root = issue("Other Root", ca=True)
    other_file = tmp_path / "other.pem"
    other_file.write_bytes(other_root.pem)
    other = aia_ext.create_default_context(cafile=str(other_file))
    assert verify_code(other, pupil) == 20
    assert verify_code(other, teacher) == 20


def test_server_side_contexts_learn_nothing(root, root_file, server, tmp_path):
    """A client certificate chain a server verified is not learned (its side stays ssl's)."""
    intermediate = issue("Client Intermediate", root, ca=True)
    from cryptography.x509.oid import ExtendedKeyUsageOID

    client_leaf = issue("client", intermediate,
                        extended_key_usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    chain = tmp_path / "client.pem"
    chain.write_bytes(client_leaf.pem + intermediate.pem)
    key = tmp_path / "client.key"
    key.write_bytes(client_leaf.key_pem)
    server_leaf = issue("localhost", root, dns=["localhost"])
    srv_ctx = aia_ext.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    (tmp_path / "s.pem").write_bytes(server_leaf.pem)
    (tmp_path / "s.key").write_bytes(server_leaf.key_pem)
    srv_ctx.load_cert_chain(str(tmp_path / "s.pem"), str(tmp_path / "s.key"))
    srv_ctx.load_verify_locations(root_file)
    srv_ctx.verify_mode = ssl.CERT_REQUIRED
    cl = ssl.create_default_context(cafile=root_file)
    cl.load_cert_chain(str(chain), str(key))
    import threading

    accepted = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve() -> None:
            conn, _ = listener.accept()
            with srv_ctx.wrap_socket(conn, server_side=True) as tls:
                accepted.append(tls.recv(1))

        thread = threading.Thread(target=serve)
        thread.start()
        with socket.create_connection(listener.getsockname()) as raw, \
                cl.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"x")
        thread.join(10)
    assert accepted == [b"x"]  # the server verified the client's chain
    assert intermediate.der not in learned.store


def test_the_store_is_bounded_least_recently_used_first(root, monkeypatch):
    monkeypatch.setattr(learned, "MAX_LEARNED", 3)
    certs = [issue(f"Bounded {i}", root, ca=True) for i in range(5)]
    from aia_ext._private.options import DEFAULT

    for cert in certs:
        assert learned.learn([cert.der], DEFAULT) == 1
    assert len(learned.store) == 3
    assert [c.der in learned.store for c in certs] == [False, False, True, True, True]


def test_memory_per_thousand_learned(root):
    """The figure the docs give: ~1,000 learned intermediates stay under 4 MiB."""
    from aia_ext._private.options import DEFAULT

    tracemalloc = pytest.importorskip("tracemalloc")  # PyPy has none
    certs = [issue(f"Memory {i}", root, ca=True).der for i in range(1000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    learned.learn(certs, DEFAULT)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(learned.store) == 1000
    assert used < 4 * 1024 * 1024, f"{used / 1024:.0f} KiB for 1,000 certificates"


def test_clear_cache_forgets_what_was_learned(root, root_file, server):
    teacher, pupil, _ = _pair(root, server)
    ctx = aia_ext.create_default_context(cafile=root_file)
    assert verify_code(ctx, teacher) == 0
    aia_ext.clear_cache()
    assert verify_code(ctx, pupil) == 20
    # And it is learned again from the next verified chain (C forgot it too).
    assert verify_code(ctx, teacher) == 0
    assert verify_code(ctx, pupil) == 0


_CHILD = textwrap.dedent("""
    import json, socket, sys
    import aia_ext
    cafile, cache_dir, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    options = {"cache_dir": cache_dir} if cache_dir else {}
    ctx = aia_ext.create_default_context(cafile=cafile, **options)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            ctx.wrap_socket(raw, server_hostname="localhost").close()
        print(json.dumps(0))
    except ssl_error as exc:
        print(json.dumps(exc.verify_code))
""").replace("ssl_error", "__import__('ssl').SSLCertVerificationError")


def _in_child(root_file: str, cache_dir: str, port: int, engine: str) -> int:
    env = dict(os.environ, AIA_EXT_ENGINE=engine)
    env.pop("AIA_EXT_CACHE_DIR", None)
    result = subprocess.run([sys.executable, "-c", _CHILD, root_file, cache_dir, str(port)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return int(json.loads(result.stdout.strip().splitlines()[-1]))


def test_learned_intermediates_persist_in_the_disk_cache(engine, root, root_file, server,
                                                         tmp_path):
    teacher, pupil, _ = _pair(root, server)
    cache_dir = str(tmp_path / "cache")
    assert _in_child(root_file, cache_dir, teacher.port, engine) == 0
    assert _in_child(root_file, cache_dir, pupil.port, engine) == 0  # another process
    assert _in_child(root_file, "", pupil.port, engine) == 20  # without the cache: nothing


def test_a_planted_learned_entry_is_not_used(root, root_file, server, tmp_path):
    """An entry under the issuer's name whose certificate did not sign the leaf is ignored."""
    from aia_ext._private.chase import diskcache

    _teacher, pupil, intermediate = _pair(root, server)
    impostor = issue("Learned Intermediate", root, ca=True)  # same name, another key
    cache_dir = str(tmp_path / "cache")
    diskcache.store(cache_dir, learned.disk_key(intermediate.cert.subject.public_bytes()),
                    [impostor.der])
    ctx = aia_ext.create_default_context(cafile=root_file, cache_dir=cache_dir)
    assert verify_code(ctx, pupil) == 20
    assert impostor.der not in learned.store


def test_an_expired_learned_intermediate_gives_way_to_the_fetch(root, root_file, server, aia):
    """Learned while valid, expired since: used first, it would fail the chain with 10."""
    import datetime

    from aia_ext._private.options import DEFAULT

    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    old = issue("Renewed Intermediate", root, ca=True, not_before=now - 9 * day,
                not_after=now - day)
    new = issue("Renewed Intermediate", root, ca=True, key=old.key)
    path = unique_path()
    aia.serve(path, encode([new], "der"))
    pupil = server(issue("localhost", new, dns=["localhost"], aia=[aia.url(path)]))
    assert learned.learn([old.der], DEFAULT) == 1
    ctx = aia_ext.create_default_context(cafile=root_file)
    assert verify_code(ctx, pupil) == 0
    assert aia.hits[path] == 1
    assert old.der not in learned.store


def test_an_expired_learned_intermediate_on_disk_gives_way_to_the_fetch(root, root_file,
                                                                        server, aia, tmp_path):
    """The same from the disk cache (another process learned it while it was valid):
    diskcache.load() refuses an entry with an expired certificate."""
    import datetime

    from aia_ext._private.chase import diskcache

    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    old = issue("Renewed On Disk", root, ca=True, not_before=now - 9 * day, not_after=now - day)
    new = issue("Renewed On Disk", root, ca=True, key=old.key)
    path = unique_path()
    aia.serve(path, encode([new], "der"))
    pupil = server(issue("localhost", new, dns=["localhost"], aia=[aia.url(path)]))
    cache_dir = str(tmp_path / "cache")
    diskcache.store(cache_dir, learned.disk_key(old.cert.subject.public_bytes()), [old.der])
    ctx = aia_ext.create_default_context(cafile=root_file, cache_dir=cache_dir)
    assert verify_code(ctx, pupil) == 0
    assert aia.hits[path] == 1
    assert old.der not in learned.store


def _names(count: int) -> list[str]:
    return ["localhost"] + [f"name-{i:05d}.bulk.example" for i in range(count)]


@pytest.mark.parametrize("size", ["ordinary", "over-16-KiB"])
def test_an_oversized_intermediate_is_verified_but_not_learned(size, root, root_file, server):
    """Issue 32, item 11: a learned entry's size is capped (MAX_LEARNED_DER), and the
    store is bounded in bytes as well as in count."""
    big = size == "over-16-KiB"
    intermediate = issue("Bulky Intermediate", root, ca=True, dns=_names(800 if big else 0))
    assert (len(intermediate.der) > learned.MAX_LEARNED_DER) == big
    teacher = server(issue("localhost", intermediate, dns=["localhost"]), [intermediate])
    pupil = server(issue("localhost", intermediate, dns=["localhost"]))
    ctx = aia_ext.create_default_context(cafile=root_file)
    assert verify_code(ctx, teacher) == 0  # verified whatever its size
    assert verify_code(ctx, pupil) == (20 if big else 0)
    assert (intermediate.der in learned.store) == (not big)


def test_the_learned_store_is_bounded_in_bytes(root, root_file, server, monkeypatch):
    monkeypatch.setattr(learned, "MAX_LEARNED_BYTES", 3 * 4096)
    ctx = aia_ext.create_default_context(cafile=root_file)
    ders = []
    for i in range(8):
        intermediate = issue(f"Padded Intermediate {i}", root, ca=True, dns=_names(110))
        assert 3000 < len(intermediate.der) <= 4096
        teacher = server(issue("localhost", intermediate, dns=["localhost"]), [intermediate])
        assert verify_code(ctx, teacher) == 0
        assert intermediate.der in learned.store  # each is learned...
        ders.append(intermediate.der)
    # ... and the oldest go first, to stay within the bytes.
    assert learned.store.held() <= 3 * 4096
    assert [der in learned.store for der in ders] == [False] * 5 + [True] * 3
