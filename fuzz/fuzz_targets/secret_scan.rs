//! Scans arbitrary bytes for secrets, as `custos scan` does with every file it reads. Nothing
//! may panic, every match must lie within the input, come in order, and carry the digest of
//! exactly the bytes it points at; a Custos key the detector reports must classify.

#![no_main]

use std::sync::LazyLock;

use custos_core::discovery::secrets::{Detector, secret_sha256};
use custos_core::token::classify;
use libfuzzer_sys::fuzz_target;

static DETECTOR: LazyLock<Detector> = LazyLock::new(Detector::new);

fuzz_target!(|data: &[u8]| {
    let mut last = 0;
    for found in DETECTOR.scan(data) {
        assert!(found.range.start < found.range.end && found.range.end <= data.len());
        assert!(found.range.start >= last);
        last = found.range.start;
        let secret = &data[found.range.clone()];
        assert_eq!(found.secret_sha256, secret_sha256(secret));
        assert!(found.line >= 1 && found.column >= 1);
        if found.kind.is_custos() {
            let text = std::str::from_utf8(secret).expect("a custos key is ascii");
            assert!(classify(text).is_ok());
        }
    }
});
