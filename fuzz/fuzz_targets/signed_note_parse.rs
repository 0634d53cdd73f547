//! Parses arbitrary bytes as a signed note, a checkpoint body and a verifier key. Nothing may
//! panic; whatever parses must be in canonical form (written back out, it is the input byte
//! for byte); and checking signatures of a parsed note with a fixed key must answer, not panic.

#![no_main]

use custos_core::checkpoint::{Checkpoint, NoteSigner, NoteVerifier, SignedNote};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(note) = SignedNote::parse(data) {
        assert_eq!(note.to_string().as_bytes(), data, "canonical note");
        assert!(!note.signatures().is_empty());
        let verifier = NoteSigner::from_seed("PeterNeumann", &[7; 32])
            .expect("a valid key name")
            .verifier();
        let _ = note.verify(&verifier);
        if let Ok(checkpoint) = Checkpoint::parse(note.text()) {
            assert_eq!(checkpoint.to_string(), note.text(), "canonical checkpoint");
        }
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(checkpoint) = Checkpoint::parse(text) {
        assert_eq!(checkpoint.to_string(), text, "canonical checkpoint");
    }
    if let Ok(verifier) = NoteVerifier::from_vkey(text) {
        assert_eq!(verifier.to_vkey(), text, "canonical verifier key");
    }
});
