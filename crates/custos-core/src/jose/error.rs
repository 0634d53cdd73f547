//! Why a token, a key or a JWK was refused.

use super::jwt::MAX_TOKEN_BYTES;
use super::keys::SigningAlg;

/// Every reason the JOSE layer refuses something, one variant per reason, so that callers can
/// map each to a precise OAuth error or problem code and tests can assert the exact cause.
///
/// Messages never repeat secrets; the only untrusted text they echo is an unknown algorithm
/// name, shortened to a few characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unsupported algorithm {0:?}: only ES256, EdDSA and RS256 are accepted")]
    UnsupportedAlg(String),
    #[error("the token's header has no {0}")]
    MissingHeader(&'static str),
    #[error("the token's header has a crit parameter, and no critical extension is supported")]
    CriticalHeader,
    #[error("no key is registered under the token's kid")]
    UnknownKey,
    #[error("the token's alg {header} is not the algorithm {key} of its key")]
    AlgorithmMismatch { header: SigningAlg, key: SigningAlg },
    #[error("the token's typ is not the expected token type")]
    WrongType,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has no {0} claim")]
    MissingClaim(&'static str),
    #[error("the token's {0} claim has the wrong type")]
    InvalidClaim(&'static str),
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    #[error("the token's subject is not the client")]
    WrongSubject,
    #[error("the token is not meant for this audience")]
    WrongAudience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the token expires later than the longest lifetime allowed")]
    LifetimeTooLong,
    #[error("invalid jwk: {0}")]
    InvalidJwk(&'static str),
    #[error("the jwk holds private key material; register the public key only")]
    PrivateJwk,
    #[error("the jwk is a symmetric key; only public keys are accepted")]
    SymmetricJwk,
    #[error("an rsa key of {0} bits is refused: 2048 to 4096 bits are accepted")]
    RsaKeySize(usize),
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
}

impl JwtError {
    /// A stable, machine-readable name for the reason, for problem documents, metrics and the
    /// audit trail. Unlike the message, it never changes once published.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed(_) => "malformed",
            Self::UnsupportedAlg(_) => "unsupported_alg",
            Self::MissingHeader(_) => "missing_header",
            Self::CriticalHeader => "critical_header",
            Self::UnknownKey => "unknown_key",
            Self::AlgorithmMismatch { .. } => "algorithm_mismatch",
            Self::WrongType => "wrong_type",
            Self::BadSignature => "bad_signature",
            Self::MissingClaim(_) => "missing_claim",
            Self::InvalidClaim(_) => "invalid_claim",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongSubject => "wrong_subject",
            Self::WrongAudience => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::InvalidJwk(_) => "invalid_jwk",
            Self::PrivateJwk => "private_jwk",
            Self::SymmetricJwk => "symmetric_jwk",
            Self::RsaKeySize(_) => "rsa_key_size",
            Self::InvalidKey(_) => "invalid_key",
        }
    }

    /// An unsupported `alg`, echoing at most a few characters of what the token or JWK said so
    /// that a hostile value cannot flood logs or responses.
    pub(super) fn unsupported_alg(name: &str) -> Self {
        Self::UnsupportedAlg(name.chars().take(32).collect())
    }
}
