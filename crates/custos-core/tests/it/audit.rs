//! The canonical event encoding the audit log hashes: it round-trips, it is the only encoding
//! of its event, and its bytes are pinned by a known answer.

use std::collections::BTreeMap;

use custos_core::audit::{self, DecodeError};
use custos_core::{Actor, DomainEvent, EventKind, Timestamp};
use proptest::prelude::*;

fn event(details: &[(&str, &str)]) -> DomainEvent {
    DomainEvent {
        id: "01a2252e-0000-7000-8000-000000000001".into(),
        kind: EventKind::CredentialIssued,
        actor: Actor::Operator("op-1".into()),
        subject: "nhi:n-1".into(),
        occurred_at: Timestamp::from_unix_millis(1_795_900_000_123).unwrap(),
        details: details
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

#[test]
fn the_encoding_is_pinned() {
    let e = event(&[("fingerprint", "fp_00"), ("kind", "static_key")]);
    let bytes = audit::encode(&e);
    // Version, then length-prefixed strings, the big-endian timestamp and the sorted details.
    let mut expected = vec![1u8];
    for text in [
        "01a2252e-0000-7000-8000-000000000001",
        "credential.issued",
        "operator:op-1",
        "nhi:n-1",
    ] {
        expected.extend_from_slice(&(text.len() as u32).to_be_bytes());
        expected.extend_from_slice(text.as_bytes());
    }
    expected.extend_from_slice(&1_795_900_000_123i64.to_be_bytes());
    expected.extend_from_slice(&2u32.to_be_bytes());
    for text in ["fingerprint", "fp_00", "kind", "static_key"] {
        expected.extend_from_slice(&(text.len() as u32).to_be_bytes());
        expected.extend_from_slice(text.as_bytes());
    }
    assert_eq!(bytes, expected);
    // The leaf hash is RFC 6962's: SHA-256 over 0x00 and the bytes.
    assert_eq!(
        audit::leaf_hash(&e),
        custos_core::merkle::leaf_hash(&expected)
    );
    insta::assert_snapshot!("audit_leaf_hash_v1", audit::leaf_hash(&e).to_hex());
}

#[test]
fn other_encodings_of_an_event_are_refused() {
    let bytes = audit::encode(&event(&[("a", "1"), ("b", "2")]));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(audit::decode(&trailing), Err(DecodeError::TrailingBytes(1)));
    assert_eq!(
        audit::decode(&bytes[..bytes.len() - 1]),
        Err(DecodeError::Truncated)
    );
    let mut version = bytes.clone();
    version[0] = 2;
    assert_eq!(audit::decode(&version), Err(DecodeError::UnknownVersion(2)));
    // Swap the two details: same content, another order, refused.
    let tail = 4 + 1 + 4 + 1;
    let n = bytes.len();
    let mut swapped = bytes[..n - 2 * tail].to_vec();
    swapped.extend_from_slice(&bytes[n - tail..]);
    swapped.extend_from_slice(&bytes[n - 2 * tail..n - tail]);
    assert_eq!(audit::decode(&swapped), Err(DecodeError::UnorderedDetails));
}

fn arb_event() -> impl Strategy<Value = DomainEvent> {
    (
        "[a-z0-9-]{0,40}",
        proptest::sample::select(EventKind::ALL.to_vec()),
        prop_oneof![
            "[a-z0-9-]{0,20}".prop_map(Actor::Operator),
            "[a-z0-9:-]{0,20}".prop_map(Actor::Nhi),
            Just(Actor::System),
        ],
        "\\PC{0,40}",
        0i64..4_102_444_800_000,
        proptest::collection::btree_map("\\PC{0,12}", "\\PC{0,30}", 0..6),
    )
        .prop_map(|(id, kind, actor, subject, millis, details)| DomainEvent {
            id,
            kind,
            actor,
            subject,
            occurred_at: Timestamp::from_unix_millis(millis).unwrap(),
            details: details.into_iter().collect::<BTreeMap<_, _>>(),
        })
}

proptest! {
    #[test]
    fn every_event_round_trips(e in arb_event()) {
        prop_assert_eq!(audit::decode(&audit::encode(&e)), Ok(e));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(e) = audit::decode(&bytes) {
            // Whatever decodes is the one encoding of what it decodes to.
            prop_assert_eq!(audit::encode(&e), bytes);
        }
    }
}
