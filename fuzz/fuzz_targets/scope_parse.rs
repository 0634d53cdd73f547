//! Parses arbitrary UTF-8 as a grant and as a JSON scope. Nothing may panic, and whatever
//! parses must survive a round trip through its wire form unchanged.

#![no_main]

use custos_core::{Grant, Scope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(grant) = Grant::parse(text) {
        let canonical = grant.to_string();
        let again = Grant::parse(&canonical).expect("a displayed grant parses");
        assert_eq!(
            again, grant,
            "text round trip of {text:?} via {canonical:?}"
        );
        assert_eq!(again.to_string(), canonical);
        assert!(grant.is_subset_of(&grant));

        let json = serde_json::to_string(&grant).expect("a grant serialises");
        let from_json: Grant = serde_json::from_str(&json).expect("a serialised grant parses");
        assert_eq!(from_json, grant);
    }

    if let Ok(scope) = serde_json::from_str::<Scope>(text) {
        let json = serde_json::to_string(&scope).expect("a scope serialises");
        let again: Scope = serde_json::from_str(&json).expect("a serialised scope parses");
        assert_eq!(again, scope, "JSON round trip of {text:?} via {json}");
        assert_eq!(Scope::parse(&scope.to_strings()).as_ref(), Ok(&scope));
        assert!(scope.is_subset_of(&scope));
        assert_eq!(scope.excess_over(&scope).count(), 0);
    }
});
