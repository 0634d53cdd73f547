//! What the risk and posture reports read: a page of NHIs with their live credentials
//! summarised, delegations counted and unresolved findings tallied, and a credential's
//! delegated descendants.

use custos_core::discovery::risk::{CredentialSummary, FindingTally};
use custos_core::finding::{Finding, FindingState, ResponseAction, Severity};
use custos_core::{CredentialKind, EventKind, Timestamp};
use custos_store::Store;
use serde_json::json;

use crate::conformance;
use crate::conformance::credential;
use crate::support::{event, id, nhi, now, register, team};

conformance!(
    report_facts_summarise_live_credentials_delegations_and_findings,
    blast_descendants_are_every_delegation_below_the_roots,
);

fn finding(kind: &str, nhi_id: &str, severity: Severity) -> Finding {
    let at = now();
    Finding {
        id: id(),
        kind: kind.to_owned(),
        nhi_id: Some(nhi_id.to_owned()),
        dedupe_key: id(),
        state: FindingState::Open,
        severity,
        score: 1.0,
        summary: kind.to_owned(),
        evidence: json!({}),
        action: ResponseAction::Record,
        approval_id: None,
        occurrences: 1,
        first_seen: at,
        last_seen: at,
        created_at: at,
        acknowledged_at: None,
        acknowledged_by: None,
        resolved_at: None,
        resolved_by: None,
        resolution: None,
    }
}

async fn report_facts_summarise_live_credentials_delegations_and_findings(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let (a, b, quiet) = (nhi("a", &owners), nhi("b", &owners), nhi("quiet", &owners));
    for n in [&a, &b, &quiet] {
        register(store, n).await;
    }
    let create = |c: custos_core::Credential| async move {
        store
            .create_credential(&c, &event(EventKind::CredentialIssued, "c"))
            .await
            .unwrap();
        c
    };
    // a: a key that never expires, a key living a day, a revoked key, an expired token,
    // and a live token two hours long that b holds a live delegated child of.
    let mut forever = credential(&a, &[1], None);
    forever.expires_at = None;
    let forever = create(forever).await;
    let mut day = credential(&a, &[2], None);
    day.expires_at = Some(day.created_at.plus_seconds(86_400));
    create(day).await;
    let mut revoked = credential(&a, &[3], None);
    revoked.revoked_at = Some(now());
    create(revoked).await;
    let mut token = credential(&a, &[4], Some(&forever));
    token.expires_at = Some(token.created_at.plus_seconds(7_200));
    let token = create(token).await;
    let mut stale = credential(&a, &[5], Some(&forever));
    stale.expires_at = Some(Timestamp::from_unix_millis(1).unwrap());
    create(stale).await;
    let mut child = credential(&b, &[6], Some(&token));
    child.expires_at = Some(child.created_at.plus_seconds(600));
    create(child).await;
    let mut client_key = credential(&b, &[7], None);
    client_key.kind = CredentialKind::ClientKey;
    client_key.expires_at = None;
    create(client_key).await;

    for f in [
        finding("leaked_secret", &a.id, Severity::High),
        finding("leaked_secret", &a.id, Severity::High),
        finding("reused_secret", &a.id, Severity::Low),
    ] {
        store
            .open_finding(&f, &event(EventKind::FindingOpened, "f"), &[])
            .await
            .unwrap();
    }
    let dismissed = finding("interactive_use", &a.id, Severity::Medium);
    store
        .open_finding(&dismissed, &event(EventKind::FindingOpened, "f"), &[])
        .await
        .unwrap();
    store
        .resolve_finding(
            &dismissed.id,
            FindingState::Dismissed,
            "operator:x",
            "fine",
            now(),
            &event(EventKind::FindingDismissed, "f"),
        )
        .await
        .unwrap();

    let facts = store
        .nhi_facts(vec![a.clone(), b.clone(), quiet.clone()], now())
        .await
        .unwrap();
    assert_eq!(facts.len(), 3);
    assert_eq!(
        facts[0].credentials,
        CredentialSummary {
            live: 3,
            static_keys: 2,
            static_keys_without_expiry: 1,
            oldest_static_key: Some(forever.created_at),
            access_tokens: 1,
            client_keys: 0,
            longest_static_key_seconds: Some(86_400),
            longest_token_seconds: Some(7_200),
            longest_lifetime_seconds: Some(86_400),
            // b's child of its token; its own token (below its key) is no delegation
            delegated: 1,
        }
    );
    assert_eq!(
        facts[0].findings,
        [
            FindingTally {
                kind: "leaked_secret".into(),
                severity: Severity::High,
                count: 2
            },
            FindingTally {
                kind: "reused_secret".into(),
                severity: Severity::Low,
                count: 1
            },
        ]
    );
    assert_eq!(
        (
            facts[1].credentials.live,
            facts[1].credentials.access_tokens,
            facts[1].credentials.client_keys
        ),
        (2, 1, 1)
    );
    assert_eq!(facts[2].nhi.id, quiet.id);
    assert_eq!(facts[2].credentials, CredentialSummary::default());
    assert!(facts[2].findings.is_empty());
    assert!(store.nhi_facts(Vec::new(), now()).await.unwrap().is_empty());
}

async fn blast_descendants_are_every_delegation_below_the_roots(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let (a, b) = (nhi("a", &owners), nhi("b", &owners));
    register(store, &a).await;
    register(store, &b).await;
    let root = credential(&a, &[1], None);
    let child = credential(&b, &[2], Some(&root));
    let grandchild = credential(&a, &[3], Some(&child));
    let other = credential(&b, &[4], None);
    for c in [&root, &child, &grandchild, &other] {
        store
            .create_credential(c, &event(EventKind::CredentialIssued, "c"))
            .await
            .unwrap();
    }
    let found = store
        .credential_descendants(std::slice::from_ref(&root.id), 100)
        .await
        .unwrap();
    let ids: Vec<(&str, u32)> = found.iter().map(|c| (c.id.as_str(), c.depth)).collect();
    assert_eq!(ids, [(child.id.as_str(), 1), (grandchild.id.as_str(), 2)]);
    let limited = store
        .credential_descendants(std::slice::from_ref(&root.id), 1)
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
    assert!(
        store
            .credential_descendants(&[], 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .credential_descendants(std::slice::from_ref(&other.id), 10)
            .await
            .unwrap()
            .is_empty()
    );
}
