//! The JOSE layer: signing keys, JWKS, and issuing and strictly verifying JWTs.
//!
//! Custos is an OAuth 2.0 authorization server: its access tokens are RFC 9068 JWTs
//! (`typ: at+jwt`) signed with ES256 by default, EdDSA or RS256 when chosen, and its clients may
//! authenticate with RFC 7523 `private_key_jwt` assertions signed by keys they registered.
//!
//! The layer is written directly on the RustCrypto primitives rather than on a general JWT
//! library, because its job is to refuse almost everything:
//!
//! - **The key decides the algorithm.** A key is registered with exactly one algorithm and the
//!   header's `alg` must equal it, so `alg: none`, HMAC with a public key as the secret and any
//!   other algorithm confusion fail before a signature is even looked at. Only ES256, EdDSA and
//!   RS256 exist here; there is no symmetric code path at all.
//! - **Nothing in the token chooses a key** other than `kid`: embedded `jwk`, `jku` or `x5c`
//!   headers are never used, and a `crit` header is refused because no extension is understood.
//! - **Claims are checked against what the caller expects**, with the time passed in: the core
//!   never reads the clock or the random generator (keys are generated from a caller's RNG).
//! - **Untrusted input never panics**: size, segment count, base64url (canonical, unpadded) and
//!   JSON are checked in turn, and every refusal is its own [`JwtError`] variant with a stable
//!   [`code`](JwtError::code).
//!
//! Key identifiers are RFC 7638 JWK thumbprints, so a key's `kid` follows from the key itself
//! and every node that holds the same key publishes the same JWKS.

mod detached;
mod error;
mod jwt;
mod keys;

pub use detached::{sign_detached, verify_detached};
pub use error::JwtError;
pub use jwt::{
    ACCESS_TOKEN_TYP, ClientAssertionExpectations, Expectations, JwtHeader, MAX_TOKEN_BYTES,
    VerifiedJwt, sign_jwt, verify_client_assertion, verify_jwt,
};
pub use keys::{Jwks, KeyLookup, PublicKey, SigningAlg, SigningKey};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Encodes bytes as unpadded base64url, the only encoding JOSE uses for binary values.
fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url. The engine refuses padding and non-zero trailing bits, so each
/// byte string has exactly one accepted text form and a token cannot be altered by re-encoding.
fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}
