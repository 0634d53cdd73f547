//! Decodes arbitrary bytes as a canonical audit event. Nothing may panic, and whatever decodes
//! must be the one encoding of the event it decodes to.

#![no_main]

use custos_core::audit;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = audit::decode(data) {
        assert_eq!(audit::encode(&event), data, "canonical encoding");
    }
});
