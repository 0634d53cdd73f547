//! Keys: the three signing algorithms, private signing keys, public keys and their JWK form
//! (RFC 7517, RFC 7518 §6, RFC 8037), RFC 7638 thumbprints, and key sets.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use ed25519::pkcs8::KeypairBytes;
use ed25519_dalek as dalek;
use p256::ecdsa as es256;
use p256::elliptic_curve::Generate;
use rand_core::CryptoRng;
use rsa::pkcs1v15;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::signature::{Keypair, SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{JwtError, b64url, b64url_decode};

/// RSA moduli accepted anywhere: RFC 7518 §3.3 requires at least 2048 bits, and the upper bound
/// keeps a registered client key from making each verification arbitrarily expensive.
const RSA_BITS: RangeInclusive<usize> = 2048..=4096;

/// The modulus size of generated RSA keys: the smallest allowed, since RS256 is offered for
/// compatibility and larger keys only make every signature slower.
const RSA_GENERATED_BITS: usize = 2048;

/// JWK members that only a private key has (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2). A public key
/// registration carrying any of them means a secret has been handed over, so it is refused.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// A JWS signature algorithm that Custos signs or accepts. The set is closed on purpose: no
/// `none`, no HMAC (which would turn a public key into a forging secret), no PS256 or ES384.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SigningAlg {
    /// ECDSA on P-256 with SHA-256 (RFC 7518 §3.4), signatures in the 64-byte `R || S` form:
    /// small keys and tokens, fast to sign; the default.
    Es256,
    /// Ed25519 (RFC 8037): deterministic signatures, the fastest to verify.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3), for resource servers that only know RSA.
    Rs256,
}

impl SigningAlg {
    /// Every algorithm Custos knows, so that configuration and tests can enumerate them.
    pub const ALL: [Self; 3] = [Self::Es256, Self::EdDsa, Self::Rs256];

    /// The registered JOSE name (RFC 7518 §3.1, RFC 8037 §3.1), compared case-sensitively.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
        }
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SigningAlg {
    type Err = JwtError;

    fn from_str(name: &str) -> Result<Self, JwtError> {
        Self::ALL
            .into_iter()
            .find(|alg| alg.as_str() == name)
            .ok_or_else(|| JwtError::unsupported_alg(name))
    }
}

impl Serialize for SigningAlg {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SigningAlg {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// The verifying half of a key, which fixes its algorithm.
#[derive(Clone)]
enum Verifying {
    Es256(es256::VerifyingKey),
    EdDsa(dalek::VerifyingKey),
    Rs256(pkcs1v15::VerifyingKey<Sha256>),
}

impl Verifying {
    fn alg(&self) -> SigningAlg {
        match self {
            Self::Es256(_) => SigningAlg::Es256,
            Self::EdDsa(_) => SigningAlg::EdDsa,
            Self::Rs256(_) => SigningAlg::Rs256,
        }
    }

    /// The members that identify the key (RFC 7638 §3.2), in lexicographic order, with
    /// integers in their minimal big-endian form as RFC 7518 prescribes.
    fn required_members(&self) -> Result<Vec<(&'static str, String)>, JwtError> {
        Ok(match self {
            Self::Es256(key) => {
                let point = key.to_sec1_point(false);
                let (x, y) = point.x().zip(point.y()).ok_or(JwtError::InvalidKey(
                    "the p-256 public key has no affine coordinates",
                ))?;
                vec![
                    ("crv", "P-256".to_owned()),
                    ("kty", "EC".to_owned()),
                    ("x", b64url(x)),
                    ("y", b64url(y)),
                ]
            }
            Self::EdDsa(key) => vec![
                ("crv", "Ed25519".to_owned()),
                ("kty", "OKP".to_owned()),
                ("x", b64url(key.as_bytes())),
            ],
            Self::Rs256(key) => {
                let key: &RsaPublicKey = key.as_ref();
                vec![
                    ("e", b64url(&key.e_bytes())),
                    ("kty", "RSA".to_owned()),
                    ("n", b64url(&key.n_bytes())),
                ]
            }
        })
    }

    fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::Es256(key) => es256::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify(signing_input, &signature).is_ok()),
            // `verify_strict` also refuses small-order keys and non-canonical signatures, so a
            // signature cannot be reshaped into a second valid one.
            Self::EdDsa(key) => dalek::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify_strict(signing_input, &signature).is_ok()),
            Self::Rs256(key) => pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|signature| key.verify(signing_input, &signature).is_ok()),
        }
    }
}

/// A public key with its one algorithm and its key id: what a JWKS publishes and what a
/// verifier trusts.
///
/// The `kid` is the RFC 7638 thumbprint, unless the key came from a JWK that named its own
/// `kid` (a client's registered key), in which case that name is kept so the client's
/// assertions can refer to it.
#[derive(Clone)]
pub struct PublicKey {
    key: Verifying,
    /// The thumbprint members, kept so that JWKs are produced without re-encoding the key.
    members: Vec<(&'static str, String)>,
    thumbprint: String,
    kid: String,
}

impl PublicKey {
    fn new(key: Verifying, declared_kid: Option<String>) -> Result<Self, JwtError> {
        let members = key.required_members()?;
        // Member values are base64url or fixed names, so they need no JSON escaping.
        let canonical = members
            .iter()
            .map(|(name, value)| format!("\"{name}\":\"{value}\""))
            .collect::<Vec<_>>()
            .join(",");
        let thumbprint = b64url(&Sha256::digest(format!("{{{canonical}}}").as_bytes()));
        let kid = declared_kid.unwrap_or_else(|| thumbprint.clone());
        Ok(Self {
            key,
            members,
            thumbprint,
            kid,
        })
    }

    /// Reads a public JWK, as an operator registers one for an NHI's `private_key_jwt`.
    ///
    /// Accepted: EC P-256 (ES256), OKP Ed25519 (EdDSA) and RSA of 2048 to 4096 bits (RS256).
    /// Refused: symmetric (`oct`) keys, any private member, points off the curve, small-order
    /// Ed25519 keys, an `alg` other than the key type's, and `use` or `key_ops` that do not
    /// allow verifying signatures.
    pub fn from_jwk(jwk: &Value) -> Result<Self, JwtError> {
        let jwk = jwk
            .as_object()
            .ok_or(JwtError::InvalidJwk("a jwk is a JSON object"))?;
        let kty = string_member(jwk, "kty")
            .ok_or(JwtError::InvalidJwk("kty is missing or not a string"))?;
        if kty == "oct" {
            return Err(JwtError::SymmetricJwk);
        }
        if PRIVATE_MEMBERS.iter().any(|name| jwk.contains_key(*name)) {
            return Err(JwtError::PrivateJwk);
        }
        if jwk.get("use").is_some_and(|usage| usage != "sig") {
            return Err(JwtError::InvalidJwk("use must be sig"));
        }
        if let Some(ops) = jwk.get("key_ops") {
            let allows_verify = ops
                .as_array()
                .is_some_and(|ops| ops.iter().any(|op| op == "verify"));
            if !allows_verify {
                return Err(JwtError::InvalidJwk("key_ops must include verify"));
            }
        }
        let declared_kid = match jwk.get("kid") {
            None => None,
            Some(Value::String(kid)) if !kid.is_empty() => Some(kid.clone()),
            Some(_) => return Err(JwtError::InvalidJwk("kid must be a non-empty string")),
        };

        let key = match kty {
            "EC" => ec_key(jwk)?,
            "OKP" => okp_key(jwk)?,
            "RSA" => rsa_key(jwk)?,
            _ => {
                return Err(JwtError::InvalidJwk(
                    "kty must be EC, OKP or RSA (public keys only)",
                ));
            }
        };
        if let Some(alg) = jwk.get("alg") {
            let alg: SigningAlg = alg
                .as_str()
                .ok_or(JwtError::InvalidJwk("alg must be a string"))?
                .parse()?;
            if alg != key.alg() {
                return Err(JwtError::InvalidJwk("alg does not fit the key type"));
            }
        }
        Self::new(key, declared_kid)
    }

    /// The algorithm this key verifies, and the only one a token under it may name.
    pub fn alg(&self) -> SigningAlg {
        self.key.alg()
    }

    /// The key id under which tokens refer to this key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The RFC 7638 JWK thumbprint: base64url of the SHA-256 of the canonical public JWK.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The public JWK with `alg`, `use: "sig"` and `kid`, as a JWKS publishes it.
    pub fn to_jwk(&self) -> Value {
        let mut jwk: Map<String, Value> = self
            .members
            .iter()
            .map(|(name, value)| ((*name).to_owned(), Value::from(value.as_str())))
            .collect();
        jwk.insert("alg".to_owned(), Value::from(self.alg().as_str()));
        jwk.insert("use".to_owned(), Value::from("sig"));
        jwk.insert("kid".to_owned(), Value::from(self.kid.as_str()));
        Value::Object(jwk)
    }

    /// Checks a signature over the JWS signing input with this key's one algorithm.
    pub(super) fn verify(&self, signing_input: &[u8], signature: &[u8]) -> Result<(), JwtError> {
        if self.key.verify(signing_input, signature) {
            Ok(())
        } else {
            Err(JwtError::BadSignature)
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("alg", &self.alg())
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn string_member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(Value::as_str)
}

/// A base64url member decoded to exactly `N` bytes (RFC 7518 §6.2.1.2 requires full-length
/// coordinates), or `reason` as the refusal.
fn fixed_member<const N: usize>(
    jwk: &Map<String, Value>,
    name: &str,
    reason: &'static str,
) -> Result<[u8; N], JwtError> {
    string_member(jwk, name)
        .and_then(b64url_decode)
        .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
        .ok_or(JwtError::InvalidJwk(reason))
}

fn ec_key(jwk: &Map<String, Value>) -> Result<Verifying, JwtError> {
    if string_member(jwk, "crv") != Some("P-256") {
        return Err(JwtError::InvalidJwk("an EC key must be on the P-256 curve"));
    }
    let x: [u8; 32] = fixed_member(jwk, "x", "x must be 32 bytes of base64url")?;
    let y: [u8; 32] = fixed_member(jwk, "y", "y must be 32 bytes of base64url")?;
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(0x04);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    es256::VerifyingKey::from_sec1_bytes(&sec1)
        .map(Verifying::Es256)
        .map_err(|_| JwtError::InvalidJwk("the point is not on the P-256 curve"))
}

fn okp_key(jwk: &Map<String, Value>) -> Result<Verifying, JwtError> {
    if string_member(jwk, "crv") != Some("Ed25519") {
        return Err(JwtError::InvalidJwk(
            "an OKP key must be on the Ed25519 curve",
        ));
    }
    let x: [u8; 32] = fixed_member(jwk, "x", "x must be 32 bytes of base64url")?;
    let key = dalek::VerifyingKey::from_bytes(&x)
        .map_err(|_| JwtError::InvalidJwk("x is not an Ed25519 point"))?;
    if key.is_weak() {
        return Err(JwtError::InvalidJwk(
            "the Ed25519 key is a small-order point",
        ));
    }
    Ok(Verifying::EdDsa(key))
}

fn rsa_key(jwk: &Map<String, Value>) -> Result<Verifying, JwtError> {
    let integer = |name: &str, reason: &'static str| {
        string_member(jwk, name)
            .and_then(b64url_decode)
            .map(|bytes| BoxedUint::from_be_slice_vartime(&bytes))
            .ok_or(JwtError::InvalidJwk(reason))
    };
    let n = integer("n", "n must be base64url")?;
    let e = integer("e", "e must be base64url")?;
    let bits = n.bit_width() as usize;
    if !RSA_BITS.contains(&bits) {
        return Err(JwtError::RsaKeySize(bits));
    }
    RsaPublicKey::new_with_size_limits(n, e, RSA_BITS)
        .map(|key| Verifying::Rs256(pkcs1v15::VerifyingKey::new(key)))
        .map_err(|_| JwtError::InvalidJwk("the rsa modulus or exponent is invalid"))
}

/// The private half of a key.
enum Secret {
    Es256(es256::SigningKey),
    EdDsa(dalek::SigningKey),
    Rs256(pkcs1v15::SigningKey<Sha256>),
}

/// A private key that signs tokens, with its public key and `kid` derived from it.
///
/// Its `Debug` form shows the algorithm and `kid` only, so a key can never leak into a log.
pub struct SigningKey {
    secret: Secret,
    public: PublicKey,
}

impl SigningKey {
    /// Generates a key from the caller's cryptographic RNG (the core never reads one itself).
    /// RSA keys have 2048 bits; generating one takes long enough that callers should do it off
    /// any request path.
    pub fn generate<R: CryptoRng + ?Sized>(alg: SigningAlg, rng: &mut R) -> Result<Self, JwtError> {
        let secret = match alg {
            SigningAlg::Es256 => Secret::Es256(es256::SigningKey::generate_from_rng(rng)),
            SigningAlg::EdDsa => {
                // An Ed25519 secret key is 32 uniformly random bytes (RFC 8032 §5.1.5).
                let mut seed = Zeroizing::new([0u8; 32]);
                rng.fill_bytes(seed.as_mut());
                Secret::EdDsa(dalek::SigningKey::from_bytes(&seed))
            }
            SigningAlg::Rs256 => {
                let key = RsaPrivateKey::new(rng, RSA_GENERATED_BITS)
                    .map_err(|_| JwtError::InvalidKey("rsa key generation failed"))?;
                Secret::Rs256(pkcs1v15::SigningKey::new(key))
            }
        };
        Self::from_secret(secret)
    }

    /// Reads a PKCS#8 DER private key (RFC 5208 / RFC 5958; RFC 8410 for Ed25519), which must
    /// be a key of `alg`: the algorithm is stored beside the key, never guessed from it.
    pub fn from_pkcs8_der(alg: SigningAlg, der: &[u8]) -> Result<Self, JwtError> {
        let secret = match alg {
            SigningAlg::Es256 => es256::SigningKey::from_pkcs8_der(der)
                .map(Secret::Es256)
                .map_err(|_| JwtError::InvalidKey("not a pkcs#8 p-256 private key"))?,
            SigningAlg::EdDsa => {
                let pair = KeypairBytes::from_pkcs8_der(der)
                    .map_err(|_| JwtError::InvalidKey("not a pkcs#8 ed25519 private key"))?;
                let key = dalek::SigningKey::from_bytes(&pair.secret_key);
                if pair
                    .public_key
                    .as_ref()
                    .is_some_and(|public| public.0 != key.verifying_key().to_bytes())
                {
                    return Err(JwtError::InvalidKey(
                        "the pkcs#8 public key does not belong to its private key",
                    ));
                }
                Secret::EdDsa(key)
            }
            SigningAlg::Rs256 => {
                let key = RsaPrivateKey::from_pkcs8_der(der)
                    .map_err(|_| JwtError::InvalidKey("not a pkcs#8 rsa private key"))?;
                let bits = key.n().bit_width() as usize;
                if !RSA_BITS.contains(&bits) {
                    return Err(JwtError::RsaKeySize(bits));
                }
                Secret::Rs256(pkcs1v15::SigningKey::new(key))
            }
        };
        Self::from_secret(secret)
    }

    fn from_secret(secret: Secret) -> Result<Self, JwtError> {
        let verifying = match &secret {
            Secret::Es256(key) => Verifying::Es256(*key.verifying_key()),
            Secret::EdDsa(key) => Verifying::EdDsa(key.verifying_key()),
            Secret::Rs256(key) => Verifying::Rs256(key.verifying_key()),
        };
        Ok(Self {
            secret,
            public: PublicKey::new(verifying, None)?,
        })
    }

    /// The private key as unencrypted PKCS#8 DER, for the server to encrypt before storing it.
    /// The buffer is wiped when dropped.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, JwtError> {
        let document = match &self.secret {
            Secret::Es256(key) => key.to_pkcs8_der(),
            Secret::EdDsa(key) => KeypairBytes {
                secret_key: key.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_der(),
            Secret::Rs256(key) => AsRef::<RsaPrivateKey>::as_ref(key).to_pkcs8_der(),
        }
        .map_err(|_| JwtError::InvalidKey("the key could not be encoded as pkcs#8"))?;
        Ok(Zeroizing::new(document.as_bytes().to_vec()))
    }

    /// The algorithm this key signs with, fixed when the key was made or imported.
    pub fn alg(&self) -> SigningAlg {
        self.public.alg()
    }

    /// The RFC 7638 thumbprint of the public key, which every token signed here names.
    pub fn kid(&self) -> &str {
        self.public.kid()
    }

    /// The public half, for the JWKS and for verifying this server's own tokens.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The public JWK for the JWKS endpoint.
    pub fn public_jwk(&self) -> Value {
        self.public.to_jwk()
    }

    /// Signs the JWS signing input. ES256 yields the 64-byte `R || S` form that RFC 7518 §3.4
    /// requires (not DER), with RFC 6979 deterministic nonces, so no RNG is needed here.
    pub(super) fn sign(&self, signing_input: &[u8]) -> Vec<u8> {
        match &self.secret {
            Secret::Es256(key) => {
                let signature: es256::Signature = key.sign(signing_input);
                signature.to_bytes().to_vec()
            }
            Secret::EdDsa(key) => key.sign(signing_input).to_bytes().to_vec(),
            Secret::Rs256(key) => key.sign(signing_input).to_vec(),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg())
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

/// Where a verifier finds the key a token names by `kid`. The key brings its algorithm along,
/// which is what makes algorithm confusion impossible.
pub trait KeyLookup {
    /// The key registered under `kid`, if any.
    fn key(&self, kid: &str) -> Option<&PublicKey>;
}

impl KeyLookup for [PublicKey] {
    fn key(&self, kid: &str) -> Option<&PublicKey> {
        self.iter().find(|key| key.kid() == kid)
    }
}

/// A JSON Web Key Set (RFC 7517 §5): the server's published verification keys, or a set a
/// client registered.
#[derive(Clone, Debug, Default)]
pub struct Jwks {
    keys: Vec<PublicKey>,
}

impl Jwks {
    /// A set of distinct keys: a key listed twice under one `kid` is kept once, first wins.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let mut set = Self::default();
        for key in keys {
            if set.keys.key(key.kid()).is_none() {
                set.keys.push(key);
            }
        }
        set
    }

    /// Reads `{"keys": [...]}`, refusing the whole set if any key is unacceptable or two keys
    /// share a `kid` (which would make lookups ambiguous).
    pub fn from_json(jwks: &Value) -> Result<Self, JwtError> {
        let members = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwtError::InvalidJwk(
                "a jwks is an object with a keys array",
            ))?;
        let mut keys: Vec<PublicKey> = Vec::with_capacity(members.len());
        for member in members {
            let key = PublicKey::from_jwk(member)?;
            if keys.key(key.kid()).is_some() {
                return Err(JwtError::InvalidJwk("two keys of the jwks share a kid"));
            }
            keys.push(key);
        }
        Ok(Self { keys })
    }

    /// The keys in order, for verifiers that take a slice (client assertions).
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// The document served at `/.well-known/jwks.json`.
    pub fn to_json(&self) -> Value {
        let keys = self.keys.iter().map(PublicKey::to_jwk).collect();
        let mut jwks = Map::new();
        jwks.insert("keys".to_owned(), Value::Array(keys));
        Value::Object(jwks)
    }
}

impl KeyLookup for Jwks {
    fn key(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.key(kid)
    }
}
