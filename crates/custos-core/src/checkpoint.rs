//! Signed checkpoints of the audit log: the C2SP `tlog-checkpoint` body carried in a C2SP
//! `signed-note` with Ed25519 signatures.
//!
//! These are the formats the transparency-log ecosystem shares (Go's `sumdb/note`, witnesses,
//! monitors), so an auditor can check a Custos checkpoint with tools that know nothing of
//! Custos. A signed note is its text, a blank line, and one line per signature:
//!
//! ```text
//! custos.example/audit
//! 20852163
//! CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=
//!
//! — custos.example/audit <base64(key id || signature)>
//! ```
//!
//! Parsing is strict: a note is refused whole at the first thing that is not exactly the
//! format, because a lenient reader of signed data invites two readers to disagree about what
//! was signed. Keys come in as bytes from the caller; nothing here generates them.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::merkle::Hash;

/// The largest note accepted, so that parsing untrusted input is bounded in time and memory.
pub const MAX_NOTE_SIZE: usize = 1 << 20;

/// The most signatures a note may carry. The signed-note specification asks verifiers to
/// accept at least 16; Go's reference implementation accepts 100, and so does this one.
pub const MAX_SIGNATURES: usize = 100;

/// The signature type byte of Ed25519 in key IDs and verifier keys (C2SP signed-note).
const ED25519_TYPE: u8 = 0x01;

/// What starts every signature line: an em dash (U+2014) and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a signed note, a key name or a verifier key was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NoteError {
    #[error("a note may be at most {MAX_NOTE_SIZE} bytes, and this one is {0}")]
    TooLarge(usize),
    #[error("a note must be valid utf-8")]
    NotUtf8,
    #[error("a note must not contain control characters other than newline")]
    ControlCharacter,
    #[error("the note text must be non-empty and end with a newline")]
    TextNotTerminated,
    #[error("the note has no blank line followed by signatures")]
    MissingSignatures,
    #[error("the note does not end with a newline")]
    MissingFinalNewline,
    #[error("a line after the blank line is not a signature line")]
    MalformedSignatureLine,
    #[error("a key name must be non-empty, without spaces, plus signs or control characters")]
    InvalidKeyName,
    #[error("a signature must be the base64 of a 4-byte key id and at least one byte")]
    MalformedSignature,
    #[error("a note may carry at most {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("a verifier key must read <name>+<8 lowercase hex digits>+<base64 key>")]
    MalformedVerifierKey,
    #[error("the key type {0:#04x} is not ed25519 (0x01)")]
    UnsupportedKeyType(u8),
    #[error("the public key is not a usable ed25519 key")]
    InvalidPublicKey,
    #[error("the key id {found} does not match the key, whose id is {expected}")]
    KeyIdMismatch { expected: KeyId, found: KeyId },
    #[error("the note has no signature by key {name}+{key_id}")]
    NotSigned { name: String, key_id: KeyId },
    #[error("the signature by key {name}+{key_id} does not verify")]
    BadSignature { name: String, key_id: KeyId },
}

/// The 4-byte key ID that, with the key name, tells a verifier which key made a signature.
/// Shown as 8 lowercase hex digits, as in verifier keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 4]);

impl KeyId {
    /// The key ID of an Ed25519 key: the first 4 bytes of
    /// `SHA-256(name || 0x0A || 0x01 || public key)` (C2SP signed-note). The name and the type
    /// are hashed in so that one key reused under another name or algorithm gets another ID.
    pub fn ed25519(name: &str, public_key: &[u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(name.as_bytes());
        hasher.update([b'\n', ED25519_TYPE]);
        hasher.update(public_key);
        let digest = hasher.finalize();
        Self([digest[0], digest[1], digest[2], digest[3]])
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Checks a key name: non-empty, with no Unicode space and no `+` (C2SP signed-note), and no
/// control character, which no note may contain.
fn check_key_name(name: &str) -> Result<(), NoteError> {
    let valid = !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control());
    if valid {
        Ok(())
    } else {
        Err(NoteError::InvalidKeyName)
    }
}

/// Checks that text holds no control character other than newline, as every note must.
fn check_no_control_characters(text: &str) -> Result<(), NoteError> {
    if text.chars().any(|c| c < ' ' && c != '\n') {
        Err(NoteError::ControlCharacter)
    } else {
        Ok(())
    }
}

/// The public half of a named Ed25519 note key: what a verifier is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: KeyId,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// A verifier for the Ed25519 public key `public_key` under the key name `name`.
    ///
    /// Weak (small-order) keys are refused: no signature made with them means anything.
    pub fn new(name: &str, public_key: &[u8; 32]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| NoteError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(NoteError::InvalidPublicKey);
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: KeyId::ed25519(name, public_key),
            key,
        })
    }

    /// Reads a verifier key, `<name>+<hex key id>+<base64(0x01 || public key)>`, the text form
    /// Go's `sumdb/note` and the transparency-log tools exchange. The key ID must be the one
    /// the name and key hash to, so a key pasted under the wrong name is caught here.
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        // The base64 key may itself contain `+`, so only the first two separate fields.
        let mut fields = vkey.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(NoteError::MalformedVerifierKey);
        };
        check_key_name(name)?;
        let lowercase_hex = id_hex.len() == 8
            && id_hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let mut found = [0; 4];
        if !lowercase_hex || hex::decode_to_slice(id_hex, &mut found).is_err() {
            return Err(NoteError::MalformedVerifierKey);
        }
        let key = BASE64
            .decode(key_b64)
            .map_err(|_| NoteError::MalformedVerifierKey)?;
        let Some((&key_type, public_key)) = key.split_first() else {
            return Err(NoteError::MalformedVerifierKey);
        };
        if key_type != ED25519_TYPE {
            return Err(NoteError::UnsupportedKeyType(key_type));
        }
        let public_key: &[u8; 32] = public_key
            .try_into()
            .map_err(|_| NoteError::MalformedVerifierKey)?;
        let verifier = Self::new(name, public_key)?;
        if verifier.key_id != KeyId(found) {
            return Err(NoteError::KeyIdMismatch {
                expected: verifier.key_id,
                found: KeyId(found),
            });
        }
        Ok(verifier)
    }

    /// The verifier key text form, as read by [`NoteVerifier::from_vkey`].
    pub fn to_vkey(&self) -> String {
        let mut key = Vec::with_capacity(33);
        key.push(ED25519_TYPE);
        key.extend_from_slice(self.key.as_bytes());
        format!("{}+{}+{}", self.name, self.key_id, BASE64.encode(key))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

/// A named Ed25519 note key that signs: the log's checkpoint key.
pub struct NoteSigner {
    name: String,
    key_id: KeyId,
    key: SigningKey,
}

impl fmt::Debug for NoteSigner {
    /// Shows the name and key ID only, never the secret key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer with the given key under the key name `name`.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        check_key_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: KeyId::ed25519(name, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// A signer from a 32-byte Ed25519 seed (the secret key of RFC 8032), as the server keeps
    /// it; the caller supplies the bytes, so this crate never touches a random generator.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        Self::new(name, SigningKey::from_bytes(seed))
    }

    /// The verifier of this signer's signatures, to publish as a verifier key.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
}

/// One signature line of a note: who signed (key name and ID) and the signature bytes.
///
/// The bytes are whatever the key's algorithm produced; for keys this crate does not know they
/// are kept as they are, because a note may carry signatures (witness cosignatures, other
/// algorithms) that a verifier must skip, not refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    name: String,
    key_id: KeyId,
    signature: Vec<u8>,
}

impl NoteSignature {
    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The signature bytes, after the key ID.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The line's bytes after the prefix: `base64(key id || signature)`.
    fn encoded(&self) -> String {
        let mut bytes = Vec::with_capacity(4 + self.signature.len());
        bytes.extend_from_slice(&self.key_id.0);
        bytes.extend_from_slice(&self.signature);
        BASE64.encode(bytes)
    }

    /// The length of the whole signature line, newline included.
    fn line_len(&self) -> usize {
        SIGNATURE_PREFIX.len() + self.name.len() + 1 + self.encoded().len() + 1
    }

    /// Reads one signature line, without its newline.
    fn parse(line: &str) -> Result<Self, NoteError> {
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or(NoteError::MalformedSignatureLine)?;
        let (name, encoded) = rest
            .split_once(' ')
            .ok_or(NoteError::MalformedSignatureLine)?;
        check_key_name(name)?;
        let bytes = BASE64
            .decode(encoded)
            .map_err(|_| NoteError::MalformedSignature)?;
        match bytes.split_first_chunk::<4>() {
            Some((key_id, signature)) if !signature.is_empty() => Ok(Self {
                name: name.to_owned(),
                key_id: KeyId(*key_id),
                signature: signature.to_vec(),
            }),
            _ => Err(NoteError::MalformedSignature),
        }
    }
}

/// A note: a text and at least one signature over it (C2SP signed-note).
///
/// Every value of this type can be written out with `Display` and read back with
/// [`SignedNote::parse`] unchanged: construction checks the same rules as parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// Signs `text` with `signer`. The text must be non-empty, end with a newline and contain
    /// no other control character; it may contain blank lines.
    pub fn sign(text: impl Into<String>, signer: &NoteSigner) -> Result<Self, NoteError> {
        let text = text.into();
        if !text.ends_with('\n') {
            return Err(NoteError::TextNotTerminated);
        }
        check_no_control_characters(&text)?;
        let mut note = Self {
            text,
            signatures: Vec::new(),
        };
        note.add_signature(signer)?;
        Ok(note)
    }

    /// Adds `signer`'s signature (a cosignature), replacing any earlier signature by the same
    /// key name and ID, so that re-signing never duplicates a line.
    pub fn add_signature(&mut self, signer: &NoteSigner) -> Result<(), NoteError> {
        let signature = NoteSignature {
            name: signer.name.clone(),
            key_id: signer.key_id,
            signature: signer.key.sign(self.text.as_bytes()).to_bytes().to_vec(),
        };
        let mut signatures: Vec<NoteSignature> = self
            .signatures
            .iter()
            .filter(|s| s.name != signature.name || s.key_id != signature.key_id)
            .cloned()
            .collect();
        signatures.push(signature);
        if signatures.len() > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        let size = self.text.len()
            + 1
            + signatures
                .iter()
                .map(NoteSignature::line_len)
                .sum::<usize>();
        if size > MAX_NOTE_SIZE {
            return Err(NoteError::TooLarge(size));
        }
        self.signatures = signatures;
        Ok(())
    }

    /// Reads a signed note strictly: at most [`MAX_NOTE_SIZE`] bytes of UTF-8 with no control
    /// character but newline; the text, ending in a newline; a blank line (the last one in the
    /// note); then one to [`MAX_SIGNATURES`] signature lines, each ending in a newline, and
    /// nothing else.
    ///
    /// Signatures are only parsed here, not verified: see [`SignedNote::verify`].
    pub fn parse(input: &[u8]) -> Result<Self, NoteError> {
        if input.len() > MAX_NOTE_SIZE {
            return Err(NoteError::TooLarge(input.len()));
        }
        let input = std::str::from_utf8(input).map_err(|_| NoteError::NotUtf8)?;
        check_no_control_characters(input)?;
        // The text may hold blank lines, so the signatures start after the last one.
        let split = input.rfind("\n\n").ok_or(NoteError::MissingSignatures)?;
        let (text, lines) = (&input[..=split], &input[split + 2..]);
        if lines.is_empty() {
            return Err(NoteError::MissingSignatures);
        }
        let lines = lines
            .strip_suffix('\n')
            .ok_or(NoteError::MissingFinalNewline)?;
        let mut signatures = Vec::new();
        for line in lines.split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            signatures.push(NoteSignature::parse(line)?);
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The signed text, final newline included.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signatures, in the order of their lines.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Checks the signatures by `verifier`'s key: there must be one, and every signature with
    /// the key's name and ID must verify (a failing one makes the note suspect even when
    /// another verifies). Signatures by other keys are ignored, as the specification requires.
    ///
    /// Verification is strict Ed25519 (`verify_strict`): non-canonical and small-order
    /// signatures are refused, so no one can rework a valid signature into another valid one.
    pub fn verify(&self, verifier: &NoteVerifier) -> Result<(), NoteError> {
        let mut verified = false;
        for signature in self
            .signatures
            .iter()
            .filter(|s| s.name == verifier.name && s.key_id == verifier.key_id)
        {
            let bad = || NoteError::BadSignature {
                name: verifier.name.clone(),
                key_id: verifier.key_id,
            };
            let parsed = Signature::from_slice(&signature.signature).map_err(|_| bad())?;
            verifier
                .key
                .verify_strict(self.text.as_bytes(), &parsed)
                .map_err(|_| bad())?;
            verified = true;
        }
        if verified {
            Ok(())
        } else {
            Err(NoteError::NotSigned {
                name: verifier.name.clone(),
                key_id: verifier.key_id,
            })
        }
    }
}

impl fmt::Display for SignedNote {
    /// The wire form: the text, a blank line, and the signature lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for signature in &self.signatures {
            writeln!(
                f,
                "{SIGNATURE_PREFIX}{} {}",
                signature.name,
                signature.encoded()
            )?;
        }
        Ok(())
    }
}

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    #[error("the checkpoint text must end with a newline")]
    TextNotTerminated,
    #[error("a checkpoint needs an origin, a tree size and a root hash line")]
    MissingLines,
    #[error("the origin must be a non-empty line without control characters")]
    InvalidOrigin,
    #[error("the tree size must be a decimal number without leading zeros")]
    InvalidSize,
    #[error("the root hash must be the standard base64 encoding of 32 bytes")]
    InvalidRootHash,
    #[error("an extension line must be non-empty and without control characters")]
    InvalidExtension,
    #[error(transparent)]
    Note(#[from] NoteError),
}

/// A checkpoint: the log's origin, its size and its root hash, plus optional extension lines
/// (C2SP tlog-checkpoint). Signed, it commits the log to exactly these leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

/// Whether `line` can stand as one line of a checkpoint: non-empty, and free of newlines and
/// other control characters.
fn is_valid_line(line: &str) -> bool {
    !line.is_empty() && !line.chars().any(|c| c < ' ')
}

/// Reads a tree size: ASCII digits with no leading zero (unless the size is 0), no sign, and
/// within a u64. `u64::from_str` alone would also take `+5`.
fn parse_size(line: &str) -> Result<u64, CheckpointError> {
    let canonical = !line.is_empty()
        && line.bytes().all(|b| b.is_ascii_digit())
        && (line == "0" || !line.starts_with('0'));
    if !canonical {
        return Err(CheckpointError::InvalidSize);
    }
    line.parse().map_err(|_| CheckpointError::InvalidSize)
}

impl Checkpoint {
    /// A checkpoint of the tree of `size` leaves with root `root`, issued by the log `origin`
    /// (by convention a schema-less URL, which should also be the signing key's name).
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Result<Self, CheckpointError> {
        let origin = origin.into();
        if !is_valid_line(&origin) {
            return Err(CheckpointError::InvalidOrigin);
        }
        Ok(Self {
            origin,
            size,
            root,
            extensions: Vec::new(),
        })
    }

    /// Adds an extension line. The specification discourages them (monitors cannot audit
    /// them), but they are part of the format, so a parsed checkpoint can carry them.
    pub fn with_extension(mut self, line: impl Into<String>) -> Result<Self, CheckpointError> {
        let line = line.into();
        if !is_valid_line(&line) {
            return Err(CheckpointError::InvalidExtension);
        }
        self.extensions.push(line);
        Ok(self)
    }

    /// Reads a checkpoint body: the origin line, the tree size line, the base64 root hash line
    /// and any extension lines, each ending in a newline.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::TextNotTerminated)?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(CheckpointError::MissingLines);
        };
        // Checked in line order, so the error names the first bad line.
        if !is_valid_line(origin) {
            return Err(CheckpointError::InvalidOrigin);
        }
        let size = parse_size(size)?;
        let root = Hash::from_base64(root).map_err(|_| CheckpointError::InvalidRootHash)?;
        let mut checkpoint = Self::new(origin, size, root)?;
        for line in lines {
            checkpoint = checkpoint.with_extension(line)?;
        }
        Ok(checkpoint)
    }

    /// Signs the checkpoint body into a signed note.
    pub fn sign(&self, signer: &NoteSigner) -> Result<SignedNote, CheckpointError> {
        Ok(SignedNote::sign(self.to_string(), signer)?)
    }

    /// Reads a signed checkpoint, checks `verifier`'s signature on it and reads its body.
    ///
    /// Whether the origin is the expected log is the caller's question; the key name normally
    /// equals the origin, but the specification only recommends it.
    pub fn open(note: &[u8], verifier: &NoteVerifier) -> Result<Self, CheckpointError> {
        let note = SignedNote::parse(note)?;
        note.verify(verifier)?;
        Self::parse(note.text())
    }

    /// The origin line: which log issued the checkpoint.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The number of leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tree's root hash.
    pub fn root(&self) -> Hash {
        self.root
    }

    /// The extension lines, in order.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }
}

impl fmt::Display for Checkpoint {
    /// The note text: one line each for the origin, the size, the root hash in base64 and
    /// every extension.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.origin)?;
        writeln!(f, "{}", self.size)?;
        writeln!(f, "{}", self.root.to_base64())?;
        for extension in &self.extensions {
            writeln!(f, "{extension}")?;
        }
        Ok(())
    }
}
