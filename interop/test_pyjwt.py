"""PyJWT as a resource server: access tokens verify against the published JWKS for every
signing algorithm, across rotations, and forged tokens do not."""

from __future__ import annotations

import hashlib
import hmac
import json

import jwt
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from cryptography.hazmat.primitives import serialization

from custos import (
    GRANT_TYPE,
    SIGNING_ALGS,
    Custos,
    Nhi,
    b64url_encode,
    unverified_parts,
)


def client_credentials(custos: Custos, nhi: Nhi, scope: str) -> str:
    with OAuth2Client(nhi.id, nhi.secret, scope=scope) as client:
        token = client.fetch_token(custos.token_endpoint, grant_type="client_credentials")
    return token["access_token"]


def check_claims(custos: Custos, claims: dict, nhi: Nhi, scope: str) -> None:
    assert claims["iss"] == custos.issuer
    assert claims["aud"] == custos.issuer
    assert claims["sub"] == nhi.id
    assert claims["client_id"] == nhi.id
    assert claims["scope"] == scope
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert claims["iat"] < claims["exp"] <= claims["iat"] + 3600
    details = claims["authorization_details"]
    assert isinstance(details, list) and len(details) == len(scope.split())
    for detail in details:
        assert isinstance(detail, dict) and detail["type"] == GRANT_TYPE
    # Each detail is one grant of the scope: service, operation, and resource if any.
    grants = {
        ":".join([d["service"], *d["actions"], *([d["identifier"]] if "identifier" in d else [])])
        for d in details
    }
    assert grants == set(scope.split())


# In this order: the server starts with an ES256 key, so the first rotation is ES256 to ES256.
@pytest.mark.parametrize("alg", SIGNING_ALGS)
def test_pyjwt_verifies_access_tokens_across_signing_key_rotation(custos: Custos, alg: str):
    agent = custos.nhi("jwks-agent", ["crm:read:customers/*", "mail:send"])
    scope = "crm:read:customers/42 mail:send"
    before = client_credentials(custos, agent, scope)
    before_header = jwt.get_unverified_header(before)

    keys = custos.rotate_signing_key(alg)
    active = [k for k in keys["items"] if k["status"] == "active"]
    assert [k["alg"] for k in active] == [alg], keys

    after = client_credentials(custos, agent, scope)
    header = jwt.get_unverified_header(after)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == alg
    assert header["kid"] != before_header["kid"], "the new key signs"

    jwk = custos.jwk_client().get_signing_key_from_jwt(after)
    assert jwk.algorithm_name == alg
    check_claims(custos, custos.verify(after, [alg]), agent, scope)

    # The key that signed the earlier token is retired but still published, and the token
    # still verifies against the JWKS as it is after the rotation.
    published = {k["kid"]: k for k in custos.jwks()["keys"]}
    assert before_header["kid"] in published
    assert published[before_header["kid"]]["alg"] == before_header["alg"]
    assert all("d" not in k for k in published.values()), "public keys only"
    check_claims(custos, custos.verify(before, [before_header["alg"]]), agent, scope)


def test_pyjwt_refuses_tampered_and_resigned_tokens(custos: Custos):
    agent = custos.nhi("strict-agent", ["crm:read:customers/*"])
    token = client_credentials(custos, agent, "crm:read:customers/42")
    custos.verify(token)  # the control: the genuine token verifies
    header, payload = unverified_parts(token)
    encoded_header, _, signature = token.split(".")
    signing_key = custos.jwk_client().get_signing_key_from_jwt(token)
    every_alg = list(SIGNING_ALGS)

    widened = dict(payload, scope="crm:read:customers/*")
    widened_payload = b64url_encode(json.dumps(widened).encode())

    # 1. The payload changed under the original signature.
    tampered = f"{encoded_header}.{widened_payload}.{signature}"
    with pytest.raises(jwt.InvalidSignatureError):
        custos.verify(tampered)
    with pytest.raises(jwt.InvalidSignatureError):
        custos.verify(tampered, every_alg)

    # 2. alg "none", no signature, same kid.
    unsigned_header = b64url_encode(json.dumps(dict(header, alg="none")).encode())
    unsigned = f"{unsigned_header}.{widened_payload}."
    with pytest.raises(jwt.InvalidAlgorithmError):
        custos.verify(unsigned)
    with pytest.raises(jwt.InvalidAlgorithmError):
        custos.verify(unsigned, every_alg)

    # 3. HS256 keyed with the public key (the classic algorithm confusion), as PEM and as the
    # JWK text a naive verifier might use for a secret.
    public_pem = signing_key.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    published = next(k for k in custos.jwks()["keys"] if k["kid"] == header["kid"])
    hs_header = b64url_encode(json.dumps(dict(header, alg="HS256")).encode())
    signing_input = f"{hs_header}.{widened_payload}".encode()
    for secret in (public_pem, json.dumps(published).encode()):
        mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
        resigned = f"{signing_input.decode()}.{b64url_encode(mac)}"
        with pytest.raises(jwt.InvalidAlgorithmError):
            custos.verify(resigned)
        with pytest.raises(jwt.InvalidAlgorithmError):
            custos.verify(resigned, every_alg)
        # Even a verifier that lists HS256 gets nothing: PyJWT binds a JWK to its own alg.
        with pytest.raises(jwt.InvalidTokenError):
            custos.verify(resigned, [*every_alg, "HS256"])

    # The server agrees: each forgery is merely inactive, the genuine token active.
    with OAuth2Client(agent.id, agent.secret) as client:

        def introspect(candidate: str) -> dict:
            response = client.introspect_token(custos.introspection_endpoint, token=candidate)
            assert response.status_code == 200, response.text
            return response.json()

        assert introspect(token)["active"] is True
        for forged in (tampered, unsigned, resigned):
            assert introspect(forged) == {"active": False}
