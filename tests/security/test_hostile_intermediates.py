"""Cases 1-7: the AIA server hands out a certificate that must not complete the chain."""

from __future__ import annotations

import datetime
import ssl

import pytest
from cryptography import x509

from aia_ext._private.testing import Cert, issue

from ..helpers import unique_path, verify_code
from .hostile import bounded, tight_context

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)
PARTIAL_CHAIN = getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0x80000)

UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
SELF_SIGNED_CERT_IN_CHAIN = 19
CERT_HAS_EXPIRED = 10
# X509_V_ERR_INVALID_CA was renumbered from 24 to 79 in OpenSSL 3.0.
INVALID_CA = 79 if ssl.OPENSSL_VERSION_INFO >= (3,) else 24
PATH_LENGTH_EXCEEDED = 25
EXCLUDED_VIOLATION = 48


def _self_signed(root: Cert) -> tuple[Cert, Cert]:
    fake = issue("aia_ext test root", ca=True)  # the trusted root's name, another key
    return fake, fake


def _wrong_key(root: Cert) -> tuple[Cert, Cert]:
    real = issue("Intermediate", root, ca=True)
    impostor = issue("Intermediate", root, ca=True)  # same subject, other key
    return real, impostor


def _expired(root: Cert) -> tuple[Cert, Cert]:
    old = issue("Intermediate", root, ca=True, not_before=NOW - 20 * DAY, not_after=NOW - DAY)
    return old, old


def _not_a_ca(root: Cert) -> tuple[Cert, Cert]:
    plain = issue("Intermediate", root, ca=False, extended_key_usage=[])
    return plain, plain


def _no_basic_constraints(root: Cert) -> tuple[Cert, Cert]:
    bare = issue("Intermediate", root, ca=True, basic_constraints=False)
    return bare, bare


def _excluded_name(root: Cert) -> tuple[Cert, Cert]:
    constraints = x509.NameConstraints(permitted_subtrees=None,
                                       excluded_subtrees=[x509.DNSName("localhost")])
    inter = issue("Intermediate", root, ca=True, name_constraints=constraints)
    return inter, inter


def _untrusted_root(root: Cert) -> tuple[Cert, Cert]:
    inter = issue("Intermediate", issue("an untrusted root", ca=True), ca=True)
    return inter, inter


# name: (builder -> (issuer of the leaf, certificate served at the AIA URL), expected code)
CASES = {
    "self-signed": (_self_signed, SELF_SIGNED_CERT_IN_CHAIN),
    "same-subject-other-key": (_wrong_key, UNABLE_TO_GET_ISSUER_CERT_LOCALLY),
    "expired": (_expired, CERT_HAS_EXPIRED),
    "ca-false": (_not_a_ca, INVALID_CA),
    "no-basic-constraints": (_no_basic_constraints, INVALID_CA),
    "name-constraints-exclude-leaf": (_excluded_name, EXCLUDED_VIOLATION),
    "chains-to-untrusted-root": (_untrusted_root, UNABLE_TO_GET_ISSUER_CERT_LOCALLY),
}


@pytest.mark.parametrize("partial_chain", [False, True], ids=["default", "partial-chain"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_intermediate_is_rejected(case, partial_chain, aia, root, root_file, server,
                                          healthy):
    build, expected = CASES[case]
    signer, served = build(root)
    url = aia.serve(unique_path(), served.der)
    leaf = issue("localhost", signer, aia=[url], dns=["localhost"])
    ctx = tight_context(root_file)
    if partial_chain:
        ctx.verify_flags |= PARTIAL_CHAIN
    srv = server(leaf)
    with bounded():
        assert verify_code(ctx, srv) == expected
    assert aia.hits[aia.path_of(url)] == 1
    healthy()


def test_path_length_exceeded(aia, root, root_file, server, healthy):
    # root -> top (pathLen 0) -> middle -> leaf: middle may not issue a CA.
    top_url, middle_url = aia.url(unique_path()), aia.url(unique_path())
    top = issue("Top", root, ca=True, path_length=0)
    middle = issue("Middle", top, ca=True, aia=[top_url])
    leaf = issue("localhost", middle, aia=[middle_url], dns=["localhost"])
    aia.serve(aia.path_of(top_url), top.der)
    aia.serve(aia.path_of(middle_url), middle.der)
    with bounded():
        assert verify_code(tight_context(root_file), server(leaf)) == PATH_LENGTH_EXCEEDED
    healthy()
