"""Setup through the management API, and the checks every test shares.

Only setup goes through here (plain httpx with the admin bearer token): teams, NHIs, static keys,
client keys, signing key rotation. Everything under test goes through the third-party clients.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass

import httpx
import jwt
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import ECKey, OKPKey

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
GRANT_TYPE = "urn:custos:grant"
SIGNING_ALGS = ("ES256", "EdDSA", "RS256")
# RFC 9068 §2.2: what every access token carries. PyJWT refuses a token missing any of them.
REQUIRED_CLAIMS = ["exp", "iat", "iss", "sub", "aud", "jti"]


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Nhi:
    id: str
    name: str
    ceiling: tuple[str, ...]
    # The static key, when one was issued: the client_secret.
    secret: str | None = None


class Custos:
    """One live server: its base URL, its metadata, and the admin calls used for setup."""

    def __init__(self, base_url: str, admin_token: str):
        self.base_url = base_url.rstrip("/")
        self.admin = httpx.Client(
            base_url=self.base_url,
            headers={"authorization": f"Bearer {admin_token}"},
            timeout=30,
        )
        self.anonymous = httpx.Client(base_url=self.base_url, timeout=30)
        response = self.anonymous.get("/.well-known/oauth-authorization-server")
        response.raise_for_status()
        self.metadata: dict = response.json()
        self.issuer: str = self.metadata["issuer"]
        self.token_endpoint: str = self.metadata["token_endpoint"]
        self.jwks_uri: str = self.metadata["jwks_uri"]
        self.introspection_endpoint: str = self.metadata["introspection_endpoint"]
        self.revocation_endpoint: str = self.metadata["revocation_endpoint"]
        self._team: str | None = None

    def close(self) -> None:
        self.admin.close()
        self.anonymous.close()

    def _admin(self, method: str, path: str, body: dict | None = None, expect: int = 200) -> dict:
        response = self.admin.request(method, path, json=body)
        assert response.status_code == expect, (
            f"{method} {path} -> {response.status_code}: {response.text}"
        )
        return response.json()

    @property
    def team(self) -> str:
        """The owner team of every NHI this run registers, created on first use."""
        if self._team is None:
            name = unique("interop")
            team = self._admin(
                "POST", "/v1/teams", {"name": name, "contact": f"{name}@example.com"}, 201
            )
            self._team = team["id"]
        return self._team

    def nhi(self, prefix: str, ceiling: list[str], *, static_key: bool = True) -> Nhi:
        """Registers an AI agent with this scope ceiling and, unless told not to, issues it a
        static key."""
        name = unique(prefix)
        created = self._admin(
            "POST",
            "/v1/nhis",
            {
                "name": name,
                "kind": "ai_agent",
                "platform": "custom",
                "environment": "production",
                "owner": {"team": self.team},
                "purpose": "interop test client",
                "scope_ceiling": ceiling,
            },
            201,
        )
        secret = None
        if static_key:
            key = self._admin("POST", f"/v1/nhis/{created['id']}/credentials", {}, 201)
            secret = key["secret"]
        return Nhi(id=created["id"], name=name, ceiling=tuple(ceiling), secret=secret)

    def register_client_key(self, nhi_id: str, public_jwk: dict) -> dict:
        return self._admin("POST", f"/v1/nhis/{nhi_id}/client-keys", {"jwk": public_jwk}, 201)

    def rotate_signing_key(self, alg: str) -> dict:
        return self._admin("POST", "/v1/keys/rotate", {"alg": alg})

    def jwks(self) -> dict:
        response = self.anonymous.get("/.well-known/jwks.json")
        response.raise_for_status()
        return response.json()

    def jwk_client(self) -> jwt.PyJWKClient:
        """PyJWT's JWKS client, with no cache: every lookup sees the JWKS as it is now."""
        return jwt.PyJWKClient(self.jwks_uri, cache_jwk_set=False, cache_keys=False)

    def verify(self, token: str, algorithms: list[str] | None = None) -> dict:
        """Verifies an access token the way a resource server would with PyJWT: the key from the
        JWKS by `kid`, only the given algorithms (by default the one the key is published for),
        every RFC 9068 claim required, this issuer, this issuer as audience."""
        signing_key = self.jwk_client().get_signing_key_from_jwt(token)
        if algorithms is None:
            algorithms = [signing_key.algorithm_name]
        return jwt.decode(
            token,
            signing_key,
            algorithms=algorithms,
            audience=self.issuer,
            issuer=self.issuer,
            options={"require": REQUIRED_CLAIMS},
        )


def unverified_parts(token: str) -> tuple[dict, dict]:
    header, payload, _ = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload))


def new_client_key(alg: str) -> ECKey | OKPKey:
    """A key pair made by `cryptography`, as a joserfc key (what Authlib signs with)."""
    kid = unique("kid")
    if alg == "ES256":
        return ECKey.import_key(ec.generate_private_key(ec.SECP256R1()), {"kid": kid})
    return OKPKey.import_key(Ed25519PrivateKey.generate(), {"kid": kid})


def public_jwk(key: ECKey | OKPKey, alg: str) -> dict:
    jwk = key.as_dict(private=False)
    assert "d" not in jwk
    return {**jwk, "alg": alg, "use": "sig"}


def short_lived(alg: str, token_endpoint: str | None = None) -> PrivateKeyJWT:
    """Authlib's PrivateKeyJWT, with the assertion's `exp` one minute ahead.

    Authlib signs assertions valid for an hour and has no lifetime setting; Custos takes at most
    five minutes (see test_authlib_default_assertion_lifetime_is_refused). The `claims` given
    here are merged over Authlib's own. Authlib adds its `jti` to that same dict, so an instance
    signs one assertion only: make a new one per request. Without a token_endpoint, Authlib
    takes the URL of the request it signs for as the audience.
    """
    return PrivateKeyJWT(token_endpoint, alg=alg, claims={"exp": int(time.time()) + 60})
