//! Verifies arbitrary UTF-8 as an access token and as a client assertion, signs arbitrary JSON
//! as claims with each registered key so that the claim checks see every shape of payload, and
//! reads arbitrary JSON as a JWK. Nothing may panic; whatever is accepted must meet the
//! expectations it was checked against, and an accepted JWK must read back from its own JWK.

#![no_main]

use std::sync::LazyLock;

use custos_core::Timestamp;
use custos_core::jose::{
    ClientAssertionExpectations, Expectations, Jwks, PublicKey, SigningAlg, SigningKey,
    VerifiedJwt, sign_jwt, verify_client_assertion, verify_jwt,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const ISSUER: &str = "https://custos.example";
const AUDIENCE: &str = "https://api.example";
const TOKEN_ENDPOINT: &str = "https://custos.example/oauth2/token";
const CLIENT: &str = "nhi_fuzz";
const NOW_SECONDS: i64 = 1_800_000_000;

/// RFC 7515 appendix A.3's P-256 key and RFC 8037 appendix A.1's Ed25519 key as PKCS#8 DER:
/// fixed, published test keys, so that the target needs no RNG and runs are reproducible.
const P256_PKCS8: &str = concat!(
    "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b02010104208e9b109e719098bf",
    "980487df1f5d77e9cb29606ebed2263b5f57c213df84f4b2a144034200047fcdce2770f6c45d4183cbee6fdb",
    "4b7b580733357be9ef13bacf6e3c7bd15445c7f144cd1bbd9b7e872cdfedb9eeb9f4b3695d6ea90b24ad8a46",
    "23288588e5ad",
);
const ED25519_PKCS8: &str = concat!(
    "302e020100300506032b6570042204209d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac03",
    "1cae7f60",
);

struct Fixture {
    signers: Vec<SigningKey>,
    keys: Jwks,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let signers: Vec<SigningKey> = [
        (SigningAlg::Es256, P256_PKCS8),
        (SigningAlg::EdDsa, ED25519_PKCS8),
    ]
    .into_iter()
    .map(|(alg, der)| SigningKey::from_pkcs8_der(alg, &hex(der)).expect("a fixed test key"))
    .collect();
    let keys = Jwks::new(signers.iter().map(|key| key.public_key().clone()));
    Fixture { signers, keys }
});

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn now() -> Timestamp {
    Timestamp::from_unix_millis(NOW_SECONDS * 1000).expect("a valid time")
}

fn has_audience(verified: &VerifiedJwt, accepted: &[&str]) -> bool {
    match verified.claims.get("aud") {
        Some(Value::String(aud)) => accepted.contains(&aud.as_str()),
        Some(Value::Array(auds)) => auds
            .iter()
            .any(|aud| aud.as_str().is_some_and(|aud| accepted.contains(&aud))),
        _ => false,
    }
}

fn check_access_token(verified: &VerifiedJwt) {
    assert_eq!(verified.claims.get("iss"), Some(&Value::from(ISSUER)));
    assert!(has_audience(verified, &[AUDIENCE]));
    assert!(verified.claims.get("exp").is_some_and(Value::is_number));
    assert!(verified.claims.get("iat").is_some_and(Value::is_number));
    for name in ["sub", "client_id", "jti"] {
        assert!(verified.claims.get(name).is_some_and(Value::is_string));
    }
}

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;
    let expected = Expectations::access_token(ISSUER, AUDIENCE, 60);
    let client = ClientAssertionExpectations {
        client_id: CLIENT,
        token_endpoint: TOKEN_ENDPOINT,
        issuer: ISSUER,
        leeway_seconds: 60,
        max_lifetime_seconds: 300,
    };
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(verified) = verify_jwt(text, &fixture.keys, &expected, now()) {
        check_access_token(&verified);
    }
    if let Ok(verified) = verify_client_assertion(text, fixture.keys.keys(), &client, now()) {
        assert_eq!(verified.claims.get("iss"), Some(&Value::from(CLIENT)));
        assert_eq!(verified.claims.get("sub"), Some(&Value::from(CLIENT)));
        assert!(has_audience(&verified, &[TOKEN_ENDPOINT, ISSUER]));
        assert!(verified.claims.get("jti").is_some_and(Value::is_string));
    }

    let Ok(json) = serde_json::from_str::<Value>(text) else {
        return;
    };
    for key in &fixture.signers {
        let token = sign_jwt(key, "at+jwt", &json);
        if let Ok(verified) = verify_jwt(&token, &fixture.keys, &expected, now()) {
            check_access_token(&verified);
            assert_eq!(Value::Object(verified.claims), json);
        }
    }
    if let Ok(key) = PublicKey::from_jwk(&json) {
        let again = PublicKey::from_jwk(&key.to_jwk()).expect("a written jwk reads back");
        assert_eq!(again.thumbprint(), key.thumbprint());
        assert_eq!(again.kid(), key.kid());
        assert_eq!(again.alg(), key.alg());
    }
});
