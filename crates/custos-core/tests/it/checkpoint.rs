//! Signed notes and checkpoints against the published vectors of other implementations: the
//! PeterNeumann and EnochRoot keys and notes of Go's `golang.org/x/mod/sumdb/note` tests, a
//! real signed tree head of the Go checksum database (sum.golang.org) with its published key,
//! and a checkpoint signed by sigsum-go's tests; then the strict parsing rules, one by one.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use custos_core::checkpoint::{
    Checkpoint, CheckpointError, KeyId, MAX_NOTE_SIZE, MAX_SIGNATURES, NoteError, NoteSigner,
    NoteVerifier, SignedNote,
};
use custos_core::merkle::{EMPTY_ROOT, Hash};
use proptest::prelude::*;
use sha2::Digest as _;

const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

/// The Go checksum database's key (cmd/go/internal/modfetch/key.go). Its base64 holds `+`.
const SUMDB_VKEY: &str = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";
/// sum.golang.org/latest as of 2024-09-23, as quoted by sigsum-go's checkpoint tests.
const SUMDB_CHECKPOINT: &str = "go.sum database tree\n\
                                30055305\n\
                                mXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM=\n\
                                \n\
                                \u{2014} sum.golang.org Az3grpgEild5qw7+5dtV13Kf1C2Xurm8q4fhdxvcsDHnqNTaxL2AFjBY+2TyGKevucFcAAlWFJJYle3EJlDCrQ+y3A8=\n";

/// The seed of the PeterNeumann key, from Go's private key text `PRIVATE+KEY+name+id+base64`,
/// whose base64 is the type byte 0x01 and the 32-byte seed.
fn peter_seed() -> [u8; 32] {
    // The base64 may hold `+`, so take its fixed length (33 bytes, 44 characters) from the end.
    let encoded = &PETER_SKEY[PETER_SKEY.len() - 44..];
    assert!(encoded.starts_with("AYEK"));
    let bytes = BASE64.decode(encoded).unwrap();
    assert_eq!(bytes[0], 0x01);
    bytes[1..].try_into().unwrap()
}

fn peter() -> NoteSigner {
    NoteSigner::from_seed("PeterNeumann", &peter_seed()).unwrap()
}

fn go_note() -> String {
    format!("{TEXT}\n{PETER_SIG}")
}

#[test]
fn go_vectors_sign_and_verify_byte_for_byte() {
    let signer = peter();
    assert_eq!(signer.key_id().to_string(), "c74f20a3");
    assert_eq!(signer.verifier().to_vkey(), PETER_VKEY);

    let note = SignedNote::sign(TEXT, &signer).unwrap();
    assert_eq!(note.to_string(), go_note());

    let verifier = NoteVerifier::from_vkey(PETER_VKEY).unwrap();
    assert_eq!(verifier.name(), "PeterNeumann");
    assert_eq!(verifier.key_id(), KeyId([0xc7, 0x4f, 0x20, 0xa3]));
    assert_eq!(verifier, signer.verifier());
    let parsed = SignedNote::parse(go_note().as_bytes()).unwrap();
    assert_eq!(parsed, note);
    assert_eq!(parsed.text(), TEXT);
    assert_eq!(parsed.verify(&verifier), Ok(()));
    let [signature] = parsed.signatures() else {
        panic!("one signature expected");
    };
    assert_eq!(signature.name(), "PeterNeumann");
    assert_eq!(signature.key_id(), verifier.key_id());
    assert_eq!(signature.signature().len(), 64);
}

#[test]
fn a_note_is_checked_against_the_named_key_only() {
    let peter = NoteVerifier::from_vkey(PETER_VKEY).unwrap();
    let enoch = NoteVerifier::from_vkey(ENOCH_VKEY).unwrap();
    let both = SignedNote::parse(format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}").as_bytes()).unwrap();
    assert_eq!(both.signatures().len(), 2);
    assert_eq!(both.verify(&peter), Ok(()));
    assert_eq!(both.verify(&enoch), Ok(()));
    assert_eq!(both.to_string(), format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}"));

    let only_peter = SignedNote::parse(go_note().as_bytes()).unwrap();
    assert_eq!(
        only_peter.verify(&enoch),
        Err(NoteError::NotSigned {
            name: "EnochRoot".into(),
            key_id: enoch.key_id()
        })
    );
    // Another key under Peter's name has another key ID: its signatures are not Peter's.
    let impostor = NoteSigner::from_seed("PeterNeumann", &[7; 32]).unwrap();
    assert_ne!(impostor.key_id(), peter.key_id());
    let forged = SignedNote::sign(TEXT, &impostor).unwrap();
    assert!(matches!(
        forged.verify(&peter),
        Err(NoteError::NotSigned { .. })
    ));
    // A signature line with Peter's name and key ID but made by another key is bad, not absent.
    let mut bytes = peter.key_id().0.to_vec();
    bytes.extend_from_slice(forged.signatures()[0].signature());
    let relabelled = format!("{TEXT}\n\u{2014} PeterNeumann {}\n", BASE64.encode(&bytes));
    let relabelled = SignedNote::parse(relabelled.as_bytes()).unwrap();
    assert_eq!(relabelled.signatures()[0].key_id(), peter.key_id());
    assert_eq!(
        relabelled.verify(&peter),
        Err(NoteError::BadSignature {
            name: "PeterNeumann".into(),
            key_id: peter.key_id()
        })
    );
}

#[test]
fn tampered_notes_do_not_verify() {
    let peter = NoteVerifier::from_vkey(PETER_VKEY).unwrap();
    let bad = |note: &str| {
        let parsed = SignedNote::parse(note.as_bytes()).unwrap();
        assert!(
            matches!(parsed.verify(&peter), Err(NoteError::BadSignature { .. })),
            "{note}"
        );
    };
    // The text changed by one character.
    bad(&go_note().replace("cryptography", "cryptographY"));
    // Four characters inserted into the signature (Go's "invalid signature" case).
    bad(&format!(
        "{TEXT}\n{}ABCD{}",
        &PETER_SIG[..60],
        &PETER_SIG[60..]
    ));
    // One bit of the signature flipped.
    let note = SignedNote::parse(go_note().as_bytes()).unwrap();
    let mut bytes = note.signatures()[0].key_id().0.to_vec();
    bytes.extend_from_slice(note.signatures()[0].signature());
    bytes[20] ^= 1;
    bad(&format!(
        "{TEXT}\n\u{2014} PeterNeumann {}\n",
        BASE64.encode(&bytes)
    ));
    // A good and a bad signature by the same key: the note is suspect.
    bad(&format!(
        "{TEXT}\n{PETER_SIG}{}ABCD{}",
        &PETER_SIG[..60],
        &PETER_SIG[60..]
    ));
    // The same good signature twice is only a repetition.
    let twice = SignedNote::parse(format!("{TEXT}\n{PETER_SIG}{PETER_SIG}").as_bytes()).unwrap();
    assert_eq!(twice.verify(&peter), Ok(()));
}

/// Go's `TestNewVerifier`: every proper substring and every single-byte change of a verifier
/// key is refused.
#[test]
fn verifier_keys_are_read_strictly() {
    for vkey in [PETER_VKEY, ENOCH_VKEY, SUMDB_VKEY] {
        let verifier = NoteVerifier::from_vkey(vkey).unwrap();
        assert_eq!(verifier.to_vkey(), vkey);
        assert_eq!(
            NoteVerifier::new(verifier.name(), &verifier.public_key()),
            Ok(verifier)
        );
        let b = vkey.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if i != 0 || j != b.len() {
                    assert!(
                        NoteVerifier::from_vkey(&vkey[i..j]).is_err(),
                        "{}",
                        &vkey[i..j]
                    );
                }
            }
        }
        for i in 0..b.len() {
            let mut changed = b.to_vec();
            changed[i] += 1;
            let changed = String::from_utf8(changed).unwrap();
            assert!(NoteVerifier::from_vkey(&changed).is_err(), "{changed}");
        }
    }
    // Go's wrong-length and unknown-algorithm keys, each with a key ID adjusted to match.
    assert_eq!(
        NoteVerifier::from_vkey(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        ),
        Err(NoteError::MalformedVerifierKey)
    );
    assert_eq!(
        NoteVerifier::from_vkey(
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        ),
        Err(NoteError::UnsupportedKeyType(0x65))
    );
    assert_eq!(
        NoteVerifier::from_vkey(
            "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        ),
        Err(NoteError::MalformedVerifierKey),
        "the key id is lowercase hex"
    );
    assert!(matches!(
        NoteVerifier::from_vkey(
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        ),
        Err(NoteError::KeyIdMismatch { .. })
    ));
    // The identity point is a valid encoding but a weak key.
    let mut identity = [0; 32];
    identity[0] = 1;
    assert_eq!(
        NoteVerifier::new("weak", &identity),
        Err(NoteError::InvalidPublicKey)
    );
    for name in ["", "a+b", "bad name", "tab\there", "nbsp\u{a0}", "ctl\u{1}"] {
        assert_eq!(
            NoteVerifier::new(name, &peter().verifier().public_key()),
            Err(NoteError::InvalidKeyName),
            "{name:?}"
        );
        assert!(NoteSigner::from_seed(name, &[1; 32]).is_err(), "{name:?}");
    }
}

/// Go's malformed-message table, and the other ways a note can be malformed.
#[test]
fn malformed_notes_are_refused() {
    let cases: Vec<(Vec<u8>, NoteError)> = vec![
        (TEXT.into(), NoteError::MissingSignatures),
        (format!("{TEXT}\n").into(), NoteError::MissingSignatures),
        (
            format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]).into(),
            NoteError::MissingFinalNewline,
        ),
        (format!("\x01{TEXT}\n{PETER_SIG}").into(), NoteError::ControlCharacter),
        (format!("{TEXT}\r\n{PETER_SIG}").into(), NoteError::ControlCharacter),
        (
            [b"\xff".as_slice(), go_note().as_bytes()].concat(),
            NoteError::NotUtf8,
        ),
        (
            format!(
                "{TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
            )
            .into(),
            NoteError::MalformedSignature,
        ),
        (
            format!("{TEXT}\n{PETER_SIG}Unexpected line.\n").into(),
            NoteError::MalformedSignatureLine,
        ),
        (
            format!("{TEXT}\n{}", PETER_SIG.replace('\u{2014}', "-")).into(),
            NoteError::MalformedSignatureLine,
        ),
        (
            format!("{TEXT}\n{}", PETER_SIG.replacen(' ', "", 1)).into(),
            NoteError::MalformedSignatureLine,
        ),
        (
            format!("{TEXT}\n\u{2014} PeterNeumann\n").into(),
            NoteError::MalformedSignatureLine,
        ),
        (
            format!("{TEXT}\n{}", PETER_SIG.replace("PeterNeumann", "Peter+Neumann")).into(),
            NoteError::InvalidKeyName,
        ),
        (
            format!("{TEXT}\n{}", PETER_SIG.replace("PeterNeumann", "")).into(),
            NoteError::InvalidKeyName,
        ),
        (
            format!("{TEXT}\n{}", PETER_SIG.replace(" x08", "  x08")).into(),
            NoteError::MalformedSignature,
        ),
        (
            format!("{TEXT}\n{}", PETER_SIG.replace("AM=\n", "AM\n")).into(),
            NoteError::MalformedSignature,
        ),
        // Four bytes of key ID and no signature.
        (
            format!("{TEXT}\n\u{2014} PeterNeumann x08gow==\n").into(),
            NoteError::MalformedSignature,
        ),
        (
            format!("{TEXT}\n\n{PETER_SIG}\n").into(),
            NoteError::MissingSignatures,
        ),
        (Vec::new(), NoteError::MissingSignatures),
    ];
    for (input, expected) in cases {
        assert_eq!(
            SignedNote::parse(&input),
            Err(expected),
            "{}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn size_and_signature_limits() {
    let at_limit = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES));
    assert_eq!(
        SignedNote::parse(at_limit.as_bytes())
            .unwrap()
            .signatures()
            .len(),
        MAX_SIGNATURES
    );
    let over = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES + 1));
    assert_eq!(
        SignedNote::parse(over.as_bytes()),
        Err(NoteError::TooManySignatures)
    );

    // The size limit applies to the bytes before anything else is looked at.
    let filler = "x".repeat(MAX_NOTE_SIZE);
    let huge = format!("{filler}\n\n{PETER_SIG}");
    assert_eq!(
        SignedNote::parse(huge.as_bytes()),
        Err(NoteError::TooLarge(huge.len()))
    );
    let mut invalid = vec![0xff; MAX_NOTE_SIZE + 1];
    invalid[0] = b'a';
    assert_eq!(
        SignedNote::parse(&invalid),
        Err(NoteError::TooLarge(MAX_NOTE_SIZE + 1))
    );
    // Exactly at the limit is fine, and signing refuses to produce what parsing would refuse.
    let room = MAX_NOTE_SIZE - 1 - PETER_SIG.len();
    let text = format!("{}\n", "x".repeat(room - 1));
    let note = SignedNote::sign(text.clone(), &peter()).unwrap();
    assert_eq!(note.to_string().len(), MAX_NOTE_SIZE);
    assert_eq!(SignedNote::parse(note.to_string().as_bytes()), Ok(note));
    let text = format!("x{text}");
    assert_eq!(
        SignedNote::sign(text, &peter()),
        Err(NoteError::TooLarge(MAX_NOTE_SIZE + 1))
    );
}

#[test]
fn signing_rules() {
    let signer = peter();
    assert_eq!(
        SignedNote::sign("no newline", &signer),
        Err(NoteError::TextNotTerminated)
    );
    assert_eq!(
        SignedNote::sign("", &signer),
        Err(NoteError::TextNotTerminated)
    );
    assert_eq!(
        SignedNote::sign("a\tb\n", &signer),
        Err(NoteError::ControlCharacter)
    );
    // Blank lines in the text, even at its end, survive the round trip.
    for text in ["\n", "a\n\nb\n", "a\n\n", "\u{2014} not a signature\n\n"] {
        let note = SignedNote::sign(text, &signer).unwrap();
        let parsed = SignedNote::parse(note.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.text(), text);
        assert_eq!(parsed.verify(&signer.verifier()), Ok(()));
    }

    // Re-signing replaces the signer's line; cosigners add theirs.
    let mut note = SignedNote::sign(TEXT, &signer).unwrap();
    note.add_signature(&signer).unwrap();
    assert_eq!(note.signatures().len(), 1);
    let cosigners: Vec<NoteSigner> = (1..MAX_SIGNATURES as u8)
        .map(|i| NoteSigner::from_seed(&format!("witness.example/{i}"), &[i; 32]).unwrap())
        .collect();
    for cosigner in &cosigners {
        note.add_signature(cosigner).unwrap();
    }
    assert_eq!(note.signatures().len(), MAX_SIGNATURES);
    let extra = NoteSigner::from_seed("one-too-many", &[0xee; 32]).unwrap();
    assert_eq!(
        note.add_signature(&extra),
        Err(NoteError::TooManySignatures)
    );
    assert_eq!(note.signatures().len(), MAX_SIGNATURES);
    let parsed = SignedNote::parse(note.to_string().as_bytes()).unwrap();
    for cosigner in &cosigners {
        assert_eq!(parsed.verify(&cosigner.verifier()), Ok(()));
    }
    assert_eq!(parsed.verify(&signer.verifier()), Ok(()));

    // The secret key never shows in debug output.
    let shown = format!("{signer:?}");
    assert!(shown.contains("PeterNeumann"), "{shown}");
    assert!(!shown.contains(&hex::encode(peter_seed())), "{shown}");
    assert!(!shown.contains(&format!("{:?}", peter_seed())), "{shown}");
}

#[test]
fn the_go_checksum_database_checkpoint_verifies() {
    let verifier = NoteVerifier::from_vkey(SUMDB_VKEY).unwrap();
    let checkpoint = Checkpoint::open(SUMDB_CHECKPOINT.as_bytes(), &verifier).unwrap();
    assert_eq!(checkpoint.origin(), "go.sum database tree");
    assert_eq!(checkpoint.size(), 30_055_305);
    assert_eq!(
        checkpoint.root().to_base64(),
        "mXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM="
    );
    assert!(checkpoint.extensions().is_empty());
    let note = SignedNote::parse(SUMDB_CHECKPOINT.as_bytes()).unwrap();
    assert_eq!(checkpoint.to_string(), note.text());
    assert_eq!(note.to_string(), SUMDB_CHECKPOINT);

    // One more leaf, or another root, and the signature no longer holds.
    let grown = SUMDB_CHECKPOINT.replace("30055305", "30055306");
    assert!(matches!(
        Checkpoint::open(grown.as_bytes(), &verifier),
        Err(CheckpointError::Note(NoteError::BadSignature { .. }))
    ));
    let other_root = SUMDB_CHECKPOINT.replace("mXfg", "mXfh");
    assert!(Checkpoint::open(other_root.as_bytes(), &verifier).is_err());
    // Another key is not the log's.
    let peter = NoteVerifier::from_vkey(PETER_VKEY).unwrap();
    assert!(matches!(
        Checkpoint::open(SUMDB_CHECKPOINT.as_bytes(), &peter),
        Err(CheckpointError::Note(NoteError::NotSigned { .. }))
    ));
}

/// sigsum-go's `TestCheckpointSigned`: a checkpoint signed with the Ed25519 seed `17, 0, ...`
/// under a key named after the hash of the public key.
#[test]
fn the_sigsum_checkpoint_is_reproduced() {
    let mut seed = [0; 32];
    seed[0] = 17;
    let probe = NoteSigner::from_seed("probe", &seed).unwrap();
    let key_hash = hex::encode(sha2::Sha256::digest(probe.verifier().public_key()));
    let origin = format!("sigsum.org/v1/tree/{key_hash}");
    assert_eq!(
        origin,
        "sigsum.org/v1/tree/e796172b92befd62d9dc67e41c2f5bc9d3100a3023b20b1ca40288dd1c679e69"
    );
    let signer = NoteSigner::from_seed(&origin, &seed).unwrap();
    let root = Hash::from_base64("HA5HAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
    let checkpoint = Checkpoint::new(origin.clone(), 10, root).unwrap();
    let expected = format!(
        "{origin}\n10\nHA5HAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u{2014} {origin} gJ2ho0n8F8olcerUF1FFdv235A/5as/coWrpLrtE7ovMeP5whgwouYExowG/lTznxu6OUGjjt5yJQ6bXtTcf718MqAQ=\n"
    );
    assert_eq!(checkpoint.sign(&signer).unwrap().to_string(), expected);
    assert_eq!(
        Checkpoint::open(expected.as_bytes(), &signer.verifier()),
        Ok(checkpoint)
    );
}

#[test]
fn checkpoints_round_trip() {
    let signer = NoteSigner::from_seed("custos.example/audit", &[42; 32]).unwrap();
    let verifier = NoteVerifier::from_vkey(&signer.verifier().to_vkey()).unwrap();
    let root = custos_core::merkle::leaf_hash(b"first event");
    for checkpoint in [
        Checkpoint::new("custos.example/audit", 0, EMPTY_ROOT).unwrap(),
        Checkpoint::new("custos.example/audit", 1, root).unwrap(),
        Checkpoint::new("custos.example/audit", u64::MAX, root)
            .unwrap()
            .with_extension("Timestamp: 1700000000")
            .unwrap()
            .with_extension("— looks like a signature but is not")
            .unwrap(),
    ] {
        let text = checkpoint.to_string();
        assert_eq!(Checkpoint::parse(&text), Ok(checkpoint.clone()));
        let note = checkpoint.sign(&signer).unwrap();
        assert_eq!(note.text(), text);
        let wire = note.to_string();
        assert_eq!(
            Checkpoint::open(wire.as_bytes(), &verifier),
            Ok(checkpoint.clone())
        );
        // Any change to the body breaks the signature.
        let moved = wire.replacen("custos", "kustos", 1);
        assert!(Checkpoint::open(moved.as_bytes(), &verifier).is_err());
    }
    let empty = Checkpoint::new("custos.example/audit", 0, EMPTY_ROOT).unwrap();
    assert_eq!(
        empty.to_string(),
        "custos.example/audit\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    );
}

#[test]
fn the_c2sp_example_checkpoint_parses() {
    let note = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";
    let note = SignedNote::parse(note.as_bytes()).unwrap();
    let checkpoint = Checkpoint::parse(note.text()).unwrap();
    assert_eq!(checkpoint.origin(), "example.com/behind-the-sofa");
    assert_eq!(checkpoint.size(), 20_852_163);
    assert_eq!(
        checkpoint.root().to_hex(),
        hex::encode(
            BASE64
                .decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
                .unwrap()
        )
    );
    assert_eq!(
        note.signatures()[0].key_id(),
        KeyId([0x03, 0x3d, 0xe0, 0xae])
    );
}

#[test]
fn malformed_checkpoints_are_refused() {
    let root = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    let cases = [
        ("o\n1\n".to_owned(), CheckpointError::MissingLines),
        (format!("o\n1\n{root}"), CheckpointError::TextNotTerminated),
        (format!("\n1\n{root}\n"), CheckpointError::InvalidOrigin),
        (format!("o\r\n1\n{root}\n"), CheckpointError::InvalidOrigin),
        (format!("o\n01\n{root}\n"), CheckpointError::InvalidSize),
        (format!("o\n00\n{root}\n"), CheckpointError::InvalidSize),
        (format!("o\n+1\n{root}\n"), CheckpointError::InvalidSize),
        (format!("o\n-1\n{root}\n"), CheckpointError::InvalidSize),
        (format!("o\n 1\n{root}\n"), CheckpointError::InvalidSize),
        (format!("o\n1 \n{root}\n"), CheckpointError::InvalidSize),
        (format!("o\n\n{root}\n"), CheckpointError::InvalidSize),
        (format!("o\n١\n{root}\n"), CheckpointError::InvalidSize),
        (
            format!("o\n18446744073709551616\n{root}\n"),
            CheckpointError::InvalidSize,
        ),
        ("o\n1\n\n".to_owned(), CheckpointError::InvalidRootHash),
        ("o\n1\nAAAA\n".to_owned(), CheckpointError::InvalidRootHash),
        (
            format!("o\n1\n{}\n", root.trim_end_matches('=')),
            CheckpointError::InvalidRootHash,
        ),
        (
            format!("o\n1\n{}\n", hex::encode([0; 32])),
            CheckpointError::InvalidRootHash,
        ),
        (
            format!("o\n1\n{root}\n\next\n"),
            CheckpointError::InvalidExtension,
        ),
        (
            format!("o\n1\n{root}\nok\n\n"),
            CheckpointError::InvalidExtension,
        ),
        (
            format!("o\n1\n{root}\nbad\u{1b}\n"),
            CheckpointError::InvalidExtension,
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(Checkpoint::parse(&text), Err(expected), "{text:?}");
    }
    assert_eq!(
        Checkpoint::parse(&format!("o\n18446744073709551615\n{root}\n")).map(|c| c.size()),
        Ok(u64::MAX)
    );
    assert_eq!(
        Checkpoint::new("", 0, EMPTY_ROOT),
        Err(CheckpointError::InvalidOrigin)
    );
    assert_eq!(
        Checkpoint::new("a\nb", 0, EMPTY_ROOT),
        Err(CheckpointError::InvalidOrigin)
    );
    assert_eq!(
        Checkpoint::new("o", 0, EMPTY_ROOT)
            .unwrap()
            .with_extension(""),
        Err(CheckpointError::InvalidExtension)
    );
    // A signed note whose text is no checkpoint.
    let signer = peter();
    let note = SignedNote::sign("just one line\n", &signer)
        .unwrap()
        .to_string();
    assert_eq!(
        Checkpoint::open(note.as_bytes(), &signer.verifier()),
        Err(CheckpointError::MissingLines)
    );
}

fn note_text() -> impl Strategy<Value = String> {
    proptest::collection::vec("[^\\x00-\\x1f]{0,12}", 1..6).prop_map(|lines| {
        let mut text = lines.join("\n");
        text.push('\n');
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any valid text signed by a few keys reads back unchanged and verifies with each key.
    #[test]
    fn signed_notes_round_trip(text in note_text(), seeds in proptest::collection::vec(any::<[u8; 32]>(), 1..4)) {
        let signers: Vec<NoteSigner> = seeds
            .iter()
            .enumerate()
            .map(|(i, seed)| NoteSigner::from_seed(&format!("log{i}.example"), seed).unwrap())
            .collect();
        let mut note = SignedNote::sign(text.clone(), &signers[0]).unwrap();
        for signer in &signers[1..] {
            note.add_signature(signer).unwrap();
        }
        let wire = note.to_string();
        let parsed = SignedNote::parse(wire.as_bytes()).unwrap();
        prop_assert_eq!(&parsed, &note);
        prop_assert_eq!(parsed.text(), text.as_str());
        for signer in &signers {
            prop_assert_eq!(parsed.verify(&signer.verifier()), Ok(()));
        }
    }

    /// Parsing arbitrary input never panics, and whatever parses is in canonical form: writing
    /// it out gives back the input byte for byte.
    #[test]
    fn parsing_arbitrary_notes_is_canonical(input in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(note) = SignedNote::parse(&input) {
            let wire = note.to_string();
            prop_assert_eq!(wire.as_bytes(), input.as_slice());
        }
    }

    /// The same with input shaped like a note, so that parsing goes deep.
    #[test]
    fn parsing_note_like_text_is_canonical(
        text in note_text(),
        lines in proptest::collection::vec("(\u{2014} |- |)[a-z.+ ]{0,6}( |)[A-Za-z0-9+/=]{0,12}", 0..4),
        tail in "\n?",
    ) {
        let input = format!("{text}\n{}{tail}", lines.join("\n"));
        if let Ok(note) = SignedNote::parse(input.as_bytes()) {
            prop_assert_eq!(note.to_string(), input);
            prop_assert!(!note.signatures().is_empty());
        }
    }

    #[test]
    fn checkpoints_round_trip_through_text(
        origin in "[^\\x00-\\x1f]{1,20}",
        size in any::<u64>(),
        root in any::<[u8; 32]>(),
        extensions in proptest::collection::vec("[^\\x00-\\x1f]{1,10}", 0..3),
    ) {
        let mut checkpoint = Checkpoint::new(origin, size, Hash(root)).unwrap();
        for extension in extensions {
            checkpoint = checkpoint.with_extension(extension).unwrap();
        }
        prop_assert_eq!(Checkpoint::parse(&checkpoint.to_string()), Ok(checkpoint));
    }

    #[test]
    fn parsing_arbitrary_checkpoints_is_canonical(text in "[a-z0-9\n]{0,4}\n[0-9+ -]{0,22}\n[A-Za-z0-9+/=]{0,46}\n([a-z]{0,3}\n){0,2}") {
        if let Ok(checkpoint) = Checkpoint::parse(&text) {
            prop_assert_eq!(checkpoint.to_string(), text);
        }
    }

    #[test]
    fn parsing_arbitrary_verifier_keys_never_panics(vkey in "[A-Za-z.]{0,6}\\+[0-9a-fA-F]{0,9}\\+[A-Za-z0-9+/=]{0,46}|.{0,40}") {
        if let Ok(verifier) = NoteVerifier::from_vkey(&vkey) {
            prop_assert_eq!(verifier.to_vkey(), vkey);
        }
    }
}
