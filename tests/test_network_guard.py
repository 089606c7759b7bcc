"""The guard in conftest.py: a test that tries to reach the network fails."""

from __future__ import annotations

import socket

import httpx
import pytest


def test_outside_connection_is_refused_and_recorded(network_attempts: list[str]) -> None:
    before = len(network_attempts)
    with pytest.raises(httpx.ConnectError):
        httpx.get("http://93.184.216.34/", timeout=2)
    assert len(network_attempts) == before + 1
    del network_attempts[before:]  # this test tried on purpose; don't fail it at teardown


def test_dns_lookup_is_refused(network_attempts: list[str]) -> None:
    before = len(network_attempts)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("api.openai.com", 443)
    assert network_attempts[before:] == ["dns:api.openai.com"]
    del network_attempts[before:]


def test_loopback_is_allowed() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname(), timeout=2)
    c.close()
    srv.close()
