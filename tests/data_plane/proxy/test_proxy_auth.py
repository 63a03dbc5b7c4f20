"""Proxy authentication: Basic with the gateway token as password, 407 otherwise."""

from __future__ import annotations

import base64

import pytest
from dp_fakes import AUDITOR_TOKEN, MEMBER_TOKEN, OWNER_TOKEN, snapshot
from proxy_fakes import Echo, StartProxy, raw_connect

from data_plane.proxy.auth import Identity, authenticate, basic_password
from data_plane.proxy.routes import build_table


def basic(value: str) -> bytes:
    return b"Basic " + base64.b64encode(value.encode())


def test_basic_password_parsing() -> None:
    """The password is taken from a well-formed Basic credential; anything else is None."""
    assert basic_password(basic("anyone:secret")) == "secret"
    assert basic_password(basic(":secret:with:colons")) == "secret:with:colons"
    assert basic_password(b"basic " + base64.b64encode(b"u:p")) == "p"
    for bad in (None, b"", b"Bearer x", basic("nocolon"), basic("user:"), b"Basic !!!"):
        assert basic_password(bad) is None


def test_roles_and_unknown_tokens() -> None:
    """Members pass; owners, auditors, unknown tokens and junk are refused."""
    table, _ = build_table(snapshot("1", []))
    assert isinstance(authenticate(table, basic(f"u:{MEMBER_TOKEN}")), Identity)
    for token in (OWNER_TOKEN, AUDITOR_TOKEN):
        assert "role" in str(authenticate(table, basic(f"u:{token}")))
    assert "invalid" in str(authenticate(table, basic("u:not-a-token")))
    assert "required" in str(authenticate(table, None))


def test_identity_repr_hides_the_token() -> None:
    """An Identity that ends up in a log shows the principal, never the token."""
    table, _ = build_table(snapshot("1", []))
    identity = authenticate(table, basic(f"u:{MEMBER_TOKEN}"))
    assert MEMBER_TOKEN not in repr(identity)


@pytest.mark.parametrize("auth", [None, "u:wrong-token", f"u:{AUDITOR_TOKEN}", "no-colon"], ids=str)
async def test_connect_without_valid_credentials_gets_407(
    auth: str | None, echo: Echo, start_tunnel_proxy: StartProxy
) -> None:
    """CONNECTs to tunnelled hosts without a usable token get 407 with a Basic challenge."""
    proxy = await start_tunnel_proxy()
    status, head, _, writer = await raw_connect(proxy, f"127.0.0.1:{echo.port}", auth)
    writer.close()
    assert status == 407
    assert b'proxy-authenticate: Basic realm="AI Bridge Proxy"' in head
    assert echo.peers == []
