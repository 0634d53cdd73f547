//! The JOSE layer: round trips for each algorithm, known answers from the RFCs and from keys
//! made by OpenSSL, the refusal matrix (each case asserting its exact error), client
//! assertions, JWKs, a cross-check against the independent `jsonwebtoken` crate, and property
//! tests that arbitrary or mutated input never panics and is never accepted.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use custos_core::Timestamp;
use custos_core::jose::{
    ClientAssertionExpectations, Expectations, Jwks, JwtError, KeyLookup, MAX_TOKEN_BYTES,
    PublicKey, SigningAlg, SigningKey, VerifiedJwt, sign_detached, sign_jwt,
    verify_client_assertion, verify_detached, verify_jwt,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

const ISSUER: &str = "https://custos.example";
const AUDIENCE: &str = "https://api.example";
const TOKEN_ENDPOINT: &str = "https://custos.example/oauth2/token";
const CLIENT: &str = "nhi_0190f0d5";
const LEEWAY: u32 = 30;
/// The fixed "now" of these tests, in seconds: 2027-01-15.
const NOW: i64 = 1_800_000_000;

const ALL: [SigningAlg; 3] = SigningAlg::ALL;

fn now() -> Timestamp {
    Timestamp::from_unix_millis(NOW * 1000).unwrap()
}

fn expectations() -> Expectations<'static> {
    Expectations::access_token(ISSUER, AUDIENCE, LEEWAY)
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn index(alg: SigningAlg) -> usize {
    ALL.iter().position(|a| *a == alg).unwrap()
}

/// The server's key per algorithm, generated once: a 2048-bit RSA key takes a while in a
/// debug build.
fn key(alg: SigningAlg) -> &'static SigningKey {
    static KEYS: OnceLock<[SigningKey; 3]> = OnceLock::new();
    &KEYS.get_or_init(|| ALL.map(|alg| SigningKey::generate(alg, &mut rng(1)).unwrap()))[index(alg)]
}

/// A second key per algorithm, registered nowhere: the signer of "unknown kid" tokens.
fn stranger(alg: SigningAlg) -> &'static SigningKey {
    static KEYS: OnceLock<[SigningKey; 3]> = OnceLock::new();
    &KEYS.get_or_init(|| ALL.map(|alg| SigningKey::generate(alg, &mut rng(2)).unwrap()))[index(alg)]
}

/// The published key set: all three server keys, as a resource server would load them.
fn jwks() -> Jwks {
    Jwks::new(ALL.map(|alg| key(alg).public_key().clone()))
}

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "sub": CLIENT,
        "aud": AUDIENCE,
        "client_id": CLIENT,
        "jti": "tok_01",
        "iat": NOW - 10,
        "exp": NOW + 300,
        "scope": "crm:read:customers/*",
    })
}

/// `claims()` with `changes` applied; a `null` removes the claim.
fn claims_with(changes: Value) -> Value {
    let mut claims = claims();
    for (name, value) in changes.as_object().unwrap() {
        let object = claims.as_object_mut().unwrap();
        if value.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), value.clone());
        }
    }
    claims
}

fn token(alg: SigningAlg, claims: &Value) -> String {
    sign_jwt(key(alg), "at+jwt", claims)
}

fn verify(token: &str) -> Result<VerifiedJwt, JwtError> {
    verify_jwt(token, &jwks(), &expectations(), now())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

/// Tokens made by the independent `jsonwebtoken` crate, for headers `sign_jwt` never writes.
mod other {
    use custos_core::jose::{SigningAlg, SigningKey};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    use serde_json::Value;

    pub fn algorithm(alg: SigningAlg) -> Algorithm {
        match alg {
            SigningAlg::Es256 => Algorithm::ES256,
            SigningAlg::EdDsa => Algorithm::EdDSA,
            SigningAlg::Rs256 => Algorithm::RS256,
        }
    }

    pub fn encoding_key(key: &SigningKey) -> EncodingKey {
        let der = key.to_pkcs8_der().unwrap();
        match key.alg() {
            SigningAlg::Es256 => EncodingKey::from_ec_der(&der),
            SigningAlg::EdDsa => EncodingKey::from_ed_der(&der),
            // jsonwebtoken reads RSA keys as PKCS#1.
            SigningAlg::Rs256 => {
                let pkcs1 = rsa::PrivateKey::from_pkcs8_der(&der)
                    .unwrap()
                    .to_pkcs1_der()
                    .unwrap();
                EncodingKey::from_rsa_der(pkcs1.as_bytes())
            }
        }
    }

    /// The header `sign_jwt` would write for `key`, as a starting point for variations.
    pub fn header(key: &SigningKey) -> Header {
        let mut header = Header::new(algorithm(key.alg()));
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some(key.kid().to_owned());
        header
    }

    pub fn sign(header: &Header, claims: &Value, key: &SigningKey) -> String {
        jsonwebtoken::encode(header, claims, &encoding_key(key)).unwrap()
    }
}

mod round_trips {
    use super::*;

    #[test]
    fn signed_tokens_verify_with_their_claims_and_header() {
        for alg in ALL {
            let claims = claims();
            let token = token(alg, &claims);
            let verified = verify(&token).unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(Value::Object(verified.claims), claims, "{alg}");
            assert_eq!(verified.header.alg, alg);
            assert_eq!(verified.header.kid.as_deref(), Some(key(alg).kid()));
            assert_eq!(verified.header.typ.as_deref(), Some("at+jwt"));

            let header: Value = serde_json::from_slice(&unb64(&segments(&token)[0])).unwrap();
            assert_eq!(
                header,
                json!({"alg": alg.as_str(), "typ": "at+jwt", "kid": key(alg).kid()})
            );
        }
    }

    /// RFC 7518 §3.4: an ES256 signature is R || S, 64 bytes, not a DER sequence.
    #[test]
    fn signatures_have_the_jose_sizes() {
        for (alg, size) in [
            (SigningAlg::Es256, 64),
            (SigningAlg::EdDsa, 64),
            (SigningAlg::Rs256, 256),
        ] {
            let token = token(alg, &claims());
            assert_eq!(unb64(&segments(&token)[2]).len(), size, "{alg}");
        }
    }

    #[test]
    fn pkcs8_export_and_import_keep_the_key() {
        for alg in ALL {
            let der = key(alg).to_pkcs8_der().unwrap();
            let imported = SigningKey::from_pkcs8_der(alg, &der).unwrap();
            assert_eq!(imported.kid(), key(alg).kid(), "{alg}");
            assert_eq!(imported.public_jwk(), key(alg).public_jwk(), "{alg}");
            assert_eq!(*imported.to_pkcs8_der().unwrap(), *der, "{alg}");
            // The imported key signs tokens that the original public key accepts.
            let token = sign_jwt(&imported, "at+jwt", &claims());
            verify(&token).unwrap();
        }
    }

    #[test]
    fn pkcs8_of_another_algorithm_is_refused() {
        for alg in ALL {
            for other in ALL.into_iter().filter(|other| *other != alg) {
                let der = key(other).to_pkcs8_der().unwrap();
                assert!(
                    matches!(
                        SigningKey::from_pkcs8_der(alg, &der),
                        Err(JwtError::InvalidKey(_))
                    ),
                    "{other} key read as {alg}"
                );
            }
            assert!(matches!(
                SigningKey::from_pkcs8_der(alg, b"not der"),
                Err(JwtError::InvalidKey(_))
            ));
        }
    }

    #[test]
    fn generation_uses_the_callers_rng() {
        for alg in [SigningAlg::Es256, SigningAlg::EdDsa] {
            let a = SigningKey::generate(alg, &mut rng(7)).unwrap();
            let b = SigningKey::generate(alg, &mut rng(7)).unwrap();
            let c = SigningKey::generate(alg, &mut rng(8)).unwrap();
            assert_eq!(a.kid(), b.kid(), "{alg}: same seed, same key");
            assert_ne!(a.kid(), c.kid(), "{alg}: another seed, another key");
        }
        assert_ne!(
            key(SigningAlg::Rs256).kid(),
            stranger(SigningAlg::Rs256).kid()
        );
    }

    #[test]
    fn public_jwks_have_the_rfc_members() {
        let es = key(SigningAlg::Es256).public_jwk();
        let ed = key(SigningAlg::EdDsa).public_jwk();
        let rs = key(SigningAlg::Rs256).public_jwk();
        let names = |jwk: &Value| {
            let mut names: Vec<_> = jwk.as_object().unwrap().keys().cloned().collect();
            names.sort();
            names
        };
        assert_eq!(names(&es), ["alg", "crv", "kid", "kty", "use", "x", "y"]);
        assert_eq!(names(&ed), ["alg", "crv", "kid", "kty", "use", "x"]);
        assert_eq!(names(&rs), ["alg", "e", "kid", "kty", "n", "use"]);
        assert_eq!(
            (&es["kty"], &es["crv"], &es["alg"]),
            (&json!("EC"), &json!("P-256"), &json!("ES256"))
        );
        assert_eq!(
            (&ed["kty"], &ed["crv"], &ed["alg"]),
            (&json!("OKP"), &json!("Ed25519"), &json!("EdDSA"))
        );
        assert_eq!(
            (&rs["kty"], &rs["e"], &rs["alg"]),
            (&json!("RSA"), &json!("AQAB"), &json!("RS256"))
        );
        assert_eq!(unb64(es["x"].as_str().unwrap()).len(), 32);
        assert_eq!(unb64(es["y"].as_str().unwrap()).len(), 32);
        assert_eq!(unb64(ed["x"].as_str().unwrap()).len(), 32);
        assert_eq!(unb64(rs["n"].as_str().unwrap()).len(), 256);
        for jwk in [es, ed, rs] {
            assert_eq!(jwk["use"], "sig");
        }
    }

    /// A JWKS read back verifies the same tokens, and every key is found under its kid.
    #[test]
    fn jwks_round_trips() {
        let published = jwks().to_json();
        assert_eq!(published["keys"].as_array().unwrap().len(), 3);
        let read = Jwks::from_json(&published).unwrap();
        for alg in ALL {
            let found = read.key(key(alg).kid()).unwrap();
            assert_eq!(found.alg(), alg);
            assert_eq!(found.thumbprint(), key(alg).kid());
            let token = token(alg, &claims());
            verify_jwt(&token, &read, &expectations(), now()).unwrap();
            verify_jwt(&token, read.keys(), &expectations(), now()).unwrap();
        }
        let es = key(SigningAlg::Es256).public_key();
        let twice = Jwks::new(vec![es.clone(), es.clone()]);
        assert_eq!(twice.keys().len(), 1);
        let mut duplicated = published.clone();
        let first = duplicated["keys"][0].clone();
        duplicated["keys"].as_array_mut().unwrap().push(first);
        assert_eq!(
            Jwks::from_json(&duplicated).unwrap_err(),
            JwtError::InvalidJwk("two keys of the jwks share a kid")
        );
    }

    #[test]
    fn algorithm_names() {
        for alg in ALL {
            assert_eq!(alg.to_string().parse::<SigningAlg>(), Ok(alg));
            assert_eq!(serde_json::to_value(alg).unwrap(), json!(alg.as_str()));
            assert_eq!(
                serde_json::from_value::<SigningAlg>(json!(alg.as_str())).unwrap(),
                alg
            );
        }
        assert_eq!(
            ["ES256", "EdDSA", "RS256"].map(|name| name.parse::<SigningAlg>().unwrap()),
            ALL
        );
        for name in ["es256", "EDDSA", "none", "HS256", "PS256", "ES384", ""] {
            assert_eq!(
                name.parse::<SigningAlg>(),
                Err(JwtError::UnsupportedAlg(name.to_owned()))
            );
        }
        assert!(serde_json::from_value::<SigningAlg>(json!("HS256")).is_err());
    }

    #[test]
    fn keys_never_print_secrets() {
        for alg in ALL {
            let shown = format!("{:?}", key(alg));
            assert!(shown.contains(key(alg).kid()), "{shown}");
            assert!(shown.contains(&format!("{alg:?}")), "{shown}");
            let der = key(alg).to_pkcs8_der().unwrap();
            assert!(!shown.contains(&STANDARD.encode(&*der)));
            assert!(shown.len() < 120, "{shown}");
        }
    }
}

/// Known answers: keys and signatures from the RFCs, and a key made by OpenSSL.
mod known_answers {
    use super::*;

    /// RFC 7515 appendix A.3's P-256 key, as PKCS#8 DER (made by OpenSSL from the RFC's `d`).
    const RFC7515_P256_PKCS8: &str = concat!(
        "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgjpsQnnGQmL+YBIffH1136cspYG6+0iY7X1fCE9+E9LKh",
        "RANCAAR/zc4ncPbEXUGDy+5v20t7WAczNXvp7xO6z248e9FURcfxRM0bvZt+hyzf7bnuufSzaV1uqQskrYpGIyiFiOWt",
    );
    /// Its thumbprint, computed independently (Python's hashlib over the RFC 7638 form).
    const RFC7515_P256_THUMBPRINT: &str = "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U";
    /// The RFC's ES256 example JWS over `{"iss":"joe","exp":1300819380,...}`.
    const RFC7515_ES256_JWS: &str = concat!(
        "eyJhbGciOiJFUzI1NiJ9",
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ",
        ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
    );

    /// RFC 8037 appendix A.1's Ed25519 key, as RFC 8410 PKCS#8 DER (hex).
    const RFC8037_ED25519_PKCS8: &str = "302e020100300506032b6570042204209d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    /// RFC 8037 appendix A.3.
    const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
    /// RFC 8037 appendix A.4: the EdDSA JWS of "Example of Ed25519 signing".
    const RFC8037_EDDSA_JWS: &str = concat!(
        "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc",
        ".hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg",
    );

    /// RFC 7638 §3.1's RSA key and its thumbprint.
    const RFC7638_N: &str = concat!(
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP",
        "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY",
        "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f",
        "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    );
    const RFC7638_THUMBPRINT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

    /// A TEST-ONLY 2048-bit RSA key made by OpenSSL (Python `cryptography`), as PKCS#8 DER.
    const OPENSSL_RSA_PKCS8: &str = concat!(
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCpgzySySLMJiHgSC9JeCHca8tdxVLEIk08lzPyZHaR",
        "UbwGKi4DX73xp8Oy/Eo4IT0fUx4LzgDBh+0RaBd3Y2wzMIU7fpDRvAioUiX7gy+a++AY2EKE5HWjzNn2y1RMqA5jWmJH",
        "mHd2Qpq5MlQetLtQGQ8HpRC9G8xkIFKlSN7A2mO+bRXRFsX0g3inKreoL4Ma8keIa7nDGn0HJdLEJI0EGNnfYsmx7ZXA",
        "e83EnkhMd1qwn+4ZJjsgGktQDtCkef1gpLPfS2xiDr09nt/6XCbA/k6FmssTHllDThxQJRM8y22CCu1G+fRGZsazTukJ",
        "ej4aMiBa5baTaY8/9DMVdHcfAgMBAAECggEAI6qy7Jm4oibl2tilZnqJ+WSO+lCCDTXAdZ7E9dwQnJwLiWqHmvsirr2j",
        "bj4qaawIvdYRzN8QBqiQh6iUw3CefBjZ9742P4MmeTArwMOGGUClEuUx/d9KJ2h7djOrLaPwvxPt+O2KOU5jWtNNotZZ",
        "UU2sfWnMX1YBiBHLAe8Wu5IAX6XddUwpAWIBRhM+trIO1YVFrLQerkde4X1Yr9iGhL+lp6OaAkr6Qax0NgjDYwwgpIKx",
        "IboSf7BR1MzklXrZjMfxXRU/hjn8sac9nMGtv9v55KkvcCrvEes9l9t2Y7+u5ZRUQxrUdroYXoxNjZXyjXYNcFdFWVcj",
        "CpITOZwIMQKBgQDRJgMbDV+tcJ9K9ij6sEXL7w6WRHdXTpEBaDyhqRl5WK3AAZ+Z52H+mGGsVO7lSM/BgTB3B5dqLqt1",
        "ymYXgk1WLs5GJEZmJRXDogtvKokeVUwBbn4glRu+2uNpfUHWd8r8auzorlfY20ANiiHI85xgrra/X14OGBuYS40gaolh",
        "8QKBgQDPfDzFrODVTOSL/9eSb/xAgOL5XMxXpKDaYzrftrlifamG8rCGuRqV1fLeO1LLydyuWL7KQloPWnBpZe/WhiW6",
        "VSXpTpbsbJm4YwTzVQDQTscNTIWHF39YYn0kedl+20J3BrOk8SrToJIN3p3bxzK2hzdEKZ9fBxt/kc/UMYlaDwKBgB9Q",
        "JZ7jPbPl7LN4b2I5CfoibHiq/4MezC79wDYj7yBv2nOoypBsSAuqHNWEUdAaOqCqCuuHQ3AuVJVqHCbg51tD3rY5sCCS",
        "5NNJa5TVNXpJIvwD4vZV3LWSaAHfMwA9JzLrf1TG5XgeO1TLnYtMjdkbz1iPmrFZgqgmh5aW3MLBAoGBAKdVxFGMrrt4",
        "Sy6ZxMtGY8PF7sg7zlW04UGgG+BHJtZHEI1Ud4gAC2/iYABZCdpvT/qQejb3MlkFkHmAi+CQyiav+2ZhSpkcsREjUt/I",
        "o2Jc1m5kU6BzE/I9ZD4hw4Zq4PzLu+B/3BFXg9OJwfh5e+33uVvQ0ca7HbNR7rJszSCDAoGAZsiiDYzwjZZbFFou4Ya3",
        "ipyWCdCA8jMXBHNHJVluG5GUF6akccARhM9RHn/Eh1OUqa7Zt4drMRwmk3Ybm7jjY5gFRIrqjIY33YiaFEcqmZN1nfg3",
        "sSdW8AnEHWvMsV4O8rdLnrCLoTK3VR5nPe4/RYwOCAnC4mHnUfLltRHPMOE=",
    );
    /// Its thumbprint, computed by Python's hashlib over the RFC 7638 form.
    const OPENSSL_RSA_THUMBPRINT: &str = "OB9ZQpuObVsVm4sD3svOOTqtNGT_saAyhvnodJXl1kw";

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Keys from PKCS#8 made elsewhere get the independently computed thumbprint as kid.
    #[test]
    fn imported_keys_have_the_known_thumbprints() {
        let cases = [
            (
                SigningAlg::Es256,
                STANDARD.decode(RFC7515_P256_PKCS8).unwrap(),
                RFC7515_P256_THUMBPRINT,
            ),
            (
                SigningAlg::EdDsa,
                hex(RFC8037_ED25519_PKCS8),
                RFC8037_THUMBPRINT,
            ),
            (
                SigningAlg::Rs256,
                STANDARD.decode(OPENSSL_RSA_PKCS8).unwrap(),
                OPENSSL_RSA_THUMBPRINT,
            ),
        ];
        for (alg, der, thumbprint) in cases {
            let key = SigningKey::from_pkcs8_der(alg, &der).unwrap();
            assert_eq!(key.kid(), thumbprint, "{alg}");
            assert_eq!(key.public_key().thumbprint(), thumbprint, "{alg}");
            // The exported form is what OpenSSL made.
            assert_eq!(*key.to_pkcs8_der().unwrap(), der, "{alg}");
            let token = sign_jwt(&key, "at+jwt", &claims());
            let keys = [key.public_key().clone()];
            verify_jwt(&token, &keys[..], &expectations(), now()).unwrap();
        }
        let es = SigningKey::from_pkcs8_der(
            SigningAlg::Es256,
            &STANDARD.decode(RFC7515_P256_PKCS8).unwrap(),
        )
        .unwrap();
        assert_eq!(
            es.public_jwk()["x"],
            "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
        );
        assert_eq!(
            es.public_jwk()["y"],
            "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
        );
        let ed =
            SigningKey::from_pkcs8_der(SigningAlg::EdDsa, &hex(RFC8037_ED25519_PKCS8)).unwrap();
        assert_eq!(
            ed.public_jwk()["x"],
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
    }

    #[test]
    fn rfc7638_thumbprint_of_the_rsa_example() {
        let jwk =
            json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"});
        let key = PublicKey::from_jwk(&jwk).unwrap();
        assert_eq!(key.thumbprint(), RFC7638_THUMBPRINT);
        // A JWK's own kid is kept for lookups; the thumbprint stays the key's identity.
        assert_eq!(key.kid(), "2011-04-29");
        assert_eq!(key.alg(), SigningAlg::Rs256);
        let without_kid =
            PublicKey::from_jwk(&json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB"})).unwrap();
        assert_eq!(without_kid.kid(), RFC7638_THUMBPRINT);
        // The JWK written back has the RFC's members unchanged.
        let written = key.to_jwk();
        assert_eq!(
            (&written["n"], &written["e"]),
            (&json!(RFC7638_N), &json!("AQAB"))
        );
    }

    #[test]
    fn rfc8037_thumbprint_of_the_ed25519_example() {
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        assert_eq!(
            PublicKey::from_jwk(&jwk).unwrap().thumbprint(),
            RFC8037_THUMBPRINT
        );
    }

    /// The RFCs' example signatures verify. Their payloads are not Custos claims, so
    /// verification ends at a later, claim-level refusal, which is only reached after the
    /// signature has verified; the same tokens with one signature bit flipped fail there.
    #[test]
    fn rfc_example_signatures_verify() {
        let es = PublicKey::from_jwk(&json!({
            "kty": "EC", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        }))
        .unwrap();
        let ed = PublicKey::from_jwk(&json!({
            "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
        }))
        .unwrap();
        let joe = ClientAssertionExpectations {
            client_id: "joe",
            token_endpoint: TOKEN_ENDPOINT,
            issuer: ISSUER,
            leeway_seconds: 0,
            max_lifetime_seconds: 60,
        };
        let at = Timestamp::from_unix_millis(1_300_819_000_000).unwrap();
        let check = |jws: &str, key: &PublicKey| {
            verify_client_assertion(jws, std::slice::from_ref(key), &joe, at)
        };
        // `iss` is "joe", so the first claim-level refusal is the missing `sub`.
        assert_eq!(
            check(RFC7515_ES256_JWS, &es),
            Err(JwtError::MissingClaim("sub"))
        );
        assert_eq!(
            check(RFC8037_EDDSA_JWS, &ed),
            Err(JwtError::Malformed("the payload is not a JSON object"))
        );
        for (jws, key) in [(RFC7515_ES256_JWS, &es), (RFC8037_EDDSA_JWS, &ed)] {
            assert_eq!(
                check(&flip_signature_bit(jws), key),
                Err(JwtError::BadSignature)
            );
        }
    }
}

fn flip_signature_bit(token: &str) -> String {
    let parts = segments(token);
    let mut signature = unb64(&parts[2]);
    signature[10] ^= 0x01;
    format!("{}.{}.{}", parts[0], parts[1], b64(&signature))
}

/// Every refusal, for every algorithm, with its exact reason.
mod refusals {
    use super::*;

    fn unsigned(header: &Value, claims: &Value) -> String {
        format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn alg_none() {
        for alg in ALL {
            let header = json!({"alg": "none", "typ": "at+jwt", "kid": key(alg).kid()});
            assert_eq!(
                verify(&unsigned(&header, &claims())),
                Err(JwtError::UnsupportedAlg("none".to_owned()))
            );
            // Neither does a "None" variant, nor `none` with a real signature appended.
            let header = json!({"alg": "None", "typ": "at+jwt", "kid": key(alg).kid()});
            let mut token = unsigned(&header, &claims());
            token.push_str(&segments(&super::token(alg, &claims()))[2]);
            assert_eq!(
                verify(&token),
                Err(JwtError::UnsupportedAlg("None".to_owned()))
            );
        }
    }

    /// The classic confusion: HS256 with the server's public key as the HMAC secret.
    #[test]
    fn hs256_signed_with_the_public_key() {
        for alg in ALL {
            let mut header = other::header(key(alg));
            header.alg = jsonwebtoken::Algorithm::HS256;
            let public_key_bytes = key(alg).public_jwk().to_string();
            for secret in [public_key_bytes.as_bytes(), key(alg).kid().as_bytes()] {
                let secret = jsonwebtoken::EncodingKey::from_secret(secret).unwrap();
                let token = jsonwebtoken::encode(&header, &claims(), &secret).unwrap();
                assert_eq!(
                    verify(&token),
                    Err(JwtError::UnsupportedAlg("HS256".to_owned()))
                );
            }
        }
    }

    /// A token validly signed with one algorithm but naming another algorithm's key.
    #[test]
    fn alg_header_swapped() {
        for alg in ALL {
            for signer in ALL.into_iter().filter(|signer| *signer != alg) {
                let mut header = other::header(key(signer));
                header.kid = Some(key(alg).kid().to_owned());
                let token = other::sign(&header, &claims(), key(signer));
                assert_eq!(
                    verify(&token),
                    Err(JwtError::AlgorithmMismatch {
                        header: signer,
                        key: alg
                    })
                );
            }
        }
    }

    #[test]
    fn tampered_payload() {
        for alg in ALL {
            let parts = segments(&token(alg, &claims()));
            let widened = claims_with(json!({"scope": "crm:*"}));
            let token = format!(
                "{}.{}.{}",
                parts[0],
                b64(widened.to_string().as_bytes()),
                parts[2]
            );
            assert_eq!(verify(&token), Err(JwtError::BadSignature), "{alg}");
        }
    }

    #[test]
    fn tampered_header() {
        for alg in ALL {
            let parts = segments(&token(alg, &claims()));
            let header = json!({"alg": alg.as_str(), "typ": "AT+JWT", "kid": key(alg).kid()});
            let token = format!(
                "{}.{}.{}",
                b64(header.to_string().as_bytes()),
                parts[1],
                parts[2]
            );
            assert_eq!(verify(&token), Err(JwtError::BadSignature), "{alg}");
        }
    }

    #[test]
    fn tampered_signature() {
        for alg in ALL {
            let token = flip_signature_bit(&token(alg, &claims()));
            assert_eq!(verify(&token), Err(JwtError::BadSignature), "{alg}");
        }
        // An ES256 signature in DER form (as some libraries wrongly emit) is not R || S.
        let parts = segments(&token(SigningAlg::Es256, &claims()));
        let raw = unb64(&parts[2]);
        let mut der = vec![0x30, 0x44, 0x02, 0x20];
        der.extend_from_slice(&raw[..32]);
        der.extend_from_slice(&[0x02, 0x20]);
        der.extend_from_slice(&raw[32..]);
        let token = format!("{}.{}.{}", parts[0], parts[1], b64(&der));
        assert_eq!(verify(&token), Err(JwtError::BadSignature));
    }

    #[test]
    fn signature_of_another_token() {
        for alg in ALL {
            let a = segments(&token(alg, &claims()));
            let b = segments(&token(alg, &claims_with(json!({"jti": "tok_02"}))));
            let token = format!("{}.{}.{}", a[0], a[1], b[2]);
            assert_eq!(verify(&token), Err(JwtError::BadSignature), "{alg}");
        }
    }

    #[test]
    fn expired() {
        for alg in ALL {
            let expired = claims_with(json!({"exp": NOW - i64::from(LEEWAY) - 1}));
            assert_eq!(
                verify(&token(alg, &expired)),
                Err(JwtError::Expired),
                "{alg}"
            );
        }
    }

    #[test]
    fn not_yet_valid() {
        for alg in ALL {
            let early = claims_with(json!({"nbf": NOW + i64::from(LEEWAY) + 1}));
            assert_eq!(
                verify(&token(alg, &early)),
                Err(JwtError::NotYetValid),
                "{alg}"
            );
        }
    }

    #[test]
    fn issued_in_the_future() {
        for alg in ALL {
            let future = claims_with(json!({"iat": NOW + i64::from(LEEWAY) + 1}));
            assert_eq!(
                verify(&token(alg, &future)),
                Err(JwtError::IssuedInFuture),
                "{alg}"
            );
        }
    }

    #[test]
    fn wrong_issuer() {
        for alg in ALL {
            for iss in [
                "https://evil.example",
                "https://custos.example/",
                "HTTPS://CUSTOS.EXAMPLE",
            ] {
                let claims = claims_with(json!({"iss": iss}));
                assert_eq!(
                    verify(&token(alg, &claims)),
                    Err(JwtError::WrongIssuer),
                    "{alg} {iss}"
                );
            }
        }
    }

    #[test]
    fn wrong_audience() {
        for alg in ALL {
            for aud in [json!("https://other.example"), json!(["a", "b"]), json!([])] {
                let claims = claims_with(json!({"aud": aud}));
                assert_eq!(
                    verify(&token(alg, &claims)),
                    Err(JwtError::WrongAudience),
                    "{alg} {aud}"
                );
            }
            for aud in [json!(7), json!([AUDIENCE, 7]), json!({"aud": AUDIENCE})] {
                let claims = claims_with(json!({"aud": aud}));
                assert_eq!(
                    verify(&token(alg, &claims)),
                    Err(JwtError::InvalidClaim("aud")),
                    "{alg} {aud}"
                );
            }
            let listed = claims_with(json!({"aud": ["https://other.example", AUDIENCE]}));
            verify(&token(alg, &listed)).unwrap();
        }
    }

    #[test]
    fn wrong_typ() {
        for alg in ALL {
            for typ in [
                "JWT",
                "jwt",
                "application/jwt",
                "at+jwt+x",
                "text/at+jwt",
                "",
            ] {
                let token = sign_jwt(key(alg), typ, &claims());
                assert_eq!(verify(&token), Err(JwtError::WrongType), "{alg} {typ}");
            }
            let mut header = other::header(key(alg));
            header.typ = None;
            assert_eq!(
                verify(&other::sign(&header, &claims(), key(alg))),
                Err(JwtError::WrongType)
            );
            // RFC 7515 §4.1.9: media types compare case-insensitively, `application/` optional.
            for typ in ["AT+JWT", "application/at+jwt", "Application/At+Jwt"] {
                verify(&sign_jwt(key(alg), typ, &claims()))
                    .unwrap_or_else(|e| panic!("{typ}: {e}"));
            }
        }
    }

    #[test]
    fn unknown_kid() {
        for alg in ALL {
            let token = sign_jwt(stranger(alg), "at+jwt", &claims());
            assert_eq!(verify(&token), Err(JwtError::UnknownKey), "{alg}");
            // Naming a registered kid does not help the stranger: the signature is checked.
            let mut header = other::header(stranger(alg));
            header.kid = Some(key(alg).kid().to_owned());
            assert_eq!(
                verify(&other::sign(&header, &claims(), stranger(alg))),
                Err(JwtError::BadSignature)
            );
            // Nor does bringing the key along in the header.
            let mut header = other::header(stranger(alg));
            header.jwk = Some(serde_json::from_value(stranger(alg).public_jwk()).unwrap());
            assert_eq!(
                verify(&other::sign(&header, &claims(), stranger(alg))),
                Err(JwtError::UnknownKey)
            );
        }
    }

    #[test]
    fn missing_kid() {
        for alg in ALL {
            let mut header = other::header(key(alg));
            header.kid = None;
            assert_eq!(
                verify(&other::sign(&header, &claims(), key(alg))),
                Err(JwtError::MissingHeader("kid"))
            );
        }
    }

    #[test]
    fn crit_header() {
        for alg in ALL {
            let mut header = other::header(key(alg));
            header.crit = Some(vec!["exp".to_owned()]);
            let token = other::sign(&header, &claims(), key(alg));
            assert_eq!(verify(&token), Err(JwtError::CriticalHeader), "{alg}");
        }
    }

    #[test]
    fn missing_and_mistyped_claims() {
        for alg in ALL {
            for name in ["iss", "aud", "exp", "iat", "sub", "client_id", "jti"] {
                let claims = claims_with(json!({ name: null }));
                assert_eq!(
                    verify(&token(alg, &claims)),
                    Err(JwtError::MissingClaim(name)),
                    "{alg}"
                );
            }
            for (name, value) in [
                ("iss", json!(1)),
                ("exp", json!("tomorrow")),
                ("nbf", json!(null)),
                ("iat", json!(true)),
                ("sub", json!("")),
                ("client_id", json!(["a"])),
                ("jti", json!(42)),
            ] {
                let mut claims = claims();
                claims[name] = value;
                let result = verify(&token(alg, &claims));
                assert_eq!(result, Err(JwtError::InvalidClaim(name)), "{alg} {name}");
            }
        }
    }

    /// Leeway applies on each side of each time claim, and no further.
    #[test]
    fn time_boundaries() {
        let leeway = i64::from(LEEWAY);
        let at = |changes: Value| verify(&token(SigningAlg::Es256, &claims_with(changes)));
        assert_eq!(at(json!({"exp": NOW - leeway})), Err(JwtError::Expired));
        at(json!({"exp": NOW - leeway + 1})).unwrap();
        at(json!({"exp": (NOW - leeway) as f64 + 0.5})).unwrap();
        assert_eq!(
            at(json!({"exp": (NOW - leeway) as f64 - 0.001})),
            Err(JwtError::Expired)
        );
        at(json!({"nbf": NOW + leeway})).unwrap();
        assert_eq!(
            at(json!({"nbf": NOW + leeway + 1})),
            Err(JwtError::NotYetValid)
        );
        at(json!({"iat": NOW + leeway})).unwrap();
        assert_eq!(
            at(json!({"iat": NOW + leeway + 1})),
            Err(JwtError::IssuedInFuture)
        );
        // Out-of-range dates saturate rather than wrap.
        at(json!({"exp": u64::MAX})).unwrap();
        at(json!({"exp": 1e300})).unwrap();
        assert_eq!(at(json!({"exp": i64::MIN})), Err(JwtError::Expired));
        assert_eq!(at(json!({"nbf": i64::MAX})), Err(JwtError::NotYetValid));
        assert_eq!(at(json!({"iat": 1e300})), Err(JwtError::IssuedInFuture));
    }

    #[test]
    fn truncated_tokens() {
        for alg in ALL {
            let token = token(alg, &claims());
            let parts = segments(&token);
            assert_eq!(
                verify(&format!("{}.{}", parts[0], parts[1])),
                Err(JwtError::Malformed("a compact jws has three segments"))
            );
            assert_eq!(
                verify(&format!("{}.{}.", parts[0], parts[1])),
                Err(JwtError::BadSignature)
            );
            assert_eq!(
                verify(&parts[0]),
                Err(JwtError::Malformed("a compact jws has three segments"))
            );
            // Every proper prefix is refused.
            for end in 0..token.len() {
                assert!(
                    verify(&token[..end]).is_err(),
                    "{alg}: prefix of {end} bytes"
                );
            }
        }
    }

    #[test]
    fn garbage_segments() {
        let token = token(SigningAlg::Es256, &claims());
        let parts = segments(&token);
        let cases: Vec<(String, JwtError)> = vec![
            (
                String::new(),
                JwtError::Malformed("a compact jws has three segments"),
            ),
            (
                "..".into(),
                JwtError::Malformed("the header is not a JSON object"),
            ),
            (
                "a.b.c".into(),
                JwtError::Malformed("the header is not base64url"),
            ),
            (
                "a.b.c.d".into(),
                JwtError::Malformed("a compact jws has three segments"),
            ),
            (
                format!("{token}.{}", parts[2]),
                JwtError::Malformed("a compact jws has three segments"),
            ),
            (
                format!(
                    "{}.{}.{}.{}.{}",
                    parts[0], parts[1], parts[1], parts[2], parts[2]
                ),
                JwtError::Malformed("a compact jws has three segments"),
            ),
            (
                format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
                JwtError::Malformed("the header is not base64url"),
            ),
            (
                format!("{} .{}.{}", parts[0], parts[1], parts[2]),
                JwtError::Malformed("the header is not base64url"),
            ),
            (
                format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
                JwtError::Malformed("the signature is not base64url"),
            ),
            (
                format!("{}.{}!.{}", parts[0], parts[1], parts[2]),
                JwtError::BadSignature,
            ),
            (
                format!("{}.{}.{}", b64(b"[1,2]"), parts[1], parts[2]),
                JwtError::Malformed("the header is not a JSON object"),
            ),
            (
                format!("{}.{}.{}", b64(b"{\"alg\":1}"), parts[1], parts[2]),
                JwtError::Malformed("alg is not a string"),
            ),
            (
                format!("{}.{}.{}", b64(b"{\"typ\":\"at+jwt\"}"), parts[1], parts[2]),
                JwtError::MissingHeader("alg"),
            ),
            (
                format!(
                    "{}.{}.{}",
                    b64(b"{\"alg\":\"ES256\",\"kid\":7}"),
                    parts[1],
                    parts[2]
                ),
                JwtError::Malformed("kid is not a string"),
            ),
            (
                format!(
                    "{}.{}.{}",
                    b64("{\"alg\":\"ES256\",".as_bytes()),
                    parts[1],
                    parts[2]
                ),
                JwtError::Malformed("the header is not a JSON object"),
            ),
            (
                format!("{}.{}.{}", b64(&[0xff, 0xfe]), parts[1], parts[2]),
                JwtError::Malformed("the header is not a JSON object"),
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(verify(&token), Err(expected), "{token:?}");
        }
    }

    /// A payload that is not a JSON object fails after its signature is checked.
    #[test]
    fn payload_that_is_not_claims() {
        let key = key(SigningAlg::Es256);
        for payload in [json!([1, 2]), json!("claims"), json!(null)] {
            assert_eq!(
                verify(&sign_jwt(key, "at+jwt", &payload)),
                Err(JwtError::Malformed("the payload is not a JSON object"))
            );
        }
    }

    #[test]
    fn oversized_tokens() {
        assert_eq!(
            verify(&"a".repeat(MAX_TOKEN_BYTES + 1)),
            Err(JwtError::TooLarge)
        );
        let huge = claims_with(json!({"pad": "x".repeat(MAX_TOKEN_BYTES)}));
        assert_eq!(
            verify(&token(SigningAlg::Es256, &huge)),
            Err(JwtError::TooLarge)
        );
        let large = claims_with(json!({"pad": "x".repeat(MAX_TOKEN_BYTES / 2)}));
        verify(&token(SigningAlg::Es256, &large)).unwrap();
    }

    /// Claims with the same name twice: the last one counts (RFC 7519 §4 allows that or a
    /// refusal), so the signed text, not a parser's whim, decides.
    #[test]
    fn duplicate_claims_use_the_last() {
        let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": key(SigningAlg::Es256).kid()});
        let body = claims().to_string();
        let body = format!("{{\"iss\":\"https://evil.example\",{}", &body[1..]);
        let mut jws = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(body.as_bytes())
        );
        // Sign the exact text through the independent library by signing its signing input.
        let signature = jsonwebtoken::crypto::sign(
            jws.as_bytes(),
            &other::encoding_key(key(SigningAlg::Es256)),
            jsonwebtoken::Algorithm::ES256,
        )
        .unwrap();
        jws.push('.');
        jws.push_str(&signature);
        let verified = verify(&jws).unwrap();
        assert_eq!(verified.claims["iss"], ISSUER);
    }
}

mod client_assertions {
    use super::*;

    fn expected() -> ClientAssertionExpectations<'static> {
        ClientAssertionExpectations {
            client_id: CLIENT,
            token_endpoint: TOKEN_ENDPOINT,
            issuer: ISSUER,
            leeway_seconds: LEEWAY,
            max_lifetime_seconds: 300,
        }
    }

    fn assertion_claims() -> Value {
        json!({
            "iss": CLIENT,
            "sub": CLIENT,
            "aud": TOKEN_ENDPOINT,
            "jti": "assertion-1",
            "exp": NOW + 60,
            "iat": NOW,
        })
    }

    fn with(changes: Value) -> Value {
        let mut claims = assertion_claims();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    }

    /// The client's registered key, read from the JWK an operator would register.
    fn registered(alg: SigningAlg) -> PublicKey {
        let mut jwk = stranger(alg).public_jwk();
        jwk["kid"] = json!("client-key-1");
        PublicKey::from_jwk(&jwk).unwrap()
    }

    /// A client assertion signed by the client's key, with the header a client library writes.
    fn assertion(alg: SigningAlg, kid: Option<&str>, typ: Option<&str>, claims: &Value) -> String {
        let mut header = other::header(stranger(alg));
        header.kid = kid.map(str::to_owned);
        header.typ = typ.map(str::to_owned);
        other::sign(&header, claims, stranger(alg))
    }

    fn check(token: &str, keys: &[PublicKey]) -> Result<VerifiedJwt, JwtError> {
        verify_client_assertion(token, keys, &expected(), now())
    }

    #[test]
    fn accepted_forms() {
        for alg in ALL {
            let keys = [registered(alg)];
            let thumbprint = keys[0].thumbprint().to_owned();
            for (kid, typ) in [
                (Some("client-key-1"), Some("JWT")),
                (Some(thumbprint.as_str()), None),
                (None, None),
                (None, Some("application/jwt")),
            ] {
                let token = assertion(alg, kid, typ, &assertion_claims());
                let verified =
                    check(&token, &keys).unwrap_or_else(|e| panic!("{alg} {kid:?} {typ:?}: {e}"));
                assert_eq!(verified.claims["jti"], "assertion-1");
            }
            for aud in [json!(ISSUER), json!([TOKEN_ENDPOINT]), json!(["x", ISSUER])] {
                let token = assertion(alg, None, None, &with(json!({"aud": aud})));
                check(&token, &keys).unwrap();
            }
            // Without `iat` (optional in RFC 7523).
            check(
                &assertion(alg, None, None, &with(json!({"iat": null}))),
                &keys,
            )
            .unwrap();
        }
    }

    #[test]
    fn refusals() {
        for alg in ALL {
            let keys = [registered(alg)];
            let refused =
                |claims: Value| check(&assertion(alg, Some("client-key-1"), None, &claims), &keys);
            assert_eq!(
                refused(with(json!({"iss": "nhi_other"}))),
                Err(JwtError::WrongIssuer)
            );
            assert_eq!(
                refused(with(json!({"sub": "nhi_other"}))),
                Err(JwtError::WrongSubject)
            );
            assert_eq!(
                refused(with(json!({"aud": AUDIENCE}))),
                Err(JwtError::WrongAudience)
            );
            assert_eq!(
                refused(with(json!({"jti": null}))),
                Err(JwtError::MissingClaim("jti"))
            );
            assert_eq!(
                refused(with(json!({"exp": null}))),
                Err(JwtError::MissingClaim("exp"))
            );
            assert_eq!(
                refused(with(json!({"sub": null}))),
                Err(JwtError::MissingClaim("sub"))
            );
            assert_eq!(
                refused(with(json!({"exp": NOW - 31}))),
                Err(JwtError::Expired)
            );
            assert_eq!(
                refused(with(json!({"nbf": NOW + 31}))),
                Err(JwtError::NotYetValid)
            );
            assert_eq!(
                refused(with(json!({"iat": NOW + 31}))),
                Err(JwtError::IssuedInFuture)
            );
            assert_eq!(
                refused(with(json!({"exp": NOW + 331}))),
                Err(JwtError::LifetimeTooLong)
            );
            refused(with(json!({"exp": NOW + 330}))).unwrap();

            // An access token of the server is not a client assertion, even if it were signed
            // by the client's key.
            let token = assertion(
                alg,
                Some("client-key-1"),
                Some("at+jwt"),
                &assertion_claims(),
            );
            assert_eq!(check(&token, &keys), Err(JwtError::WrongType));
            // Another kid, or no kid when the client has several keys, finds no key.
            let token = assertion(alg, Some("client-key-2"), None, &assertion_claims());
            assert_eq!(check(&token, &keys), Err(JwtError::UnknownKey));
            let two = [registered(alg), key(alg).public_key().clone()];
            let token = assertion(alg, None, None, &assertion_claims());
            assert_eq!(check(&token, &two), Err(JwtError::UnknownKey));
            assert_eq!(check(&token, &[]), Err(JwtError::UnknownKey));
            // Signed by someone else under the client's kid.
            let mut header = other::header(key(alg));
            header.kid = Some("client-key-1".to_owned());
            header.typ = None;
            let forged = other::sign(&header, &assertion_claims(), key(alg));
            assert_eq!(check(&forged, &keys), Err(JwtError::BadSignature));
            // The same protections as access tokens.
            let none = format!(
                "{}.{}.",
                b64(json!({"alg": "none"}).to_string().as_bytes()),
                b64(assertion_claims().to_string().as_bytes())
            );
            assert_eq!(
                check(&none, &keys),
                Err(JwtError::UnsupportedAlg("none".into()))
            );
            let mut header = other::header(stranger(alg));
            header.crit = Some(vec!["b64".into()]);
            let crit = other::sign(&header, &assertion_claims(), stranger(alg));
            assert_eq!(check(&crit, &keys), Err(JwtError::CriticalHeader));
        }
        // A key of one algorithm never checks a token claiming another.
        let keys = [registered(SigningAlg::Es256)];
        let mut header = other::header(stranger(SigningAlg::Rs256));
        header.kid = Some("client-key-1".to_owned());
        let token = other::sign(&header, &assertion_claims(), stranger(SigningAlg::Rs256));
        assert_eq!(
            check(&token, &keys),
            Err(JwtError::AlgorithmMismatch {
                header: SigningAlg::Rs256,
                key: SigningAlg::Es256
            })
        );
    }
}

mod jwks {
    use super::*;

    fn es_jwk() -> Value {
        key(SigningAlg::Es256).public_jwk()
    }

    #[test]
    fn public_jwks_of_each_kind_are_accepted() {
        for alg in ALL {
            let key = PublicKey::from_jwk(&super::key(alg).public_jwk()).unwrap();
            assert_eq!(key.alg(), alg);
            assert_eq!(key.kid(), super::key(alg).kid());
            assert_eq!(key.to_jwk(), super::key(alg).public_jwk());
        }
        // Optional members that fit are accepted.
        let mut jwk = es_jwk();
        jwk["key_ops"] = json!(["verify"]);
        jwk.as_object_mut().unwrap().remove("use");
        jwk.as_object_mut().unwrap().remove("alg");
        PublicKey::from_jwk(&jwk).unwrap();
    }

    #[test]
    fn private_and_symmetric_keys_are_refused() {
        let oct = json!({"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"});
        assert_eq!(
            PublicKey::from_jwk(&oct).unwrap_err(),
            JwtError::SymmetricJwk
        );
        let mut ec = es_jwk();
        ec["d"] = json!("jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI");
        assert_eq!(PublicKey::from_jwk(&ec).unwrap_err(), JwtError::PrivateJwk);
        for member in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
            let mut rsa = key(SigningAlg::Rs256).public_jwk();
            rsa[member] = json!("AQAB");
            assert_eq!(
                PublicKey::from_jwk(&rsa).unwrap_err(),
                JwtError::PrivateJwk,
                "{member}"
            );
        }
        let mut okp = key(SigningAlg::EdDsa).public_jwk();
        okp["d"] = json!("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A");
        assert_eq!(PublicKey::from_jwk(&okp).unwrap_err(), JwtError::PrivateJwk);
    }

    #[test]
    fn weak_or_wrong_keys_are_refused() {
        let invalid = |jwk: Value| match PublicKey::from_jwk(&jwk) {
            Err(JwtError::InvalidJwk(reason)) => reason,
            other => panic!("{jwk}: {other:?}"),
        };
        let mut jwk = es_jwk();
        jwk["crv"] = json!("P-384");
        invalid(jwk);
        // A point off the curve.
        let mut jwk = es_jwk();
        let mut y = unb64(jwk["y"].as_str().unwrap());
        y[31] ^= 1;
        jwk["y"] = json!(b64(&y));
        assert_eq!(invalid(jwk), "the point is not on the P-256 curve");
        // Short coordinates.
        let mut jwk = es_jwk();
        jwk["x"] = json!(b64(&[1; 31]));
        invalid(jwk);
        // The Ed25519 identity, a small-order point.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&identity)});
        assert_eq!(invalid(jwk), "the Ed25519 key is a small-order point");
        invalid(json!({"kty": "OKP", "crv": "X25519", "x": b64(&[9; 32])}));
        // RSA below 2048 and above 4096 bits.
        for bytes in [128, 255, 513] {
            let mut n = vec![0xc5; bytes];
            n[bytes - 1] = 0x01;
            let jwk = json!({"kty": "RSA", "n": b64(&n), "e": "AQAB"});
            assert_eq!(
                PublicKey::from_jwk(&jwk).unwrap_err(),
                JwtError::RsaKeySize(bytes * 8)
            );
        }
        let mut jwk = key(SigningAlg::Rs256).public_jwk();
        jwk["e"] = json!("AA");
        assert_eq!(invalid(jwk), "the rsa modulus or exponent is invalid");
        // Members that contradict the key or its use.
        let mut jwk = es_jwk();
        jwk["alg"] = json!("RS256");
        assert_eq!(invalid(jwk), "alg does not fit the key type");
        let mut jwk = es_jwk();
        jwk["alg"] = json!("HS256");
        assert_eq!(
            PublicKey::from_jwk(&jwk).unwrap_err(),
            JwtError::UnsupportedAlg("HS256".into())
        );
        let mut jwk = es_jwk();
        jwk["use"] = json!("enc");
        assert_eq!(invalid(jwk), "use must be sig");
        let mut jwk = es_jwk();
        jwk["key_ops"] = json!(["encrypt"]);
        assert_eq!(invalid(jwk), "key_ops must include verify");
        let mut jwk = es_jwk();
        jwk["kid"] = json!("");
        invalid(jwk);
        invalid(json!({"kty": "EC"}));
        invalid(json!({"crv": "P-256"}));
        invalid(json!("EC"));
        invalid(json!({"kty": "RSA", "n": "not base64!", "e": "AQAB"}));
    }
}

/// The independent `jsonwebtoken` crate accepts what is signed here, and tokens it signs are
/// accepted here: the JWS encoding, the JWK members and the ES256 signature form agree.
mod cross_check {
    use jsonwebtoken::{DecodingKey, Validation, decode, jwk::Jwk};

    use super::*;

    fn real_now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn current_claims() -> Value {
        let now = real_now();
        claims_with(json!({"iat": now, "exp": now + 300}))
    }

    #[test]
    fn jsonwebtoken_verifies_tokens_signed_here() {
        for alg in ALL {
            let claims = current_claims();
            let token = token(alg, &claims);
            let jwk: Jwk = serde_json::from_value(key(alg).public_jwk()).unwrap();
            let mut validation = Validation::new(other::algorithm(alg));
            validation.set_issuer(&[ISSUER]);
            validation.set_audience(&[AUDIENCE]);
            let decoded =
                decode::<Value>(&token, &DecodingKey::from_jwk(&jwk).unwrap(), &validation)
                    .unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(decoded.claims, claims);
            assert_eq!(decoded.header.kid.as_deref(), Some(key(alg).kid()));
            assert_eq!(decoded.header.typ.as_deref(), Some("at+jwt"));
        }
    }

    /// A detached signature (RFC 7515 Appendix F) is an ordinary compact JWS once the
    /// base64url of the content is put back between its dots.
    #[test]
    fn jsonwebtoken_verifies_detached_signatures_made_here() {
        let body = br#"{"type":"task.decided","task_id":"t1","state":"active"}"#;
        for alg in ALL {
            let jws = sign_detached(key(alg), "custos-callback+jws", body);
            let (header, signature) = jws.split_once("..").unwrap();
            let jwk: Jwk = serde_json::from_value(key(alg).public_jwk()).unwrap();
            let decoding = DecodingKey::from_jwk(&jwk).unwrap();
            let check = |content: &[u8]| {
                let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(content));
                jsonwebtoken::crypto::verify(
                    signature,
                    message.as_bytes(),
                    &decoding,
                    other::algorithm(alg),
                )
                .unwrap_or(false)
            };
            assert!(check(body), "{alg}");
            assert!(!check(
                br#"{"type":"task.decided","task_id":"t2","state":"active"}"#
            ));
            verify_detached(&jws, body, &jwks(), "custos-callback+jws")
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
        }
    }

    #[test]
    fn tokens_signed_by_jsonwebtoken_verify_here() {
        for alg in ALL {
            let claims = current_claims();
            let token = other::sign(&other::header(key(alg)), &claims, key(alg));
            let now = Timestamp::from_unix_millis(real_now() * 1000).unwrap();
            let verified = verify_jwt(&token, &jwks(), &expectations(), now)
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(Value::Object(verified.claims), claims);
        }
    }
}

mod properties {
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    /// The verifiers' answer for any text: never a panic, and never a success unless the text
    /// is one of the tokens signed here.
    fn refuses(text: &str) -> Result<(), TestCaseError> {
        prop_assert!(verify(text).is_err());
        let keys = jwks();
        let expected = ClientAssertionExpectations {
            client_id: CLIENT,
            token_endpoint: TOKEN_ENDPOINT,
            issuer: ISSUER,
            leeway_seconds: LEEWAY,
            max_lifetime_seconds: 300,
        };
        prop_assert!(verify_client_assertion(text, keys.keys(), &expected, now()).is_err());
        Ok(())
    }

    fn b64_segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-]{0,120}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_text_is_refused(text in any::<String>()) {
            refuses(&text)?;
        }

        #[test]
        fn token_shaped_text_is_refused(
            header in b64_segment(), payload in b64_segment(), signature in b64_segment(), dots in 0..5usize,
        ) {
            refuses(&format!("{header}.{payload}.{signature}"))?;
            refuses(&[header, payload, signature].join(&".".repeat(dots)))?;
        }

        /// Plausible headers over real claims and signatures: still refused unless signed.
        #[test]
        fn json_headers_are_refused(
            alg in prop::sample::select(vec!["ES256", "EdDSA", "RS256", "none", "HS256", "es256", ""]),
            typ in prop::option::of(prop::sample::select(vec!["at+jwt", "JWT", "AT+JWT"])),
            kid_of in prop::sample::select(ALL.to_vec()),
            signed_by in prop::sample::select(ALL.to_vec()),
        ) {
            let mut header = json!({"alg": alg, "kid": key(kid_of).kid()});
            if let Some(typ) = typ {
                header["typ"] = json!(typ);
            }
            let signature = segments(&token(signed_by, &claims()))[2].clone();
            let body = b64(claims().to_string().as_bytes());
            let text = format!("{}.{body}.{signature}", b64(header.to_string().as_bytes()));
            // The one combination that rebuilds a genuine token byte for byte is not a forgery.
            prop_assume!(text != token(signed_by, &claims()));
            refuses(&text)?;
        }

        /// Any single changed character of a valid token makes it invalid.
        #[test]
        fn a_changed_character_is_refused(
            alg in prop::sample::select(ALL.to_vec()),
            at in any::<Index>(),
            replacement in prop::char::range('!', '~'),
        ) {
            let token = token(alg, &claims());
            let i = at.index(token.len());
            prop_assume!(token.as_bytes()[i] != replacement as u8);
            let mut changed = token.clone();
            changed.replace_range(i..=i, &replacement.to_string());
            prop_assert!(verify(&changed).is_err(), "{}", changed);
        }
    }
}

/// Every error variant has its published code and a lowercase message. The exhaustive match
/// makes a new variant fail to compile here until its code is pinned.
#[test]
fn error_codes_are_stable_and_messages_lowercase() {
    let errors = [
        JwtError::TooLarge,
        JwtError::Malformed("x"),
        JwtError::UnsupportedAlg("none".into()),
        JwtError::MissingHeader("kid"),
        JwtError::CriticalHeader,
        JwtError::UnknownKey,
        JwtError::AlgorithmMismatch {
            header: SigningAlg::Rs256,
            key: SigningAlg::Es256,
        },
        JwtError::WrongType,
        JwtError::BadSignature,
        JwtError::MissingClaim("exp"),
        JwtError::InvalidClaim("exp"),
        JwtError::WrongIssuer,
        JwtError::WrongSubject,
        JwtError::WrongAudience,
        JwtError::Expired,
        JwtError::NotYetValid,
        JwtError::IssuedInFuture,
        JwtError::LifetimeTooLong,
        JwtError::InvalidJwk("x"),
        JwtError::PrivateJwk,
        JwtError::SymmetricJwk,
        JwtError::RsaKeySize(1024),
        JwtError::InvalidKey("x"),
    ];
    let mut codes = std::collections::BTreeSet::new();
    for error in &errors {
        let published = match error {
            JwtError::TooLarge => "too_large",
            JwtError::Malformed(_) => "malformed",
            JwtError::UnsupportedAlg(_) => "unsupported_alg",
            JwtError::MissingHeader(_) => "missing_header",
            JwtError::CriticalHeader => "critical_header",
            JwtError::UnknownKey => "unknown_key",
            JwtError::AlgorithmMismatch { .. } => "algorithm_mismatch",
            JwtError::WrongType => "wrong_type",
            JwtError::BadSignature => "bad_signature",
            JwtError::MissingClaim(_) => "missing_claim",
            JwtError::InvalidClaim(_) => "invalid_claim",
            JwtError::WrongIssuer => "wrong_issuer",
            JwtError::WrongSubject => "wrong_subject",
            JwtError::WrongAudience => "wrong_audience",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::IssuedInFuture => "issued_in_future",
            JwtError::LifetimeTooLong => "lifetime_too_long",
            JwtError::InvalidJwk(_) => "invalid_jwk",
            JwtError::PrivateJwk => "private_jwk",
            JwtError::SymmetricJwk => "symmetric_jwk",
            JwtError::RsaKeySize(_) => "rsa_key_size",
            JwtError::InvalidKey(_) => "invalid_key",
        };
        assert_eq!(error.code(), published);
        assert!(codes.insert(published), "duplicate code {published}");
        let message = error.to_string();
        assert!(message.starts_with(|c: char| c.is_lowercase()), "{message}");
    }
    // Untrusted names are shortened before they reach a message.
    assert_eq!(
        "x".repeat(1000).parse::<SigningAlg>(),
        Err(JwtError::UnsupportedAlg("x".repeat(32)))
    );
}

/// Not a benchmark: a rough per-operation cost, printed with `--nocapture`, so that a change
/// that makes issuance or verification much slower is noticed. Nothing is asserted.
#[test]
fn timing() {
    for (alg, rounds) in [
        (SigningAlg::Es256, 500),
        (SigningAlg::EdDsa, 500),
        (SigningAlg::Rs256, 50),
    ] {
        let claims = claims();
        // Warm up outside the clock: the shared test keys are generated on first use (RSA
        // takes tens of milliseconds) and the P-256 basepoint table is built lazily.
        let keys = jwks();
        verify_jwt(&token(alg, &claims), &keys, &expectations(), now()).unwrap();
        let started = Instant::now();
        let mut tokens = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            tokens.push(token(alg, &claims));
        }
        let sign = started.elapsed() / rounds as u32;
        let started = Instant::now();
        for token in &tokens {
            verify_jwt(token, &keys, &expectations(), now()).unwrap();
        }
        let verify = started.elapsed() / rounds as u32;
        println!("{alg}: sign {sign:?}/token, verify {verify:?}/token");
    }
    let started = Instant::now();
    SigningKey::generate(SigningAlg::Rs256, &mut rng(3)).unwrap();
    println!("RS256: key generation {:?}", started.elapsed());
}
