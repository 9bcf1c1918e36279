"""atheris harness: AIA response bodies -> certificates_in_response() (PEM, DER, BER PKCS#7).

Any outcome other than a list of 1..MAX_CERTIFICATES certificates or a
FetchError("parse error") is a finding (an uncaught exception, a hang, a crash).

    python fuzz/fuzz_parse.py fuzz/corpus/parse -max_total_time=600
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["aia_ext"]):
    from aia_ext._private.chase.response import MAX_CERTIFICATES, certificates_in_response
    from aia_ext._private.errors import FetchError


def test_one_input(data: bytes) -> None:
    try:
        certs = certificates_in_response(data)
    except FetchError as exc:
        assert exc.reason == "parse error", exc
        return
    assert 1 <= len(certs) <= MAX_CERTIFICATES


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
