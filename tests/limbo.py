"""The x509-limbo corpus, verified offline by either engine (issue 13's conformance run).

``tests/data/limbo/limbo.json.xz`` is the whole corpus (9,780 cases, the
format of C2SP/x509-limbo, Apache-2.0); ``subset.json.xz`` keeps every case
outside the BetterTLS namespace and every 40th BetterTLS case by id, which is
what the default test run uses.  ``AIA_EXT_LIMBO=full`` selects the whole
corpus (``.ci/run`` does, on two interpreters).

A case is verified the way a client would see it: a context from
``aia_ext.create_default_context()`` trusting the case's roots (so it has this
interpreter's default flags: X509_STRICT and PARTIAL_CHAIN on 3.13+), the
case's peer name checked, its validation time, and fetching disabled (the
corpus's AIA URLs point at the internet).  "served" sends the leaf and the
case's intermediates; "pool" sends the leaf alone and gives the intermediates
as the context's ``intermediates=`` pool, so the chase must complete it.
"""

from __future__ import annotations

import datetime
import json
import lzma
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aia_ext
from aia_ext._private import engines

CORPUS = Path(__file__).parent / "data" / "limbo"


def load(full: bool | None = None) -> list[dict[str, Any]]:
    if full is None:
        full = os.environ.get("AIA_EXT_LIMBO", "").strip().lower() == "full"
    name = "limbo.json.xz" if full else "subset.json.xz"
    with lzma.open(CORPUS / name, "rt") as f:
        cases: list[dict[str, Any]] = json.load(f)["testcases"]
    return [c for c in cases if applies(c)]


def applies(case: dict[str, Any]) -> bool:
    """Server-authentication cases a TLS client can express.

    Client-certificate cases, e-mail peer names and expected EKUs other than
    serverAuth are not something ``ssl`` verifies for a client.
    """
    peer = case.get("expected_peer_name") or {}
    return (case["validation_kind"] == "SERVER"
            and peer.get("kind") in (None, "DNS", "IP")
            and set(case.get("extended_key_usage") or ()) <= {"serverAuth"})


@dataclass(frozen=True)
class Verdict:
    ok: bool
    code: int
    error: str = ""  # an exception other than a verdict, by type name


def _ders(pems: list[str]) -> list[bytes]:
    return [ssl.PEM_cert_to_DER_cert(p) for p in pems]


def verify(case: dict[str, Any], engine: str, mode: str) -> Verdict:
    """One case under ``engine`` ("native"/"fallback"), ``mode`` "served", "pool" or
    "leaf" (the leaf alone, no pool: only what the process learned can complete it)."""
    previous = os.environ.get("AIA_EXT_ENGINE")
    os.environ["AIA_EXT_ENGINE"] = engine
    try:
        return _verify(case, mode)
    finally:
        if previous is None:
            del os.environ["AIA_EXT_ENGINE"]
        else:
            os.environ["AIA_EXT_ENGINE"] = previous


def _verify(case: dict[str, Any], mode: str) -> Verdict:
    intermediates = _ders(case["untrusted_intermediates"])
    leaf = ssl.PEM_cert_to_DER_cert(case["peer_certificate"])
    options: dict[str, Any] = {"max_fetches": 0}
    if mode == "pool" and intermediates:
        options["intermediates"] = intermediates
    trusted = "".join(case["trusted_certs"])
    try:
        context = aia_ext.create_default_context(cadata=trusted or None, **options)
    except ssl.SSLError as exc:  # a trust anchor OpenSSL cannot load
        return Verdict(False, -1, f"load: {exc.__class__.__name__}")
    if case.get("crls"):
        # limbo's OpenSSL harness checks CRLs when a case has them.
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        _load_crls(context, case["crls"])
    peer = case.get("expected_peer_name") or {}
    hostname = peer.get("value") if peer.get("kind") in ("DNS", "IP") else None
    if hostname is None:
        context.check_hostname = False
    when = case.get("validation_time")
    at = datetime.datetime.fromisoformat(when) if when else None
    served = [leaf] + (intermediates if mode == "served" else [])
    try:
        result = engines.for_context(context).verify_offline(context, served, hostname, at)
    except ssl.SSLCertVerificationError as exc:  # refused before verifying (CRL flags)
        return Verdict(False, exc.verify_code)
    except ValueError as exc:  # OpenSSL could not load a served certificate
        return Verdict(False, -1, f"load: {exc.__class__.__name__}")
    return Verdict(result.ok, result.code)


def _load_crls(context: ssl.SSLContext, crls: list[str]) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
        f.write("".join(crls))
    try:
        context.load_verify_locations(cafile=f.name)
    finally:
        os.unlink(f.name)
