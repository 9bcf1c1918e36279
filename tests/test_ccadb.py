"""Issue 23: CCADB's intermediates report as a preloaded pool.

The report is synthetic but in CCADB's layout ("All Intermediates with PEM":
every field quoted, CRLF line ends, commas and quotes inside fields, each
PEM wrapped in apostrophes and spread over lines), served over real HTTP on
127.0.0.1 for ``aia-ext intermediates update``.  The chains that need it are
real TLS servers sending only a leaf without any caIssuers URL.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any

import pytest

import aia_ext
from aia_ext._private import cli
from aia_ext._private.ccadb import POOL_FILE, pool_file_bytes
from aia_ext._private.der import parse_certificate
from aia_ext._private.testing import Cert, issue

from .helpers import unique_path, verify_code

HEADER = [
    "CA Owner", "Parent Name", "Certificate Name", "Certificate Issuer Common Name",
    "Certificate Issuer Organization", "Certificate Subject Common Name",
    "Certificate Subject Organization", "Certificate Serial Number", "SHA-256 Fingerprint",
    "Subject + SPKI SHA256", "Valid From [GMT]", "Valid To [GMT]", "Public Key Algorithm",
    "Signature Hash Algorithm", "Extended Key Usage", "CP/CPS Same As Parent",
    "Certificate Policy (CP)", "Certificate Practice Statement (CPS)", "Audits Same As Parent",
    "Standard Audit", "BR Audit", "Auditor", "Standard Audit Statement Dt",
    "Management Assertions By", "Comments", "PEM Info",
]


def report(certs: list[Cert], *, mutate: Any = None) -> bytes:
    """A report in CCADB's layout; ``mutate(index, row)`` may spoil a row."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(HEADER)
    for i, cert in enumerate(certs):
        pem = cert.pem.decode().strip().replace("\n", "\r\n")
        row = {name: "" for name in HEADER}
        row.update({
            "CA Owner": 'Example, Inc. "Test CA"',
            "Certificate Name": cert.cert.subject.rfc4514_string(),
            "SHA-256 Fingerprint": hashlib.sha256(cert.der).hexdigest().upper(),
            "Comments": "line one\r\nline two, with a comma",
            "PEM Info": f"'{pem}'",
        })
        values = [row[name] for name in HEADER]
        if mutate is not None:
            values = mutate(i, values)
        writer.writerow(values)
    return out.getvalue().encode("utf-8")


@pytest.fixture(scope="module")
def population(root: Cert) -> list[Cert]:
    """A CCADB-size set: 2,000 intermediates under the test root (one shared key)."""
    key = issue("Key Holder", root, ca=True).key
    return [issue(f"Preloaded Intermediate {i}", root, ca=True, key=key) for i in range(2000)]


def _pupil(server, issuer: Cert):
    return server(issue("localhost", issuer, dns=["localhost"]))


def test_intermediates_reads_a_ccadb_report(population, root_file, server, tmp_path):
    path = tmp_path / "report.csv"
    path.write_bytes(report(population))
    started = time.perf_counter()
    ctx = aia_ext.create_default_context(cafile=root_file, intermediates=str(path),
                                         learn_intermediates=False)
    loaded_in = time.perf_counter() - started
    print(f"2,000-row report loaded in {loaded_in * 1000:.0f} ms")
    assert verify_code(ctx, _pupil(server, population[1500])) == 0
    plain = aia_ext.create_default_context(cafile=root_file, learn_intermediates=False)
    assert verify_code(plain, _pupil(server, population[1500])) == 20


def test_the_report_as_bytes_and_without_a_fingerprint_column(population, root_file, server):
    data = report(population[:3], mutate=lambda i, row: [*row[:8], "", *row[9:]])
    ctx = aia_ext.create_default_context(cafile=root_file, intermediates=data)
    assert verify_code(ctx, _pupil(server, population[2])) == 0


@pytest.mark.parametrize("spoil, message", [
    (lambda i, row: [*row[:-1], "'not a certificate'"], "holds no certificate"),
    (lambda i, row: [*row[:-1], "'-----BEGIN CERTIFICATE-----\r\nAAAA\r\n"
                                "-----END CERTIFICATE-----'"], "unreadable certificate"),
    (lambda i, row: row[:5], "no PEM field"),
    (lambda i, row: [*row[:8], "00" * 32, *row[9:]], "SHA-256 fingerprint"),
])
def test_a_bad_row_is_an_error_naming_it(spoil, message, population):
    data = report(population[:5], mutate=lambda i, row: spoil(i, row) if i == 3 else row)
    with pytest.raises(ValueError, match=message) as info:
        aia_ext.create_default_context(intermediates=data)
    assert "line" in str(info.value)


def test_a_report_without_a_pem_column_is_refused():
    data = b'"CA Owner","PEM Stuff Removed"\r\n"x","y"\r\n'.replace(b"PEM Stuff Removed", b"Name")
    with pytest.raises(ValueError, match="no certificate"):
        aia_ext.create_default_context(intermediates=data)


# ---- aia-ext intermediates update ----------------------------------------------

def _update(url: str, cache_dir: str) -> tuple[int, str, str]:
    out = io.StringIO()
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["intermediates", "update", "--url", url, "--cache-dir", cache_dir,
                         "--timeout", "20"], out=out)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.engine_agnostic
def test_the_command_without_an_action_shows_its_own_usage(capsys, monkeypatch, tmp_path):
    assert cli.main(["intermediates"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: aia-ext intermediates ") and "update" in err
    # And without a cache directory: one line, exit 1, nothing written.
    monkeypatch.delenv("AIA_EXT_CACHE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["intermediates", "update", "--url", "http://127.0.0.1:9/r.csv"]) == 1
    assert capsys.readouterr().err == ("aia-ext: error: the pool was not changed "
                                       "(http://127.0.0.1:9/r.csv): no cache directory: pass "
                                       "--cache-dir or set AIA_EXT_CACHE_DIR\n")
    assert list(tmp_path.iterdir()) == []


def test_update_writes_a_pool_every_context_with_the_cache_dir_uses(
        population, root_file, server, aia, tmp_path):
    url = aia.serve(unique_path(".csv"), report(population))
    cache_dir = str(tmp_path / "cache")
    code, out, err = _update(url, cache_dir)
    assert (code, err) == (0, f"downloading {url}\n")
    assert out == (f"wrote 2000 intermediates from {url} to "
                   f"{os.path.join(cache_dir, POOL_FILE)}\n")
    assert os.stat(cache_dir).st_mode & 0o077 == 0
    ctx = aia_ext.create_default_context(cafile=root_file, cache_dir=cache_dir,
                                         learn_intermediates=False)
    hits = aia.total_hits
    assert verify_code(ctx, _pupil(server, population[7])) == 0
    assert aia.total_hits == hits  # no fetch
    other = aia_ext.create_default_context(cafile=root_file, learn_intermediates=False)
    assert verify_code(other, _pupil(server, population[7])) == 20


def _serve_raw(aia, body: bytes, *, length: int | None = None, chunked_mib: int = 0) -> str:
    def handler(request: Any) -> None:
        request.send_response(200)
        if chunked_mib:
            request.send_header("Transfer-Encoding", "chunked")
            request.end_headers()
            chunk = b"x" * (1 << 20)
            try:
                for _ in range(chunked_mib):
                    request.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                request.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # the client gave up, as it should
            return
        request.send_header("Content-Length", str(len(body) if length is None else length))
        request.end_headers()
        try:
            request.wfile.write(body)
        except OSError:
            pass
        request.close_connection = True

    return aia.serve(unique_path(".csv"), b"", handler=handler)


@pytest.mark.parametrize("case", ["truncated", "garbage rows", "huge length", "huge stream",
                                  "not found", "html"])
def test_a_failed_update_changes_nothing(case, population, aia, tmp_path):
    cache_dir = str(tmp_path / "cache")
    good = aia.serve(unique_path(".csv"), report(population[:10]))
    assert _update(good, cache_dir)[0] == 0
    pool = os.path.join(cache_dir, POOL_FILE)
    before = Path(pool).read_bytes()
    data = report(population[:50])
    if case == "truncated":
        url = _serve_raw(aia, data[: len(data) // 2], length=len(data))
    elif case == "garbage rows":
        url = aia.serve(unique_path(".csv"), data[:-200] + b'"\x00garbage\r\n,,,"\r\n')
    elif case == "huge length":
        url = _serve_raw(aia, b"x" * 1024, length=64 * 1024 * 1024)
    elif case == "huge stream":
        url = _serve_raw(aia, b"", chunked_mib=48)
    elif case == "not found":
        url = aia.url(unique_path(".csv"))
    else:
        url = aia.serve(unique_path(".csv"), b"<html><body>Maintenance</body></html>")
    try:
        import tracemalloc
    except ImportError:  # PyPy: the memory bound is checked on CPython
        tracemalloc = None
    if tracemalloc is not None:
        tracemalloc.start()
    started = time.monotonic()
    code, out, err = _update(url, cache_dir)
    elapsed = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1] if tracemalloc is not None else 0
    if tracemalloc is not None:
        tracemalloc.stop()
    assert code == 1 and out == ""
    # Where it was downloading from, and then the error, naming it again (issue 32).
    started, error = err.splitlines()
    assert started == f"downloading {url}"
    assert error.startswith(f"aia-ext: error: the pool was not changed ({url}): ")
    assert Path(pool).read_bytes() == before
    assert elapsed < 20
    assert peak < 80 * 1024 * 1024  # bounded by the 32 MiB limit, never the body


def test_update_needs_a_cache_directory(monkeypatch, aia):
    monkeypatch.delenv("AIA_EXT_CACHE_DIR", raising=False)
    err = io.StringIO()
    import contextlib

    with contextlib.redirect_stderr(err):
        code = cli.main(["intermediates", "update", "--url", aia.url("/x.csv")],
                        out=io.StringIO())
    assert code == 1 and "--cache-dir" in err.getvalue()


def test_update_is_policy_controlled(tmp_path):
    code, _out, err = _update("http://169.254.169.254/latest/report.csv", str(tmp_path / "c"))
    assert code == 1 and "refused by policy" in err


@pytest.mark.parametrize("content", [b"garbage\n", b"# aia_ext intermediates pool v1\nnope\n",
                                     b""])
def test_a_damaged_pool_file_is_ignored_with_a_warning(content, population, root_file, server,
                                                       tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o700)
    (cache_dir / POOL_FILE).write_bytes(content)
    ctx = aia_ext.create_default_context(cafile=root_file, cache_dir=str(cache_dir),
                                         learn_intermediates=False)
    assert verify_code(ctx, _pupil(server, population[3])) == 20
    assert any("intermediates pool" in r.getMessage() for r in caplog.records
               if r.levelname == "WARNING")


def test_a_planted_pool_symlink_is_not_followed(population, root_file, server, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o700)
    target = tmp_path / "elsewhere.pem"
    target.write_bytes(pool_file_bytes([parse_certificate(population[4].der)], "test"))
    (cache_dir / POOL_FILE).symlink_to(target)
    ctx = aia_ext.create_default_context(cafile=root_file, cache_dir=str(cache_dir),
                                         learn_intermediates=False)
    assert verify_code(ctx, _pupil(server, population[4])) == 20


# ---- Issue 32, item 8: a mirror behind a private CA, progress, the URL in errors -------

@pytest.fixture
def https_mirror(root, tmp_path):
    """An https server on 127.0.0.1 whose certificate the test root issued."""
    import ssl

    from aia_ext._private.testing import AIAServer, write_pem

    leaf = issue("127.0.0.1", root, ips=["127.0.0.1"])
    chain, key = tmp_path / "mirror.pem", tmp_path / "mirror.key"
    write_pem(chain, leaf)
    key.write_bytes(leaf.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(chain), str(key))
    with AIAServer(context) as mirror:
        yield mirror


def _update_with(*args: str) -> tuple[int, str, str]:
    import contextlib

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["intermediates", "update", "--timeout", "20", *args], out=out)
    return code, out.getvalue(), err.getvalue()


def test_cafile_verifies_a_mirror_behind_a_private_ca(https_mirror, population, root_file,
                                                     tmp_path):
    url = https_mirror.serve("/report.csv", report(population[:50]))
    assert url.startswith("https://127.0.0.1:")
    cache_dir = str(tmp_path / "cache")
    # The system store does not know the private root: refused, naming the URL.
    code, out, err = _update_with("--url", url, "--cache-dir", cache_dir)
    assert (code, out) == (1, "")
    error = err.splitlines()[-1]
    assert error.startswith(f"aia-ext: error: the pool was not changed ({url}): TLS error")
    assert "CERTIFICATE_VERIFY_FAILED" in error
    assert not os.path.exists(os.path.join(cache_dir, POOL_FILE))
    code, out, err = _update_with("--url", url, "--cache-dir", cache_dir, "--cafile", root_file)
    assert code == 0, err
    assert out.startswith(f"wrote 50 intermediates from {url} to ")


def test_a_cafile_that_holds_nothing_is_refused_naming_it(tmp_path):
    missing = str(tmp_path / "nope.pem")
    code, _out, err = _update_with("--url", "https://127.0.0.1:9/r.csv", "--cache-dir",
                                   str(tmp_path / "c"), "--cafile", missing)
    assert code == 1
    assert f"(https://127.0.0.1:9/r.csv): --cafile {missing}: no certificate could be loaded" \
        in err


def test_a_slow_download_shows_progress(population, aia, tmp_path):
    """Not a terminal (a CI log): a line every 2 s; a terminal gets one line rewritten."""
    body = report(population)

    def slowly(request: Any) -> None:
        request.send_response(200)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        step = len(body) // 5 + 1
        for start in range(0, len(body), step):
            request.wfile.write(body[start:start + step])
            request.wfile.flush()
            time.sleep(0.7)

    url = aia.serve(unique_path(".csv"), b"", handler=slowly)
    code, _out, err = _update_with("--url", url, "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0] == f"downloading {url}"
    assert 1 <= len(lines[1:]) <= 2
    assert all(line.startswith("downloading: ") and line.endswith(" MiB received")
               for line in lines[1:])
