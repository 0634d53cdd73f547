//! Classifies arbitrary text as a Custos secret. Nothing may panic, and a positive answer must
//! agree with the documented shape. Inputs of 32 bytes or more also seed freshly minted
//! secrets, which must classify as their kind.

#![no_main]

use custos_core::token::{SecretKind, classify, hint, mint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(random) = data.first_chunk::<32>() {
        for kind in SecretKind::ALL {
            let secret = mint(kind, random);
            assert_eq!(classify(&secret), Ok(kind), "{secret}");
        }
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(kind) = classify(text) {
        assert!(text.starts_with(kind.prefix()));
        assert_eq!(text.len(), kind.prefix().len() + 43 + 6);
        assert!(
            text[kind.prefix().len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );
    }
    let _ = hint(text);
});
