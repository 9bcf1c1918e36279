"""Test your code against a broken chain, offline: a lab on 127.0.0.1.

As trustme gives tests a private CA, this gives them a server whose chain is
incomplete the way real misconfigured servers' are::

    from aia_ext.testing import Lab

    with Lab() as lab:
        ctx = aia_ext.create_default_context(cafile=lab.root_file)
        urllib.request.urlopen(lab.url, context=ctx)   # completed via lab.ca_issuers_url
        assert lab.fetches == 1

``Lab`` holds a private root CA (``root_file``), an intermediate served over
HTTP at the leaf's caIssuers URL (``ca_issuers_url``; also in
``intermediate_file``), and an HTTPS server (``url``, ``port``) that sends
only its leaf.  Plain ``ssl`` fails on it with verify code 20.

``Lab(problem=...)`` breaks it further, as servers in the field are broken,
for testing your own error handling: ``"untrusted-root"``,
``"dead-ca-issuers"``, ``"slow-ca-issuers"`` (``delay=`` seconds),
``"wrong-name"``, ``"expired-leaf"`` or ``"two-missing-levels"``;
``lab.expected_verify_code`` is what aia_ext then reports::

    with Lab(problem="dead-ca-issuers") as lab:
        ctx = aia_ext.create_default_context(cafile=lab.root_file)
        with pytest.raises(urllib.error.URLError) as info:
            urllib.request.urlopen(lab.url, context=ctx)
        assert info.value.reason.verify_code == lab.expected_verify_code  # 20

With pytest, add ``pytest_plugins = ["aia_ext.testing"]`` to a conftest.py
and take the ``aia_lab`` fixture: a started ``Lab``, closed after the test.
Needs the ``cryptography`` package (the lab issues its certificates).
"""

from __future__ import annotations

from collections.abc import Iterator

from ._private.lab import PROBLEMS, Lab, LabProblem

__all__ = ["PROBLEMS", "Lab", "LabProblem", "aia_lab"]


def _lab() -> Iterator[Lab]:
    with Lab() as lab:
        yield lab


try:
    import pytest
except ImportError:  # pragma: no cover - the fixture is for pytest users only
    def aia_lab() -> Iterator[Lab]:
        """A started Lab (a pytest fixture where pytest is installed)."""
        return _lab()
else:
    aia_lab = pytest.fixture(name="aia_lab")(_lab)
    aia_lab.__doc__ = "A started ``Lab``, closed after the test."
