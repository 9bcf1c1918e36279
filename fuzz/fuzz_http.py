"""atheris harness: raw HTTP response bytes -> http1.exchange() (h11 under our limits).

The input is split into reads of fuzzer-chosen sizes, as a socket would deliver
it.  Any outcome other than a Response (status, Location, a body no larger than
the limit) or a FetchError is a finding; so is reading more raw bytes than the
budget allows.

    python fuzz/fuzz_http.py fuzz/corpus/http -max_total_time=600
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["aia_ext"]):
    from aia_ext._private.chase import http1
    from aia_ext._private.errors import FetchError

MAX_BODY = 4096


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    sizes = [provider.ConsumeIntInRange(1, 64) for _ in range(8)]
    stream = provider.ConsumeBytes(provider.remaining_bytes())
    position = 0
    served = 0

    def recv(limit: int) -> bytes:
        nonlocal position, served
        size = min(limit, sizes[served % len(sizes)])
        served += 1
        chunk = stream[position:position + size]
        position += len(chunk)
        return chunk

    try:
        response = http1.exchange(lambda _data: None, recv, "/ca.der", "pki.example", MAX_BODY)
    except FetchError:
        return
    assert len(response.body) <= MAX_BODY
    assert position <= 2 * MAX_BODY + http1.MAX_HEAD + http1.READ_SIZE


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
