"""RFC 8414 metadata as Authlib's AuthorizationServerMetadata reads and validates it."""

from __future__ import annotations

import jwt
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from custos import GRANT_TYPE, SIGNING_ALGS, TOKEN_EXCHANGE, Custos

JWT_AUTH_METHODS = {"private_key_jwt", "client_secret_jwt"}

# Authlib validators this file does not run in the test that must pass, and why:
NOT_RUN_HERE = {
    # Authlib reads an empty array as missing ('"response_types_supported" is required'). RFC
    # 8414 §2 asks only for a JSON array of the response types supported, and a server without
    # an authorization endpoint supports none, so `[]` is the truthful value; see
    # test_response_types_supported_is_an_array.
    "response_types_supported",
    # RFC 8414 §2 requires these when the endpoint takes private_key_jwt: a known server bug,
    # see test_metadata_names_signing_algs_for_every_endpoint_taking_jwt_assertions.
    "revocation_endpoint_auth_signing_alg_values_supported",
    "introspection_endpoint_auth_signing_alg_values_supported",
}


def test_authlib_accepts_metadata_of_a_client_credentials_only_server(custos: Custos):
    response = custos.anonymous.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    metadata = AuthorizationServerMetadata(response.json())

    # Every other Authlib validation passes, among them: an issuer with no query or fragment
    # (http is accepted on loopback), and no authorization_endpoint, which RFC 8414 requires only
    # when a grant type uses it.
    assert "authorization_endpoint" not in metadata
    for key in AuthorizationServerMetadata.REGISTRY_KEYS:
        if key not in NOT_RUN_HERE:
            getattr(metadata, f"validate_{key}")()

    # RFC 8414 §3.3: the issuer is the URL the document was fetched under.
    assert metadata["issuer"] == custos.base_url
    assert metadata["token_endpoint"] == f"{custos.issuer}/oauth2/token"
    assert metadata["jwks_uri"] == f"{custos.issuer}/.well-known/jwks.json"
    assert metadata["introspection_endpoint"] == f"{custos.issuer}/oauth2/introspect"
    assert metadata["revocation_endpoint"] == f"{custos.issuer}/oauth2/revoke"
    assert metadata.grant_types_supported == ["client_credentials", TOKEN_EXCHANGE]
    assert set(metadata.token_endpoint_auth_methods_supported) == {
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    }
    assert set(metadata["token_endpoint_auth_signing_alg_values_supported"]) == set(SIGNING_ALGS)
    assert metadata["authorization_details_types_supported"] == [GRANT_TYPE]

    # The JWKS it points to is one PyJWT reads whole: every key usable, none private.
    jwks = custos.anonymous.get(metadata["jwks_uri"]).json()
    key_set = jwt.PyJWKSet.from_dict(jwks)
    assert len(key_set.keys) == len(jwks["keys"]) >= 1
    for key in key_set.keys:
        assert key.algorithm_name in SIGNING_ALGS
        assert key.key_id


def test_response_types_supported_is_an_array(custos: Custos):
    """RFC 8414 §2: REQUIRED, a JSON array. Authlib's validate() wants it non-empty too."""
    assert isinstance(custos.metadata["response_types_supported"], list)


def test_metadata_names_signing_algs_for_every_endpoint_taking_jwt_assertions(custos: Custos):
    metadata = AuthorizationServerMetadata(custos.metadata)
    missing = []
    for endpoint in ("token_endpoint", "introspection_endpoint", "revocation_endpoint"):
        methods = set(metadata.get(f"{endpoint}_auth_methods_supported") or [])
        algs = metadata.get(f"{endpoint}_auth_signing_alg_values_supported")
        if methods & JWT_AUTH_METHODS and not algs:
            missing.append(f"{endpoint}_auth_signing_alg_values_supported")
    assert missing == []
    # And so Authlib says too.
    metadata.validate_introspection_endpoint_auth_signing_alg_values_supported()
    metadata.validate_revocation_endpoint_auth_signing_alg_values_supported()
