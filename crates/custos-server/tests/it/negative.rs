//! The negative matrix: every way a credential can be forged, stretched, reused or used by the
//! wrong party is refused, with the right error, wherever a token is used: introspection by a
//! gateway (`{"active": false}`, nothing more) and as a bearer on the management API (`401
//! invalid_token`). Each case starts from a live credential that is shown to work first, so
//! that the one thing changed is what gets it refused.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use custos_core::jose::{self, JwtError, SigningAlg, SigningKey};
use custos_server::oauth::TokenRefusal;
use hmac::{KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestServer, client, jwt_claims};

both_backends!(
    alg_none_is_refused,
    hs256_keyed_with_the_servers_public_key_is_refused,
    a_tampered_payload_is_refused,
    an_expired_token_is_refused,
    a_token_not_yet_valid_is_refused,
    a_token_from_another_issuer_is_refused,
    a_token_for_another_audience_is_refused,
    another_key_reusing_the_servers_kid_is_refused,
    an_unknown_or_missing_kid_is_refused,
    a_revoked_token_is_refused,
    a_token_whose_parent_is_revoked_is_refused,
    a_token_whose_grandparent_is_revoked_is_refused,
    an_exchange_for_a_broader_scope_is_refused,
    an_exchange_beyond_the_depth_cap_is_refused,
    a_revoked_static_key_is_refused,
    a_rotated_out_static_key_is_refused_after_its_grace_period,
    a_reviewer_cannot_approve_its_own_request,
    an_nhi_cannot_decide_an_approval,
    an_approval_is_used_once,
    concurrent_approvals_decide_once,
    an_approved_credential_is_collected_once_even_concurrently,
    a_replayed_client_assertion_is_refused,
    a_client_assertion_replayed_after_its_exp_is_refused,
);

const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A server with a token holder and a gateway allowed to introspect every token.
struct Scene {
    server: TestServer,
    /// (nhi id, static key) of the NHI the tokens are issued to.
    holder: (String, String),
    /// (nhi id, static key) of a gateway whose ceiling holds `custos:introspect`.
    gateway: (String, String),
}

impl Scene {
    async fn new(backend: Backend) -> Self {
        let server = TestServer::start(backend).await;
        let holder = client(&server, "holder", &["crm:read:customers/*", "mail:send"]).await;
        let gateway = client(&server, "gateway", &["custos:introspect"]).await;
        Self {
            server,
            holder,
            gateway,
        }
    }

    fn holder(&self) -> (&str, &str) {
        (&self.holder.0, &self.holder.1)
    }

    /// A token for `who` by `client_credentials`.
    async fn issue(&self, who: (&str, &str)) -> String {
        let (status, _, answer) = self
            .server
            .form(
                "/oauth2/token",
                Some(who),
                &[("grant_type", "client_credentials")],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["access_token"].as_str().unwrap().to_owned()
    }

    async fn introspect(&self, token: &str) -> Value {
        let (status, _, answer) = self
            .server
            .form(
                "/oauth2/introspect",
                Some((&self.gateway.0, &self.gateway.1)),
                &[("token", token)],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer
    }

    /// The token works: introspection says active, and it is a bearer of `nhi` on the API.
    async fn assert_live(&self, token: &str, nhi: &str) {
        let seen = self.introspect(token).await;
        assert_eq!(seen["active"], true, "{seen}");
        let (status, me) = self
            .server
            .call(Method::GET, "/v1/whoami", Some(token), None)
            .await;
        assert_eq!(
            (status, me["id"].as_str()),
            (StatusCode::OK, Some(nhi)),
            "{me}"
        );
    }

    /// The token is refused wherever it is used, and the bearer refusal names `reason`.
    async fn assert_refused(&self, token: &str, reason: &str) {
        assert_eq!(
            self.introspect(token).await,
            json!({"active": false}),
            "introspection of a refused token says nothing more ({reason})"
        );
        let (status, headers, problem) = self
            .server
            .call_full(Method::GET, "/v1/whoami", Some(token), None, &[])
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_token")),
            "{problem}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains(reason)),
            "refused for the wrong reason: expected {reason:?}, got {problem}"
        );
        assert!(
            headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("invalid_token")),
            "RFC 6750 §3: a bearer challenge naming invalid_token"
        );
    }

    /// Signs `claims` as an access token with the server's own active signing key.
    fn sign_as_server(&self, claims: &Map<String, Value>) -> String {
        let key = self.server.state().keyring.active();
        jose::sign_jwt(&key, jose::ACCESS_TOKEN_TYP, &Value::Object(claims.clone()))
    }

    fn server_kid(&self) -> String {
        self.server.state().keyring.active().kid().to_owned()
    }

    /// A real, live token and its claims.
    async fn real_token(&self) -> (String, Map<String, Value>) {
        let token = self.issue(self.holder()).await;
        self.assert_live(&token, &self.holder.0).await;
        let claims = jwt_claims(&token);
        // Re-signing the unchanged claims with the server's key gives back the very same token
        // (ES256 signatures are deterministic, RFC 6979): the crafted tokens below differ from a
        // real one by exactly the change they make.
        assert_eq!(self.sign_as_server(&claims), token);
        (token, claims)
    }

    /// A token crafted from a real one's claims with one change, signed by the server's key,
    /// keeping the real token's `jti`.
    async fn crafted(&self, change: impl FnOnce(&mut Map<String, Value>)) -> String {
        let (_, mut claims) = self.real_token().await;
        change(&mut claims);
        self.sign_as_server(&claims)
    }

    async fn exchange(&self, who: (&str, &str), params: &[(&str, &str)]) -> (StatusCode, Value) {
        exchange(&self.server, who, params).await
    }

    async fn revoke(&self, who: (&str, &str), token: &str) {
        let (status, _, answer) = self
            .server
            .form("/oauth2/revoke", Some(who), &[("token", token)])
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
}

async fn exchange(
    server: &TestServer,
    who: (&str, &str),
    params: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut all = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
    ];
    all.extend_from_slice(params);
    let (status, _, answer) = server.form("/oauth2/token", Some(who), &all).await;
    (status, answer)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now_seconds() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// What the server says when it refuses an `alg` it does not implement.
fn unsupported(alg: &str) -> String {
    alg.parse::<SigningAlg>().unwrap_err().to_string()
}

async fn alg_none_is_refused(backend: Backend) {
    let scene = Scene::new(backend).await;
    let (token, _) = scene.real_token().await;
    let parts: Vec<&str> = token.split('.').collect();
    let header = json!({"alg": "none", "typ": "at+jwt", "kid": scene.server_kid()});
    let unsigned = format!("{}.{}", b64(header.to_string().as_bytes()), parts[1]);
    // RFC 7519 §6.1: an unsecured JWT has an empty signature; a lazy verifier might also be
    // handed the real token's signature.
    for signature in ["", parts[2]] {
        scene
            .assert_refused(&format!("{unsigned}.{signature}"), &unsupported("none"))
            .await;
    }
    // Other spellings of "none" are no better.
    for alg in ["None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": scene.server_kid()});
        let forged = format!("{}.{}.", b64(header.to_string().as_bytes()), parts[1]);
        scene.assert_refused(&forged, &unsupported(alg)).await;
    }
    scene.assert_live(&token, &scene.holder.0).await;
    scene.server.stop().await;
}

/// The server's public key as an attacker finds it, in every form an HMAC secret could be
/// made of.
fn public_key_forms(jwk: &Value) -> Vec<(&'static str, Vec<u8>)> {
    let coordinate = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    let (x, y) = (coordinate("x"), coordinate("y"));
    // RFC 7638 §3.2: the canonical JWK the thumbprint (our kid) is computed over.
    let canonical = format!(
        r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#,
        jwk["crv"].as_str().unwrap(),
        jwk["kty"].as_str().unwrap(),
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap()
    );
    let point: Vec<u8> = [&[4u8][..], &x, &y].concat();
    // SubjectPublicKeyInfo for an uncompressed P-256 point (RFC 5480).
    let spki: Vec<u8> = [
        &hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap()[..],
        &point,
    ]
    .concat();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
        &STANDARD.encode(&spki)[..64],
        &STANDARD.encode(&spki)[64..]
    );
    vec![
        ("canonical jwk", canonical.into_bytes()),
        ("published jwk", jwk.to_string().into_bytes()),
        ("x || y", [x.clone(), y.clone()].concat()),
        ("04 || x || y", point),
        ("spki der", spki),
        ("pem", pem.into_bytes()),
    ]
}

fn hs256(secret: &[u8], signing_input: &str) -> Vec<u8> {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(signing_input.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

async fn hs256_keyed_with_the_servers_public_key_is_refused(backend: Backend) {
    let scene = Scene::new(backend).await;
    let (token, _) = scene.real_token().await;
    let payload = token.split('.').nth(1).unwrap().to_owned();
    let (_, jwks) = scene
        .server
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let jwk = jwks["keys"][0].clone();
    assert_eq!(jwk["kid"], scene.server_kid().as_str());
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": scene.server_kid()});
    let signing_input = format!("{}.{payload}", b64(header.to_string().as_bytes()));
    for (form, secret) in public_key_forms(&jwk) {
        let forged = format!("{signing_input}.{}", b64(&hs256(&secret, &signing_input)));
        println!("HS256 keyed with the public key as {form}");
        scene.assert_refused(&forged, &unsupported("HS256")).await;
    }
    scene.server.stop().await;
}

async fn a_tampered_payload_is_refused(backend: Backend) {
    let scene = Scene::new(backend).await;
    let (token, mut claims) = scene.real_token().await;
    let parts: Vec<&str> = token.split('.').collect();
    for scope in [
        "crm:* mail:send",
        "crm:read:customers/* mail:send custos:introspect",
    ] {
        claims.insert("scope".into(), json!(scope));
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(Value::Object(claims.clone()).to_string().as_bytes()),
            parts[2]
        );
        scene
            .assert_refused(&tampered, &JwtError::BadSignature.to_string())
            .await;
    }
    scene.server.stop().await;
}

async fn an_expired_token_is_refused(backend: Backend) {
    let scene = Scene::new(backend).await;
    // Well beyond the 30 seconds of clock skew tolerated.
    let expired = scene
        .crafted(|claims| {
            claims.insert("exp".into(), json!(now_seconds() - 120));
        })
        .await;
    scene
        .assert_refused(&expired, &JwtError::Expired.to_string())
        .await;
    scene.server.stop().await;
}

async fn a_token_not_yet_valid_is_refused(backend: Backend) {
    let scene = Scene::new(backend).await;
    let early = scene
        .crafted(|claims| {
            claims.insert("nbf".into(), json!(now_seconds() + 600));
        })
        .await;
    scene
        .assert_refused(&early, &JwtError::NotYetValid.to_string())
        .await;
    scene.server.stop().await;
}

async fn a_token_from_another_issuer_is_refused(backend: Backend) {
    let scene = Scene::new(backend).await;
    let base = scene.server.base.clone();
    for issuer in [
        json!("https://attacker.example"),
        json!(format!("{base}/")),
        json!(base.to_uppercase()),
    ] {
        let forged = scene
            .crafted(|claims| {
                claims.insert("iss".into(), issuer.clone());
            })
            .await;
        scene
            .assert_refused(&forged, &JwtError::WrongIssuer.to_string())
            .await;
    }
    scene.server.stop().await;
}

async fn a_token_for_another_audience_is_refused(backend: Backend) {
    let scene = Scene::new(backend).await;
    let base = scene.server.base.clone();
    for audience in [
        json!("https://api.elsewhere.example"),
        json!(format!("{base}/")),
        json!(["https://a.example", "https://b.example"]),
        json!([]),
    ] {
        let forged = scene
            .crafted(|claims| {
                claims.insert("aud".into(), audience.clone());
            })
            .await;
        scene
            .assert_refused(&forged, &JwtError::WrongAudience.to_string())
            .await;
    }
    scene.server.stop().await;
}

async fn another_key_reusing_the_servers_kid_is_refused(backend: Backend) {
    let scene = Scene::new(backend).await;
    let (token, claims) = scene.real_token().await;
    let kid = scene.server_kid();
    let attacker = SigningKey::generate(SigningAlg::Es256, &mut rand::rng()).unwrap();
    let attacker_d = es256::private_scalar(&attacker);
    let mut attacker_jwk = attacker.public_jwk();
    let payload = token.split('.').nth(1).unwrap();
    // The same header as the server's own, and the header an attacker would add to offer its
    // key along (RFC 7515 §4.1.3 `jwk`: never to be trusted).
    let headers = [
        json!({"alg": "ES256", "typ": "at+jwt", "kid": kid}),
        json!({"alg": "ES256", "typ": "at+jwt", "kid": kid, "jwk": attacker_jwk.clone()}),
    ];
    // The forged tokens are genuinely valid under the attacker's key (checked with the core's
    // own verifier, given that key under the server's kid), so only choosing the key by kid
    // among the server's own keys can refuse them.
    attacker_jwk["kid"] = json!(kid);
    let attacker_public = jose::PublicKey::from_jwk(&attacker_jwk).unwrap();
    let issuer = scene.server.base.clone();
    for header in headers {
        let forged = es256::sign_token(&attacker_d, &header, payload);
        let verified = jose::verify_jwt(
            &forged,
            std::slice::from_ref(&attacker_public),
            &jose::Expectations::access_token(&issuer, &issuer, 30),
            custos_core::Timestamp::from_unix_millis(now_seconds() * 1000).unwrap(),
        );
        assert_eq!(
            verified.map(|v| v.claims),
            Ok(claims.clone()),
            "a valid token under the attacker's key"
        );
        scene
            .assert_refused(&forged, &JwtError::BadSignature.to_string())
            .await;
    }
    scene.server.stop().await;
}

async fn an_unknown_or_missing_kid_is_refused(backend: Backend) {
    let scene = Scene::new(backend).await;
    let (token, claims) = scene.real_token().await;
    let payload = token.split('.').nth(1).unwrap();
    // Signed by an attacker's key under its own kid.
    let attacker = SigningKey::generate(SigningAlg::Es256, &mut rand::rng()).unwrap();
    let forged = jose::sign_jwt(
        &attacker,
        jose::ACCESS_TOKEN_TYP,
        &Value::Object(claims.clone()),
    );
    scene
        .assert_refused(&forged, &JwtError::UnknownKey.to_string())
        .await;
    // Signed by the server's own key but naming a kid it does not have, or none: the server
    // must not fall back to trying its keys.
    let server_d = es256::private_scalar(&scene.server.state().keyring.active());
    for (header, reason) in [
        (
            json!({"alg": "ES256", "typ": "at+jwt", "kid": attacker.kid()}),
            JwtError::UnknownKey.to_string(),
        ),
        (
            json!({"alg": "ES256", "typ": "at+jwt", "kid": "custos-1"}),
            JwtError::UnknownKey.to_string(),
        ),
        (
            json!({"alg": "ES256", "typ": "at+jwt"}),
            JwtError::MissingHeader("kid").to_string(),
        ),
    ] {
        let forged = es256::sign_token(&server_d, &header, payload);
        scene.assert_refused(&forged, &reason).await;
    }
    // The test signer is right: under the server's own header it makes a token that verifies
    // with the server's published keys. With another jti it is a token the server never
    // issued, and the server refuses it (no record holds it): a signature alone is not enough.
    let mut unissued = claims.clone();
    unissued.insert("jti".into(), json!(uuid::Uuid::now_v7().to_string()));
    let unissued_payload = b64(Value::Object(unissued.clone()).to_string().as_bytes());
    let twin = es256::sign_token(
        &server_d,
        &json!({"alg": "ES256", "typ": "at+jwt", "kid": scene.server_kid()}),
        &unissued_payload,
    );
    let state = scene.server.state();
    let issuer = scene.server.base.clone();
    let verified = jose::verify_jwt(
        &twin,
        &state.keyring.published(state.now()),
        &jose::Expectations::access_token(&issuer, &issuer, 30),
        state.now(),
    );
    assert_eq!(verified.map(|v| v.claims), Ok(unissued));
    scene
        .assert_refused(&twin, &TokenRefusal::Unknown.to_string())
        .await;
    scene.assert_live(&token, &scene.holder.0).await;
    scene.server.stop().await;
}

async fn a_revoked_token_is_refused(backend: Backend) {
    let scene = Scene::new(backend).await;
    let (token, _) = scene.real_token().await;
    let other = scene.issue(scene.holder()).await;
    scene.revoke(scene.holder(), &token).await;
    scene
        .assert_refused(&token, &TokenRefusal::Revoked.to_string())
        .await;
    // Its sibling is untouched, and the revoked token cannot be exchanged either.
    scene.assert_live(&other, &scene.holder.0).await;
    let (status, error) = scene
        .exchange(scene.holder(), &[("subject_token", &token)])
        .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{error}"
    );
    scene.server.stop().await;
}

/// root (holder) → child (researcher) → grandchild (summariser), each live.
async fn delegation_chain(scene: &Scene) -> ((String, String), [String; 3]) {
    let child_nhi = client(&scene.server, "researcher", &["crm:read"]).await;
    let grandchild_nhi = client(&scene.server, "summariser", &["crm:read"]).await;
    let root = scene.issue(scene.holder()).await;
    let (status, child) = scene
        .exchange(
            scene.holder(),
            &[
                ("subject_token", &root),
                ("audience", &child_nhi.0),
                ("scope", "crm:read:customers/7"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{child}");
    let child = child["access_token"].as_str().unwrap().to_owned();
    let (status, grandchild) = scene
        .exchange(
            (&child_nhi.0, &child_nhi.1),
            &[("subject_token", &child), ("audience", &grandchild_nhi.0)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{grandchild}");
    let grandchild = grandchild["access_token"].as_str().unwrap().to_owned();
    scene.assert_live(&root, &scene.holder.0).await;
    scene.assert_live(&child, &child_nhi.0).await;
    scene.assert_live(&grandchild, &grandchild_nhi.0).await;
    (child_nhi, [root, child, grandchild])
}

async fn a_token_whose_parent_is_revoked_is_refused(backend: Backend) {
    let scene = Scene::new(backend).await;
    let (child_nhi, [root, child, grandchild]) = delegation_chain(&scene).await;
    // The researcher revokes the token it was handed: the summariser's goes with it, the
    // planner's root stays.
    scene.revoke((&child_nhi.0, &child_nhi.1), &child).await;
    let revoked = TokenRefusal::Revoked.to_string();
    scene.assert_refused(&child, &revoked).await;
    scene.assert_refused(&grandchild, &revoked).await;
    scene.assert_live(&root, &scene.holder.0).await;
    // Nothing new is written under the revoked token.
    let (status, error) = scene
        .exchange(
            (&child_nhi.0, &child_nhi.1),
            &[("subject_token", &child), ("scope", "crm:read:customers/7")],
        )
        .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{error}"
    );
    scene.server.stop().await;
}

async fn a_token_whose_grandparent_is_revoked_is_refused(backend: Backend) {
    let scene = Scene::new(backend).await;
    let (child_nhi, [root, child, grandchild]) = delegation_chain(&scene).await;
    scene.revoke(scene.holder(), &root).await;
    let revoked = TokenRefusal::Revoked.to_string();
    for token in [&root, &child, &grandchild] {
        scene.assert_refused(token, &revoked).await;
    }
    let (status, error) = scene
        .exchange((&child_nhi.0, &child_nhi.1), &[("subject_token", &child)])
        .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{error}"
    );
    scene.server.stop().await;
}

async fn an_exchange_for_a_broader_scope_is_refused(backend: Backend) {
    let scene = Scene::new(backend).await;
    let delegate = client(&scene.server, "researcher", &["crm:*", "mail:send"]).await;
    let root = scene.issue(scene.holder()).await;
    // The root holds crm:read:customers/* and mail:send.
    for scope in [
        "crm:read",
        "crm:read:*",
        "crm:write:customers/1",
        "crm:read:customers/* mail:send crm:read:invoices/1",
        "custos:introspect",
    ] {
        for (who, audience) in [
            (scene.holder(), None),
            (scene.holder(), Some(delegate.0.as_str())),
            (
                (delegate.0.as_str(), delegate.1.as_str()),
                Some(delegate.0.as_str()),
            ),
        ] {
            let mut params = vec![("subject_token", root.as_str()), ("scope", scope)];
            if let Some(audience) = audience {
                params.push(("audience", audience));
            }
            let (status, error) = scene.exchange(who, &params).await;
            assert_eq!(
                (status, error["error"].as_str()),
                (StatusCode::BAD_REQUEST, Some("invalid_scope")),
                "{scope} for {audience:?}: {error}"
            );
        }
    }
    // A narrower one is granted (the refusals above were about the scope only).
    let (status, granted) = scene
        .exchange(
            scene.holder(),
            &[
                ("subject_token", &root),
                ("audience", &delegate.0),
                ("scope", "crm:read:customers/9"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    scene.server.stop().await;
}

async fn an_exchange_beyond_the_depth_cap_is_refused(backend: Backend) {
    let scene = Scene::new(backend).await;
    // Depth 0 is issued directly; the default cap allows depths 1 to 3.
    let mut chain = vec![scene.issue(scene.holder()).await];
    for _ in 1..=3 {
        let (status, answer) = scene
            .exchange(scene.holder(), &[("subject_token", chain.last().unwrap())])
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        chain.push(answer["access_token"].as_str().unwrap().to_owned());
    }
    let deepest = chain.last().unwrap().clone();
    let (status, error) = scene
        .exchange(
            scene.holder(),
            &[("subject_token", &deepest), ("scope", "mail:send")],
        )
        .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{error}"
    );
    // Handing it to another NHI is no way around the cap.
    let delegate = client(&scene.server, "researcher", &["crm:read"]).await;
    let (status, error) = scene
        .exchange(
            (&delegate.0, &delegate.1),
            &[
                ("subject_token", &deepest),
                ("audience", &delegate.0),
                ("scope", "crm:read:customers/1"),
            ],
        )
        .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{error}"
    );
    for token in &chain {
        scene.assert_live(token, &scene.holder.0).await;
    }
    scene.server.stop().await;
}

/// A static key is refused at the token endpoint (`invalid_client`) and as a bearer (`401
/// invalid_token`).
async fn assert_static_key_refused(server: &TestServer, nhi: &str, secret: &str) {
    let (status, headers, error) = server
        .form(
            "/oauth2/token",
            Some((nhi, secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "{error}"
    );
    assert!(headers.get("www-authenticate").is_some());
    let (status, _, error) = server
        .form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", nhi),
                ("client_secret", secret),
            ],
        )
        .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "{error}"
    );
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/tasks",
            Some(json!({"purpose": "read a customer", "scope": ["crm:read"]})),
        ),
        (Method::GET, "/v1/whoami", None),
    ] {
        let (status, problem) = server.call(method, path, Some(secret), body).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_token")),
            "{path}: {problem}"
        );
    }
}

async fn assert_static_key_works(server: &TestServer, nhi: &str, secret: &str) {
    let (status, _, answer) = server
        .form(
            "/oauth2/token",
            Some((nhi, secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, me) = server
        .call(Method::GET, "/v1/whoami", Some(secret), None)
        .await;
    assert_eq!((status, me["id"].as_str()), (StatusCode::OK, Some(nhi)));
}

async fn a_revoked_static_key_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (nhi, other_secret) = client(&server, "legacy-bot", &["crm:read"]).await;
    let key = server.static_key(&nhi).await;
    let secret = key["secret"].as_str().unwrap();
    assert_static_key_works(&server, &nhi, secret).await;
    server
        .admin(
            Method::POST,
            &format!("/v1/credentials/{}/revoke", key["id"].as_str().unwrap()),
            None,
            StatusCode::OK,
        )
        .await;
    assert_static_key_refused(&server, &nhi, secret).await;
    // The NHI's other key is untouched.
    assert_static_key_works(&server, &nhi, &other_secret).await;
    server.stop().await;
}

async fn a_rotated_out_static_key_is_refused_after_its_grace_period(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (nhi, _) = client(&server, "legacy-bot", &["crm:read"]).await;
    let old = server.static_key(&nhi).await;
    let old_secret = old["secret"].as_str().unwrap();
    let rotated = server
        .admin(
            Method::POST,
            &format!("/v1/credentials/{}/rotate", old["id"].as_str().unwrap()),
            None,
            StatusCode::CREATED,
        )
        .await;
    let new_secret = rotated["key"]["secret"].as_str().unwrap();
    // The test server's grace period is one second.
    assert_static_key_works(&server, &nhi, old_secret).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_static_key_refused(&server, &nhi, old_secret).await;
    assert_static_key_works(&server, &nhi, new_secret).await;
    server.stop().await;
}

async fn approve(server: &TestServer, approval: &str, token: &str) -> (StatusCode, Value) {
    server
        .call(
            Method::POST,
            &format!("/v1/approvals/{approval}/approve"),
            Some(token),
            Some(json!({"reason": "ok"})),
        )
        .await
}

async fn approval_state(server: &TestServer, approval: &str) -> Value {
    server
        .admin(
            Method::GET,
            &format!("/v1/approvals/{approval}"),
            None,
            StatusCode::OK,
        )
        .await["state"]
        .clone()
}

async fn a_reviewer_cannot_approve_its_own_request(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (nhi, _) = client(&server, "ledger-agent", &["ledger:read"]).await;
    let (_, rita) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;
    let (_, sam) = server
        .operator("sam", &["reviewer"], &["owners-oauth"])
        .await;
    let (status, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&rita),
            Some(json!({"purpose": "month end", "scope": ["ledger:read"], "nhi_id": nhi})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    let approval = task["approval_id"].as_str().unwrap();
    let (status, problem) = approve(&server, approval, &rita).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("own_request")),
        "{problem}"
    );
    assert_eq!(approval_state(&server, approval).await, "pending");
    // Another reviewer of the team may.
    let (status, decided) = approve(&server, approval, &sam).await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    server.stop().await;
}

async fn an_nhi_cannot_decide_an_approval(backend: Backend) {
    let scene = Scene::new(backend).await;
    let (_, secret) = scene.holder();
    let (status, task) = scene
        .server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(secret),
            Some(json!({"purpose": "refund", "scope": ["payments:refund"]})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    let approval = task["approval_id"].as_str().unwrap();
    // Neither with its static key nor with an access token, and neither way round.
    let token = scene.issue(scene.holder()).await;
    for credential in [secret, token.as_str()] {
        for decision in ["approve", "deny"] {
            let (status, problem) = scene
                .server
                .call(
                    Method::POST,
                    &format!("/v1/approvals/{approval}/{decision}"),
                    Some(credential),
                    Some(json!({"reason": "self-service"})),
                )
                .await;
            assert_eq!(
                (status, problem["code"].as_str()),
                (StatusCode::FORBIDDEN, Some("operator_required")),
                "{decision}: {problem}"
            );
        }
    }
    assert_eq!(approval_state(&scene.server, approval).await, "pending");
    scene.server.stop().await;
}

/// A task an operator asked for on behalf of `nhi`, waiting for approval: (task, approval).
async fn pending_task(server: &TestServer, requester: &str, nhi: &str) -> (String, String) {
    let (status, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(requester),
            Some(json!({"purpose": "month end", "scope": ["ledger:read"], "nhi_id": nhi})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    (
        task["id"].as_str().unwrap().to_owned(),
        task["approval_id"].as_str().unwrap().to_owned(),
    )
}

async fn an_approval_is_used_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (nhi, secret) = client(&server, "ledger-agent", &["ledger:read"]).await;
    let (gw_id, gw_secret) = client(&server, "gateway", &["custos:introspect"]).await;
    let (_, rita) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;
    let (_, sam) = server
        .operator("sam", &["reviewer"], &["owners-oauth"])
        .await;
    let (task, approval) = pending_task(&server, &rita, &nhi).await;
    let (status, decided) = approve(&server, &approval, &sam).await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    for (who, decision) in [
        (ADMIN_TOKEN, "approve"),
        (sam.as_str(), "approve"),
        (sam.as_str(), "deny"),
    ] {
        let (status, problem) = server
            .call(
                Method::POST,
                &format!("/v1/approvals/{approval}/{decision}"),
                Some(who),
                Some(json!({"reason": "again"})),
            )
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::CONFLICT, Some("approval_not_pending")),
            "{decision}: {problem}"
        );
    }
    // The NHI collects the credential once; later reads name it but never show it again.
    let task_path = format!("/v1/tasks/{task}");
    let (status, collected) = server
        .call(Method::GET, &task_path, Some(&secret), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{collected}");
    let token = collected["credential"]["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("the first collection holds the token: {collected}"))
        .to_owned();
    for _ in 0..2 {
        let (status, again) = server
            .call(Method::GET, &task_path, Some(&secret), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert!(again["credential"].get("access_token").is_none(), "{again}");
        assert_eq!(again["credential"]["jti"], collected["credential"]["jti"]);
    }
    // Still one credential: the one collected, live.
    let (_, _, seen) = server
        .form(
            "/oauth2/introspect",
            Some((&gw_id, &gw_secret)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(
        (seen["active"].as_bool(), seen["jti"].as_str()),
        (Some(true), collected["credential"]["jti"].as_str()),
        "{seen}"
    );
    server.stop().await;
}

async fn concurrent_approvals_decide_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (nhi, _) = client(&server, "ledger-agent", &["ledger:read"]).await;
    let (_, rita) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;
    let mut approvers = vec![ADMIN_TOKEN.to_owned()];
    for name in ["sam", "sue", "sid", "sol", "sky", "sal", "syd"] {
        approvers.push(
            server
                .operator(name, &["reviewer"], &["owners-oauth"])
                .await
                .1,
        );
    }
    let (_, approval) = pending_task(&server, &rita, &nhi).await;
    let answers = futures_join(
        approvers
            .iter()
            .map(|token| approve(&server, &approval, token)),
    )
    .await;
    let approved = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    assert_eq!(approved, 1, "exactly one decision wins: {answers:?}");
    for (status, problem) in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_eq!(
            (*status, problem["code"].as_str()),
            (StatusCode::CONFLICT, Some("approval_not_pending")),
            "the losers are told the approval was decided: {answers:?}"
        );
    }
    let events = server
        .admin(
            Method::GET,
            &format!("/v1/audit/events?subject=approval:{approval}&kind=approval.decided"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        events["items"].as_array().map(Vec::len),
        Some(1),
        "one decision recorded: {events}"
    );
    server.stop().await;
}

/// Runs futures concurrently on the current task and collects their outputs in order.
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

async fn an_approved_credential_is_collected_once_even_concurrently(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (nhi, secret) = client(&server, "ledger-agent", &["ledger:read"]).await;
    let (_, rita) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;
    let (task, approval) = pending_task(&server, &rita, &nhi).await;
    let (status, _) = approve(&server, &approval, ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    let task_path = format!("/v1/tasks/{task}");
    let answers =
        futures_join((0..6).map(|_| server.call(Method::GET, &task_path, Some(&secret), None)))
            .await;
    let tokens: Vec<&str> = answers
        .iter()
        .filter_map(|(_, task)| task["credential"]["access_token"].as_str())
        .collect();
    assert_eq!(tokens.len(), 1, "one credential per approval: {answers:?}");
    for (status, answer) in &answers {
        assert!(
            *status == StatusCode::OK
                || (*status == StatusCode::CONFLICT
                    && answer["code"] == "credential_already_issued"),
            "{status} {answer}"
        );
    }
    let credentials = server
        .admin(
            Method::GET,
            &format!("/v1/credentials?nhi_id={nhi}"),
            None,
            StatusCode::OK,
        )
        .await;
    let access_tokens = credentials["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "access_token")
        .count();
    assert_eq!(access_tokens, 1, "{credentials}");
    server.stop().await;
}

/// An NHI with a registered ES256 client key: (nhi id, its private key).
async fn assertion_client(server: &TestServer) -> (String, SigningKey) {
    let (id, _) = client(server, "signer", &["crm:read"]).await;
    let key = SigningKey::generate(SigningAlg::Es256, &mut rand::rng()).unwrap();
    let (status, registered) = server
        .call(
            Method::POST,
            &format!("/v1/nhis/{id}/client-keys"),
            Some(ADMIN_TOKEN),
            Some(json!({"jwk": key.public_jwk()})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    (id, key)
}

fn client_assertion(key: &SigningKey, client_id: &str, audience: &str, exp: i64) -> String {
    jose::sign_jwt(
        key,
        "JWT",
        &json!({
            "iss": client_id, "sub": client_id, "aud": audience,
            "iat": now_seconds(), "exp": exp, "jti": uuid::Uuid::now_v7().to_string(),
        }),
    )
}

/// Authenticates to `path` with a `private_key_jwt` assertion.
async fn with_assertion(
    server: &TestServer,
    path: &str,
    client_id: &str,
    assertion: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut params = vec![
        ("client_id", client_id),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
    ];
    params.extend_from_slice(extra);
    let (status, _, answer) = server.form(path, None, &params).await;
    (status, answer)
}

async fn a_replayed_client_assertion_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, key) = assertion_client(&server).await;
    // Addressed to the issuer, an assertion is good at every endpoint, but only once in all.
    let signed = client_assertion(&key, &id, &server.base, now_seconds() + 60);
    let grant = [("grant_type", "client_credentials")];
    let (status, answer) = with_assertion(&server, "/oauth2/token", &id, &signed, &grant).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let token = answer["access_token"].as_str().unwrap().to_owned();
    for (path, extra) in [
        ("/oauth2/token", &grant[..]),
        ("/oauth2/introspect", &[("token", token.as_str())][..]),
        ("/oauth2/revoke", &[("token", token.as_str())][..]),
    ] {
        let (status, error) = with_assertion(&server, path, &id, &signed, extra).await;
        assert_eq!(
            (status, error["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client")),
            "replayed at {path}: {error}"
        );
    }
    // A fresh assertion still works, and the token was not revoked by the replay.
    let fresh = client_assertion(&key, &id, &server.base, now_seconds() + 60);
    let (status, seen) = with_assertion(
        &server,
        "/oauth2/introspect",
        &id,
        &fresh,
        &[("token", &token)],
    )
    .await;
    assert_eq!(
        (status, seen["active"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{seen}"
    );
    server.stop().await;
}

async fn a_client_assertion_replayed_after_its_exp_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, key) = assertion_client(&server).await;
    let endpoint = format!("{}/oauth2/token", server.base);
    let exp = now_seconds() + 1;
    let signed = client_assertion(&key, &id, &endpoint, exp);
    let grant = [("grant_type", "client_credentials")];
    let (status, answer) = with_assertion(&server, "/oauth2/token", &id, &signed, &grant).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Past its exp, but within the clock skew the server tolerates on exp (30 s): the
    // assertion is still accepted by signature and time, so only the memory of its jti can
    // stop the replay.
    let wait = (exp + 1) * 1000 - time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64 + 200)).await;
    for attempt in 1..=2 {
        let (status, error) = with_assertion(&server, "/oauth2/token", &id, &signed, &grant).await;
        assert_eq!(
            (status, error["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client")),
            "replay {attempt} after exp: {error}"
        );
    }
    server.stop().await;
}

/// ES256 signing of arbitrary JWS headers, which the core's API (rightly) does not offer, with
/// the RustCrypto `p256` crate. Its output is checked against the core's verifier wherever it is
/// used.
mod es256 {
    use custos_core::jose::SigningKey;
    use p256::ecdsa::signature::Signer;
    use p256::elliptic_curve::sec1::ToSec1Point;
    use p256::pkcs8::DecodePrivateKey;
    use serde_json::Value;

    /// The private scalar of an ES256 key, read from its PKCS#8 form, and checked against its
    /// public key.
    pub fn private_scalar(key: &SigningKey) -> [u8; 32] {
        let der = key.to_pkcs8_der().unwrap();
        let secret = p256::SecretKey::from_pkcs8_der(&der).unwrap();
        let point = secret.public_key().to_sec1_point(false);
        let jwk = key.public_jwk();
        let coordinate = |name: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(jwk[name].as_str().unwrap())
                .unwrap()
        };
        assert_eq!(
            (point.x().unwrap().to_vec(), point.y().unwrap().to_vec()),
            (coordinate("x"), coordinate("y")),
            "d·G is the public key"
        );
        secret.to_bytes().into()
    }

    /// A compact JWS of `header` over an already encoded payload, signed with `d`: ECDSA P-256
    /// with SHA-256, `r || s` (RFC 7518 §3.4).
    pub fn sign_token(d: &[u8; 32], header: &Value, payload: &str) -> String {
        let signing_input = format!("{}.{payload}", super::b64(header.to_string().as_bytes()));
        let key = p256::ecdsa::SigningKey::from_bytes(&(*d).into()).unwrap();
        let signature: p256::ecdsa::Signature = key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", super::b64(&signature.to_bytes()))
    }
}
