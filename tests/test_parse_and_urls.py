"""Response parsing, caIssuers extraction and URL policy, on real certificate files."""

from __future__ import annotations

import base64
import pathlib

import pytest

from aia_ext._private.bundle import pem_blocks
from aia_ext._private.chase.addresses import refusal as address_refusal
from aia_ext._private.chase.policy import url_refusal
from aia_ext._private.chase.response import MAX_CERTIFICATES, certificates_in_response
from aia_ext._private.der import parse_certificate
from aia_ext._private.errors import FetchError
from aia_ext._private.options import Options

pytestmark = pytest.mark.engine_agnostic  # parsers and policy: no engine involved

DATA = pathlib.Path(__file__).parent / "data"

PKCS7_SAMPLES = {
    # file: (number of certificates, first subject's CN)
    "amazon-roots.der": (2, "Amazon Root CA 3"),
    "amazon-roots.p7b": (2, "Amazon Root CA 3"),  # BER, indefinite lengths
    "google.binary.p7b": (2, "www.google.com"),
    "google.chain.pem": (2, "www.google.com"),
    "google.pem_cert.p7b": (2, "www.google.com"),  # PKCS#7 under a CERTIFICATE label
    "google.pem_pkcs7.p7b": (2, "www.google.com"),
    "google.single.der": (1, "www.google.com"),
    "google.single.pem": (1, "www.google.com"),
    "isrg.pem": (1, "ISRG Root X1"),
    "pyhanko-many-certs.pem": (2, "Root CA"),
    "pyhanko-test.p7b": (2, "Root CA"),
    "pyhanko-test.p7b.pem": (2, "Root CA"),
    "pyhanko-with-ldap-urls.der": (1, "Cert with LDAP URLs in AIA"),
}


@pytest.mark.parametrize("name", sorted(PKCS7_SAMPLES))
def test_real_pkcs7_and_pem_samples(name):
    count, first_cn = PKCS7_SAMPLES[name]
    certs = certificates_in_response((DATA / "pkcs7" / name).read_bytes())
    assert len(certs) == count
    assert certs[0].subject_text.startswith(f"CN={first_cn}")


def test_ber_indefinite_length_parses_without_warnings(recwarn):
    body = (DATA / "pkcs7" / "amazon-roots.p7b").read_bytes()
    assert body[:2] == b"\x30\x80"  # really indefinite-length BER
    assert len(certificates_in_response(body)) == 2
    assert not [w for w in recwarn if "BER" in str(w.message)]


@pytest.mark.parametrize("body", [
    b"", b"   ", b"<html><body>Error</body></html>", b"\x30\x03\x02\x01\x00",
    b"\x30\x80", b"\x30\x84\xff\xff\xff\xff", b"-----BEGIN CERTIFICATE-----\n!!!\n"
    b"-----END CERTIFICATE-----\n", b"\x00" * 100,
])
def test_garbage_is_a_parse_error(body):
    with pytest.raises(FetchError) as info:
        certificates_in_response(body)
    assert info.value.reason == "parse error"


def test_truncated_pkcs7_is_a_parse_error():
    body = (DATA / "pkcs7" / "google.binary.p7b").read_bytes()
    for cut in (10, len(body) // 2, len(body) - 1):
        with pytest.raises(FetchError):
            certificates_in_response(body[:cut])


def test_certificate_count_is_bounded():
    one = (DATA / "pkcs7" / "google.single.pem").read_bytes()
    assert len(certificates_in_response(one * (MAX_CERTIFICATES + 5))) == MAX_CERTIFICATES


def _chromium(name: str):
    raw = (DATA / "chromium_aia" / name).read_bytes()
    if name.endswith(".der"):
        return parse_certificate(raw)
    # These files carry `openssl x509 -text` output before the PEM block.
    return parse_certificate(pem_blocks(raw[raw.index(b"-----BEGIN"):], 100)[0])


@pytest.mark.parametrize("name,count", [
    ("target_no_aia.pem", 0), ("target_one_aia.pem", 1), ("target_two_aia.pem", 2),
    ("target_three_aia.pem", 3), ("target_six_aia.pem", 6),
])
def test_chromium_caissuers_counts(name, count):
    urls = _chromium(name).ca_issuers
    assert len(urls) == count
    assert all(u.startswith("http://url-for-aia") for u in urls)


@pytest.mark.parametrize("name,expected", [
    ("target_file_aia.pem", ["refused"]),
    ("target_file_and_http_aia.pem", ["refused", None]),
    ("target_invalid_url_aia.pem", ["refused"]),
    ("target_invalid_and_http_aia.pem", ["refused", None]),
])
def test_chromium_unusable_urls_are_refused(name, expected):
    urls = _chromium(name).ca_issuers
    verdicts = [url_refusal(u, Options()) for u in urls]
    assert [v if v is None else "refused" for v in verdicts] == expected


@pytest.mark.parametrize("url,reason", [
    ("ldap://ldap.example/cn=ca", "scheme 'ldap'"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("ftp://example/ca.der", "scheme 'ftp'"),
    ("https://example/ca.der", "https not enabled"),
    ("http://", "no host"),
    ("http://user:pw@example/ca.der", "credentials"),
    ("http://example:99999/ca.der", "malformed"),
    ("http://exa mple/ca.der", "malformed"),
    ("http://example/" + "a" * 3000, "too long"),
    ("foobar", "scheme '(none)'"),
])
def test_url_policy_refusals(url, reason):
    refusal = url_refusal(url, Options())
    assert refusal is not None and reason in refusal


def test_url_policy_allows_http_and_opt_in_https():
    assert url_refusal("http://crt.example/ca.der", Options()) is None
    assert url_refusal("https://crt.example/ca.der", Options(allow_https=True)) is None


def test_url_filter_narrows_and_fails_closed():
    allow = Options(url_filter=lambda u: u.startswith("http://pki.internal/"))
    assert url_refusal("http://pki.internal/ca.der", allow) is None
    assert "url_filter" in (url_refusal("http://elsewhere/ca.der", allow) or "")

    def broken(url: str) -> bool:
        raise RuntimeError("bug")

    assert "url_filter raised" in (url_refusal("http://x/ca.der", Options(url_filter=broken)) or "")


@pytest.mark.parametrize("address,refused", [
    ("169.254.169.254", True), ("fe80::1", True), ("224.0.0.1", True), ("ff02::1", True),
    ("0.0.0.0", True), ("::", True), ("255.255.255.255", True), ("::ffff:169.254.169.254", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("192.168.1.1", False), ("8.8.8.8", False),
])
def test_destination_policy(address, refused):
    assert (address_refusal(address, allow_private=True) is not None) is refused


@pytest.mark.parametrize("address", [
    "100.100.100.200", "fd00:ec2::254", "fd20:ce::254", "168.63.129.16", "169.254.170.2",
    "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::", "::a9fe:a9fe", "::ffff:100.100.100.200",
    "240.0.0.1", "0.1.2.3", "100::1", "fe80::1%eth0",
])
def test_metadata_and_unusable_destinations_are_refused_always(address):
    assert address_refusal(address, allow_private=True) is not None


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "192.168.1.1", "::1", "fd00::1", "100.64.0.1", "100.127.255.254",
    "172.16.0.1", "192.0.2.1", "198.51.100.7", "203.0.113.9", "198.18.0.1", "2001:db8::1",
    "::ffff:10.0.0.1", "64:ff9b::a00:1", "fec0::1",
])
def test_private_destinations_can_be_refused(address):
    assert "allow_private=False" in (address_refusal(address, allow_private=False) or "")


def test_invalid_x509_version_inside_a_bundle_is_skipped():
    # Found by fuzz/fuzz_parse.py (when cryptography parsed responses): a
    # version field other than v1-v3 in one certificate of a bundle.
    good = (DATA / "pkcs7" / "google.single.der").read_bytes()
    bad = bytearray(good)
    version = bad.index(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT INTEGER 2 (v3)
    bad[version + 4] = 0x30
    body = b"".join(
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(blob) + b"-----END CERTIFICATE-----\n"
        for blob in (bytes(bad), good)
    )
    certs = certificates_in_response(body)
    assert len(certs) == 1  # the bad one skipped, the good one kept
    with pytest.raises(FetchError):
        certificates_in_response(bytes(bad))
