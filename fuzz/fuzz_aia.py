"""atheris harness: certificate DER -> caIssuers URLs -> URL policy.

A certificate cryptography refuses to load is uninteresting; once loaded,
extracting its caIssuers URLs and judging each under the default and a strict
policy must never raise.

    python fuzz/fuzz_aia.py fuzz/corpus/aia -max_total_time=600
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["aia_ext"]):
    from cryptography import x509

    from aia_ext._private.options import Options
    from aia_ext._private.urls import address_refusal, ca_issuer_urls, url_refusal

STRICT = Options(allow_private=False, url_filter=lambda url: url.startswith("http://pki."))
PERMISSIVE = Options(allow_https=True)


def test_one_input(data: bytes) -> None:
    try:
        cert = x509.load_der_x509_certificate(data)
    except Exception:  # noqa: BLE001 - not a certificate cryptography loads: not our input
        return
    for url in ca_issuer_urls(cert):
        for options in (Options(), STRICT, PERMISSIVE):
            verdict = url_refusal(url, options)
            assert verdict is None or verdict.startswith("refused by policy"), verdict
    # The address check takes attacker-chosen text too (from getaddrinfo).
    address_refusal(data[:64].decode("latin-1"), allow_private=False)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
