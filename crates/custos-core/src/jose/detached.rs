//! JWS with detached content (RFC 7515 Appendix F): a signature over bytes that travel on
//! their own, such as the body of a webhook request. The compact form is
//! `BASE64URL(header) || '..' || BASE64URL(signature)`; the signing input is the usual
//! `BASE64URL(header) || '.' || BASE64URL(payload)`, so a verifier puts the base64url of the
//! bytes it received between the two dots and checks an ordinary compact JWS. A changed byte
//! changes the signing input: the content cannot be altered without the signature failing.

use serde_json::{Map, Value};

use super::jwt::{JwtHeader, MAX_TOKEN_BYTES, media_type_eq, read_header};
use super::keys::{KeyLookup, SigningKey};
use super::{JwtError, b64url, b64url_decode};

/// Signs `payload` with `key` as a detached compact JWS with the protected header
/// `{"alg", "kid", "typ"}`.
pub fn sign_detached(key: &SigningKey, typ: &str, payload: &[u8]) -> String {
    let mut header = Map::new();
    header.insert("alg".to_owned(), Value::from(key.alg().as_str()));
    header.insert("kid".to_owned(), Value::from(key.kid()));
    header.insert("typ".to_owned(), Value::from(typ));
    let header = b64url(Value::Object(header).to_string().as_bytes());
    let signing_input = format!("{header}.{}", b64url(payload));
    let signature = key.sign(signing_input.as_bytes());
    format!("{header}..{}", b64url(&signature))
}

/// Verifies a detached compact JWS over `payload`: the key named by `kid` (required) fixes the
/// algorithm, `typ` must be `typ`, and the signature must hold over exactly these bytes.
pub fn verify_detached<K: KeyLookup + ?Sized>(
    jws: &str,
    payload: &[u8],
    keys: &K,
    typ: &str,
) -> Result<JwtHeader, JwtError> {
    if jws.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    let (header_b64, signature) = jws
        .split_once("..")
        .filter(|(header, signature)| !header.contains('.') && !signature.contains('.'))
        .ok_or(JwtError::Malformed(
            "a detached jws is a header and a signature around an empty payload",
        ))?;
    let header =
        b64url_decode(header_b64).ok_or(JwtError::Malformed("the header is not base64url"))?;
    let header: Map<String, Value> = serde_json::from_slice(&header)
        .map_err(|_| JwtError::Malformed("the header is not a JSON object"))?;
    let header = read_header(&header)?;
    let kid = header
        .kid
        .as_deref()
        .ok_or(JwtError::MissingHeader("kid"))?;
    let key = keys.key(kid).ok_or(JwtError::UnknownKey)?;
    if header.alg != key.alg() {
        return Err(JwtError::AlgorithmMismatch {
            header: header.alg,
            key: key.alg(),
        });
    }
    if !header
        .typ
        .as_deref()
        .is_some_and(|found| media_type_eq(found, typ))
    {
        return Err(JwtError::WrongType);
    }
    let signature =
        b64url_decode(signature).ok_or(JwtError::Malformed("the signature is not base64url"))?;
    let signing_input = format!("{header_b64}.{}", b64url(payload));
    key.verify(signing_input.as_bytes(), &signature)?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::{PublicKey, SigningAlg};

    fn key(alg: SigningAlg, seed: u64) -> SigningKey {
        use rand::SeedableRng;
        SigningKey::generate(alg, &mut rand::rngs::StdRng::seed_from_u64(seed)).unwrap()
    }

    #[test]
    fn a_detached_signature_holds_over_exactly_its_bytes() {
        for alg in [SigningAlg::Es256, SigningAlg::EdDsa] {
            let signer = key(alg, 1);
            let keys = [signer.public_key().clone()];
            let body = br#"{"type":"task.decided","task_id":"t1"}"#;
            let jws = sign_detached(&signer, "custos-callback+jws", body);
            assert_eq!(jws.matches('.').count(), 2, "{jws}");
            assert!(jws.contains(".."), "the payload is detached: {jws}");
            let header = verify_detached(&jws, body, &keys[..], "custos-callback+jws").unwrap();
            assert_eq!(
                (header.alg, header.kid.as_deref()),
                (alg, Some(signer.kid()))
            );
            // Reinserting the payload gives an ordinary compact JWS over the same input.
            let (head, signature) = jws.split_once("..").unwrap();
            assert!(!head.is_empty() && !signature.is_empty());

            let tampered = br#"{"type":"task.decided","task_id":"t2"}"#;
            assert_eq!(
                verify_detached(&jws, tampered, &keys[..], "custos-callback+jws"),
                Err(JwtError::BadSignature)
            );
            assert_eq!(
                verify_detached(&jws, body, &keys[..], "at+jwt"),
                Err(JwtError::WrongType)
            );
            let other: [PublicKey; 1] = [key(alg, 2).public_key().clone()];
            assert_eq!(
                verify_detached(&jws, body, &other[..], "custos-callback+jws"),
                Err(JwtError::UnknownKey)
            );
        }
    }

    #[test]
    fn malformed_detached_signatures_are_refused_without_panicking() {
        let signer = key(SigningAlg::Es256, 3);
        let keys = [signer.public_key().clone()];
        let jws = sign_detached(&signer, "custos-callback+jws", b"{}");
        let (head, signature) = jws.split_once("..").unwrap();
        let attached = format!("{head}.{}.{signature}", b64url(b"{}"));
        for bad in [
            "",
            "..",
            "a.b.c",
            attached.as_str(),
            &format!("{head}..{signature}.x"),
            &format!("!{head}..{signature}"),
        ] {
            assert!(
                verify_detached(bad, b"{}", &keys[..], "custos-callback+jws").is_err(),
                "{bad}"
            );
        }
    }
}
