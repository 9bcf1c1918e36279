"""atheris harness: certificate DER -> der.parse_certificate -> URL policy.

der.py reads the fields AIA chasing needs from attacker-supplied certificates.
Any outcome other than a ParsedCertificate or a DERError is a finding; every
caIssuers URL it yields must then be judged by the URL policy without raising,
and every name must print.

    python fuzz/fuzz_aia.py fuzz/corpus/aia -max_total_time=600
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["aia_ext"]):
    from aia_ext._private.chase.addresses import refusal as address_refusal
    from aia_ext._private.chase.policy import url_refusal
    from aia_ext._private.der import DERError, name_to_string, names_match, parse_certificate
    from aia_ext._private.options import Options

STRICT = Options(allow_private=False, url_filter=lambda url: url.startswith("http://pki."))
PERMISSIVE = Options(allow_https=True)


def test_one_input(data: bytes) -> None:
    try:
        cert = parse_certificate(data)
    except DERError:
        return
    assert isinstance(name_to_string(cert.subject), str)
    assert isinstance(name_to_string(cert.issuer), str)
    names_match(cert.subject, cert.issuer)
    for url in cert.ca_issuers:
        for options in (Options(), STRICT, PERMISSIVE):
            verdict = url_refusal(url, options)
            assert verdict is None or verdict.startswith("refused by policy"), verdict
    # The address check takes text from getaddrinfo; feed it arbitrary text too.
    address_refusal(data[:64].decode("latin-1"), allow_private=False)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
