use custos_core::issuance::{
    Approval, ApprovalKind, ApprovalState, Decision, Risk, RiskLevel, Ruling, StandingRule, Task,
    TaskState, Vote,
};
use custos_core::{
    Credential, CredentialKind, EventKind, NhiFilter, NhiKind, NhiStatus, Page, Role, Scope,
    Timestamp,
};
use custos_store::{
    ApprovalFilter, AuditHead, EventQuery, PolicyVersion, Retirement, Revocation, SigningKeyRecord,
    Store, StoreError, UiSession, Use,
};
use custos_store::{
    DeliveryFilter, DeliveryOutcome, DeliveryState, DueEscalation, NotificationChannel,
    NotificationDelivery,
};

use crate::conformance;
use crate::support::{event, id, nhi, now, operator, register, team};

conformance!(
    teams_are_unique_by_name_and_found_by_id_or_name,
    bootstrap_happens_once,
    operators_round_trip_with_teams_and_tokens,
    the_last_admin_cannot_be_revoked,
    nhis_round_trip_every_field,
    nhi_batches_are_all_or_nothing,
    big_nhi_batches_keep_every_tag_and_external_id,
    nhi_names_are_unique_per_platform,
    nhis_need_an_existing_team,
    updates_are_optimistic,
    list_filters_combine,
    pagination_visits_every_nhi_once,
    name_search_treats_wildcards_literally,
    name_search_pages_within_and_beyond_its_window,
    name_search_follows_renames_and_takes_any_text,
    text_holding_nul_is_refused_as_input_not_an_outage,
    credentials_revoke_once,
    revocation_cascades_down_the_delegation_graph,
    rotation_shortens_the_old_key_and_issues_the_new,
    approvals_are_decided_once_and_mint_once,
    quorum_votes_count_once_and_overdue_requests_expire_once,
    standing_rules_are_listed_while_active_and_revoked_once,
    signing_keys_rotate_with_overlap,
    client_assertions_are_single_use,
    concurrent_writes_each_succeed_or_fail_alone,
    abandoned_writes_leave_nothing_behind,
    the_audit_log_is_sealed_once_in_order,
    late_commits_are_found_below_the_head,
    events_append_in_bulk_in_order,
    reads_by_subject_cross_the_index_eras,
    large_writes_are_not_held_back_by_the_network,
    events_follow_every_change,
    meta_init_keeps_the_first_value,
    policy_versions_follow_one_another,
    last_used_times_only_move_forward,
    notification_channels_are_unique_and_disabled_once,
    notifications_are_claimed_with_a_lease_and_finished_once,
    concurrent_claims_never_share_a_delivery,
    teams_keep_their_fallback_and_escalation_wait,
    requests_escalate_after_their_teams_wait_once,
    callbacks_and_notifications_commit_with_their_decision,
    ui_sessions_end_once_and_old_ones_are_cleared,
    an_nhis_tasks_are_listed_newest_first,
    events_can_be_read_newest_first,
);

async fn teams_are_unique_by_name_and_found_by_id_or_name(store: &dyn Store) {
    let payments = team(store, "payments").await;
    assert_eq!(
        store.get_team(&payments.id).await.unwrap().as_ref(),
        Some(&payments)
    );
    assert_eq!(
        store.get_team("payments").await.unwrap().as_ref(),
        Some(&payments)
    );
    assert_eq!(store.get_team("nobody").await.unwrap(), None);
    let dup =
        custos_core::Team::new(id(), "payments".into(), "x@example.com".into(), now()).unwrap();
    let err = store
        .create_team(&dup, &event(EventKind::TeamCreated, "team:dup"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    team(store, "analytics").await;
    let names: Vec<_> = store
        .list_teams()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["analytics", "payments"]);
}

async fn bootstrap_happens_once(store: &dyn Store) {
    let first = operator("admin", &[Role::Admin], &[]);
    let ev = event(EventKind::ServerBootstrapped, "operator:first");
    assert!(store.bootstrap_admin(&first, b"hash-1", &ev).await.unwrap());
    let second = operator("admin-2", &[Role::Admin], &[]);
    let ev2 = event(EventKind::ServerBootstrapped, "operator:second");
    assert!(
        !store
            .bootstrap_admin(&second, b"hash-2", &ev2)
            .await
            .unwrap()
    );
    assert!(store.get_operator(&second.id).await.unwrap().is_none());
    let events = store
        .list_events(&EventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
}

async fn operators_round_trip_with_teams_and_tokens(store: &dyn Store) {
    let a = team(store, "a").await;
    let b = team(store, "b").await;
    let reviewer = operator("rita", &[Role::Reviewer, Role::Auditor], &[&a, &b]);
    let ev = event(EventKind::OperatorCreated, "operator:rita");
    store
        .create_operator(&reviewer, b"rita-hash", &ev)
        .await
        .unwrap();
    let (found, hash) = store
        .find_operator_by_token(b"rita-hash")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hash, b"rita-hash");
    let mut expected_teams = vec![a.id.clone(), b.id.clone()];
    expected_teams.sort();
    assert_eq!(found.teams, expected_teams);
    assert_eq!(found.roles, [Role::Reviewer, Role::Auditor]);
    assert_eq!(
        store.get_operator(&reviewer.id).await.unwrap(),
        Some(found.clone())
    );
    assert!(
        store
            .find_operator_by_token(b"other")
            .await
            .unwrap()
            .is_none()
    );
    let other = operator("otto", &[Role::Auditor], &[]);
    store
        .create_operator(
            &other,
            b"otto-hash",
            &event(EventKind::OperatorCreated, "x"),
        )
        .await
        .unwrap();
    let same_token = operator("eve", &[Role::Admin], &[]);
    let err = store
        .create_operator(
            &same_token,
            b"otto-hash",
            &event(EventKind::OperatorCreated, "y"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict));
    assert!(store.get_operator(&same_token.id).await.unwrap().is_none());
    let of_a: Vec<_> = store
        .list_operators(Some(&a.id))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(of_a, std::slice::from_ref(&reviewer.id));
    assert_eq!(store.list_operators(None).await.unwrap().len(), 2);
}

async fn the_last_admin_cannot_be_revoked(store: &dyn Store) {
    let first = operator("first", &[Role::Admin], &[]);
    store
        .create_operator(&first, b"h1", &event(EventKind::OperatorCreated, "a"))
        .await
        .unwrap();
    let second = operator("second", &[Role::Admin], &[]);
    store
        .create_operator(&second, b"h2", &event(EventKind::OperatorCreated, "b"))
        .await
        .unwrap();
    store
        .revoke_operator(&first.id, now(), &event(EventKind::OperatorRevoked, "a"))
        .await
        .unwrap();
    // Revoking again is a no-op that writes no second event.
    store
        .revoke_operator(&first.id, now(), &event(EventKind::OperatorRevoked, "a"))
        .await
        .unwrap();
    let err = store
        .revoke_operator(&second.id, now(), &event(EventKind::OperatorRevoked, "b"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LastAdmin));
    assert!(
        store
            .get_operator(&second.id)
            .await
            .unwrap()
            .unwrap()
            .is_active()
    );
    assert!(
        !store
            .get_operator(&first.id)
            .await
            .unwrap()
            .unwrap()
            .is_active()
    );
    let err = store
        .revoke_operator("missing", now(), &event(EventKind::OperatorRevoked, "c"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound));
    let revocations = store
        .list_events(&EventQuery {
            limit: 10,
            kind: Some("operator.revoked".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(revocations.len(), 1);
}

async fn nhis_round_trip_every_field(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let mut n = nhi("invoice-bot", &owners);
    n.expires_at = Some(Timestamp::from_unix_millis(1_900_000_000_123).unwrap());
    n.last_used_at = Some(now());
    n.external_ids
        .insert("aws_arn".into(), "arn:aws:iam::1:role/x".into());
    n.owner.contact = Some("ops@example.com".into());
    register(store, &n).await;
    assert_eq!(store.get_nhi(&n.id).await.unwrap(), Some(n.clone()));
    assert_eq!(store.get_nhi("nope").await.unwrap(), None);
}

async fn nhi_batches_are_all_or_nothing(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let existing = nhi("taken", &owners);
    register(store, &existing).await;
    let fresh = nhi("fresh", &owners);
    let clash = nhi("taken", &owners);
    let batch = [
        (fresh.clone(), event(EventKind::NhiRegistered, "nhi:fresh")),
        (clash, event(EventKind::NhiRegistered, "nhi:clash")),
    ];
    assert!(matches!(
        store.create_nhis(&batch).await.unwrap_err(),
        StoreError::Conflict
    ));
    assert_eq!(store.get_nhi(&fresh.id).await.unwrap(), None);
    let events = store
        .list_events(&EventQuery {
            limit: 100,
            kind: Some("nhi.registered".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        events.len(),
        1,
        "only the first registration's event survives"
    );
}

/// A batch bigger than one multi-row statement of NHIs, of tags and of external ids (an
/// import registers a thousand at a time) keeps every row, findable by tag and by id.
async fn big_nhi_batches_keep_every_tag_and_external_id(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let batch: Vec<_> = (0..1_200)
        .map(|i| {
            let mut n = nhi(&format!("bulk-{i:04}"), &owners);
            n.tags.insert("serial".into(), i.to_string());
            n.tags.insert("parity".into(), (i % 2).to_string());
            n.external_ids
                .insert("aws_arn".into(), format!("arn:aws:iam::1:role/bulk-{i}"));
            n.external_ids.insert(
                "k8s_sa".into(),
                format!("system:serviceaccount:ns:bulk-{i}"),
            );
            (n, event(EventKind::NhiRegistered, &format!("nhi:{i}")))
        })
        .collect();
    store.create_nhis(&batch).await.unwrap();
    for (n, _) in [&batch[0], &batch[457], &batch[1_199]] {
        assert_eq!(store.get_nhi(&n.id).await.unwrap().as_ref(), Some(n));
        let arn = &n.external_ids["aws_arn"];
        let found = store.find_nhi_by_external_id("aws_arn", arn).await.unwrap();
        assert_eq!(found.map(|f| f.id), Some(n.id.clone()));
    }
    let odd = store
        .list_nhis(
            &NhiFilter {
                tags: vec![("parity".into(), Some("1".into()))],
                ..Default::default()
            },
            &Page {
                after: None,
                limit: 1_000,
            },
        )
        .await
        .unwrap();
    assert_eq!(odd.len(), 600);
    let events = store
        .list_events(&EventQuery {
            limit: 2_000,
            kind: Some("nhi.registered".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1_200);
}

async fn nhi_names_are_unique_per_platform(store: &dyn Store) {
    let owners = team(store, "owners").await;
    register(store, &nhi("bot", &owners)).await;
    let mut elsewhere = nhi("bot", &owners);
    elsewhere.platform = "anthropic".into();
    register(store, &elsewhere).await;
    let again = nhi("bot", &owners);
    let err = store
        .create_nhis(&[(again, event(EventKind::NhiRegistered, "x"))])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict));
}

async fn nhis_need_an_existing_team(store: &dyn Store) {
    let ghost =
        custos_core::Team::new(id(), "ghost".into(), "g@example.com".into(), now()).unwrap();
    let orphan = nhi("orphan", &ghost);
    let err = store
        .create_nhis(&[(orphan, event(EventKind::NhiRegistered, "x"))])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::MissingReference), "{err:?}");
}

async fn updates_are_optimistic(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let original = nhi("bot", &owners);
    register(store, &original).await;
    let mut next = original.clone();
    next.purpose = "new purpose".into();
    next.tags = [("tier".to_owned(), "silver".to_owned())].into();
    next.version = 2;
    store
        .update_nhi(&next, 1, &event(EventKind::NhiUpdated, "nhi:bot"))
        .await
        .unwrap();
    assert_eq!(
        store.get_nhi(&original.id).await.unwrap(),
        Some(next.clone())
    );

    let mut stale = original.clone();
    stale.purpose = "lost update".into();
    stale.version = 2;
    let err = store
        .update_nhi(&stale, 1, &event(EventKind::NhiUpdated, "nhi:bot"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::VersionMismatch { current: 2 }),
        "{err:?}"
    );
    assert_eq!(
        store.get_nhi(&original.id).await.unwrap().unwrap().purpose,
        "new purpose"
    );

    let mut missing = nhi("ghost", &owners);
    missing.version = 2;
    let err = store
        .update_nhi(&missing, 1, &event(EventKind::NhiUpdated, "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound));

    // The tag index follows the update.
    let silver = NhiFilter {
        tags: vec![("tier".into(), Some("silver".into()))],
        ..Default::default()
    };
    assert_eq!(store.list_nhis(&silver, &page(10)).await.unwrap().len(), 1);
    let gold = NhiFilter {
        tags: vec![("tier".into(), Some("gold".into()))],
        ..Default::default()
    };
    assert!(store.list_nhis(&gold, &page(10)).await.unwrap().is_empty());
}

fn page(limit: u32) -> Page {
    Page { after: None, limit }
}

async fn list_filters_combine(store: &dyn Store) {
    let red = team(store, "red").await;
    let blue = team(store, "blue").await;
    let t0 = now();
    let mut a = nhi("alpha-agent", &red);
    a.expires_at = Some(t0.plus_seconds(10));
    let mut b = nhi("beta-service", &red);
    b.kind = NhiKind::ServiceAccount;
    b.environment = "staging".into();
    b.status = NhiStatus::Suspended;
    b.last_used_at = Some(t0.plus_seconds(100));
    b.tags.clear();
    let mut c = nhi("gamma-agent", &blue);
    c.platform = "aws".into();
    c.last_used_at = Some(t0);
    c.tags.insert("pci".into(), "yes".into());
    for n in [&a, &b, &c] {
        register(store, n).await;
    }
    let names =
        |found: Vec<custos_core::Nhi>| found.into_iter().map(|n| n.name).collect::<Vec<_>>();
    let run = |filter: NhiFilter| async move {
        names(store.list_nhis(&filter, &page(50)).await.unwrap())
    };

    assert_eq!(
        run(NhiFilter::default()).await,
        ["alpha-agent", "beta-service", "gamma-agent"]
    );
    assert_eq!(
        run(NhiFilter {
            status: Some(NhiStatus::Suspended),
            ..Default::default()
        })
        .await,
        ["beta-service"]
    );
    assert_eq!(
        run(NhiFilter {
            kind: Some(NhiKind::AiAgent),
            ..Default::default()
        })
        .await,
        ["alpha-agent", "gamma-agent"]
    );
    assert_eq!(
        run(NhiFilter {
            platform: Some("aws".into()),
            ..Default::default()
        })
        .await,
        ["gamma-agent"]
    );
    assert_eq!(
        run(NhiFilter {
            environment: Some("staging".into()),
            ..Default::default()
        })
        .await,
        ["beta-service"]
    );
    assert_eq!(
        run(NhiFilter {
            owner_teams: Some(vec![blue.id.clone()]),
            ..Default::default()
        })
        .await,
        ["gamma-agent"]
    );
    assert!(
        run(NhiFilter {
            owner_teams: Some(vec![]),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert_eq!(
        run(NhiFilter {
            tags: vec![("pci".into(), None)],
            ..Default::default()
        })
        .await,
        ["gamma-agent"]
    );
    assert_eq!(
        run(NhiFilter {
            tags: vec![("tier".into(), Some("gold".into())), ("pci".into(), None)],
            ..Default::default()
        })
        .await,
        ["gamma-agent"]
    );
    assert_eq!(
        run(NhiFilter {
            expires_before: Some(t0.plus_seconds(11)),
            ..Default::default()
        })
        .await,
        ["alpha-agent"]
    );
    // Unused since t0+50s: never used (alpha) or last used before then (gamma), not beta.
    assert_eq!(
        run(NhiFilter {
            unused_since: Some(t0.plus_seconds(50)),
            ..Default::default()
        })
        .await,
        ["alpha-agent", "gamma-agent"]
    );
    assert_eq!(
        run(NhiFilter {
            name_contains: Some("AGENT".into()),
            ..Default::default()
        })
        .await,
        ["alpha-agent", "gamma-agent"]
    );
    assert_eq!(
        run(NhiFilter {
            name_contains: Some("agent".into()),
            owner_teams: Some(vec![red.id.clone()]),
            kind: Some(NhiKind::AiAgent),
            ..Default::default()
        })
        .await,
        ["alpha-agent"]
    );
}

async fn pagination_visits_every_nhi_once(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let mut expected = Vec::new();
    let batch: Vec<_> = (0..23)
        .map(|i| {
            let n = nhi(&format!("bot-{i:02}"), &owners);
            expected.push(n.id.clone());
            (n, event(EventKind::NhiRegistered, "x"))
        })
        .collect();
    store.create_nhis(&batch).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let found = store
            .list_nhis(
                &NhiFilter::default(),
                &Page {
                    after: after.clone(),
                    limit: 5,
                },
            )
            .await
            .unwrap();
        if found.is_empty() {
            break;
        }
        assert!(found.len() <= 5);
        after = found.last().map(|n| n.id.clone());
        seen.extend(found.into_iter().map(|n| n.id));
    }
    assert_eq!(seen, expected);
}

async fn name_search_treats_wildcards_literally(store: &dyn Store) {
    let owners = team(store, "owners").await;
    register(store, &nhi("100%_sure", &owners)).await;
    register(store, &nhi("1000 sure", &owners)).await;
    let hits = store
        .list_nhis(
            &NhiFilter {
                name_contains: Some("0%_".into()),
                ..Default::default()
            },
            &page(10),
        )
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].name, "100%_sure");
}

pub(crate) fn credential(
    nhi: &custos_core::Nhi,
    hash: &[u8],
    parent: Option<&Credential>,
) -> Credential {
    Credential {
        id: id(),
        nhi_id: nhi.id.clone(),
        kind: if parent.is_some() {
            CredentialKind::AccessToken
        } else {
            CredentialKind::StaticKey
        },
        secret_hash: hash.to_vec(),
        fingerprint: format!("fp_{}", hash[0]),
        created_at: now(),
        expires_at: Some(now().plus_seconds(60)),
        revoked_at: None,
        created_by: "operator:x".into(),
        scope: parent.map(|_| Scope::parse(&["crm:read"]).unwrap()),
        task_id: None,
        parent_id: parent.map(|p| p.id.clone()),
        depth: parent.map_or(0, |p| p.depth + 1),
        public_jwk: None,
        last_used_at: None,
    }
}

async fn credentials_revoke_once(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let credential = credential(&n, &[1, 2, 3], None);
    store
        .create_credential(&credential, &event(EventKind::CredentialIssued, "c"))
        .await
        .unwrap();
    assert_eq!(
        store.find_credential_by_hash(&[1, 2, 3]).await.unwrap(),
        Some(credential.clone())
    );
    assert_eq!(
        store.get_credential(&credential.id).await.unwrap(),
        Some(credential.clone())
    );
    let listed = store
        .list_credentials(Some(&n.id), &page(10))
        .await
        .unwrap();
    assert_eq!(listed, std::slice::from_ref(&credential));
    assert!(
        store
            .list_credentials(Some("other"), &page(10))
            .await
            .unwrap()
            .is_empty()
    );
    let at = now();
    let revoked_event = event(EventKind::CredentialRevoked, "c");
    let revoke = |target| store.revoke_credentials(target, at, &revoked_event);
    assert_eq!(
        revoke(Revocation::Credential(&credential.id))
            .await
            .unwrap(),
        std::slice::from_ref(&credential.id)
    );
    assert!(
        revoke(Revocation::Credential(&credential.id))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .get_credential(&credential.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(at)
    );
    let err = revoke(Revocation::Credential("nope")).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound));
    let revocations = store
        .list_events(&EventQuery {
            kind: Some("credential.revoked".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        revocations.len(),
        1,
        "a revocation that changed nothing writes no event"
    );
}

async fn revocation_cascades_down_the_delegation_graph(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let parent_nhi = nhi("parent", &owners);
    let child_nhi = nhi("child", &owners);
    register(store, &parent_nhi).await;
    register(store, &child_nhi).await;
    let issue = |c: Credential| async move {
        store
            .create_credential(&c, &event(EventKind::CredentialIssued, "c"))
            .await
            .map(|()| c)
    };
    let root = issue(credential(&parent_nhi, &[10], None)).await.unwrap();
    let child = issue(credential(&child_nhi, &[11], Some(&root)))
        .await
        .unwrap();
    let grandchild = issue(credential(&child_nhi, &[12], Some(&child)))
        .await
        .unwrap();
    let sibling = issue(credential(&parent_nhi, &[13], None)).await.unwrap();
    let chain: Vec<String> = store
        .credential_chain(&grandchild.id)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        chain,
        [grandchild.id.clone(), child.id.clone(), root.id.clone()]
    );
    assert!(store.credential_chain("nope").await.unwrap().is_empty());

    let mut expected = vec![child.id.clone(), grandchild.id.clone()];
    expected.sort();
    let revoked = store
        .revoke_credentials(
            Revocation::Credential(&child.id),
            now(),
            &event(EventKind::CredentialRevoked, "c"),
        )
        .await
        .unwrap();
    assert_eq!(revoked, expected);
    assert!(
        store
            .get_credential(&root.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );

    // Nothing can be born of a revoked parent.
    let orphan = credential(&child_nhi, &[14], Some(&child));
    let err = store
        .create_credential(&orphan, &event(EventKind::CredentialIssued, "c"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Precondition(_)), "{err:?}");
    assert!(store.get_credential(&orphan.id).await.unwrap().is_none());

    // An NHI's revocation reaches its keys and what was delegated from them, even to others.
    let second_child = issue(credential(&child_nhi, &[15], Some(&root)))
        .await
        .unwrap();
    let mut expected = vec![root.id.clone(), sibling.id.clone(), second_child.id.clone()];
    expected.sort();
    let revoked = store
        .revoke_credentials(
            Revocation::Nhi(&parent_nhi.id),
            now(),
            &event(EventKind::NhiSuspended, "n"),
        )
        .await
        .unwrap();
    assert_eq!(revoked, expected);
}

async fn rotation_shortens_the_old_key_and_issues_the_new(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let old = credential(&n, &[20], None);
    store
        .create_credential(&old, &event(EventKind::CredentialIssued, "c"))
        .await
        .unwrap();
    let new = credential(&n, &[21], None);
    let grace_end = now().plus_seconds(5);
    store
        .rotate_credential(
            &old.id,
            grace_end,
            &new,
            None,
            &event(EventKind::CredentialRotated, "c"),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .get_credential(&old.id)
            .await
            .unwrap()
            .unwrap()
            .expires_at,
        Some(grace_end)
    );
    assert!(store.get_credential(&new.id).await.unwrap().is_some());
    // Rotating again cannot extend the grace period it already has.
    let err = store
        .rotate_credential(
            &old.id,
            now().plus_seconds(30),
            &credential(&n, &[22], None),
            None,
            &event(EventKind::CredentialRotated, "c"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Precondition(_)), "{err:?}");
}

pub(crate) fn task(n: &custos_core::Nhi, state: TaskState) -> Task {
    Task {
        id: id(),
        nhi_id: n.id.clone(),
        purpose: "sync crm".into(),
        scope: Scope::parse(&["crm:read", "mail:send"]).unwrap(),
        ttl_seconds: 600,
        state,
        requested_by: format!("nhi:{}", n.id),
        created_at: now(),
        approval_id: None,
        activated_at: None,
        expires_at: None,
        ended_at: None,
        credential_id: None,
        callback_url: None,
    }
}

pub(crate) fn approval_for(task: &Task) -> Approval {
    Approval {
        id: id(),
        kind: ApprovalKind::ScopeEscalation,
        nhi_id: task.nhi_id.clone(),
        task_id: Some(task.id.clone()),
        requested_by: task.requested_by.clone(),
        purpose: task.purpose.clone(),
        requested_scope: task.scope.clone(),
        excess: vec!["mail:send".into()],
        requested_ttl_seconds: 600,
        policies: vec!["p1".into()],
        risk: Risk {
            level: RiskLevel::High,
            factors: vec!["the nhi runs in production".into()],
        },
        required_approvals: 2,
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
    }
}

async fn file(store: &dyn Store, task: &Task, approval: &Approval) {
    store
        .create_task(
            task,
            Some(approval),
            None,
            &[
                event(EventKind::TaskRequested, "t"),
                event(EventKind::ApprovalRequested, "a"),
            ],
            &[],
        )
        .await
        .unwrap();
}

/// A quorum's approvals are kept once per reviewer and only while the request is pending; an
/// overdue request is expired (its task denied) once, and one not yet due is left alone.
async fn quorum_votes_count_once_and_overdue_requests_expire_once(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let mut waiting = task(&n, TaskState::PendingApproval);
    let mut request = approval_for(&waiting);
    request.expires_at = now().plus_seconds(-1);
    waiting.approval_id = Some(request.id.clone());
    file(store, &waiting, &request).await;
    assert_eq!(
        store.get_approval(&request.id).await.unwrap().as_ref(),
        Some(&request)
    );

    let vote = Vote {
        reviewer: "operator:a".into(),
        scope: Scope::parse(&["mail:send"]).unwrap(),
        ttl_seconds: 60,
        reason: "ok".into(),
        at: now(),
    };
    store
        .record_vote(
            &request.id,
            &vote,
            &event(EventKind::ApprovalVoted, "a"),
            &[],
        )
        .await
        .unwrap();
    let err = store
        .record_vote(
            &request.id,
            &vote,
            &event(EventKind::ApprovalVoted, "a"),
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    assert_eq!(
        store.list_votes(&[&request.id]).await.unwrap()[&request.id],
        std::slice::from_ref(&vote)
    );
    // Requests without votes are left out; an empty list asks nothing.
    assert!(
        !store
            .list_votes(&[&request.id, "no-such-request"])
            .await
            .unwrap()
            .contains_key("no-such-request")
    );
    assert!(store.list_votes(&[]).await.unwrap().is_empty());

    // Not yet due: a request with a later deadline is neither listed as overdue nor expired.
    let mut later_task = task(&n, TaskState::PendingApproval);
    let mut later = approval_for(&later_task);
    later_task.approval_id = Some(later.id.clone());
    file(store, &later_task, &later).await;
    let overdue = ApprovalFilter {
        pending_past: Some(now()),
        ..Default::default()
    };
    let listed = store.list_approvals(&overdue, &page(10)).await.unwrap();
    assert_eq!(
        listed.iter().map(|a| &a.id).collect::<Vec<_>>(),
        [&request.id]
    );
    assert!(
        !store
            .expire_approval(&later, now(), &event(EventKind::ApprovalExpired, "a"), &[])
            .await
            .unwrap()
    );
    later.state = ApprovalState::Pending;

    assert!(
        store
            .expire_approval(
                &request,
                now(),
                &event(EventKind::ApprovalExpired, "a"),
                &[]
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .expire_approval(
                &request,
                now(),
                &event(EventKind::ApprovalExpired, "a"),
                &[]
            )
            .await
            .unwrap(),
        "expired once"
    );
    let expired = store.get_approval(&request.id).await.unwrap().unwrap();
    assert_eq!(expired.state, ApprovalState::Expired);
    assert_eq!(
        store.get_task(&waiting.id).await.unwrap().unwrap().state,
        TaskState::Denied
    );
    assert_eq!(
        store.get_approval(&later.id).await.unwrap().unwrap().state,
        later.state
    );
    // Once expired, no approval is counted for it.
    let err = store
        .record_vote(
            &request.id,
            &Vote {
                reviewer: "operator:b".into(),
                ..vote
            },
            &event(EventKind::ApprovalVoted, "a"),
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Precondition(_)), "{err:?}");
    let kinds = store
        .list_events(&EventQuery {
            limit: 20,
            kind: Some("approval.expired".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(kinds.len(), 1);
}

/// Standing rules round-trip; `active_at` leaves out revoked and expired ones; a rule is
/// revoked once.
async fn standing_rules_are_listed_while_active_and_revoked_once(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let rule = |ttl: i64| StandingRule {
        id: id(),
        nhi_id: n.id.clone(),
        scope: Scope::parse(&["mail:send:outbox/*"]).unwrap(),
        reason: "digests".into(),
        created_by: "operator:1".into(),
        created_at: now(),
        expires_at: now().plus_seconds(ttl),
        revoked_at: None,
    };
    let (lasting, lapsed) = (rule(3600), rule(-1));
    for r in [&lasting, &lapsed] {
        store
            .create_rule(r, &event(EventKind::ApprovalRuleCreated, "r"))
            .await
            .unwrap();
    }
    assert_eq!(
        store.get_rule(&lasting.id).await.unwrap().as_ref(),
        Some(&lasting)
    );
    assert_eq!(store.list_rules(Some(&n.id), None).await.unwrap().len(), 2);
    let active = store.list_rules(Some(&n.id), Some(now())).await.unwrap();
    assert_eq!(active, std::slice::from_ref(&lasting));
    assert!(
        store
            .list_rules(Some("other"), None)
            .await
            .unwrap()
            .is_empty()
    );
    let revoke = event(EventKind::ApprovalRuleRevoked, "r");
    assert!(
        store
            .revoke_rule(&lasting.id, now(), &revoke)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_rule(&lasting.id, now(), &revoke)
            .await
            .unwrap()
    );
    assert!(
        store
            .list_rules(Some(&n.id), Some(now()))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .get_rule(&lasting.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
}

async fn approvals_are_decided_once_and_mint_once(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let others = team(store, "others").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let mut pending_task = task(&n, TaskState::PendingApproval);
    let approval = Approval {
        required_approvals: 1,
        ..approval_for(&pending_task)
    };
    pending_task.approval_id = Some(approval.id.clone());
    store
        .create_task(
            &pending_task,
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
    assert_eq!(
        store.get_task(&pending_task.id).await.unwrap(),
        Some(pending_task.clone())
    );
    assert_eq!(
        store.get_approval(&approval.id).await.unwrap(),
        Some(approval.clone())
    );
    let pending_filter = ApprovalFilter {
        state: Some(ApprovalState::Pending),
        ..Default::default()
    };
    assert_eq!(
        store
            .list_approvals(&pending_filter, &page(10))
            .await
            .unwrap()
            .len(),
        1
    );
    let other_team = ApprovalFilter {
        owner_teams: Some(vec![others.id.clone()]),
        ..Default::default()
    };
    assert!(
        store
            .list_approvals(&other_team, &page(10))
            .await
            .unwrap()
            .is_empty()
    );

    let Ok(Ruling::Decided(decided)) = approval.decide(
        Decision::Approve {
            reason: "ok".into(),
            scope: Some(Scope::parse(&["mail:send"]).unwrap()),
            ttl_seconds: Some(60),
        },
        "operator:r",
        &[],
        now(),
    ) else {
        panic!("one approval decides")
    };
    let decided = *decided;
    let mut active = pending_task.clone();
    active.state = TaskState::Active;
    active.activated_at = decided.decided_at;
    active.expires_at = Some(now().plus_seconds(60));
    store
        .decide_approval(
            &decided,
            Some(&active),
            &event(EventKind::ApprovalDecided, "a"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_approval(&approval.id).await.unwrap(),
        Some(decided.clone())
    );
    assert_eq!(
        store.get_task(&active.id).await.unwrap(),
        Some(active.clone())
    );
    let err = store
        .decide_approval(
            &decided,
            Some(&active),
            &event(EventKind::ApprovalDecided, "a"),
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Precondition(_)), "{err:?}");
    assert!(
        store
            .list_approvals(&pending_filter, &page(10))
            .await
            .unwrap()
            .is_empty()
    );

    let mut token = credential(&n, &[30], None);
    token.kind = CredentialKind::AccessToken;
    token.task_id = Some(active.id.clone());
    let minted = store
        .mint_task_credential(&active.id, &token, &event(EventKind::CredentialIssued, "c"))
        .await
        .unwrap();
    assert!(minted);
    let mut again = credential(&n, &[31], None);
    again.task_id = Some(active.id.clone());
    let minted = store
        .mint_task_credential(&active.id, &again, &event(EventKind::CredentialIssued, "c"))
        .await
        .unwrap();
    assert!(!minted, "an approval mints one credential, once");
    assert!(store.get_credential(&again.id).await.unwrap().is_none());

    let revoked = store
        .end_task(&active.id, now(), &event(EventKind::TaskEnded, "t"))
        .await
        .unwrap();
    assert_eq!(revoked, [token.id.clone()]);
    assert_eq!(
        store.get_task(&active.id).await.unwrap().unwrap().state,
        TaskState::Ended
    );
    assert!(
        store
            .end_task(&active.id, now(), &event(EventKind::TaskEnded, "t"))
            .await
            .unwrap()
            .is_empty()
    );
    let err = store
        .end_task("nope", now(), &event(EventKind::TaskEnded, "t"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound));
}

async fn signing_keys_rotate_with_overlap(store: &dyn Store) {
    let key = |kid: &str| SigningKeyRecord {
        kid: kid.into(),
        alg: "ES256".into(),
        public_jwk: "{}".into(),
        sealed_key: vec![1, 2, 3],
        created_at: now(),
        retired_at: None,
        publish_until: None,
    };
    let first = key("k1");
    store
        .add_signing_key(&first, None, &event(EventKind::SigningKeyCreated, "k"))
        .await
        .unwrap();
    let until = now().plus_seconds(3600);
    let at = now();
    store
        .add_signing_key(
            &key("k2"),
            Some(Retirement {
                kid: "k1",
                at,
                publish_until: until,
            }),
            &event(EventKind::SigningKeyCreated, "k"),
        )
        .await
        .unwrap();
    let keys = store.list_signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    let retired = keys.iter().find(|k| k.kid == "k1").unwrap();
    assert_eq!(
        (retired.retired_at, retired.publish_until),
        (Some(at), Some(until))
    );
    assert_eq!(retired.sealed_key, first.sealed_key);
}

async fn client_assertions_are_single_use(store: &dyn Store) {
    let exp = now().plus_seconds(60);
    assert!(
        store
            .use_client_assertion("c1", "j1", exp, now())
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_client_assertion("c1", "j1", exp, now())
            .await
            .unwrap()
    );
    assert!(
        store
            .use_client_assertion("c2", "j1", exp, now())
            .await
            .unwrap()
    );
    // Once expired it is forgotten (an expired assertion is refused before this point).
    let later = exp.plus_seconds(1);
    assert!(
        store
            .use_client_assertion("c1", "j1", later.plus_seconds(60), later)
            .await
            .unwrap()
    );
}

async fn events_follow_every_change(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    let registered = event(EventKind::NhiRegistered, &format!("nhi:{}", n.id)).with("name", "bot");
    store
        .create_nhis(&[(n.clone(), registered.clone())])
        .await
        .unwrap();
    let mut next = n.clone();
    next.status = NhiStatus::Suspended;
    next.version = 2;
    let suspended = event(EventKind::NhiSuspended, &format!("nhi:{}", n.id));
    store.update_nhi(&next, 1, &suspended).await.unwrap();

    let all = store
        .list_events(&EventQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let of_nhi = store
        .list_events(&EventQuery {
            limit: 100,
            subject: Some(format!("nhi:{}", n.id)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        of_nhi.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        [registered, suspended]
    );
    let after = store
        .list_events(&EventQuery {
            after_seq: of_nhi[0].seq,
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
}

async fn meta_init_keeps_the_first_value(store: &dyn Store) {
    assert_eq!(store.meta_get("k").await.unwrap(), None);
    assert_eq!(store.meta_init("k", "first").await.unwrap(), "first");
    assert_eq!(store.meta_init("k", "second").await.unwrap(), "first");
    assert_eq!(store.meta_get("k").await.unwrap().as_deref(), Some("first"));
    store.ping().await.unwrap();
}

async fn name_search_pages_within_and_beyond_its_window(store: &dyn Store) {
    let owners = team(store, "owners").await;
    // 2,100 rows that do not match, then matches: more than the first look at a search covers.
    let mut batch: Vec<_> = (0..2100)
        .map(|i| {
            (
                nhi(&format!("filler-{i:04}"), &owners),
                event(EventKind::NhiRegistered, "x"),
            )
        })
        .collect();
    for i in 0..7 {
        batch.push((
            nhi(&format!("needle-{i}"), &owners),
            event(EventKind::NhiRegistered, "x"),
        ));
    }
    // Matches among the early rows too, so pages come from both strategies.
    for i in 0..6 {
        let n = nhi(&format!("early-needle-{i}"), &owners);
        batch.insert(i * 2, (n, event(EventKind::NhiRegistered, "x")));
    }
    // Ids must increase in batch order for the expected order to hold.
    let mut ids: Vec<String> = batch.iter().map(|(n, _)| n.id.clone()).collect();
    ids.sort();
    for ((n, _), id) in batch.iter_mut().zip(ids) {
        n.id = id;
    }
    let expected: Vec<String> = batch
        .iter()
        .filter(|(n, _)| n.name.contains("needle"))
        .map(|(n, _)| n.id.clone())
        .collect();
    assert_eq!(expected.len(), 13);
    store.create_nhis(&batch).await.unwrap();
    let filter = NhiFilter {
        name_contains: Some("NEEDLE".into()),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let found = store
            .list_nhis(
                &filter,
                &Page {
                    after: after.clone(),
                    limit: 4,
                },
            )
            .await
            .unwrap();
        if found.is_empty() {
            break;
        }
        assert!(found.iter().all(|n| n.name.contains("needle")));
        after = found.last().map(|n| n.id.clone());
        seen.extend(found.into_iter().map(|n| n.id));
    }
    assert_eq!(seen, expected);
}

async fn name_search_follows_renames_and_takes_any_text(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let original = nhi("alpha-exporter", &owners);
    register(store, &original).await;
    register(store, &nhi("say \"hi\" bot", &owners)).await;
    register(store, &nhi("Mixed-Case-Runner", &owners)).await;
    let mut renamed = original.clone();
    renamed.name = "omega-exporter".into();
    renamed.version = 2;
    store
        .update_nhi(&renamed, 1, &event(EventKind::NhiUpdated, "x"))
        .await
        .unwrap();
    let search = |needle: &str| NhiFilter {
        name_contains: Some(needle.into()),
        ..Default::default()
    };
    let names = |found: Vec<custos_core::Nhi>| -> Vec<String> {
        found.into_iter().map(|n| n.name).collect()
    };
    let found = store.list_nhis(&search("omega"), &page(10)).await.unwrap();
    assert_eq!(names(found), ["omega-exporter"]);
    let found = store.list_nhis(&search("alpha"), &page(10)).await.unwrap();
    assert!(found.is_empty(), "the old name must leave the index");
    // Text that would be query syntax to a full-text engine is only text here.
    for needle in ["\"hi\"", "y \"h", "hi\" OR \"x", "NEAR(a b)", "*", "-case-"] {
        let found = store.list_nhis(&search(needle), &page(10)).await.unwrap();
        let expected: Vec<&str> = ["omega-exporter", "say \"hi\" bot", "Mixed-Case-Runner"]
            .into_iter()
            .filter(|name| name.to_lowercase().contains(&needle.to_lowercase()))
            .collect();
        assert_eq!(names(found), expected, "search for {needle:?}");
    }
    // Other filters still apply to the matches the index finds.
    let filter = NhiFilter {
        name_contains: Some("exporter".into()),
        status: Some(NhiStatus::Suspended),
        ..Default::default()
    };
    assert!(
        store
            .list_nhis(&filter, &page(10))
            .await
            .unwrap()
            .is_empty()
    );
}

/// No store can hold a NUL in text (PostgreSQL refuses it; SQLite's full-text query parser
/// fails on it). A filter holding one is refused as bad input on both, and a lookup by such an
/// id is bad input or names nothing; neither is ever reported as the store being unavailable.
async fn text_holding_nul_is_refused_as_input_not_an_outage(store: &dyn Store) {
    let owners = team(store, "owners").await;
    register(store, &nhi("nul-probe-exporter", &owners)).await;
    let filters = [
        NhiFilter {
            name_contains: Some("exp\0orter".into()),
            ..Default::default()
        },
        NhiFilter {
            name_contains: Some("\0".into()),
            ..Default::default()
        },
        NhiFilter {
            platform: Some("aws\0".into()),
            ..Default::default()
        },
        NhiFilter {
            environment: Some("\0prod".into()),
            ..Default::default()
        },
        NhiFilter {
            owner_teams: Some(vec![owners.id.clone(), "t\0".into()]),
            ..Default::default()
        },
        NhiFilter {
            tags: vec![("tier".into(), Some("1\0".into()))],
            ..Default::default()
        },
    ];
    for filter in filters {
        let err = store.list_nhis(&filter, &page(10)).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidText),
            "{filter:?}: {err:?}"
        );
    }
    let found = store.get_nhi("nul\0id").await;
    assert!(
        matches!(found, Ok(None) | Err(StoreError::InvalidText)),
        "{found:?}"
    );
    // The store still answers afterwards.
    let all = store
        .list_nhis(&NhiFilter::default(), &page(10))
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}

/// Many writers at once (on SQLite they share transactions and fsyncs): each is kept or refused
/// on its own merits, and what was acknowledged is there.
async fn concurrent_writes_each_succeed_or_fail_alone(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let taken = credential(&n, &[200, 0], None);
    store
        .create_credential(&taken, &event(EventKind::CredentialIssued, "c"))
        .await
        .unwrap();
    let attempts: Vec<Credential> = (0..120u8)
        .map(|i| {
            // Every tenth collides with the stored hash and must fail, alone.
            let hash = if i % 10 == 0 {
                vec![200, 0]
            } else {
                vec![201, i]
            };
            credential(&n, &hash, None)
        })
        .collect();
    let results = futures::future::join_all(attempts.iter().map(|c| async move {
        store
            .create_credential(c, &event(EventKind::CredentialIssued, &c.id))
            .await
    }))
    .await;
    for (c, result) in attempts.iter().zip(&results) {
        let stored = store.get_credential(&c.id).await.unwrap();
        if c.secret_hash == [200, 0] {
            assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
            assert!(stored.is_none());
        } else {
            assert!(result.is_ok(), "{result:?}");
            assert_eq!(stored.as_ref(), Some(c));
        }
    }
    let events = store
        .list_events(&EventQuery {
            kind: Some("credential.issued".into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        events.len(),
        1 + 108,
        "one event per kept write, none for refused ones"
    );
}

/// Writes abandoned at any point (a request cancelled mid-way) leave neither their change nor
/// its event, and do not disturb the writes around them.
async fn abandoned_writes_leave_nothing_behind(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let attempts: Vec<Credential> = (0..100u8)
        .map(|i| credential(&n, &[202, i], None))
        .collect();
    let events: Vec<_> = attempts
        .iter()
        .map(|c| event(EventKind::CredentialIssued, &c.id))
        .collect();
    // Every third write is given up after a growing delay, so that across the run the
    // abandonment falls at every stage of a write: before it starts, between its statements,
    // while it waits for the commit. The others run beside them and must all be kept.
    let mut kept = Vec::new();
    let mut others = Vec::new();
    for (i, (c, e)) in attempts.iter().zip(&events).enumerate() {
        let write = store.create_credential(c, e);
        if i % 3 == 0 {
            let delay = std::time::Duration::from_micros(15 * i as u64);
            let _ = tokio::time::timeout(delay, write).await;
        } else {
            others.push(write);
            kept.push(c.id.clone());
        }
        if others.len() == 4 {
            for result in futures::future::join_all(others.drain(..)).await {
                result.unwrap();
            }
        }
    }
    for result in futures::future::join_all(others).await {
        result.unwrap();
    }
    let stored: Vec<Credential> = store
        .list_credentials(Some(&n.id), &page(500))
        .await
        .unwrap();
    let events = store
        .list_events(&EventQuery {
            kind: Some("credential.issued".into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    // Every credential stored has exactly its event, and every kept write is stored.
    let mut with_events: Vec<&str> = events.iter().map(|e| e.event.subject.as_str()).collect();
    with_events.sort();
    let mut stored_ids: Vec<&str> = stored.iter().map(|c| c.id.as_str()).collect();
    stored_ids.sort();
    assert_eq!(with_events, stored_ids);
    for id in &kept {
        assert!(
            stored_ids.contains(&id.as_str()),
            "acknowledged write {id} is missing"
        );
    }
}

/// The sealer's storage: leaves map log positions to events, node hashes come back as asked,
/// and a seal that does not extend the current head is refused whole.
async fn the_audit_log_is_sealed_once_in_order(store: &dyn Store) {
    team(store, "a").await;
    team(store, "b").await;
    let events = store
        .list_events(&EventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(store.audit_head().await.unwrap(), AuditHead::default());
    let head = AuditHead {
        size: 2,
        last_seq: events[1].seq,
        frontier: vec![1, 2, 3],
    };
    let leaves = [(0, events[0].seq), (1, events[1].seq)];
    let nodes = [
        (0, 0, vec![10; 32]),
        (0, 1, vec![11; 32]),
        (1, 0, vec![12; 32]),
    ];
    store.seal_audit(0, &leaves, &nodes, &head).await.unwrap();
    assert_eq!(store.audit_head().await.unwrap(), head);
    // Another sealer that read the old head is refused, and writes nothing.
    let err = store
        .seal_audit(0, &[(2, events[1].seq)], &[(0, 2, vec![13; 32])], &head)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Precondition(_)), "{err:?}");
    assert_eq!(
        store.audit_nodes(&[(1, 0), (0, 1), (0, 2)]).await.unwrap(),
        [Some(vec![12; 32]), Some(vec![11; 32]), None]
    );
    let sealed = store.audit_events(0, 5).await.unwrap();
    let order: Vec<(u64, i64)> = sealed.iter().map(|(i, e)| (*i, e.seq)).collect();
    assert_eq!(order, leaves);
    assert_eq!(
        store.audit_event(1).await.unwrap().map(|e| e.seq),
        Some(events[1].seq)
    );
    assert!(store.audit_event(2).await.unwrap().is_none());

    assert!(store.latest_checkpoint().await.unwrap().is_none());
    let checkpoint = custos_store::StoredCheckpoint {
        size: 2,
        root: vec![12; 32],
        note: "note".into(),
        created_at: now(),
    };
    store.add_checkpoint(&checkpoint).await.unwrap();
    assert_eq!(store.latest_checkpoint().await.unwrap(), Some(checkpoint));
}

/// An event committed after a higher `seq` was sealed (a late commit on PostgreSQL) is still
/// found by a look-back below the head, and only by it.
async fn late_commits_are_found_below_the_head(store: &dyn Store) {
    for name in ["a", "b", "c"] {
        team(store, name).await;
    }
    let events = store
        .list_events(&EventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let head = AuditHead {
        size: 2,
        last_seq: seqs[2],
        frontier: vec![],
    };
    store
        .seal_audit(0, &[(0, seqs[0]), (1, seqs[2])], &[], &head)
        .await
        .unwrap();
    let found: Vec<i64> = store
        .unsealed_events(seqs[2] - 10_000, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(found, [seqs[1]]);
    assert!(store.unsealed_events(seqs[2], 10).await.unwrap().is_empty());
}

async fn events_append_in_bulk_in_order(store: &dyn Store) {
    let batch: Vec<_> = (0..1_200)
        .map(|i| event(EventKind::CredentialIssued, &format!("s{i}")).with("i", i.to_string()))
        .collect();
    store.append_events(&batch).await.unwrap();
    store.append_events(&[]).await.unwrap();
    let stored = store
        .list_events(&EventQuery {
            limit: 2_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let back: Vec<_> = stored.into_iter().map(|e| e.event).collect();
    assert_eq!(back, batch);
    // A batch with a duplicate id is refused whole.
    let mut bad = vec![event(EventKind::CredentialIssued, "x")];
    bad.push(batch[0].clone());
    assert!(store.append_events(&bad).await.is_err());
    let count = store
        .list_events(&EventQuery {
            limit: 2_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    assert_eq!(count, 1_200);
}

/// The subject index is split into eras of 16,384 events: reads by subject must walk them in
/// order, page across their boundaries, and combine with the other filters, including for a
/// subject seen only once, at the far end of the trail, and for the sealed events of one subject.
async fn reads_by_subject_cross_the_index_eras(store: &dyn Store) {
    let total = 40_000;
    let subject_of = |i: usize| match i {
        _ if i == total - 1 => "lonely".to_owned(),
        _ if i.is_multiple_of(7) => "busy".to_owned(),
        _ => format!("other{}", i % 50),
    };
    let batch: Vec<_> = (0..total)
        .map(|i| {
            let kind = if i.is_multiple_of(2) {
                EventKind::CredentialIssued
            } else {
                EventKind::CredentialRevoked
            };
            event(kind, &subject_of(i))
        })
        .collect();
    for chunk in batch.chunks(5_000) {
        store.append_events(chunk).await.unwrap();
    }
    let all = store
        .list_events(&EventQuery {
            limit: 50_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), total);
    let expect = |subject: &str, kind: Option<EventKind>| -> Vec<i64> {
        all.iter()
            .filter(|e| e.event.subject == subject && kind.is_none_or(|k| e.event.kind == k))
            .map(|e| e.seq)
            .collect()
    };
    let paged = async |subject: &str, kind: Option<EventKind>, limit: u32| -> Vec<i64> {
        let mut seqs = Vec::new();
        let mut after_seq = 0;
        loop {
            let page = store
                .list_events(&EventQuery {
                    after_seq,
                    limit,
                    subject: Some(subject.to_owned()),
                    kind: kind.map(|k| k.as_str().to_owned()),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(page.len() <= limit as usize);
            seqs.extend(page.iter().map(|e| e.seq));
            match page.last() {
                Some(last) if page.len() == limit as usize => after_seq = last.seq,
                _ => return seqs,
            }
        }
    };
    assert_eq!(paged("busy", None, 1_000).await, expect("busy", None));
    assert_eq!(paged("busy", None, 4_000).await, expect("busy", None));
    assert_eq!(
        paged("busy", Some(EventKind::CredentialRevoked), 333).await,
        expect("busy", Some(EventKind::CredentialRevoked))
    );
    assert_eq!(paged("lonely", None, 10).await, expect("lonely", None));
    assert_eq!(expect("lonely", None).len(), 1);
    assert!(paged("nobody", None, 10).await.is_empty());

    // Seal every event but the last 100; the subject's sealed events come back with their leaves.
    let sealed = total - 100;
    let leaves: Vec<(u64, i64)> = all[..sealed]
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u64, e.seq))
        .collect();
    let head = AuditHead {
        size: sealed as u64,
        last_seq: all[sealed - 1].seq,
        frontier: vec![],
    };
    store.seal_audit(0, &leaves, &[], &head).await.unwrap();
    let of: Vec<(u64, i64)> = store
        .audit_events_of("busy", 0, 50_000)
        .await
        .unwrap()
        .iter()
        .map(|(index, e)| (*index, e.seq))
        .collect();
    let want: Vec<(u64, i64)> = leaves
        .iter()
        .copied()
        .filter(|(i, _)| subject_of(*i as usize) == "busy")
        .collect();
    assert_eq!(of, want);
    assert_eq!(
        store.audit_events_of("busy", 0, 10).await.unwrap().len(),
        10
    );
    // Pages of 7 from each page's last leaf on visit every event once, in order.
    let mut paged = Vec::new();
    let mut next = 0;
    loop {
        let page = store.audit_events_of("busy", next, 7).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        next = last + 1;
        paged.extend(page.iter().map(|(index, e)| (*index, e.seq)));
    }
    assert_eq!(paged, want);
    assert!(
        store
            .audit_events_of("lonely", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A multi-row insert of 500 events is ~150 KB, several TLS records to PostgreSQL. Without
/// `TCP_NODELAY` (sqlx 0.9.0 dropped it; vendor/README.md) Nagle's algorithm holds a record
/// back until the server's delayed ACK, at least 40 ms on Linux, so every such append took
/// 50-60 ms instead of ~10 ms. The median of 20 is under that floor only with the patch.
async fn large_writes_are_not_held_back_by_the_network(store: &dyn Store) {
    let batch: Vec<_> = (0..500)
        .map(|i| {
            event(EventKind::CredentialIssued, &format!("nhi:{i}")).with("padding", "x".repeat(200))
        })
        .collect();
    store.append_events(&batch[..1]).await.unwrap();
    let mut took = Vec::new();
    for _ in 0..20 {
        let fresh: Vec<_> = batch
            .iter()
            .map(|e| custos_core::DomainEvent {
                id: id(),
                ..e.clone()
            })
            .collect();
        let started = std::time::Instant::now();
        store.append_events(&fresh).await.unwrap();
        took.push(started.elapsed());
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < std::time::Duration::from_millis(35),
        "appends of 500 events took {took:?}"
    );
}

/// Guardrail policies are kept as numbered versions; a version that does not follow the latest
/// (two admins saving at once) is refused whole, event included.
async fn policy_versions_follow_one_another(store: &dyn Store) {
    assert_eq!(store.latest_policies().await.unwrap(), None);
    let version = |n: i64, text: &str| PolicyVersion {
        version: n,
        policies: text.to_owned(),
        catalogue: r#"{"services":[]}"#.to_owned(),
        links: format!(r#"[{{"template_id":"t","link_id":"l{n}"}}]"#),
        created_at: now(),
        created_by: "operator:1".to_owned(),
    };
    let first = version(1, "forbid(principal, action, resource);");
    store
        .put_policies(&first, &event(EventKind::PoliciesUpdated, "policies:1"))
        .await
        .unwrap();
    assert_eq!(
        store.latest_policies().await.unwrap().as_ref(),
        Some(&first)
    );
    for stale in [version(1, "x"), version(3, "y")] {
        let err = store
            .put_policies(&stale, &event(EventKind::PoliciesUpdated, "policies:x"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::VersionMismatch { current: 1 }),
            "{err:?}"
        );
    }
    let second = version(2, "");
    store
        .put_policies(&second, &event(EventKind::PoliciesUpdated, "policies:2"))
        .await
        .unwrap();
    assert_eq!(store.latest_policies().await.unwrap(), Some(second));
    let kinds = store
        .list_events(&EventQuery {
            limit: 10,
            kind: Some("policies.updated".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let subjects: Vec<&str> = kinds.iter().map(|e| e.event.subject.as_str()).collect();
    assert_eq!(subjects, ["policies:1", "policies:2"]);
}

/// Last-used times come in batches, possibly late and out of order: they only move forward,
/// for the credential and its NHI, and a use of an unknown credential changes nothing.
async fn last_used_times_only_move_forward(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let key = credential(&n, &[9, 9, 9], None);
    store
        .create_credential(&key, &event(EventKind::CredentialIssued, "c"))
        .await
        .unwrap();
    let used = |at: Timestamp| Use {
        credential_id: key.id.clone(),
        nhi_id: n.id.clone(),
        at,
    };
    let later = now().plus_seconds(30);
    store.record_uses(&[]).await.unwrap();
    store
        .record_uses(&[
            used(later),
            Use {
                credential_id: "nobody".into(),
                nhi_id: "nobody".into(),
                at: later,
            },
        ])
        .await
        .unwrap();
    store.record_uses(&[used(now())]).await.unwrap();
    let stored = store.get_credential(&key.id).await.unwrap().unwrap();
    assert_eq!(stored.last_used_at, Some(later));
    let bot = store.get_nhi(&n.id).await.unwrap().unwrap();
    assert_eq!(bot.last_used_at, Some(later));
    assert_eq!(bot.version, n.version, "a use is not a change of the nhi");
    let last = later.plus_seconds(1);
    store.record_uses(&[used(last)]).await.unwrap();
    assert_eq!(
        store
            .get_credential(&key.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(last)
    );
}

fn channel(name: &str, team_id: Option<&str>) -> NotificationChannel {
    NotificationChannel {
        id: id(),
        name: name.to_owned(),
        kind: "webhook".to_owned(),
        team_id: team_id.map(str::to_owned),
        target: "https://hooks.example.com/…".to_owned(),
        format: "json".to_owned(),
        sealed_secret: Some(vec![1, 2, 3, 4]),
        created_at: now(),
        disabled_at: None,
    }
}

fn delivery(channel: &NotificationChannel, due: Timestamp) -> NotificationDelivery {
    NotificationDelivery {
        id: id(),
        channel_id: Some(channel.id.clone()),
        callback_url: None,
        subject: "approval:a1".to_owned(),
        payload: r#"{"type":"approval.requested"}"#.to_owned(),
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_at: due,
        last_attempt_at: None,
        last_error: None,
        created_at: now(),
        delivered_at: None,
    }
}

fn at(millis: i64) -> Timestamp {
    Timestamp::from_unix_millis(millis).unwrap()
}

async fn notification_channels_are_unique_and_disabled_once(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let hook = channel("payments-hook", Some(&owners.id));
    let created = event(
        EventKind::NotificationChannelCreated,
        &format!("notification_channel:{}", hook.id),
    );
    store
        .create_notification_channel(&hook, &created)
        .await
        .unwrap();
    assert_eq!(
        store.get_notification_channel(&hook.id).await.unwrap(),
        Some(hook.clone())
    );
    let taken = store
        .create_notification_channel(
            &channel("payments-hook", None),
            &event(EventKind::NotificationChannelCreated, "x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(taken, StoreError::Conflict), "{taken:?}");
    let orphan = store
        .create_notification_channel(
            &channel("orphan", Some("no-such-team")),
            &event(EventKind::NotificationChannelCreated, "y"),
        )
        .await
        .unwrap_err();
    assert!(matches!(orphan, StoreError::MissingReference), "{orphan:?}");
    let mail = NotificationChannel {
        kind: "email".into(),
        format: "text".into(),
        target: r#"{"smtp_host":"127.0.0.1"}"#.into(),
        sealed_secret: None,
        ..channel("everyone-mail", None)
    };
    store
        .create_notification_channel(&mail, &event(EventKind::NotificationChannelCreated, "z"))
        .await
        .unwrap();
    let names: Vec<_> = store
        .list_notification_channels()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["payments-hook", "everyone-mail"]);

    // Disabling gives up what the channel had pending, and only that.
    let due = now();
    let pending = [delivery(&hook, due), delivery(&hook, due)];
    let other = delivery(&mail, due);
    store.enqueue_notifications(&pending).await.unwrap();
    store
        .enqueue_notifications(std::slice::from_ref(&other))
        .await
        .unwrap();
    let off = now();
    let disabled = event(
        EventKind::NotificationChannelDisabled,
        &format!("notification_channel:{}", hook.id),
    );
    assert!(
        store
            .disable_notification_channel(&hook.id, off, &disabled)
            .await
            .unwrap()
    );
    assert!(
        !store
            .disable_notification_channel(&hook.id, now(), &disabled)
            .await
            .unwrap()
    );
    let missing = store
        .disable_notification_channel("nope", now(), &disabled)
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound), "{missing:?}");
    assert_eq!(
        store
            .get_notification_channel(&hook.id)
            .await
            .unwrap()
            .unwrap()
            .disabled_at,
        Some(off)
    );
    let failed = store
        .list_notification_deliveries(
            &DeliveryFilter {
                state: Some(DeliveryState::Failed),
                channel_id: None,
            },
            &page(10),
        )
        .await
        .unwrap();
    assert_eq!(failed.len(), 2);
    assert!(
        failed
            .iter()
            .all(|d| d.channel_id.as_deref() == Some(hook.id.as_str())
                && d.last_error.as_deref() == Some("the channel was disabled"))
    );
    let still = store
        .list_notification_deliveries(
            &DeliveryFilter {
                state: Some(DeliveryState::Pending),
                channel_id: Some(mail.id.clone()),
            },
            &page(10),
        )
        .await
        .unwrap();
    assert_eq!(still, [other]);

    // Each change once in the trail; the disabling counts what it gave up.
    let trail = store
        .list_events(&EventQuery {
            subject: Some(format!("notification_channel:{}", hook.id)),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let kinds: Vec<_> = trail.iter().map(|e| e.event.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::NotificationChannelCreated,
            EventKind::NotificationChannelDisabled
        ]
    );
    assert_eq!(
        trail[1].event.details.get("cancelled").map(String::as_str),
        Some("2")
    );
}

async fn notifications_are_claimed_with_a_lease_and_finished_once(store: &dyn Store) {
    let hook = channel("hook", None);
    store
        .create_notification_channel(&hook, &event(EventKind::NotificationChannelCreated, "c"))
        .await
        .unwrap();
    let t0 = 1_900_000_000_000;
    let mut due: Vec<_> = (0..3).map(|i| delivery(&hook, at(t0 + i))).collect();
    due.sort_by(|a, b| a.id.cmp(&b.id));
    let later = delivery(&hook, at(t0 + 10_000));
    let mut all = due.clone();
    all.push(later.clone());
    store.enqueue_notifications(&all).await.unwrap();

    // Due ones only, each one more attempt, leased until the lease's end.
    let now_ms = t0 + 5;
    let lease = t0 + 60_000;
    let claimed = store
        .claim_notifications(at(now_ms), at(lease), 10)
        .await
        .unwrap();
    let ids: Vec<_> = claimed.iter().map(|d| d.id.clone()).collect();
    let expected: Vec<_> = due.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids, expected);
    for d in &claimed {
        assert_eq!(d.attempts, 1);
        assert_eq!(d.last_attempt_at, Some(at(now_ms)));
        assert_eq!(d.next_attempt_at, at(lease));
        assert_eq!(d.state, DeliveryState::Pending);
    }
    // Held: not claimed again while leased, whoever asks.
    assert!(
        store
            .claim_notifications(at(now_ms), at(lease), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A limit is a limit.
    assert_eq!(
        store
            .claim_notifications(at(t0 + 20_000), at(t0 + 80_000), 1)
            .await
            .unwrap()
            .len(),
        1
    );

    // Delivered, retried, given up: each recorded once, for the attempt it was.
    let [a, b, c] = [&claimed[0], &claimed[1], &claimed[2]];
    let delivered_at = at(now_ms + 100);
    assert!(
        store
            .finish_notification(&a.id, 1, &DeliveryOutcome::Delivered { at: delivered_at })
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_notification(&a.id, 1, &DeliveryOutcome::Delivered { at: delivered_at })
            .await
            .unwrap(),
        "a delivered notification is finished"
    );
    let retry_at = at(now_ms + 2_000);
    assert!(
        store
            .finish_notification(
                &b.id,
                1,
                &DeliveryOutcome::Retry {
                    error: "the receiver answered HTTP 500",
                    next_attempt_at: retry_at,
                },
            )
            .await
            .unwrap()
    );
    // Node one's lease on `c` ran out; node two claims it again, and node one's late outcome
    // is refused.
    let reclaimed = store
        .claim_notifications(at(lease), at(lease + 60_000), 10)
        .await
        .unwrap();
    let reclaimed_c = reclaimed.iter().find(|d| d.id == c.id).unwrap();
    assert_eq!(reclaimed_c.attempts, 2);
    assert!(reclaimed.iter().any(|d| d.id == b.id), "the retry is due");
    assert!(reclaimed.iter().all(|d| d.id != a.id));
    assert!(
        !store
            .finish_notification(&c.id, 1, &DeliveryOutcome::Delivered { at: at(lease) })
            .await
            .unwrap()
    );
    let gave_up = event(
        EventKind::NotificationFailed,
        &format!("notification_delivery:{}", c.id),
    );
    assert!(
        store
            .finish_notification(
                &c.id,
                2,
                &DeliveryOutcome::GiveUp {
                    error: "could not connect",
                    event: &gave_up,
                },
            )
            .await
            .unwrap()
    );

    let listed = store
        .list_notification_deliveries(&DeliveryFilter::default(), &page(10))
        .await
        .unwrap();
    let by_id = |id: &str| listed.iter().find(|d| d.id == id).unwrap().clone();
    let a = by_id(&a.id);
    assert_eq!(
        (a.state, a.delivered_at, a.last_error),
        (DeliveryState::Delivered, Some(delivered_at), None)
    );
    let c = by_id(&c.id);
    assert_eq!(
        (c.state, c.attempts, c.last_error.as_deref()),
        (DeliveryState::Failed, 2, Some("could not connect"))
    );
    assert_eq!(
        by_id(&b.id).last_error.as_deref(),
        Some("the receiver answered HTTP 500")
    );
    // Pages in id order.
    let first = store
        .list_notification_deliveries(&DeliveryFilter::default(), &page(2))
        .await
        .unwrap();
    let rest = store
        .list_notification_deliveries(
            &DeliveryFilter::default(),
            &Page {
                after: Some(first[1].id.clone()),
                limit: 10,
            },
        )
        .await
        .unwrap();
    let paged: Vec<_> = first.iter().chain(&rest).map(|d| d.id.clone()).collect();
    let mut every: Vec<_> = all.iter().map(|d| d.id.clone()).collect();
    every.sort();
    assert_eq!(paged, every);
    // Giving up is in the trail.
    let failed = store
        .list_events(&EventQuery {
            kind: Some("notification.failed".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].event.subject, gave_up.subject);
}

async fn concurrent_claims_never_share_a_delivery(store: &dyn Store) {
    let hook = channel("busy-hook", None);
    store
        .create_notification_channel(&hook, &event(EventKind::NotificationChannelCreated, "c"))
        .await
        .unwrap();
    let t0 = 1_900_000_000_000;
    let queued: Vec<_> = (0..60).map(|i| delivery(&hook, at(t0 + i))).collect();
    store.enqueue_notifications(&queued).await.unwrap();
    let claim = || store.claim_notifications(at(t0 + 1_000), at(t0 + 61_000), 20);
    let (a, b, c, d) = tokio::join!(claim(), claim(), claim(), claim());
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0;
    for batch in [a, b, c, d] {
        for delivery in batch.unwrap() {
            assert_eq!(delivery.attempts, 1, "claimed once");
            assert!(seen.insert(delivery.id), "a delivery claimed twice");
            total += 1;
        }
    }
    assert_eq!(total, 60, "every due delivery is claimed by someone");
}

/// A team's fallback team and escalation wait round-trip and can be changed and cleared, with
/// the change's event; a fallback that does not exist, or a team that does not, is refused.
async fn teams_keep_their_fallback_and_escalation_wait(store: &dyn Store) {
    let backup = team(store, "backup").await;
    let owners = custos_core::Team::new(id(), "owners".into(), "o@example.com".into(), now())
        .unwrap()
        .with_escalation(Some(backup.id.clone()), Some(600))
        .unwrap();
    store
        .create_team(&owners, &event(EventKind::TeamCreated, "team:owners"))
        .await
        .unwrap();
    let read = store.get_team("owners").await.unwrap().unwrap();
    assert_eq!(read, owners);
    assert_eq!(read.fallback_team_id.as_deref(), Some(backup.id.as_str()));
    assert_eq!(read.escalate_after_seconds, Some(600));

    let cleared = custos_core::Team {
        fallback_team_id: None,
        escalate_after_seconds: None,
        ..owners.clone()
    };
    let changed = event(EventKind::TeamUpdated, &format!("team:{}", owners.id));
    store.update_team(&cleared, &changed).await.unwrap();
    assert_eq!(store.get_team(&owners.id).await.unwrap(), Some(cleared));

    let ghost = custos_core::Team {
        fallback_team_id: Some("no-such-team".into()),
        ..owners.clone()
    };
    let err = store.update_team(&ghost, &changed).await.unwrap_err();
    assert!(matches!(err, StoreError::MissingReference), "{err:?}");
    let missing = custos_core::Team {
        id: id(),
        ..owners.clone()
    };
    let err = store.update_team(&missing, &changed).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    let trail = store
        .list_events(&EventQuery {
            kind: Some("team.updated".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(trail.len(), 1, "refused changes leave no event");
}

fn callback(subject: &str, at: Timestamp) -> NotificationDelivery {
    crate::support::pending_delivery(subject, r#"{"type":"task.decided"}"#, at)
}

/// A pending request is due for escalation once it has waited its owner team's time (or the
/// default), only if that team has a fallback, and only while unexpired; it is escalated once,
/// with its event and notifications, and then reviewers of the fallback team see it.
async fn requests_escalate_after_their_teams_wait_once(store: &dyn Store) {
    let backup = team(store, "backup").await;
    let waits = custos_core::Team::new(id(), "waits".into(), "w@example.com".into(), now())
        .unwrap()
        .with_escalation(Some(backup.id.clone()), Some(60))
        .unwrap();
    let defaults = custos_core::Team::new(id(), "defaults".into(), "d@example.com".into(), now())
        .unwrap()
        .with_escalation(Some(backup.id.clone()), None)
        .unwrap();
    for t in [&waits, &defaults] {
        store
            .create_team(t, &event(EventKind::TeamCreated, "team:t"))
            .await
            .unwrap();
    }
    let alone = team(store, "alone").await;
    let t0 = now();
    let mut filed = Vec::new();
    for owner in [&waits, &defaults, &alone] {
        let n = nhi(&format!("bot-{}", owner.name), owner);
        register(store, &n).await;
        let mut t = task(&n, TaskState::PendingApproval);
        let a = Approval {
            created_at: t0,
            expires_at: t0.plus_seconds(86_400),
            ..approval_for(&t)
        };
        t.approval_id = Some(a.id.clone());
        file(store, &t, &a).await;
        filed.push(a);
    }
    let due_ids = |due: Vec<DueEscalation>| -> Vec<String> {
        due.into_iter().map(|d| d.approval.id).collect()
    };
    // Not yet: neither the 60 s wait nor the 300 s default has passed.
    let early = store
        .due_escalations(t0.plus_seconds(59), 300, 10)
        .await
        .unwrap();
    assert!(early.is_empty(), "{early:?}");
    let due = store
        .due_escalations(t0.plus_seconds(60), 300, 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (
            &due[0].approval,
            due[0].from_team.as_str(),
            due[0].to_team.as_str()
        ),
        (&filed[0], waits.id.as_str(), backup.id.as_str())
    );
    // The default applies to a team with a fallback and no wait; a team without a fallback
    // never escalates.
    let later = t0.plus_seconds(300);
    assert_eq!(
        due_ids(store.due_escalations(later, 300, 10).await.unwrap()),
        [filed[0].id.clone(), filed[1].id.clone()]
    );
    assert_eq!(
        store.due_escalations(later, 300, 1).await.unwrap().len(),
        1,
        "a limit is a limit"
    );

    let escalated = event(
        EventKind::ApprovalEscalated,
        &format!("approval:{}", filed[0].id),
    );
    let told = callback(&format!("approval:{}", filed[0].id), later);
    assert!(
        store
            .escalate_approval(
                &filed[0].id,
                &backup.id,
                later,
                &escalated,
                std::slice::from_ref(&told)
            )
            .await
            .unwrap()
    );
    let again = event(EventKind::ApprovalEscalated, "again");
    assert!(
        !store
            .escalate_approval(
                &filed[0].id,
                &backup.id,
                later,
                &again,
                &[callback("x", later)]
            )
            .await
            .unwrap(),
        "escalated once"
    );
    let read = store.get_approval(&filed[0].id).await.unwrap().unwrap();
    assert_eq!(
        (read.escalated_to.as_deref(), read.escalated_at),
        (Some(backup.id.as_str()), Some(later))
    );
    assert_eq!(
        due_ids(store.due_escalations(later, 300, 10).await.unwrap()),
        [filed[1].id.clone()]
    );
    // Past its deadline a request expires rather than escalates.
    assert!(
        store
            .due_escalations(t0.plus_seconds(86_400), 300, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !store
            .escalate_approval(
                &filed[1].id,
                &backup.id,
                t0.plus_seconds(86_400),
                &again,
                &[]
            )
            .await
            .unwrap()
    );

    // The fallback team's reviewers now see the escalated request, and only that one.
    let routed = store
        .list_approvals(
            &ApprovalFilter {
                owner_teams: Some(vec![backup.id.clone()]),
                ..Default::default()
            },
            &page(10),
        )
        .await
        .unwrap();
    assert_eq!(routed, std::slice::from_ref(&read));
    let owners_view = store
        .list_approvals(
            &ApprovalFilter {
                owner_teams: Some(vec![waits.id.clone()]),
                ..Default::default()
            },
            &page(10),
        )
        .await
        .unwrap();
    assert_eq!(owners_view, [read]);

    // The escalation's event and notification were written, once; the refused one's were not.
    let trail = store
        .list_events(&EventQuery {
            kind: Some("approval.escalated".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].event.subject, escalated.subject);
    let queued = store
        .list_notification_deliveries(&DeliveryFilter::default(), &page(10))
        .await
        .unwrap();
    assert_eq!(queued, [told]);
}

/// A decision, a vote, an expiry and a filing each write their notifications and callbacks in
/// their own transaction: written when the change is, and not at all when it is refused. A
/// callback names its URL and no channel; a delivery must name exactly one of the two.
async fn callbacks_and_notifications_commit_with_their_decision(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let hook = channel("owners-hook", Some(&owners.id));
    store
        .create_notification_channel(&hook, &event(EventKind::NotificationChannelCreated, "c"))
        .await
        .unwrap();
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let mut pending = task(&n, TaskState::PendingApproval);
    pending.callback_url = Some("https://agent.example.com/custos".into());
    let request = approval_for(&pending);
    pending.approval_id = Some(request.id.clone());
    let requested = delivery(&hook, now());
    store
        .create_task(
            &pending,
            Some(&request),
            None,
            &[event(EventKind::TaskRequested, "t")],
            std::slice::from_ref(&requested),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .get_task(&pending.id)
            .await
            .unwrap()
            .unwrap()
            .callback_url,
        pending.callback_url
    );

    let vote = Vote {
        reviewer: "operator:a".into(),
        scope: Scope::parse(&["mail:send"]).unwrap(),
        ttl_seconds: 60,
        reason: "ok".into(),
        at: now(),
    };
    let voted = delivery(&hook, now());
    store
        .record_vote(
            &request.id,
            &vote,
            &event(EventKind::ApprovalVoted, "a"),
            std::slice::from_ref(&voted),
        )
        .await
        .unwrap();
    let refused = store
        .record_vote(
            &request.id,
            &vote,
            &event(EventKind::ApprovalVoted, "a"),
            &[delivery(&hook, now())],
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::Conflict), "{refused:?}");

    let mut decided = request.clone();
    decided.state = ApprovalState::Denied;
    decided.decided_at = Some(now());
    decided.reason = Some("no".into());
    let mut denied = pending.clone();
    denied.state = TaskState::Denied;
    let told = callback(&format!("task:{}", pending.id), now());
    let announced = delivery(&hook, now());
    store
        .decide_approval(
            &decided,
            Some(&denied),
            &event(EventKind::ApprovalDecided, "a"),
            &[announced.clone(), told.clone()],
        )
        .await
        .unwrap();
    let late = store
        .decide_approval(
            &decided,
            Some(&denied),
            &event(EventKind::ApprovalDecided, "a"),
            &[callback("late", now())],
        )
        .await
        .unwrap_err();
    assert!(matches!(late, StoreError::Precondition(_)), "{late:?}");
    assert!(
        !store
            .expire_approval(
                &request,
                now().plus_seconds(7200),
                &event(EventKind::ApprovalExpired, "a"),
                &[callback("expired", now())],
            )
            .await
            .unwrap()
    );

    let queued = store
        .list_notification_deliveries(&DeliveryFilter::default(), &page(10))
        .await
        .unwrap();
    let mut expected = vec![requested, voted, announced, told.clone()];
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(queued, expected);
    // Claimed like any other, with its URL.
    let claimed = store
        .claim_notifications(now(), now().plus_seconds(60), 10)
        .await
        .unwrap();
    let claimed_callback = claimed.iter().find(|d| d.id == told.id).unwrap();
    assert_eq!(claimed_callback.channel_id, None);
    assert_eq!(claimed_callback.callback_url, told.callback_url);

    // Neither a channel nor a URL, or both: refused, nothing queued.
    let nowhere = NotificationDelivery {
        callback_url: None,
        ..callback("nowhere", now())
    };
    let both = NotificationDelivery {
        channel_id: Some(hook.id.clone()),
        ..callback("both", now())
    };
    for bad in [nowhere, both] {
        assert!(
            store
                .enqueue_notifications(std::slice::from_ref(&bad))
                .await
                .is_err(),
            "{bad:?}"
        );
    }
    assert_eq!(
        store
            .list_notification_deliveries(&DeliveryFilter::default(), &page(10))
            .await
            .unwrap()
            .len(),
        4
    );
}

async fn ui_sessions_end_once_and_old_ones_are_cleared(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let rita = operator("rita", &[Role::Reviewer], &[&owners]);
    store
        .create_operator(
            &rita,
            b"rita-token-hash",
            &event(EventKind::OperatorCreated, "o"),
        )
        .await
        .unwrap();
    let t0 = now();
    let session = |hash: &[u8], created: Timestamp, seconds: i64| UiSession {
        id_hash: hash.to_vec(),
        operator_id: rita.id.clone(),
        csrf_token: format!("csrf-{}", hash.len()),
        created_at: created,
        expires_at: created.plus_seconds(seconds),
        ended_at: None,
    };
    let first = session(b"first-session", t0, 60);
    store
        .create_ui_session(&first, &event(EventKind::OperatorSignedIn, "o"))
        .await
        .unwrap();
    assert_eq!(
        store.get_ui_session(b"first-session").await.unwrap(),
        Some(first.clone())
    );
    assert!(first.is_live(t0.plus_seconds(59)));
    assert!(!first.is_live(t0.plus_seconds(60)));
    assert_eq!(store.get_ui_session(b"nobody").await.unwrap(), None);

    // Ending it: once; a second sign-out writes nothing.
    let ended_at = t0.plus_seconds(10);
    assert!(
        store
            .end_ui_session(
                b"first-session",
                ended_at,
                &event(EventKind::OperatorSignedOut, "o")
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .end_ui_session(
                b"first-session",
                ended_at,
                &event(EventKind::OperatorSignedOut, "o")
            )
            .await
            .unwrap()
    );
    let ended = store
        .get_ui_session(b"first-session")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.ended_at, Some(ended_at));
    assert!(!ended.is_live(t0.plus_seconds(11)));

    // A later sign-in clears sessions that ended or expired, and keeps live ones.
    let live = session(b"live-session", t0, 3600);
    let expired = session(b"expired-session", t0, 30);
    for s in [&live, &expired] {
        store
            .create_ui_session(s, &event(EventKind::OperatorSignedIn, "o"))
            .await
            .unwrap();
    }
    let later = session(b"later-session", t0.plus_seconds(120), 60);
    store
        .create_ui_session(&later, &event(EventKind::OperatorSignedIn, "o"))
        .await
        .unwrap();
    assert_eq!(store.get_ui_session(b"first-session").await.unwrap(), None);
    assert_eq!(
        store.get_ui_session(b"expired-session").await.unwrap(),
        None
    );
    assert_eq!(
        store.get_ui_session(b"live-session").await.unwrap(),
        Some(live)
    );
    // The same id twice is a conflict, never a second session.
    assert!(matches!(
        store
            .create_ui_session(&later, &event(EventKind::OperatorSignedIn, "o"))
            .await,
        Err(StoreError::Conflict)
    ));
}

async fn an_nhis_tasks_are_listed_newest_first(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let bot = nhi("bot", &owners);
    let other = nhi("other-bot", &owners);
    register(store, &bot).await;
    register(store, &other).await;
    let mut ids = Vec::new();
    for n in [&bot, &other, &bot, &bot] {
        let t = task(n, TaskState::Active);
        store
            .create_task(&t, None, None, &[event(EventKind::TaskRequested, "t")], &[])
            .await
            .unwrap();
        if n.id == bot.id {
            ids.push(t.id);
        }
    }
    let listed: Vec<String> = store
        .list_tasks(&bot.id, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    ids.reverse();
    assert_eq!(listed, ids);
    assert_eq!(store.list_tasks(&bot.id, 2).await.unwrap().len(), 2);
    assert!(
        store
            .list_tasks("no-such-nhi", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn events_can_be_read_newest_first(store: &dyn Store) {
    let events: Vec<_> = (0..5)
        .map(|i| event(EventKind::NhiUpdated, &format!("nhi:newest-{}", i % 2)))
        .collect();
    store.append_events(&events).await.unwrap();
    let newest = store
        .list_events(&EventQuery {
            limit: 2,
            newest_first: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = newest.iter().map(|e| e.event.id.clone()).collect();
    assert_eq!(ids, vec![events[4].id.clone(), events[3].id.clone()]);
    // By subject, through the subject index: the newest of that subject.
    let of_subject = store
        .list_events(&EventQuery {
            limit: 2,
            subject: Some("nhi:newest-0".into()),
            newest_first: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = of_subject.iter().map(|e| e.event.id.clone()).collect();
    assert_eq!(ids, vec![events[4].id.clone(), events[2].id.clone()]);
}
