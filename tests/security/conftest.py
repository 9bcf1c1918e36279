"""A tripwire for the adversarial suite: no test may open a connection beyond loopback.

Many cases name cloud-metadata and private addresses on purpose; aia_ext must
refuse them before connecting.  Should a refusal ever break, this turns the
would-be connection into a test failure instead of traffic to that address.
It guards; it stands in for nothing: every allowed connection is the real one.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: Any) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0].split("%", 1)[0]
        if not ipaddress.ip_address(host).is_loopback:
            raise AssertionError(f"a test tried to connect to {address!r}, beyond loopback")
    _real_connect(self, address)


@pytest.fixture(autouse=True)
def _loopback_tripwire(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)
    yield
