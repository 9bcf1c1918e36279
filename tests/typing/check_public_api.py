"""Checked by ``mypy --strict`` in CI (not collected by pytest): the public API's typing.

Every ``type: ignore`` below must be needed: strict mode reports an unused one,
so a misspelt option or a wrong type that stopped being an error fails CI.
"""

from __future__ import annotations

import ssl

from OpenSSL import SSL

import aia_ext
from aia_ext.diagnosis import Diagnosis, diagnose

ctx: ssl.SSLContext = aia_ext.create_default_context(timeout=3.0, max_fetches=2)
same: ssl.SSLContext = aia_ext.enable(ssl.create_default_context(), deadline=5.0)
pyopenssl: SSL.Context = aia_ext.enable(SSL.Context(SSL.TLS_CLIENT_METHOD))
engine: str | None = aia_ext.engine_of(ctx)
aia_ext.inject_into_ssl(allow_private=False, url_filter=lambda url: url.startswith("http://"))
aia_ext.extract_from_ssl()

aia_ext.enable(ctx, timout=3)  # type: ignore[call-overload]
aia_ext.create_default_context(max_fetches="8")  # type: ignore[arg-type]
aia_ext.inject_into_ssl(allow_privat=True)  # type: ignore[call-arg]
diagnose("localhost:443", timeot=1.0)  # type: ignore[call-arg]


def sources(report: aia_ext.Report) -> list[str]:
    # AddedCertificate.source is a Literal: comparing with a typo is an error.
    return [a.url for a in report.added if a.source == "network"]


def verdict(result: Diagnosis) -> bool:
    return result.verified


def options_as_a_dataclass(options: aia_ext.Options) -> aia_ext.Options:
    # Issue 32, item 10: Options is documented as a frozen dataclass, so the
    # dataclasses functions type-check on it, and a misspelt field is an error.
    import dataclasses

    names: list[str] = [f.name for f in dataclasses.fields(options)]
    as_dict: dict[str, object] = dataclasses.asdict(options)
    assert names and as_dict
    # (A misspelt name in replace() is a TypeError naming it: tests/test_options.py.)
    return dataclasses.replace(options, timeout=1.0)
