//! Integration tests of custos-core's public contracts: property tests of the scope grammar
//! and the secret format, and snapshots of their wire forms.
//!
//! One binary for the whole crate (see `[[test]] name = "it"` in Cargo.toml), so the crate and
//! its dev-dependencies are linked once.

mod audit;
mod baseline;
mod checkpoint;
mod cloudtrail_replay;
mod decision;
mod discovery;
mod guardrails;
mod jose;
mod merkle;
mod secrets_scan;
mod secrets_windows;

/// Generators of realistic grants, scopes and actions. Services and operations come from small
/// alphabets and resource text from a handful of characters, so that collisions, containments
/// and near misses are common rather than astronomically rare.
mod strategies {
    use custos_core::{Action, Grant, Scope};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::{select, subsequence};

    pub const SERVICES: &[&str] = &["crm", "mail", "s3", "db.main", "x-1"];
    pub const OPERATIONS: &[&str] = &["*", "read", "write", "get", "list/all"];
    /// What an action may ask to do; `*` here is a literal operation name, not a wildcard.
    pub const ACTION_OPERATIONS: &[&str] = &["read", "write", "get", "list/all", "delete", "*"];
    const REALISTIC_GLOBS: &[&str] = &[
        "customers/*",
        "customers/42",
        "arn:aws:s3:::bucket/*",
        "arn:aws:s3:::*/logs/*",
        "*/logs/*",
        "a**b",
        "*:*",
        "urn:x:*:a",
    ];
    const REALISTIC_RESOURCES: &[&str] = &[
        "customers/42",
        "arn:aws:s3:::bucket/logs/1",
        "urn:x:y:a",
        "a/b:c",
    ];

    pub fn service() -> impl Strategy<Value = &'static str> {
        select(SERVICES)
    }

    /// A resource glob: mostly a short mix of literals, `/`, `:` and (often several) `*`.
    pub fn resource_glob() -> impl Strategy<Value = String> {
        prop_oneof![
            5 => "[ab/:*]{1,10}",
            2 => select(REALISTIC_GLOBS).prop_map(str::to_owned),
            1 => "[a-z0-9/:._*-]{1,24}",
        ]
    }

    /// Concrete resource text as an action carries it. It may contain a literal `*`.
    pub fn resource_text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[ab/:]{0,10}",
            1 => "[ab/:*]{0,10}",
            1 => select(REALISTIC_RESOURCES).prop_map(str::to_owned),
        ]
    }

    pub fn grant() -> impl Strategy<Value = Grant> {
        (
            service(),
            select(OPERATIONS),
            proptest::option::weighted(0.75, resource_glob()),
        )
            .prop_map(|(service, operation, resource)| {
                Grant::new(service, operation, resource.as_deref())
                    .expect("the strategy only builds valid grants")
            })
    }

    /// A grant that is syntactically at least as wide as `g`: the operation may become `*`, the
    /// resource may be dropped, any of its characters may become `*` and `*`s may be inserted.
    /// Each of these edits can only widen the set of matched resources.
    pub fn generalize(g: Grant) -> impl Strategy<Value = Grant> {
        let len = g.resource().map_or(0, str::len);
        (
            prop::bool::weighted(0.3),
            prop::bool::weighted(0.1),
            vec(prop::bool::weighted(0.25), len),
            vec(prop::bool::weighted(0.15), len + 1),
        )
            .prop_map(move |(widen_operation, drop_resource, replace, insert)| {
                let operation = if widen_operation { "*" } else { g.operation() };
                let resource = match g.resource() {
                    Some(glob) if !drop_resource => {
                        let mut wider = String::new();
                        // Resource globs are ASCII, so chars and bytes line up.
                        for (i, c) in glob.chars().enumerate() {
                            if insert[i] {
                                wider.push('*');
                            }
                            wider.push(if replace[i] { '*' } else { c });
                        }
                        if insert[len] {
                            wider.push('*');
                        }
                        Some(wider)
                    }
                    _ => None,
                };
                Grant::new(g.service(), operation, resource.as_deref())
                    .expect("widening a valid grant keeps it valid")
            })
    }

    /// Two grants, either independent (same small alphabets, so they often overlap) or the
    /// second a generalisation of the first.
    pub fn grant_pair() -> impl Strategy<Value = (Grant, Grant)> {
        prop_oneof![
            (grant(), grant()),
            grant().prop_flat_map(|a| (Just(a.clone()), generalize(a))),
            grant().prop_flat_map(|b| (generalize(b.clone()), Just(b))),
        ]
    }

    /// Three grants, each step either a generalisation of the previous one or independent.
    pub fn grant_chain() -> impl Strategy<Value = (Grant, Grant, Grant)> {
        grant()
            .prop_flat_map(|a| {
                let b = prop_oneof![3 => generalize(a.clone()), 1 => grant()];
                (Just(a), b)
            })
            .prop_flat_map(|(a, b)| {
                let c = prop_oneof![3 => generalize(b.clone()), 1 => grant()];
                (Just(a), Just(b), c)
            })
    }

    pub fn scope() -> impl Strategy<Value = Scope> {
        vec(grant(), 0..6).prop_map(|grants| Scope::new(grants).expect("few grants"))
    }

    /// A scope at least as wide as `s`: each grant generalised, plus a few unrelated grants.
    pub fn generalize_scope(s: Scope) -> impl Strategy<Value = Scope> {
        let wider: Vec<_> = s.grants().iter().cloned().map(generalize).collect();
        (wider, vec(grant(), 0..3)).prop_map(|(mut grants, extra)| {
            grants.extend(extra);
            Scope::new(grants).expect("few grants")
        })
    }

    /// Two scopes: independent, the second wider than the first, or the first a subset of the
    /// second's grants.
    pub fn scope_pair() -> impl Strategy<Value = (Scope, Scope)> {
        prop_oneof![
            (scope(), scope()),
            scope().prop_flat_map(|s| (Just(s.clone()), generalize_scope(s))),
            scope().prop_flat_map(|ceiling| {
                let grants = ceiling.grants().to_vec();
                let len = grants.len();
                let sub = subsequence(grants, 0..=len)
                    .prop_map(|grants| Scope::new(grants).expect("few grants"));
                (sub, Just(ceiling))
            }),
        ]
    }

    pub fn scope_chain() -> impl Strategy<Value = (Scope, Scope, Scope)> {
        scope()
            .prop_flat_map(|a| {
                let b = prop_oneof![3 => generalize_scope(a.clone()), 1 => scope()];
                (Just(a), b)
            })
            .prop_flat_map(|(a, b)| {
                let c = prop_oneof![3 => generalize_scope(b.clone()), 1 => scope()];
                (Just(a), Just(b), c)
            })
    }

    pub fn action() -> impl Strategy<Value = Action> {
        (
            service(),
            select(ACTION_OPERATIONS),
            proptest::option::of(resource_text()),
        )
            .prop_map(|(service, operation, resource)| Action {
                service: service.to_owned(),
                operation: operation.to_owned(),
                resource,
            })
    }

    /// Replaces each `*` of `glob` with the next fill.
    pub fn instantiate(glob: &str, fills: &[String]) -> String {
        let mut fills = fills.iter();
        let mut out = String::new();
        for c in glob.chars() {
            if c == '*' {
                out.push_str(fills.next().map_or("", String::as_str));
            } else {
                out.push(c);
            }
        }
        out
    }

    /// An action `g` covers by construction: its service, its operation (any, if `*`), and its
    /// resource glob with every `*` replaced by random text (which may itself contain `*`).
    pub fn covered_action(g: &Grant) -> BoxedStrategy<Action> {
        let service = g.service().to_owned();
        let operation = if g.operation() == "*" {
            select(ACTION_OPERATIONS).prop_map(str::to_owned).boxed()
        } else {
            Just(g.operation().to_owned()).boxed()
        };
        let resource = match g.resource() {
            None => proptest::option::of(resource_text()).boxed(),
            Some(glob) => {
                let glob = glob.to_owned();
                let stars = glob.matches('*').count();
                vec("[ab/:*]{0,4}", stars)
                    .prop_map(move |fills| Some(instantiate(&glob, &fills)))
                    .boxed()
            }
        };
        (operation, resource)
            .prop_map(move |(operation, resource)| Action {
                service: service.clone(),
                operation,
                resource,
            })
            .boxed()
    }

    /// Actions biased toward those `g` covers, with unrelated ones mixed in.
    pub fn actions_near(g: &Grant) -> impl Strategy<Value = Vec<Action>> + use<> {
        vec(
            prop_oneof![3 => covered_action(g), 1 => action().boxed()],
            1..10,
        )
    }

    /// Actions biased toward those some grant of `s` covers.
    pub fn actions_near_scope(s: &Scope) -> BoxedStrategy<Vec<Action>> {
        if s.is_empty() {
            return vec(action(), 1..10).boxed();
        }
        let grants = s.grants().to_vec();
        select(grants).prop_flat_map(|g| actions_near(&g)).boxed()
    }
}

mod grant_props {
    use custos_core::Grant;
    use proptest::prelude::*;

    use crate::strategies::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn text_form_round_trips(g in grant()) {
            let text = g.to_string();
            prop_assert_eq!(Grant::parse(&text), Ok(g.clone()));
            prop_assert_eq!(text.parse::<Grant>(), Ok(g));
        }

        #[test]
        fn json_form_round_trips(g in grant()) {
            let json = serde_json::to_string(&g).unwrap();
            prop_assert_eq!(&json, &serde_json::to_string(&g.to_string()).unwrap());
            prop_assert_eq!(serde_json::from_str::<Grant>(&json).unwrap(), g.clone());
            // The object form reads back to the same grant.
            let object = serde_json::json!({
                "service": g.service(),
                "operation": g.operation(),
                "resource": g.resource(),
            });
            prop_assert_eq!(serde_json::from_value::<Grant>(object).unwrap(), g);
        }

        #[test]
        fn subset_is_reflexive(g in grant()) {
            prop_assert!(g.is_subset_of(&g));
        }

        #[test]
        fn subset_is_transitive((a, b, c) in grant_chain()) {
            if a.is_subset_of(&b) && b.is_subset_of(&c) {
                prop_assert!(a.is_subset_of(&c), "{} <= {} <= {} but not {} <= {}", a, b, c, a, c);
            }
        }

        /// `generalize` only widens, so the (sound but incomplete) subset check must at least
        /// recognise these purely syntactic widenings.
        #[test]
        fn subset_recognises_syntactic_widening(
            (a, b) in grant().prop_flat_map(|a| (Just(a.clone()), generalize(a)))
        ) {
            prop_assert!(a.is_subset_of(&b), "{} should be within {}", a, b);
        }

        #[test]
        fn a_grant_covers_its_instantiations(
            (g, actions) in grant().prop_flat_map(|g| {
                let actions = proptest::collection::vec(covered_action(&g), 1..10);
                (Just(g), actions)
            })
        ) {
            for action in &actions {
                prop_assert!(g.covers(action), "{} should cover {:?}", g, action);
            }
        }

        /// Soundness: `a <= b` means that every action `a` allows, `b` allows too.
        #[test]
        fn subset_is_sound(
            (a, b, actions) in grant_pair().prop_flat_map(|(a, b)| {
                let actions = actions_near(&a);
                (Just(a), Just(b), actions)
            })
        ) {
            if a.is_subset_of(&b) {
                for action in actions.iter().filter(|action| a.covers(action)) {
                    prop_assert!(b.covers(action), "{} <= {} but only the first covers {:?}", a, b, action);
                }
            }
        }

        /// The converse on concrete resources: a glob-free grant is within `b` exactly when `b`
        /// covers the single action it describes.
        #[test]
        fn subset_is_exact_for_literal_grants(
            (a, b) in grant_pair(),
        ) {
            let literal = a.operation() != "*"
                && a.resource().is_some_and(|r| !r.contains('*'));
            if literal {
                let action = custos_core::Action {
                    service: a.service().to_owned(),
                    operation: a.operation().to_owned(),
                    resource: a.resource().map(str::to_owned),
                };
                prop_assert_eq!(a.is_subset_of(&b), b.covers(&action), "{} vs {}", a, b);
            }
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in any::<String>()) {
            check_parse(&text)?;
        }

        #[test]
        fn parsing_grammar_like_text_never_panics(
            text in "[a-zA-Z0-9:*/._ -]{0,24}|(crm|mail|s3)(:(\\*|read|[a-z/]{0,4})(:[ab/:*]{0,8})?)?",
        ) {
            check_parse(&text)?;
        }
    }

    /// Whatever `text` is, parsing returns; a grant it yields re-serialises to a canonical text
    /// that parses to the same grant and serialises to itself.
    fn check_parse(text: &str) -> Result<(), TestCaseError> {
        match Grant::parse(text) {
            Ok(g) => {
                let canonical = g.to_string();
                prop_assert_eq!(Grant::parse(&canonical), Ok(g.clone()), "from {:?}", text);
                prop_assert_eq!(Grant::parse(&canonical).unwrap().to_string(), canonical);
                prop_assert!(g.is_subset_of(&g));
            }
            Err(custos_core::ScopeError::Empty) => prop_assert!(text.is_empty()),
            Err(custos_core::ScopeError::MissingOperation(t)) => {
                prop_assert!(!text.contains(':'));
                prop_assert_eq!(t, text);
            }
            Err(_) => prop_assert!(!text.is_empty() && text.contains(':')),
        }
        Ok(())
    }
}

mod scope_props {
    use custos_core::{Grant, Scope, ScopeError, scope::MAX_GRANTS};
    use proptest::prelude::*;

    use crate::strategies::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn json_round_trips(s in scope()) {
            let json = serde_json::to_string(&s).unwrap();
            let back: Scope = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &s);
            // The wire form is the sorted, deduplicated list of grant texts.
            let texts: Vec<String> = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&texts, &s.to_strings());
            prop_assert!(texts.windows(2).all(|w| Grant::parse(&w[0]).unwrap() < Grant::parse(&w[1]).unwrap()));
            prop_assert_eq!(Scope::parse(&texts), Ok(s));
        }

        /// Order and duplicates in the input do not matter: equal sets give equal scopes.
        #[test]
        fn construction_is_canonical(grants in proptest::collection::vec(grant(), 0..8), seed in any::<u64>()) {
            let mut shuffled = grants.clone();
            shuffled.extend(grants.iter().take(seed as usize % 3).cloned());
            let n = shuffled.len().max(1);
            shuffled.rotate_left(seed as usize % n);
            prop_assert_eq!(Scope::new(grants).unwrap(), Scope::new(shuffled).unwrap());
        }

        #[test]
        fn subset_is_reflexive(s in scope()) {
            prop_assert!(s.is_subset_of(&s));
            prop_assert_eq!(s.excess_over(&s).count(), 0);
        }

        #[test]
        fn subset_is_transitive((a, b, c) in scope_chain()) {
            if a.is_subset_of(&b) && b.is_subset_of(&c) {
                prop_assert!(a.is_subset_of(&c), "{:?} <= {:?} <= {:?}", a.to_strings(), b.to_strings(), c.to_strings());
            }
        }

        #[test]
        fn subset_recognises_widening(
            (a, b) in scope().prop_flat_map(|a| (Just(a.clone()), generalize_scope(a)))
        ) {
            prop_assert!(a.is_subset_of(&b), "{:?} should be within {:?}", a.to_strings(), b.to_strings());
        }

        #[test]
        fn subset_is_sound(
            (a, b, actions) in scope_pair().prop_flat_map(|(a, b)| {
                let actions = actions_near_scope(&a);
                (Just(a), Just(b), actions)
            })
        ) {
            if a.is_subset_of(&b) {
                for action in actions.iter().filter(|action| a.covers(action)) {
                    prop_assert!(b.covers(action), "{:?} <= {:?} but only the first covers {:?}",
                        a.to_strings(), b.to_strings(), action);
                }
            }
        }

        #[test]
        fn excess_is_exactly_the_uncontained_grants((s, ceiling) in scope_pair()) {
            let excess: Vec<&Grant> = s.excess_over(&ceiling).collect();
            prop_assert_eq!(excess.is_empty(), s.is_subset_of(&ceiling));
            for g in s.grants() {
                let contained = ceiling.grants().iter().any(|c| g.is_subset_of(c));
                prop_assert_eq!(excess.contains(&g), !contained, "{}", g);
            }
            for g in &excess {
                prop_assert!(s.grants().contains(g), "excess grant {} is not in the scope", g);
            }
            // What is left once the excess is approved lies within the ceiling.
            let rest = Scope::new(s.grants().iter().filter(|g| !excess.contains(g)).cloned()).unwrap();
            prop_assert!(rest.is_subset_of(&ceiling));
            // And the excess itself is within the scope.
            let excess_scope = Scope::new(excess.iter().map(|g| (*g).clone())).unwrap();
            prop_assert!(excess_scope.is_subset_of(&s));
        }

        #[test]
        fn deserialising_arbitrary_json_never_panics(text in any::<String>()) {
            if let Ok(s) = serde_json::from_str::<Scope>(&text) {
                let json = serde_json::to_string(&s).unwrap();
                prop_assert_eq!(serde_json::from_str::<Scope>(&json).unwrap(), s);
            }
        }

        #[test]
        fn deserialising_json_arrays_of_grant_like_text_never_panics(
            texts in proptest::collection::vec("[a-z*:/ ]{0,12}", 0..5)
        ) {
            let json = serde_json::to_string(&texts).unwrap();
            match serde_json::from_str::<Scope>(&json) {
                Ok(s) => {
                    prop_assert_eq!(Scope::parse(&texts), Ok(s.clone()));
                    let back: Scope = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
                    prop_assert_eq!(back, s);
                }
                Err(_) => prop_assert!(Scope::parse(&texts).is_err()),
            }
        }
    }

    #[test]
    fn too_many_grants_are_refused_after_deduplication() {
        let grants: Vec<String> = (0..=MAX_GRANTS).map(|i| format!("crm:read:r{i}")).collect();
        assert_eq!(Scope::parse(&grants), Err(ScopeError::TooManyGrants));
        assert!(serde_json::from_str::<Scope>(&serde_json::to_string(&grants).unwrap()).is_err());
        let mut at_limit = grants[..MAX_GRANTS].to_vec();
        at_limit.extend(at_limit.clone());
        assert_eq!(Scope::parse(&at_limit).unwrap().grants().len(), MAX_GRANTS);
    }
}

mod token_props {
    use custos_core::token::{SecretFormatError, SecretKind, classify, hint, mint};
    use proptest::prelude::*;
    use proptest::sample::{Index, select};

    const SECRET_LEN: usize = 10 + 43 + 6;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    fn kind() -> impl Strategy<Value = SecretKind> {
        select(SecretKind::ALL.to_vec())
    }

    /// Replaces the character at byte `i` (ASCII in a minted secret) with `c`.
    fn replace_at(secret: &str, i: usize, c: char) -> String {
        let mut out = secret.to_owned();
        out.replace_range(i..=i, c.encode_utf8(&mut [0; 4]));
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn minted_secrets_classify_as_their_kind(k in kind(), bytes in any::<[u8; 32]>()) {
            let secret = mint(k, &bytes);
            prop_assert_eq!(classify(&secret), Ok(k));
            prop_assert!(secret.starts_with(k.prefix()));
            prop_assert_eq!(secret.len(), SECRET_LEN);
            prop_assert!(secret[k.prefix().len()..].bytes().all(|b| b.is_ascii_alphanumeric()));
        }

        #[test]
        fn distinct_bytes_mint_distinct_secrets(k in kind(), a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            prop_assert_eq!(a == b, mint(k, &a) == mint(k, &b));
        }

        /// Any single substituted alphanumeric character of the body or checksum is caught
        /// by the checksum.
        #[test]
        fn a_substituted_character_fails_the_checksum(
            k in kind(), bytes in any::<[u8; 32]>(), at in any::<Index>(), shift in 1..ALPHABET.len(),
        ) {
            let secret = mint(k, &bytes);
            let i = k.prefix().len() + at.index(SECRET_LEN - k.prefix().len());
            let old = ALPHABET.iter().position(|&b| b == secret.as_bytes()[i]).unwrap();
            let new = ALPHABET[(old + shift) % ALPHABET.len()] as char;
            let typo = replace_at(&secret, i, new);
            prop_assert_eq!(classify(&typo), Err(SecretFormatError::BadChecksum), "{}", typo);
        }

        /// Any other single substituted character makes the secret malformed.
        #[test]
        fn a_foreign_character_makes_the_secret_malformed(
            k in kind(), bytes in any::<[u8; 32]>(), at in any::<Index>(),
            c in any::<char>().prop_filter("not alphanumeric", |c| !c.is_ascii_alphanumeric()),
        ) {
            let secret = mint(k, &bytes);
            let i = k.prefix().len() + at.index(SECRET_LEN - k.prefix().len());
            let typo = replace_at(&secret, i, c);
            prop_assert_eq!(classify(&typo), Err(SecretFormatError::Malformed), "{:?}", typo);
        }

        #[test]
        fn truncated_or_extended_secrets_are_malformed(k in kind(), bytes in any::<[u8; 32]>(), cut in 1..40usize, extra in "[0-9A-Za-z]{1,8}") {
            let secret = mint(k, &bytes);
            prop_assert_eq!(classify(&secret[..SECRET_LEN - cut]), Err(SecretFormatError::Malformed));
            prop_assert_eq!(classify(&format!("{secret}{extra}")), Err(SecretFormatError::Malformed));
        }

        #[test]
        fn relabelled_secrets_fail(bytes in any::<[u8; 32]>()) {
            let op = mint(SecretKind::Operator, &bytes);
            let relabelled = op.replacen(SecretKind::Operator.prefix(), SecretKind::StaticKey.prefix(), 1);
            prop_assert_eq!(classify(&relabelled), Err(SecretFormatError::BadChecksum));
        }

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            check_classify(&text)?;
        }

        #[test]
        fn secret_like_text_never_panics(text in "(custos_(op|sk)_|custos_|ghp_)?[0-9A-Za-z_é]{0,60}") {
            check_classify(&text)?;
        }
    }

    /// `classify` returns for any text, and its answer is consistent with the format.
    fn check_classify(text: &str) -> Result<(), TestCaseError> {
        let prefixed = SecretKind::ALL
            .into_iter()
            .find(|k| text.starts_with(k.prefix()));
        match classify(text) {
            Ok(k) => {
                prop_assert_eq!(Some(k), prefixed);
                prop_assert_eq!(text.len(), SECRET_LEN);
                prop_assert!(
                    text[k.prefix().len()..]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric())
                );
            }
            Err(SecretFormatError::UnknownPrefix) => prop_assert_eq!(prefixed, None),
            Err(SecretFormatError::Malformed) => {
                let k = prefixed.expect("a malformed secret has a known prefix");
                let rest = &text[k.prefix().len()..];
                prop_assert!(
                    rest.len() != SECRET_LEN - k.prefix().len()
                        || !rest.bytes().all(|b| b.is_ascii_alphanumeric())
                );
            }
            Err(SecretFormatError::BadChecksum) => {
                prop_assert!(prefixed.is_some());
                prop_assert_eq!(text.len(), SECRET_LEN);
            }
        }
        let h = hint(text);
        let shown: String = text.chars().take(16).collect();
        prop_assert_eq!(h, format!("{shown}…"));
        Ok(())
    }

    /// Exhaustive over one secret: every position of body and checksum, every other
    /// alphanumeric character.
    #[test]
    fn every_single_substitution_of_one_secret_is_caught() {
        for k in SecretKind::ALL {
            let secret = mint(k, &[0x5a; 32]);
            for i in k.prefix().len()..SECRET_LEN {
                for &c in ALPHABET.iter().filter(|&&c| c != secret.as_bytes()[i]) {
                    let typo = replace_at(&secret, i, c as char);
                    assert_eq!(
                        classify(&typo),
                        Err(SecretFormatError::BadChecksum),
                        "{typo}"
                    );
                }
            }
        }
    }
}

/// Snapshots of wire forms that other systems (clients, secret scanners, stored events)
/// depend on. A failing snapshot here means a compatibility decision, not just a test update.
mod wire_format {
    use std::fmt::Write as _;

    use custos_core::token::{SecretKind, mint};
    use custos_core::{Scope, ScopeError};

    #[test]
    fn scope_wire_form() {
        let scope: Scope = serde_json::from_str(
            r#"[
                "mail:send",
                {"service": "crm", "operation": "read", "resource": "customers/*"},
                "s3:get:arn:aws:s3:::bucket/*",
                "crm:*:*",
                "crm:write:orders/**",
                "mail:send",
                {"service": "db.main", "operation": "list/all"}
            ]"#,
        )
        .unwrap();
        insta::assert_json_snapshot!("scope_wire_form", scope);
        insta::assert_json_snapshot!("scope_empty_wire_form", Scope::default());
    }

    /// Every variant, by an exhaustive match: adding a variant fails to compile here until it
    /// is added to the snapshot.
    #[test]
    fn scope_error_messages() {
        let errors = [
            ScopeError::Empty,
            ScopeError::MissingOperation("crm".into()),
            ScopeError::InvalidService("CRM".into()),
            ScopeError::InvalidOperation("re ad".into()),
            ScopeError::InvalidResource("a b".into()),
            ScopeError::TooManyGrants,
        ];
        let mut out = String::new();
        for e in &errors {
            let name = match e {
                ScopeError::Empty => "Empty",
                ScopeError::MissingOperation(_) => "MissingOperation",
                ScopeError::InvalidService(_) => "InvalidService",
                ScopeError::InvalidOperation(_) => "InvalidOperation",
                ScopeError::InvalidResource(_) => "InvalidResource",
                ScopeError::TooManyGrants => "TooManyGrants",
            };
            writeln!(out, "{name}: {e}").unwrap();
        }
        insta::assert_snapshot!("scope_error_messages", out);
    }

    #[test]
    fn scope_json_error_message() {
        let err = serde_json::from_str::<Scope>(r#"["crm:read", "CRM:read"]"#).unwrap_err();
        insta::assert_snapshot!("scope_json_error_message", err.to_string());
    }

    /// Secret scanners match on this shape; it must not drift.
    #[test]
    fn secret_wire_form() {
        let secrets: Vec<String> = SecretKind::ALL
            .into_iter()
            .flat_map(|k| {
                [
                    mint(k, &[0; 32]),
                    mint(k, &[0xff; 32]),
                    mint(k, &[0x5a; 32]),
                ]
            })
            .collect();
        insta::assert_json_snapshot!("secret_wire_form", secrets);
    }
}
