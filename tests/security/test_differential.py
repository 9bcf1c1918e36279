"""Differential: where plain OpenSSL rejects a complete chain for a reason other
than a missing issuer, aia_ext rejects the same chain served incomplete with the
very same verify code.  AIA chasing may only ever turn "missing issuer" into a
verdict on the completed chain; it never accepts what OpenSSL rejects.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

import aia_ext
from aia_ext._private.testing import Cert, issue, new_key

from ..helpers import unique_path, verify_code

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


@dataclass
class Case:
    leaf: Cert
    intermediates: list[Cert]  # leaf's issuer first
    hostname: str = "localhost"


def _leaf(issuer: Cert, url: str, **kwargs: object) -> Cert:
    return issue("localhost", issuer, aia=[url], dns=["localhost"], **kwargs)  # type: ignore[arg-type]


def expired(root: Cert, url: str) -> Case:
    inter = issue("Intermediate", root, ca=True)
    return Case(_leaf(inter, url, not_before=NOW - 9 * DAY, not_after=NOW - DAY), [inter])


def not_yet_valid(root: Cert, url: str) -> Case:
    inter = issue("Intermediate", root, ca=True)
    return Case(_leaf(inter, url, not_before=NOW + DAY, not_after=NOW + 9 * DAY), [inter])


def hostname_mismatch(root: Cert, url: str) -> Case:
    inter = issue("Intermediate", root, ca=True)
    return Case(_leaf(inter, url), [inter], hostname="www.example.com")


def bad_signature(root: Cert, url: str) -> Case:
    inter = issue("Intermediate", root, ca=True)
    return Case(_leaf(inter, url, sign_with=new_key()), [inter])


def wrong_eku(root: Cert, url: str) -> Case:
    inter = issue("Intermediate", root, ca=True)
    leaf = _leaf(inter, url, extended_key_usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    return Case(leaf, [inter])


def ca_false_issuer(root: Cert, url: str) -> Case:
    inter = issue("Intermediate", root, ca=False, extended_key_usage=[])
    return Case(_leaf(inter, url), [inter])


def path_length(root: Cert, url: str) -> Case:
    top = issue("Top", root, ca=True, path_length=0)
    middle = issue("Middle", top, ca=True)
    return Case(_leaf(middle, url), [middle, top])


def name_constraints(root: Cert, url: str) -> Case:
    constraints = x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.com")],
                                       excluded_subtrees=None)
    inter = issue("Intermediate", root, ca=True, name_constraints=constraints)
    return Case(_leaf(inter, url), [inter])


CASES = {f.__name__: f for f in (expired, not_yet_valid, hostname_mismatch, bad_signature,
                                  wrong_eku, ca_false_issuer, path_length, name_constraints)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_enabled_rejects_with_openssls_own_code(name, aia, root, root_file, server):
    url = aia.url(unique_path())
    case = CASES[name](root, url)
    # Serve the whole bundle at the leaf's URL, so one fetch completes it.
    aia.serve(aia.path_of(url), b"".join(c.pem for c in case.intermediates))
    plain = ssl.create_default_context(cafile=root_file)
    expected = verify_code(plain, server(case.leaf, case.intermediates), case.hostname)
    assert expected not in (0, 2, 20), "the case must be invalid for another reason"
    enabled = aia_ext.create_default_context(cafile=root_file)
    assert verify_code(enabled, server(case.leaf), case.hostname) == expected
    assert verify_code(enabled, server(case.leaf, case.intermediates), case.hostname) == expected


def test_the_cases_cover_distinct_verdicts(aia, root, root_file, server):
    # Guard against the table degrading into one repeated failure.
    codes = set()
    plain = ssl.create_default_context(cafile=root_file)
    for build in CASES.values():
        case = build(root, aia.url(unique_path()))
        codes.add(verify_code(plain, server(case.leaf, case.intermediates), case.hostname))
    assert len(codes) >= 7, codes
