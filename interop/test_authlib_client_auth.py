"""Authlib's httpx clients at the token endpoint: client_credentials with client_secret_basic,
client_secret_post and private_key_jwt (RFC 7523), scope narrowing, and single-use assertions."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign

from custos import Custos, new_client_key, public_jwk, short_lived

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CEILING = ["crm:read:customers/*", "mail:send"]
NARROW = "crm:read:customers/42"


class Recorder:
    """httpx event hooks that keep what went over the wire."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.responses: list[httpx.Response] = []

    def request(self, request: httpx.Request) -> None:
        request.read()
        self.requests.append(request)

    def response(self, response: httpx.Response) -> None:
        self.responses.append(response)

    def hooks(self) -> dict:
        return {"request": [self.request], "response": [self.response]}


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_client_credentials_with_a_static_key(custos: Custos, method: str):
    agent = custos.nhi("cc-agent", CEILING)
    wire = Recorder()
    with OAuth2Client(
        agent.id,
        agent.secret,
        token_endpoint_auth_method=method,
        scope=NARROW,
        event_hooks=wire.hooks(),
    ) as client:
        token = client.fetch_token(custos.token_endpoint, grant_type="client_credentials")
        assert token["token_type"] == "Bearer"
        assert token["scope"] == NARROW
        assert 0 < token["expires_in"] <= 3600
        assert token["expires_at"] > time.time()
        assert custos.verify(token["access_token"])["scope"] == NARROW

        # RFC 6749 §5.1: token responses are not to be cached.
        answer = wire.responses[-1]
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["pragma"] == "no-cache"

        # The method asked for is the one used.
        sent = wire.requests[-1]
        if method == "client_secret_basic":
            assert sent.headers["authorization"].startswith("Basic ")
            assert b"client_secret=" not in sent.content
        else:
            assert "authorization" not in sent.headers
            assert b"client_secret=" in sent.content

        # More than the ceiling: the OAuth error, not a token.
        with pytest.raises(OAuthError) as refused:
            client.fetch_token(
                custos.token_endpoint,
                grant_type="client_credentials",
                scope="crm:write:customers/42",
            )
        assert refused.value.error == "invalid_scope"

    # The wrong secret: invalid_client.
    with OAuth2Client(agent.id, "custos_sk_wrong", token_endpoint_auth_method=method) as client:
        with pytest.raises(OAuthError) as refused:
            client.fetch_token(custos.token_endpoint, grant_type="client_credentials")
        assert refused.value.error == "invalid_client"


def test_authlib_async_client_credentials(custos: Custos):
    agent = custos.nhi("async-agent", CEILING)

    async def run() -> tuple[dict, OAuthError]:
        async with AsyncOAuth2Client(agent.id, agent.secret, scope=NARROW) as client:
            token = await client.fetch_token(
                custos.token_endpoint, grant_type="client_credentials"
            )
            try:
                await client.fetch_token(
                    custos.token_endpoint,
                    grant_type="client_credentials",
                    scope=f"{NARROW} crm:write",
                )
            except OAuthError as error:
                return token, error
            raise AssertionError("an over-broad scope was granted")

    token, refused = asyncio.run(run())
    assert token["scope"] == NARROW
    assert custos.verify(token["access_token"])["client_id"] == agent.id
    # One grant within the ceiling and one beyond it: refused as a whole.
    assert refused.error == "invalid_scope"


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_authlib_private_key_jwt(custos: Custos, alg: str):
    agent = custos.nhi("pkjwt-agent", CEILING, static_key=False)
    key = new_client_key(alg)
    registered = custos.register_client_key(agent.id, public_jwk(key, alg))
    assert registered["kind"] == "client_key"

    wire = Recorder()
    with OAuth2Client(
        agent.id,
        key,
        token_endpoint_auth_method="private_key_jwt",
        event_hooks=wire.hooks(),
    ) as client:
        for _ in range(2):  # each request signs a fresh assertion (a new jti)
            client.register_client_auth_method(short_lived(alg, custos.token_endpoint))
            token = client.fetch_token(
                custos.token_endpoint, grant_type="client_credentials", scope=NARROW
            )
            assert token["scope"] == NARROW
            claims = custos.verify(token["access_token"])
            assert (claims["sub"], claims["client_id"]) == (agent.id, agent.id)
        sent = wire.requests[-1]
        assert "authorization" not in sent.headers
        assert b"client_assertion=" in sent.content

        # Over-broad scope with a good assertion is still invalid_scope.
        client.register_client_auth_method(short_lived(alg, custos.token_endpoint))
        with pytest.raises(OAuthError) as refused:
            client.fetch_token(
                custos.token_endpoint, grant_type="client_credentials", scope="crm:read"
            )
        assert refused.value.error == "invalid_scope"

    # A key that was never registered: invalid_client.
    with OAuth2Client(
        agent.id, new_client_key(alg), token_endpoint_auth_method="private_key_jwt"
    ) as stranger:
        stranger.register_client_auth_method(short_lived(alg, custos.token_endpoint))
        with pytest.raises(OAuthError) as refused:
            stranger.fetch_token(custos.token_endpoint, grant_type="client_credentials")
        assert refused.value.error == "invalid_client"


def test_private_key_jwt_assertion_cannot_be_replayed(custos: Custos):
    agent = custos.nhi("replay-agent", CEILING, static_key=False)
    key = new_client_key("ES256")
    custos.register_client_key(agent.id, public_jwk(key, "ES256"))
    # Signed by Authlib's own RFC 7523 helper, sent twice by hand.
    assertion = private_key_jwt_sign(
        key, client_id=agent.id, token_endpoint=custos.token_endpoint, alg="ES256", expires_in=60
    )
    form = {
        "grant_type": "client_credentials",
        "client_id": agent.id,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
    }
    first = httpx.post(custos.token_endpoint, data=form)
    assert first.status_code == 200, first.text
    second = httpx.post(custos.token_endpoint, data=form)
    assert second.status_code == 401, second.text
    assert second.json()["error"] == "invalid_client"


def test_authlib_default_assertion_lifetime_is_refused(custos: Custos):
    """Not a bug, an interop note: Authlib's PrivateKeyJWT, as documented, signs assertions with
    `exp` an hour after `iat`; Custos refuses assertions living longer than 300 s (RFC 7523 §3
    lets a server refuse an `exp` unreasonably far in the future). Clients must shorten it, as
    short_lived() does."""
    agent = custos.nhi("long-assertion-agent", CEILING, static_key=False)
    key = new_client_key("ES256")
    custos.register_client_key(agent.id, public_jwk(key, "ES256"))
    with OAuth2Client(agent.id, key, token_endpoint_auth_method="private_key_jwt") as client:
        client.register_client_auth_method(PrivateKeyJWT(custos.token_endpoint, alg="ES256"))
        with pytest.raises(OAuthError) as refused:
            client.fetch_token(custos.token_endpoint, grant_type="client_credentials")
    assert refused.value.error == "invalid_client"
    assert "lifetime" in (refused.value.description or "").lower(), refused.value.description
