"""der.py against cryptography: same names, notAfter and caIssuers on every test certificate."""

from __future__ import annotations

import pathlib
import random
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from aia_ext._private.bundle import _pkcs7_certificate_blobs, pem_blocks
from aia_ext._private.der import DERError, name_to_string, names_match, parse_certificate
from aia_ext._private.testing import issue

pytestmark = pytest.mark.engine_agnostic  # parsers and policy: no engine involved

DATA = pathlib.Path(__file__).parent / "data"


def _all_test_certificates() -> list[bytes]:
    ders = []
    for path in sorted(DATA.rglob("*")):
        if not path.is_file() or path.suffix not in (".pem", ".der", ".p7b", ".p7c"):
            continue
        if "fuzz" in path.parts:  # fuzzing regressions: malformed on purpose
            continue
        raw = path.read_bytes()
        if b"-----BEGIN" in raw:
            blobs = pem_blocks(raw[raw.index(b"-----BEGIN"):], 100)
        elif raw[:1] == b"\x30":
            blobs = [raw]
        else:
            continue
        for blob in blobs:  # PKCS#7 bundles are unwrapped
            ders += _pkcs7_certificate_blobs(blob) or [blob]
    return sorted(set(ders))


def _reference(der: bytes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # real roots with non-positive serials
        cert = x509.load_der_x509_certificate(der)
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        urls = tuple(d.access_location.value for d in aia
                     if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
                     and isinstance(d.access_location, x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        urls = ()
    return cert, urls


CERTS = _all_test_certificates()


def test_the_corpus_is_large():
    assert len(CERTS) >= 80


@pytest.mark.parametrize("der", CERTS, ids=lambda d: f"{len(d)}-{d[-8:].hex()}")
def test_fields_match_cryptography(der):
    ours = parse_certificate(der)
    cert, urls = _reference(der)
    assert ours.subject_text == cert.subject.rfc4514_string()
    assert ours.issuer_text == cert.issuer.rfc4514_string()
    assert ours.not_after == cert.not_valid_after_utc.timestamp()
    assert ours.ca_issuers == urls
    assert ours.subject == cert.subject.public_bytes()
    assert ours.issuer == cert.issuer.public_bytes()
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        ski = None
    try:
        aki = cert.extensions.get_extension_for_class(
            x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        aki = None
    assert (ours.subject_key_id, ours.authority_key_id) == (ski, aki)


def test_unusual_names_print_like_cryptography(root):
    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'Müller, "Söhne" + Co; <x>'),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, " #lead and trail "),
        x509.NameAttribute(NameOID.EMAIL_ADDRESS, "ca@example.com"),
        x509.NameAttribute(NameOID.COMMON_NAME, "日本 CA"),
    ])
    cert = issue("x", root).cert
    der = cert.public_bytes(Encoding.DER)
    # Swap in the unusual name as the issuer by re-signing a builder copy.
    from cryptography.hazmat.primitives import hashes

    built = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
             .public_key(root.key.public_key()).serial_number(7)
             .not_valid_before(cert.not_valid_before_utc).not_valid_after(cert.not_valid_after_utc)
             .sign(root.key, hashes.SHA256()))
    der = built.public_bytes(Encoding.DER)
    assert parse_certificate(der).subject_text == built.subject.rfc4514_string()


def test_names_match_canonically():
    a = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example  CA")]).public_bytes()
    b = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example ca",
                                      _type=x509.name._ASN1Type.PrintableString)]).public_bytes()
    c = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Other CA")]).public_bytes()
    assert a != b and names_match(a, b)
    assert not names_match(a, c)
    assert names_match(a, a)


@pytest.mark.parametrize("seed", range(4))
def test_damaged_certificates_only_ever_raise_der_error(seed):
    rng = random.Random(seed)
    der = CERTS[seed * 7 % len(CERTS)]
    for cut in range(0, len(der), max(1, len(der) // 200)):
        with pytest.raises(DERError):
            parse_certificate(der[:cut])
    for _ in range(2000):
        damaged = bytearray(der)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            parse_certificate(bytes(damaged))
        except DERError:
            pass


def test_unreadable_name_prints_a_placeholder():
    assert name_to_string(b"\x31\x00") == "(unreadable name)"


def test_fuzz_regression_truncated_oid_in_a_name():
    # fuzz/fuzz_aia.py: an attribute OID whose last byte has the high bit set.
    cert = parse_certificate((DATA / "fuzz" / "der-truncated-oid-in-name.der").read_bytes())
    assert name_to_string(cert.issuer) == "(unreadable name)"
    assert name_to_string(cert.subject)


def test_days_from_civil_matches_calendar():
    import calendar

    from aia_ext._private.der import _days_from_civil

    rng = random.Random(5)
    for _ in range(5000):
        y, m, d = rng.randint(1950, 2200), rng.randint(1, 12), rng.randint(1, 28)
        assert _days_from_civil(y, m, d) * 86400 == calendar.timegm((y, m, d, 0, 0, 0, 0, 0, 0))
    assert _days_from_civil(2000, 2, 29) * 86400 == calendar.timegm((2000, 2, 29, 0, 0, 0))
