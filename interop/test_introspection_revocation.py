"""RFC 7662 introspection and RFC 7009 revocation through Authlib's client methods."""

from __future__ import annotations

from authlib.integrations.httpx_client import OAuth2Client

from custos import (
    ACCESS_TOKEN_TYPE,
    TOKEN_EXCHANGE,
    Custos,
    new_client_key,
    public_jwk,
    short_lived,
)


def introspect(gateway: OAuth2Client, custos: Custos, token: str) -> dict:
    response = gateway.introspect_token(custos.introspection_endpoint, token=token)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def test_authlib_introspection_and_revocation(custos: Custos):
    agent = custos.nhi("introspected-agent", ["crm:read:customers/*"])
    gateway = custos.nhi("gateway", ["custos:introspect"])

    with (
        OAuth2Client(agent.id, agent.secret) as client,
        OAuth2Client(gateway.id, gateway.secret) as gw,
    ):
        token = client.fetch_token(
            custos.token_endpoint, grant_type="client_credentials", scope="crm:read:customers/42"
        )["access_token"]
        claims = custos.verify(token)

        seen = introspect(gw, custos, token)
        assert seen["active"] is True
        assert seen["scope"] == "crm:read:customers/42"
        assert seen["client_id"] == agent.id
        assert seen["sub"] == agent.id
        assert seen["iss"] == custos.issuer
        for claim in ("exp", "iat", "jti"):
            assert seen[claim] == claims[claim]
        assert seen["token_type"] == "Bearer"

        # Revoked by its own client: 200, and from then on exactly {"active": false}.
        response = client.revoke_token(
            custos.revocation_endpoint, token=token, token_type_hint="access_token"
        )
        assert response.status_code == 200, response.text
        assert introspect(gw, custos, token) == {"active": False}

        # RFC 7009 §2.2: a token already revoked (or unknown) is not an error either.
        response = client.revoke_token(custos.revocation_endpoint, token=token)
        assert response.status_code == 200, response.text


def test_revoking_a_parent_token_deactivates_its_delegated_child(custos: Custos):
    planner = custos.nhi("cascade-planner", ["crm:read:customers/*"])
    researcher = custos.nhi("cascade-researcher", ["crm:read"])
    gateway = custos.nhi("cascade-gateway", ["custos:introspect"])

    with (
        OAuth2Client(planner.id, planner.secret) as client,
        OAuth2Client(gateway.id, gateway.secret) as gw,
    ):
        parent = client.fetch_token(custos.token_endpoint, grant_type="client_credentials")[
            "access_token"
        ]
        child = client.fetch_token(
            custos.token_endpoint,
            grant_type=TOKEN_EXCHANGE,
            subject_token=parent,
            subject_token_type=ACCESS_TOKEN_TYPE,
            audience=researcher.id,
            scope="crm:read:customers/7",
        )["access_token"]
        seen = introspect(gw, custos, child)
        assert seen["active"] is True
        assert seen["act"] == {"sub": researcher.id}

        response = client.revoke_token(custos.revocation_endpoint, token=parent)
        assert response.status_code == 200, response.text
        assert introspect(gw, custos, parent) == {"active": False}
        assert introspect(gw, custos, child) == {"active": False}


def test_authlib_introspection_and_revocation_with_private_key_jwt(custos: Custos):
    """The metadata offers private_key_jwt at the introspection and revocation endpoints too:
    Authlib signs each assertion for the endpoint it calls (its `aud` is that URL)."""
    agent = custos.nhi("pkjwt-revoker", ["crm:read"], static_key=False)
    key = new_client_key("ES256")
    custos.register_client_key(agent.id, public_jwk(key, "ES256"))

    with OAuth2Client(
        agent.id,
        key,
        token_endpoint_auth_method="private_key_jwt",
        revocation_endpoint_auth_method="private_key_jwt",
    ) as client:

        def fresh_assertion() -> None:
            # No endpoint given: the audience is the URL of each request.
            client.register_client_auth_method(short_lived("ES256"))

        fresh_assertion()
        token = client.fetch_token(custos.token_endpoint, grant_type="client_credentials")[
            "access_token"
        ]
        fresh_assertion()
        seen = introspect(client, custos, token)  # a client may introspect its own tokens
        assert (seen["active"], seen["client_id"]) == (True, agent.id)
        fresh_assertion()
        response = client.revoke_token(custos.revocation_endpoint, token=token)
        assert response.status_code == 200, response.text
        fresh_assertion()
        assert introspect(client, custos, token) == {"active": False}
