//! Issuing compact JWS tokens and verifying them strictly: RFC 9068 access tokens and RFC 7523
//! client assertions.

use serde_json::{Map, Value};

use super::keys::{KeyLookup, PublicKey, SigningAlg, SigningKey};
use super::{JwtError, b64url, b64url_decode};
use crate::Timestamp;

/// The largest token accepted. Custos's own tokens are well under 4 KiB even with a long
/// `authorization_details`; the bound stops oversized input before any decoding work.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The `typ` of RFC 9068 access tokens, which keeps them from being confused with ID tokens or
/// client assertions signed by the same key.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The `typ` a client assertion may carry (RFC 7519 §5.1), if it carries one.
const CLIENT_ASSERTION_TYP: &str = "JWT";

/// What an access token must say to be accepted.
#[derive(Clone, Copy, Debug)]
pub struct Expectations<'a> {
    /// The exact `iss`.
    pub issuer: &'a str,
    /// An audience that `aud` (a string or an array) must contain.
    pub audience: &'a str,
    /// The media type `typ` must name, compared as RFC 7515 §4.1.9 says: case-insensitively,
    /// with `application/` optional.
    pub typ: &'a str,
    /// Tolerated clock skew for `exp`, `nbf` and `iat`.
    pub leeway_seconds: u32,
    /// Claims that must be present as non-empty strings besides `iss` and `aud`.
    pub required_claims: &'a [&'static str],
}

impl<'a> Expectations<'a> {
    /// The expectations for a Custos access token: `typ: at+jwt` and the claims RFC 9068 §2.2
    /// requires (`sub`, `client_id` and `jti` besides the time and issuer claims).
    pub fn access_token(issuer: &'a str, audience: &'a str, leeway_seconds: u32) -> Self {
        Self {
            issuer,
            audience,
            typ: ACCESS_TOKEN_TYP,
            leeway_seconds,
            required_claims: &["sub", "client_id", "jti"],
        }
    }
}

/// What a client assertion (RFC 7523 §3, `private_key_jwt`) must say to authenticate a client.
#[derive(Clone, Copy, Debug)]
pub struct ClientAssertionExpectations<'a> {
    /// The client the assertion claims to be: both `iss` and `sub` must equal it.
    pub client_id: &'a str,
    /// The token endpoint URL; `aud` must contain it or the issuer.
    pub token_endpoint: &'a str,
    /// The authorization server's issuer identifier, the other accepted audience.
    pub issuer: &'a str,
    /// Tolerated clock skew for `exp`, `nbf` and `iat`.
    pub leeway_seconds: u32,
    /// How far in the future `exp` may lie. The caller remembers each `jti` until the
    /// assertion expires to refuse replays, so this bounds what it must remember.
    pub max_lifetime_seconds: u32,
}

/// The protected header fields a verifier acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtHeader {
    /// Always the algorithm of the key that verified the token.
    pub alg: SigningAlg,
    /// Present on every access token; optional on a client assertion.
    pub kid: Option<String>,
    /// The token type as the header spelled it.
    pub typ: Option<String>,
}

/// A token whose signature, header and claims all passed.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedJwt {
    pub header: JwtHeader,
    /// Every claim of the payload, the checked ones and all others (`scope`, `act`,
    /// `authorization_details`, ...) for the caller to interpret.
    pub claims: Map<String, Value>,
}

/// Signs `claims` (a JSON object) as a compact JWS with the header `{"alg", "typ", "kid"}`.
pub fn sign_jwt(key: &SigningKey, header_typ: &str, claims: &Value) -> String {
    let mut header = Map::new();
    header.insert("alg".to_owned(), Value::from(key.alg().as_str()));
    header.insert("typ".to_owned(), Value::from(header_typ));
    header.insert("kid".to_owned(), Value::from(key.kid()));
    let mut token = b64url(Value::Object(header).to_string().as_bytes());
    token.push('.');
    token.push_str(&b64url(claims.to_string().as_bytes()));
    let signature = key.sign(token.as_bytes());
    token.push('.');
    token.push_str(&b64url(&signature));
    token
}

/// Verifies an access token: the key registered under its `kid` fixes the algorithm, then the
/// signature, `typ`, `iss`, `aud`, `exp`, `nbf`, `iat` and the required claims are checked
/// against `expected` at `now`.
pub fn verify_jwt<K: KeyLookup + ?Sized>(
    token: &str,
    keys: &K,
    expected: &Expectations<'_>,
    now: Timestamp,
) -> Result<VerifiedJwt, JwtError> {
    let jws = Jws::parse(token)?;
    let kid = jws
        .header
        .kid
        .as_deref()
        .ok_or(JwtError::MissingHeader("kid"))?;
    let key = keys.key(kid).ok_or(JwtError::UnknownKey)?;
    jws.check_alg(key)?;
    if !jws
        .header
        .typ
        .as_deref()
        .is_some_and(|typ| media_type_eq(typ, expected.typ))
    {
        return Err(JwtError::WrongType);
    }
    let claims = jws.verified_claims(key)?;

    let iss = required_string(&claims, "iss")?;
    if iss != expected.issuer {
        return Err(JwtError::WrongIssuer);
    }
    check_audience(&claims, &[expected.audience])?;
    let clock = Clock::new(now, expected.leeway_seconds);
    clock.check_exp(&claims)?;
    clock.check_nbf(&claims)?;
    clock.check_iat(&claims, true)?;
    for &name in expected.required_claims {
        required_string(&claims, name)?;
    }
    Ok(VerifiedJwt {
        header: jws.header,
        claims,
    })
}

/// Verifies a client assertion against the keys the client registered.
///
/// The header's `kid` selects the key by its declared `kid` or its thumbprint; without a
/// `kid`, the client must have exactly one key. `typ` may be absent or `JWT`; `iss` and `sub`
/// must both be the client; `aud` must contain the token endpoint or the issuer; `exp` and `jti`
/// are required. The caller enforces that each `jti` is used once.
pub fn verify_client_assertion(
    token: &str,
    keys: &[PublicKey],
    expected: &ClientAssertionExpectations<'_>,
    now: Timestamp,
) -> Result<VerifiedJwt, JwtError> {
    let jws = Jws::parse(token)?;
    let key = match (jws.header.kid.as_deref(), keys) {
        (Some(kid), _) => keys
            .iter()
            .find(|key| key.kid() == kid || key.thumbprint() == kid),
        (None, [only]) => Some(only),
        (None, _) => None,
    }
    .ok_or(JwtError::UnknownKey)?;
    jws.check_alg(key)?;
    if jws
        .header
        .typ
        .as_deref()
        .is_some_and(|typ| !media_type_eq(typ, CLIENT_ASSERTION_TYP))
    {
        return Err(JwtError::WrongType);
    }
    let claims = jws.verified_claims(key)?;

    if required_string(&claims, "iss")? != expected.client_id {
        return Err(JwtError::WrongIssuer);
    }
    if required_string(&claims, "sub")? != expected.client_id {
        return Err(JwtError::WrongSubject);
    }
    check_audience(&claims, &[expected.token_endpoint, expected.issuer])?;
    let clock = Clock::new(now, expected.leeway_seconds);
    let exp = clock.check_exp(&claims)?;
    let latest = now
        .unix_millis()
        .saturating_add(seconds_to_millis(expected.max_lifetime_seconds))
        .saturating_add(clock.leeway_millis);
    if exp > latest {
        return Err(JwtError::LifetimeTooLong);
    }
    clock.check_nbf(&claims)?;
    clock.check_iat(&claims, false)?;
    required_string(&claims, "jti")?;
    Ok(VerifiedJwt {
        header: jws.header,
        claims,
    })
}

/// A compact JWS split into its parts, with the header read but nothing trusted yet.
struct Jws<'t> {
    header: JwtHeader,
    signing_input: &'t str,
    payload: &'t str,
    signature: &'t str,
}

impl<'t> Jws<'t> {
    fn parse(token: &'t str) -> Result<Self, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::TooLarge);
        }
        let (signing_input, signature) = token
            .rsplit_once('.')
            .ok_or(JwtError::Malformed("a compact jws has three segments"))?;
        let (header, payload) = signing_input
            .split_once('.')
            .filter(|(_, payload)| !payload.contains('.'))
            .ok_or(JwtError::Malformed("a compact jws has three segments"))?;
        let header =
            b64url_decode(header).ok_or(JwtError::Malformed("the header is not base64url"))?;
        let header: Map<String, Value> = serde_json::from_slice(&header)
            .map_err(|_| JwtError::Malformed("the header is not a JSON object"))?;
        Ok(Self {
            header: read_header(&header)?,
            signing_input,
            payload,
            signature,
        })
    }

    /// The header's `alg` must be the key's own: this is the defence against algorithm
    /// confusion, since the token never gets to choose how it is checked.
    fn check_alg(&self, key: &PublicKey) -> Result<(), JwtError> {
        if self.header.alg == key.alg() {
            Ok(())
        } else {
            Err(JwtError::AlgorithmMismatch {
                header: self.header.alg,
                key: key.alg(),
            })
        }
    }

    /// Checks the signature, and only then reads the payload as a JSON object of claims.
    fn verified_claims(&self, key: &PublicKey) -> Result<Map<String, Value>, JwtError> {
        let signature = b64url_decode(self.signature)
            .ok_or(JwtError::Malformed("the signature is not base64url"))?;
        key.verify(self.signing_input.as_bytes(), &signature)?;
        let payload = b64url_decode(self.payload)
            .ok_or(JwtError::Malformed("the payload is not base64url"))?;
        serde_json::from_slice(&payload)
            .map_err(|_| JwtError::Malformed("the payload is not a JSON object"))
    }
}

/// Reads `alg`, `kid` and `typ`, refusing `crit`: RFC 7515 §4.1.11 requires rejecting a token
/// whose critical extensions are not understood, and none are.
pub(super) fn read_header(header: &Map<String, Value>) -> Result<JwtHeader, JwtError> {
    if header.contains_key("crit") {
        return Err(JwtError::CriticalHeader);
    }
    let alg = match header.get("alg") {
        None => return Err(JwtError::MissingHeader("alg")),
        Some(Value::String(alg)) => alg.parse()?,
        Some(_) => return Err(JwtError::Malformed("alg is not a string")),
    };
    let optional = |name: &str, reason: &'static str| match header.get(name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(JwtError::Malformed(reason)),
    };
    Ok(JwtHeader {
        alg,
        kid: optional("kid", "kid is not a string")?,
        typ: optional("typ", "typ is not a string")?,
    })
}

/// Compares media types as RFC 7515 §4.1.9 prescribes for `typ`: case-insensitively, with a
/// missing `application/` prefix implied.
pub(super) fn media_type_eq(typ: &str, expected: &str) -> bool {
    fn without_application(media_type: &str) -> &str {
        const PREFIX: &str = "application/";
        match media_type.get(..PREFIX.len()) {
            Some(head) if head.eq_ignore_ascii_case(PREFIX) => &media_type[PREFIX.len()..],
            _ => media_type,
        }
    }
    without_application(typ).eq_ignore_ascii_case(without_application(expected))
}

fn required_string<'c>(
    claims: &'c Map<String, Value>,
    name: &'static str,
) -> Result<&'c str, JwtError> {
    match claims.get(name) {
        None => Err(JwtError::MissingClaim(name)),
        Some(Value::String(text)) if !text.is_empty() => Ok(text),
        Some(_) => Err(JwtError::InvalidClaim(name)),
    }
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3) and must contain one of
/// `accepted`.
fn check_audience(claims: &Map<String, Value>, accepted: &[&str]) -> Result<(), JwtError> {
    let matches = |audience: &str| accepted.contains(&audience);
    let found = match claims.get("aud") {
        None => return Err(JwtError::MissingClaim("aud")),
        Some(Value::String(audience)) => matches(audience),
        Some(Value::Array(audiences)) => {
            let mut found = false;
            for audience in audiences {
                found |= matches(audience.as_str().ok_or(JwtError::InvalidClaim("aud"))?);
            }
            found
        }
        Some(_) => return Err(JwtError::InvalidClaim("aud")),
    };
    if found {
        Ok(())
    } else {
        Err(JwtError::WrongAudience)
    }
}

fn seconds_to_millis(seconds: u32) -> i64 {
    i64::from(seconds) * 1000
}

/// The time checks, in milliseconds, with the leeway applied in the token's favour.
struct Clock {
    now: i64,
    leeway_millis: i64,
}

impl Clock {
    fn new(now: Timestamp, leeway_seconds: u32) -> Self {
        Self {
            now: now.unix_millis(),
            leeway_millis: seconds_to_millis(leeway_seconds),
        }
    }

    /// `exp` is required and the token is valid strictly before it (RFC 7519 §4.1.4).
    fn check_exp(&self, claims: &Map<String, Value>) -> Result<i64, JwtError> {
        let exp = numeric_date(claims, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
        if self.now < exp.saturating_add(self.leeway_millis) {
            Ok(exp)
        } else {
            Err(JwtError::Expired)
        }
    }

    /// `nbf`, when present, must have been reached (RFC 7519 §4.1.5).
    fn check_nbf(&self, claims: &Map<String, Value>) -> Result<(), JwtError> {
        match numeric_date(claims, "nbf")? {
            Some(nbf) if self.now < nbf.saturating_sub(self.leeway_millis) => {
                Err(JwtError::NotYetValid)
            }
            _ => Ok(()),
        }
    }

    /// `iat` must not lie in the future: a token from a future time was made by a node with a
    /// wrong clock or by someone who should not be able to make tokens.
    fn check_iat(&self, claims: &Map<String, Value>, required: bool) -> Result<(), JwtError> {
        match numeric_date(claims, "iat")? {
            None if required => Err(JwtError::MissingClaim("iat")),
            Some(iat) if iat.saturating_sub(self.leeway_millis) > self.now => {
                Err(JwtError::IssuedInFuture)
            }
            _ => Ok(()),
        }
    }
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, possibly fractional, in milliseconds.
/// Values beyond the range of `i64` milliseconds saturate, which keeps comparisons correct.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(number)) => Ok(number
            .as_i64()
            .map(|seconds| seconds.saturating_mul(1000))
            // A float-to-integer `as` cast saturates, which is the behaviour wanted here.
            .or_else(|| number.as_f64().map(|seconds| (seconds * 1000.0) as i64))),
        Some(_) => Err(JwtError::InvalidClaim(name)),
    }
}
