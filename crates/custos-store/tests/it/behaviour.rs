//! Behaviour baselining's storage: profiles, findings (deduplicated and folded), and response
//! policies.

use custos_core::finding::{
    Finding, FindingFilter, FindingState, ResponseAction, ResponsePolicy, ResponseTarget, Severity,
};
use custos_core::issuance::{
    Approval, ApprovalKind, ApprovalState, Risk, RiskLevel, Task, TaskState,
};
use custos_core::{EventKind, Page, Scope};
use custos_store::{
    DeliveryFilter, EventQuery, FindingOpened, MAX_BASELINE_BYTES, NotificationDelivery, Store,
    StoreError,
};
use serde_json::json;

use crate::conformance;
use crate::support::{event, events_of, id, nhi, now, pending_delivery, register, team};

conformance!(
    baselines_are_kept_overwritten_and_read_back,
    thousands_of_baselines_are_saved_in_one_call,
    a_repeat_folds_into_the_unresolved_finding,
    a_resolved_finding_frees_its_key,
    concurrent_opens_of_one_key_open_it_once,
    findings_move_from_open_to_acknowledged_to_resolved_once,
    findings_are_listed_newest_first_by_every_filter,
    a_finding_names_the_approval_its_response_opened,
    response_policies_are_listed_while_active_and_revoked_once,
);

fn page(limit: u32) -> Page {
    Page { after: None, limit }
}

fn finding(kind: &str, nhi_id: Option<&str>, key: &str, events: &[i64]) -> Finding {
    let at = now();
    Finding {
        id: id(),
        kind: kind.to_owned(),
        nhi_id: nhi_id.map(str::to_owned),
        dedupe_key: key.to_owned(),
        state: FindingState::Open,
        severity: Severity::Medium,
        score: 3.5,
        summary: "calls a service it never called".to_owned(),
        evidence: json!({ "service": "payments", "events": events }),
        action: ResponseAction::Alert,
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

fn alert(subject: &str) -> NotificationDelivery {
    pending_delivery(subject, r#"{"type":"finding.opened"}"#, now())
}

async fn open(store: &dyn Store, f: &Finding) -> FindingOpened {
    let ev = event(EventKind::FindingOpened, &format!("finding:{}", f.id));
    store.open_finding(f, &ev, &[]).await.unwrap()
}

/// A profile is kept per NHI, replaced by the next save (the last of a batch wins), and read
/// back with its time; a profile for an unknown NHI is left out and one over the size limit is
/// refused with nothing written. No event is written.
async fn baselines_are_kept_overwritten_and_read_back(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let a = nhi("a", &owners);
    let b = nhi("b", &owners);
    register(store, &a).await;
    register(store, &b).await;
    assert_eq!(store.get_baseline(&a.id).await.unwrap(), None);
    let (t1, t2) = (now(), now());
    store
        .save_baselines(&[
            (a.id.clone(), vec![1, 2, 3], t1),
            (b.id.clone(), vec![9], t1),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.get_baseline(&a.id).await.unwrap(),
        Some((vec![1, 2, 3], t1))
    );
    let before = store
        .list_events(&EventQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    store
        .save_baselines(&[
            (a.id.clone(), vec![4], t2),
            (a.id.clone(), vec![5, 6], t2),
            ("no-such-nhi".to_owned(), vec![7], t2),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.get_baseline(&a.id).await.unwrap(),
        Some((vec![5, 6], t2))
    );
    assert_eq!(
        store.get_baseline(&b.id).await.unwrap(),
        Some((vec![9], t1))
    );
    assert_eq!(store.get_baseline("no-such-nhi").await.unwrap(), None);
    store.save_baselines(&[]).await.unwrap();

    let too_big = vec![0u8; MAX_BASELINE_BYTES + 1];
    let err = store
        .save_baselines(&[(b.id.clone(), vec![1], t2), (a.id.clone(), too_big, t2)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Precondition(_)), "{err:?}");
    assert_eq!(
        store.get_baseline(&b.id).await.unwrap(),
        Some((vec![9], t1))
    );
    let full = vec![0xab; MAX_BASELINE_BYTES];
    store
        .save_baselines(&[(b.id.clone(), full.clone(), t2)])
        .await
        .unwrap();
    assert_eq!(store.get_baseline(&b.id).await.unwrap(), Some((full, t2)));
    let after = store
        .list_events(&EventQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    assert_eq!(before, after, "profiles are derived state: no events");
}

/// The server saves every NHI's profile at once: 2,000 in one call, then all replaced.
async fn thousands_of_baselines_are_saved_in_one_call(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let nhis: Vec<_> = (0..2_000)
        .map(|i| nhi(&format!("bot-{i}"), &owners))
        .collect();
    let batch: Vec<_> = nhis
        .iter()
        .map(|n| {
            let ev = event(EventKind::NhiRegistered, &format!("nhi:{}", n.id));
            (n.clone(), ev)
        })
        .collect();
    store.create_nhis(&batch).await.unwrap();
    let t1 = now();
    let profile = |i: usize, round: u8| {
        let mut bytes = vec![round; 1024];
        bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
        bytes
    };
    let first: Vec<_> = nhis
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.clone(), profile(i, 1), t1))
        .collect();
    store.save_baselines(&first).await.unwrap();
    let t2 = now();
    let second: Vec<_> = nhis
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.clone(), profile(i, 2), t2))
        .collect();
    store.save_baselines(&second).await.unwrap();
    for i in [0, 1, 499, 500, 1_234, 1_999] {
        assert_eq!(
            store.get_baseline(&nhis[i].id).await.unwrap(),
            Some((profile(i, 2), t2))
        );
    }
}

/// A finding opens with its event and notifications; a repeat with the same key folds into it
/// (one more occurrence, the latest sighting, the worse severity and score, the samples
/// appended, first and latest ten kept) and writes neither an event nor a notification.
async fn a_repeat_folds_into_the_unresolved_finding(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let key = format!("anomaly:{}:payments", n.id);
    let first = finding("anomaly", Some(&n.id), &key, &[0, 1, 2, 3, 4, 5, 6, 7]);
    let ev = event(EventKind::FindingOpened, &format!("finding:{}", first.id));
    let opened = store
        .open_finding(&first, &ev, &[alert("finding:1")])
        .await
        .unwrap();
    assert_eq!(opened, FindingOpened::New);
    assert_eq!(
        store.get_finding(&first.id).await.unwrap(),
        Some(first.clone())
    );
    let trail = store
        .list_events(&EventQuery {
            limit: 10,
            kind: Some("finding.opened".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].event, ev);
    let (all, ten) = (DeliveryFilter::default(), page(10));
    let queued = || store.list_notification_deliveries(&all, &ten);
    assert_eq!(queued().await.unwrap().len(), 1);

    let mut repeat = finding(
        "anomaly",
        Some(&n.id),
        &key,
        &[8, 9, 10, 11, 12, 13, 14, 15],
    );
    repeat.severity = Severity::High;
    repeat.score = 9.0;
    repeat.summary = "something else".into();
    let ev = event(EventKind::FindingOpened, &format!("finding:{}", repeat.id));
    let folded = store
        .open_finding(&repeat, &ev, &[alert("finding:2")])
        .await
        .unwrap();
    assert_eq!(
        folded,
        FindingOpened::Folded {
            id: first.id.clone(),
            occurrences: 2
        }
    );
    assert_eq!(store.get_finding(&repeat.id).await.unwrap(), None);
    let stored = store.get_finding(&first.id).await.unwrap().unwrap();
    assert_eq!(stored.occurrences, 2);
    assert_eq!(stored.first_seen, first.first_seen);
    assert_eq!(stored.last_seen, repeat.last_seen);
    assert_eq!(stored.severity, Severity::High);
    assert_eq!(stored.score, 9.0);
    assert_eq!(stored.summary, first.summary);
    assert_eq!(stored.evidence["service"], "payments");
    assert_eq!(
        stored.evidence["events"],
        json!((0..16).collect::<Vec<_>>())
    );
    assert_eq!(events_of(store, EventKind::FindingOpened).await, 1);
    assert_eq!(queued().await.unwrap().len(), 1, "a fold notifies nobody");

    let third = finding("anomaly", Some(&n.id), &key, &(16..24).collect::<Vec<_>>());
    assert_eq!(
        open(store, &third).await,
        FindingOpened::Folded {
            id: first.id.clone(),
            occurrences: 3
        }
    );
    let stored = store.get_finding(&first.id).await.unwrap().unwrap();
    let kept: Vec<i64> = (0..10).chain(14..24).collect();
    assert_eq!(stored.evidence["events"], json!(kept));
    assert_eq!(stored.severity, Severity::High, "severity never drops");
    assert_eq!(stored.score, 9.0, "nor the score");
    assert_eq!(events_of(store, EventKind::FindingOpened).await, 1);

    // Another key, and a finding about no NHI, open findings of their own.
    let other = finding("anomaly", Some(&n.id), "anomaly:other", &[]);
    assert_eq!(open(store, &other).await, FindingOpened::New);
    let shadow = finding("shadow_nhi", None, "shadow:10.0.0.1", &[]);
    assert_eq!(open(store, &shadow).await, FindingOpened::New);
    assert_eq!(store.get_finding(&shadow.id).await.unwrap(), Some(shadow));
}

/// Dismissing a finding frees its key: the next repeat opens a new finding, with its event.
/// Acknowledging does not: a repeat still folds into the acknowledged finding.
async fn a_resolved_finding_frees_its_key(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let first = finding("credential_stuffing", Some(&n.id), "stuffing", &[1]);
    assert_eq!(open(store, &first).await, FindingOpened::New);
    let ack = event(EventKind::FindingAcknowledged, "finding");
    store
        .resolve_finding(
            &first.id,
            FindingState::Acknowledged,
            "operator:o",
            "looking",
            now(),
            &ack,
        )
        .await
        .unwrap()
        .unwrap();
    let repeat = finding("credential_stuffing", Some(&n.id), "stuffing", &[2]);
    assert_eq!(
        open(store, &repeat).await,
        FindingOpened::Folded {
            id: first.id.clone(),
            occurrences: 2
        }
    );
    let dismiss = event(EventKind::FindingDismissed, "finding");
    store
        .resolve_finding(
            &first.id,
            FindingState::Dismissed,
            "operator:o",
            "a test",
            now(),
            &dismiss,
        )
        .await
        .unwrap()
        .unwrap();
    let again = finding("credential_stuffing", Some(&n.id), "stuffing", &[3]);
    assert_eq!(open(store, &again).await, FindingOpened::New);
    assert_eq!(events_of(store, EventKind::FindingOpened).await, 2);
    let dismissed = store.get_finding(&first.id).await.unwrap().unwrap();
    assert_eq!(dismissed.state, FindingState::Dismissed);
    assert_eq!(dismissed.occurrences, 2);
    let reopened = store.get_finding(&again.id).await.unwrap().unwrap();
    assert_eq!(
        (reopened.state, reopened.occurrences),
        (FindingState::Open, 1)
    );
}

/// Two nodes noticing the same behaviour at once: of eight concurrent opens of one key,
/// exactly one opens the finding (with the one event) and the seven others fold into it.
async fn concurrent_opens_of_one_key_open_it_once(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let findings: Vec<_> = (0..8)
        .map(|i| finding("interactive_use", Some(&n.id), "busy-key", &[i]))
        .collect();
    let outcomes = futures::future::join_all(findings.iter().map(|f| open(store, f))).await;
    let new = outcomes
        .iter()
        .filter(|o| **o == FindingOpened::New)
        .count();
    assert_eq!(new, 1, "{outcomes:?}");
    let mut counts: Vec<i64> = outcomes
        .iter()
        .filter_map(|o| match o {
            FindingOpened::Folded { occurrences, .. } => Some(*occurrences),
            FindingOpened::New => None,
        })
        .collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        (2..=8).collect::<Vec<_>>(),
        "each fold counted once"
    );
    let listed = store
        .list_findings(&FindingFilter::default(), &page(10))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].occurrences, 8);
    let mut samples: Vec<i64> = listed[0].evidence["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    samples.sort_unstable();
    assert_eq!(samples, (0..8).collect::<Vec<_>>(), "no sample lost");
    assert_eq!(events_of(store, EventKind::FindingOpened).await, 1);
}

/// Open → acknowledged (who and when kept) → accepted (who, when and why kept), each with its
/// event; a finding moves on only from an unresolved state, and a refused move writes nothing.
async fn findings_move_from_open_to_acknowledged_to_resolved_once(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let f = finding("environment_crossing", Some(&n.id), "crossing", &[]);
    assert_eq!(open(store, &f).await, FindingOpened::New);

    let t1 = now();
    let ack = event(EventKind::FindingAcknowledged, "finding");
    let acknowledged = store
        .resolve_finding(
            &f.id,
            FindingState::Acknowledged,
            "operator:a",
            "on it",
            t1,
            &ack,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acknowledged.state, FindingState::Acknowledged);
    assert_eq!(acknowledged.acknowledged_at, Some(t1));
    assert_eq!(acknowledged.acknowledged_by.as_deref(), Some("operator:a"));
    assert_eq!(acknowledged.resolved_at, None);
    assert_eq!(acknowledged.resolution, None);
    assert_eq!(
        store.get_finding(&f.id).await.unwrap(),
        Some(acknowledged.clone())
    );
    let again = event(EventKind::FindingAcknowledged, "finding");
    assert_eq!(
        store
            .resolve_finding(
                &f.id,
                FindingState::Acknowledged,
                "operator:b",
                "me too",
                now(),
                &again
            )
            .await
            .unwrap(),
        None,
        "acknowledged once"
    );

    let t2 = now();
    let accept = event(EventKind::FindingAccepted, "finding");
    let accepted = store
        .resolve_finding(
            &f.id,
            FindingState::Accepted,
            "operator:b",
            "new normal",
            t2,
            &accept,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(accepted.state, FindingState::Accepted);
    assert_eq!(accepted.acknowledged_by.as_deref(), Some("operator:a"));
    assert_eq!(accepted.resolved_at, Some(t2));
    assert_eq!(accepted.resolved_by.as_deref(), Some("operator:b"));
    assert_eq!(accepted.resolution.as_deref(), Some("new normal"));
    assert_eq!(
        store.get_finding(&f.id).await.unwrap(),
        Some(accepted.clone())
    );

    for state in [
        FindingState::Dismissed,
        FindingState::Accepted,
        FindingState::Acknowledged,
    ] {
        let late = event(EventKind::FindingDismissed, "finding");
        assert_eq!(
            store
                .resolve_finding(&f.id, state, "operator:c", "late", now(), &late)
                .await
                .unwrap(),
            None,
            "resolved once"
        );
    }
    let missing = event(EventKind::FindingDismissed, "finding");
    assert_eq!(
        store
            .resolve_finding(
                "no-such-finding",
                FindingState::Dismissed,
                "operator:c",
                "x",
                now(),
                &missing
            )
            .await
            .unwrap(),
        None
    );
    let reopen = event(EventKind::FindingOpened, "finding");
    let err = store
        .resolve_finding(&f.id, FindingState::Open, "operator:c", "x", now(), &reopen)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Precondition(_)), "{err:?}");
    assert_eq!(store.get_finding(&f.id).await.unwrap(), Some(accepted));

    // Straight from open to dismissed.
    let g = finding("environment_crossing", Some(&n.id), "crossing-2", &[]);
    open(store, &g).await;
    let dismiss = event(EventKind::FindingDismissed, "finding");
    let dismissed = store
        .resolve_finding(
            &g.id,
            FindingState::Dismissed,
            "operator:a",
            "a drill",
            now(),
            &dismiss,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dismissed.state, FindingState::Dismissed);
    assert_eq!(dismissed.acknowledged_at, None);

    assert_eq!(events_of(store, EventKind::FindingAcknowledged).await, 1);
    assert_eq!(events_of(store, EventKind::FindingAccepted).await, 1);
    assert_eq!(events_of(store, EventKind::FindingDismissed).await, 1);
}

/// Findings list newest first, filtered by kind, NHI, state, unresolved or not and the owner
/// teams a reviewer sees (never a finding about no NHI then), and page without gaps or repeats.
async fn findings_are_listed_newest_first_by_every_filter(store: &dyn Store) {
    let red = team(store, "red").await;
    let blue = team(store, "blue").await;
    let a = nhi("a", &red);
    let b = nhi("b", &blue);
    register(store, &a).await;
    register(store, &b).await;
    let mut opened = Vec::new();
    for i in 0..5 {
        let f = finding("anomaly", Some(&a.id), &format!("a-{i}"), &[]);
        open(store, &f).await;
        opened.push(f);
        let f = finding("delegation_fan_out", Some(&b.id), &format!("b-{i}"), &[]);
        open(store, &f).await;
        opened.push(f);
    }
    let shadow = finding("shadow_nhi", None, "shadow", &[]);
    open(store, &shadow).await;
    opened.push(shadow.clone());
    let dismiss = event(EventKind::FindingDismissed, "finding");
    store
        .resolve_finding(
            &opened[0].id,
            FindingState::Dismissed,
            "operator:o",
            "no",
            now(),
            &dismiss,
        )
        .await
        .unwrap();
    let ack = event(EventKind::FindingAcknowledged, "finding");
    store
        .resolve_finding(
            &opened[1].id,
            FindingState::Acknowledged,
            "operator:o",
            "hm",
            now(),
            &ack,
        )
        .await
        .unwrap();

    let ids = |filter: FindingFilter| async move {
        store
            .list_findings(&filter, &page(100))
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect::<Vec<_>>()
    };
    let newest_first = |pick: &dyn Fn(&Finding) -> bool| {
        opened
            .iter()
            .rev()
            .filter(|f| pick(f))
            .map(|f| f.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(FindingFilter::default()).await, newest_first(&|_| true));
    assert_eq!(
        ids(FindingFilter {
            kind: Some("anomaly".into()),
            ..Default::default()
        })
        .await,
        newest_first(&|f| f.kind == "anomaly")
    );
    let key = opened[1].dedupe_key.clone();
    assert_eq!(
        ids(FindingFilter {
            dedupe_key: Some(key.clone()),
            ..Default::default()
        })
        .await,
        newest_first(&|f| f.dedupe_key == key)
    );
    assert_eq!(
        ids(FindingFilter {
            nhi_id: Some(b.id.clone()),
            ..Default::default()
        })
        .await,
        newest_first(&|f| f.nhi_id.as_deref() == Some(b.id.as_str()))
    );
    assert_eq!(
        ids(FindingFilter {
            state: Some(FindingState::Dismissed),
            ..Default::default()
        })
        .await,
        [opened[0].id.clone()]
    );
    assert_eq!(
        ids(FindingFilter {
            state: Some(FindingState::Acknowledged),
            ..Default::default()
        })
        .await,
        [opened[1].id.clone()]
    );
    assert_eq!(
        ids(FindingFilter {
            unresolved_only: true,
            ..Default::default()
        })
        .await,
        newest_first(&|f| f.id != opened[0].id)
    );
    assert_eq!(
        ids(FindingFilter {
            team_ids: Some(vec![red.id.clone()]),
            ..Default::default()
        })
        .await,
        newest_first(&|f| f.nhi_id.as_deref() == Some(a.id.as_str()))
    );
    assert_eq!(
        ids(FindingFilter {
            team_ids: Some(vec![red.id.clone(), blue.id.clone()]),
            ..Default::default()
        })
        .await,
        newest_first(&|f| f.nhi_id.is_some()),
        "a finding about no NHI is outside every team's view"
    );
    assert!(
        ids(FindingFilter {
            team_ids: Some(vec![]),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert_eq!(
        ids(FindingFilter {
            kind: Some("anomaly".into()),
            unresolved_only: true,
            team_ids: Some(vec![red.id.clone()]),
            ..Default::default()
        })
        .await,
        newest_first(&|f| f.kind == "anomaly" && f.id != opened[0].id)
    );

    // Pages of three visit every finding once, newest first.
    let mut seen = Vec::new();
    let mut cursor = Page {
        after: None,
        limit: 3,
    };
    loop {
        let batch = store
            .list_findings(&FindingFilter::default(), &cursor)
            .await
            .unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 3);
        cursor.after = batch.last().map(|f| f.id.clone());
        seen.extend(batch.into_iter().map(|f| f.id));
    }
    assert_eq!(seen, newest_first(&|_| true));
    let filtered_page = store
        .list_findings(
            &FindingFilter {
                nhi_id: Some(a.id.clone()),
                ..Default::default()
            },
            &Page {
                after: Some(opened[8].id.clone()),
                limit: 2,
            },
        )
        .await
        .unwrap();
    let after_8: Vec<_> = filtered_page.into_iter().map(|f| f.id).collect();
    assert_eq!(after_8, [opened[6].id.clone(), opened[4].id.clone()]);
}

/// A step-up response names the approval request it opened; one that does not exist, or a
/// finding that does not, is refused.
async fn a_finding_names_the_approval_its_response_opened(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let mut f = finding("anomaly", Some(&n.id), "step-up", &[]);
    f.action = ResponseAction::StepUp;
    open(store, &f).await;

    let task = Task {
        id: id(),
        nhi_id: n.id.clone(),
        purpose: "pay invoices".into(),
        scope: Scope::parse(&["payments:write"]).unwrap(),
        ttl_seconds: 600,
        state: TaskState::PendingApproval,
        requested_by: format!("nhi:{}", n.id),
        created_at: now(),
        approval_id: None,
        activated_at: None,
        expires_at: None,
        ended_at: None,
        credential_id: None,
        callback_url: None,
    };
    let approval = Approval {
        id: id(),
        kind: ApprovalKind::PolicyApproval,
        nhi_id: n.id.clone(),
        task_id: Some(task.id.clone()),
        requested_by: task.requested_by.clone(),
        purpose: task.purpose.clone(),
        requested_scope: task.scope.clone(),
        excess: vec![],
        requested_ttl_seconds: 600,
        policies: vec![],
        risk: Risk {
            level: RiskLevel::High,
            factors: vec!["anomalous behaviour".into()],
        },
        required_approvals: 1,
        state: ApprovalState::Pending,
        created_at: now(),
        expires_at: now().plus_seconds(3600),
        decided_at: None,
        decided_by: None,
        reason: None,
        granted_scope: None,
        granted_ttl_seconds: None,
        escalated_to: None,
        escalated_at: None,
    };
    let task = Task {
        approval_id: Some(approval.id.clone()),
        ..task
    };
    store
        .create_task(
            &task,
            Some(&approval),
            None,
            &[
                event(EventKind::TaskRequested, "t"),
                event(EventKind::ApprovalRequested, "a"),
            ],
            &[],
        )
        .await
        .unwrap();
    store
        .set_finding_approval(&f.id, &approval.id)
        .await
        .unwrap();
    let stored = store.get_finding(&f.id).await.unwrap().unwrap();
    assert_eq!(stored.approval_id.as_deref(), Some(approval.id.as_str()));
    let other = finding("anomaly", Some(&n.id), "another day", &[]);
    open(store, &other).await;
    let by_approval = |approval_id: &str| {
        let filter = FindingFilter {
            approval_id: Some(approval_id.to_owned()),
            ..Default::default()
        };
        async move {
            store
                .list_findings(
                    &filter,
                    &Page {
                        after: None,
                        limit: 10,
                    },
                )
                .await
                .unwrap()
                .into_iter()
                .map(|f| f.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(by_approval(&approval.id).await, [f.id.clone()]);
    assert!(by_approval("no-such-approval").await.is_empty());

    let err = store
        .set_finding_approval("no-such-finding", &approval.id)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    let err = store
        .set_finding_approval(&f.id, "no-such-approval")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::MissingReference), "{err:?}");
    assert_eq!(store.get_finding(&f.id).await.unwrap(), Some(stored));
}

/// Response policies round-trip every kind of target, list newest first (the revoked ones
/// only when asked), and are revoked once, each change with its event.
async fn response_policies_are_listed_while_active_and_revoked_once(store: &dyn Store) {
    let policy =
        |target: ResponseTarget, action: ResponseAction, min_severity: Severity| ResponsePolicy {
            id: id(),
            target,
            action,
            min_severity,
            created_by: "operator:admin".into(),
            created_at: now(),
            revoked_at: None,
        };
    let policies = [
        policy(
            ResponseTarget::Default,
            ResponseAction::Record,
            Severity::Low,
        ),
        policy(
            ResponseTarget::Kind("ai_agent".into()),
            ResponseAction::Alert,
            Severity::Medium,
        ),
        policy(
            ResponseTarget::Team("t1".into()),
            ResponseAction::StepUp,
            Severity::Medium,
        ),
        policy(
            ResponseTarget::Nhi("n1".into()),
            ResponseAction::Suspend,
            Severity::High,
        ),
    ];
    for p in &policies {
        let ev = event(
            EventKind::ResponsePolicyCreated,
            &format!("response_policy:{}", p.id),
        );
        store.create_response_policy(p, &ev).await.unwrap();
    }
    let dup = event(EventKind::ResponsePolicyCreated, "response_policy:dup");
    let err = store
        .create_response_policy(&policies[0], &dup)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    let newest_first: Vec<_> = policies.iter().rev().cloned().collect();
    assert_eq!(
        store.list_response_policies(false).await.unwrap(),
        newest_first
    );

    let at = now();
    let revoke = event(EventKind::ResponsePolicyRevoked, "response_policy");
    assert!(
        store
            .revoke_response_policy(&policies[2].id, at, &revoke)
            .await
            .unwrap()
    );
    let again = event(EventKind::ResponsePolicyRevoked, "response_policy");
    assert!(
        !store
            .revoke_response_policy(&policies[2].id, now(), &again)
            .await
            .unwrap()
    );
    let missing = event(EventKind::ResponsePolicyRevoked, "response_policy");
    assert!(
        !store
            .revoke_response_policy("no-such-policy", now(), &missing)
            .await
            .unwrap()
    );
    let active: Vec<_> = store
        .list_response_policies(false)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(
        active,
        [
            policies[3].id.clone(),
            policies[1].id.clone(),
            policies[0].id.clone()
        ]
    );
    let all = store.list_response_policies(true).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[1].id, policies[2].id);
    assert_eq!(all[1].revoked_at, Some(at));
    assert_eq!(events_of(store, EventKind::ResponsePolicyCreated).await, 4);
    assert_eq!(events_of(store, EventKind::ResponsePolicyRevoked).await, 1);
}
