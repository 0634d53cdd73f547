"""RFC 8693 token exchange through Authlib's client: an agent hands a sub-agent a narrower token,
which PyJWT reads with the delegation chain in `act`."""

from __future__ import annotations

import pytest
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import OAuth2Client

from custos import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE, Custos


def test_authlib_token_exchange_delegates_to_a_sub_agent(custos: Custos):
    planner = custos.nhi("planner", ["crm:read:customers/*", "mail:send"])
    researcher = custos.nhi("researcher", ["crm:read"])

    with OAuth2Client(planner.id, planner.secret) as client:
        root = client.fetch_token(custos.token_endpoint, grant_type="client_credentials")

        def exchange(scope: str) -> dict:
            return client.fetch_token(
                custos.token_endpoint,
                grant_type=TOKEN_EXCHANGE,
                subject_token=root["access_token"],
                subject_token_type=ACCESS_TOKEN_TYPE,
                audience=researcher.id,
                scope=scope,
            )

        delegated = exchange("crm:read:customers/7")
        assert delegated["issued_token_type"] == ACCESS_TOKEN_TYPE
        assert delegated["token_type"] == "Bearer"
        assert delegated["scope"] == "crm:read:customers/7"

        claims = custos.verify(delegated["access_token"])
        assert claims["act"] == {"sub": researcher.id}
        assert claims["sub"] == planner.id
        assert claims["client_id"] == researcher.id
        assert claims["scope"] == "crm:read:customers/7"
        assert claims["exp"] <= custos.verify(root["access_token"])["exp"]

        # Broader than the subject token: invalid_scope.
        with pytest.raises(OAuthError) as refused:
            exchange("crm:read")
        assert refused.value.error == "invalid_scope"
        # Within the subject token but beyond the sub-agent's own ceiling: invalid_scope too.
        with pytest.raises(OAuthError) as refused:
            exchange("mail:send")
        assert refused.value.error == "invalid_scope"
