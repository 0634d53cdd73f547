//! Secret token format: a fixed prefix naming the kind, 32 random bytes in base62, and a
//! CRC32 checksum, so secret scanners can recognise a Custos secret without calling home and
//! typos are caught before any lookup.

/// Which kind of principal a secret belongs to. The prefix is part of the public contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// An operator's API token.
    Operator,
    /// A static key of an NHI (legacy and bootstrap credentials).
    StaticKey,
}

pub(crate) const BODY_LEN: usize = 43; // ceil(256 / log2(62))
pub(crate) const CHECKSUM_LEN: usize = 6; // 62^6 > 2^32
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl SecretKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            SecretKind::Operator => "custos_op_",
            SecretKind::StaticKey => "custos_sk_",
        }
    }

    pub const ALL: [SecretKind; 2] = [SecretKind::Operator, SecretKind::StaticKey];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    #[error("not a custos secret: unknown prefix")]
    UnknownPrefix,
    #[error("malformed custos secret: wrong length or characters")]
    Malformed,
    #[error("custos secret checksum mismatch")]
    BadChecksum,
}

/// Encodes `bytes` as a fixed-width big-endian base62 number.
pub(crate) fn base62_fixed(bytes: &[u8], width: usize) -> String {
    let mut number = bytes.to_vec();
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = (value / 62) as u8;
            remainder = value % 62;
        }
        *slot = ALPHABET[remainder as usize];
    }
    String::from_utf8(digits).unwrap_or_default()
}

fn checksum(kind: SecretKind, body: &str) -> String {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(kind.prefix().as_bytes());
    hasher.update(body.as_bytes());
    base62_fixed(&hasher.finalize().to_be_bytes(), CHECKSUM_LEN)
}

/// Builds a secret of `kind` from 32 random bytes supplied by the caller.
pub fn mint(kind: SecretKind, random: &[u8; 32]) -> String {
    let body = base62_fixed(random, BODY_LEN);
    let sum = checksum(kind, &body);
    format!("{}{body}{sum}", kind.prefix())
}

/// Checks a presented secret's shape and checksum and says which kind it is.
pub fn classify(secret: &str) -> Result<SecretKind, SecretFormatError> {
    let kind = SecretKind::ALL
        .into_iter()
        .find(|k| secret.starts_with(k.prefix()))
        .ok_or(SecretFormatError::UnknownPrefix)?;
    let rest = &secret[kind.prefix().len()..];
    if rest.len() != BODY_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(SecretFormatError::Malformed);
    }
    let (body, sum) = rest.split_at(BODY_LEN);
    if checksum(kind, body) != sum {
        return Err(SecretFormatError::BadChecksum);
    }
    Ok(kind)
}

/// A short, non-secret hint to recognise a secret in listings: its prefix and first characters.
pub fn hint(secret: &str) -> String {
    let end = secret
        .char_indices()
        .nth(16)
        .map_or(secret.len(), |(i, _)| i);
    format!("{}…", &secret[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_secrets_classify_and_typos_do_not() {
        let secret = mint(SecretKind::Operator, &[7u8; 32]);
        assert!(secret.starts_with("custos_op_"));
        assert_eq!(secret.len(), 10 + 43 + 6);
        assert_eq!(classify(&secret), Ok(SecretKind::Operator));
        let mut typo = secret.clone().into_bytes();
        typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            classify(&String::from_utf8(typo).unwrap()),
            Err(SecretFormatError::BadChecksum)
        );
        assert_eq!(
            classify("custos_op_short"),
            Err(SecretFormatError::Malformed)
        );
        assert_eq!(classify("ghp_abc"), Err(SecretFormatError::UnknownPrefix));
        // The checksum binds the kind: relabelling an operator token as a static key fails.
        let relabelled = secret.replacen("custos_op_", "custos_sk_", 1);
        assert_eq!(classify(&relabelled), Err(SecretFormatError::BadChecksum));
    }

    #[test]
    fn base62_is_fixed_width() {
        assert_eq!(base62_fixed(&[0u8; 32], 43), "0".repeat(43));
        assert_eq!(base62_fixed(&[255u8; 32], 43).len(), 43);
        assert_eq!(base62_fixed(&[0, 0, 0, 61], 6), "00000z");
    }
}
