"""Build the seed corpora under fuzz/corpus/ from tests/data (run once before fuzzing)."""

from __future__ import annotations

import hashlib
import pathlib
import re

HERE = pathlib.Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data"
PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)


def _save(directory: pathlib.Path, blob: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(blob).hexdigest()).write_bytes(blob)  # noqa: S324 - a name


def main() -> None:
    import base64

    for path in sorted(DATA.rglob("*")):
        if not path.is_file():
            continue
        raw = path.read_bytes()
        _save(HERE / "corpus" / "parse", raw)
        ders = [base64.b64decode(b"".join(m.split())) for m in PEM.findall(raw)]
        if raw[:1] == b"\x30" and not ders:
            ders = [raw]
        for der in ders:
            _save(HERE / "corpus" / "aia", der)
            _save(HERE / "corpus" / "parse", der)
    # HTTP responses: the framings a caIssuers server sends, and some it should not.
    der = (DATA / "pkcs7" / "google.single.der").read_bytes()
    heads = [
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(der),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 302 Found\r\nLocation: http://pki.example/ca.der\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
    ]
    for head in heads:
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(der), der) if b"chunked" in head else der
        _save(HERE / "corpus" / "http", head + body)
    for name in ("http", "parse", "aia"):
        print(name, len(list((HERE / "corpus" / name).iterdir())), "seeds")


if __name__ == "__main__":
    main()
