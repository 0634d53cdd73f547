//! Discovery's storage: NHIs found by their ids on other platforms, observed identities
//! merged across imports, and logical agents with their members.

use custos_core::discovery::IdentityClass;
use custos_core::discovery::logical::{LogicalAgent, Member};
use custos_core::discovery::observed::{Evidence, ObservedFilter, ObservedIdentity};
use custos_core::{EventKind, Page};
use custos_store::{Store, StoreError};

use crate::conformance;
use crate::support::{event, events_of, id, nhi, now, register, team};

conformance!(
    nhis_are_found_by_their_external_ids_as_they_change,
    registered_names_are_told_from_new_ones,
    observed_identities_merge_across_imports_and_page_in_order,
    logical_agents_keep_one_membership_per_nhi,
);

fn page(limit: u32) -> Page {
    Page { after: None, limit }
}

async fn nhis_are_found_by_their_external_ids_as_they_change(store: &dyn Store) {
    let t = team(store, "payments").await;
    let mut older = nhi("ci", &t);
    older
        .external_ids
        .insert("aws".into(), "arn:aws:iam::1:user/ci".into());
    register(store, &older).await;
    let mut newer = nhi("ci-copy", &t);
    newer
        .external_ids
        .insert("aws".into(), "arn:aws:iam::1:user/ci".into());
    newer.external_ids.insert("github".into(), "ci[bot]".into());
    register(store, &newer).await;

    let found = store
        .find_nhi_by_external_id("aws", "arn:aws:iam::1:user/ci")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, older.id, "of several, the oldest");
    let found = store
        .find_nhi_by_external_id("github", "ci[bot]")
        .await
        .unwrap();
    assert_eq!(found.unwrap().id, newer.id);
    assert!(
        store
            .find_nhi_by_external_id("aws", "ci[bot]")
            .await
            .unwrap()
            .is_none()
    );

    // An update replaces the index rows with the NHI's.
    let mut changed = older.clone();
    changed.external_ids.clear();
    changed.external_ids.insert("okta".into(), "00u1".into());
    changed.version += 1;
    store
        .update_nhi(
            &changed,
            older.version,
            &event(EventKind::NhiUpdated, "nhi:x"),
        )
        .await
        .unwrap();
    let found = store
        .find_nhi_by_external_id("aws", "arn:aws:iam::1:user/ci")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, newer.id);
    assert_eq!(
        store
            .find_nhi_by_external_id("okta", "00u1")
            .await
            .unwrap()
            .unwrap()
            .id,
        older.id
    );
}

async fn registered_names_are_told_from_new_ones(store: &dyn Store) {
    let t = team(store, "payments").await;
    register(store, &nhi("a", &t)).await;
    let mut other_platform = nhi("b", &t);
    other_platform.platform = "aws".into();
    register(store, &other_platform).await;
    let asked = vec![
        ("openai".to_owned(), "a".to_owned()),
        ("openai".to_owned(), "b".to_owned()),
        ("aws".to_owned(), "b".to_owned()),
        ("aws".to_owned(), "c".to_owned()),
    ];
    let mut found = store.registered_names(&asked).await.unwrap();
    found.sort();
    assert_eq!(
        found,
        [
            ("aws".to_owned(), "b".to_owned()),
            ("openai".to_owned(), "a".to_owned())
        ]
    );
    // More names than one query takes.
    let many: Vec<(String, String)> = (0..1_200)
        .map(|i| ("openai".to_owned(), format!("n{i}")))
        .chain([("openai".to_owned(), "a".to_owned())])
        .collect();
    assert_eq!(store.registered_names(&many).await.unwrap().len(), 1);
}

fn observed(
    platform: &str,
    principal: &str,
    class: IdentityClass,
    events: i64,
) -> ObservedIdentity {
    let at = now();
    let mut evidence = Evidence::default();
    evidence.sources.push(format!("{principal}.json"));
    evidence.operations.insert("s3:GetObject".into(), events);
    ObservedIdentity {
        platform: platform.into(),
        principal: principal.into(),
        display_name: principal.rsplit('/').next().unwrap().into(),
        class,
        class_reason: "test".into(),
        nhi_id: None,
        first_seen: Some(at),
        last_seen: Some(at),
        events,
        evidence,
        first_imported_at: at,
        updated_at: at,
    }
}

async fn observed_identities_merge_across_imports_and_page_in_order(store: &dyn Store) {
    let t = team(store, "payments").await;
    let registered = nhi("bot", &t);
    register(store, &registered).await;
    let first = vec![
        observed("aws", "arn:aws:iam::1:user/ci", IdentityClass::NonHuman, 2),
        observed("aws", "arn:aws:iam::1:user/alice", IdentityClass::Human, 1),
        observed("github", "ci[bot]", IdentityClass::NonHuman, 1),
    ];
    let stored = store
        .record_observed(&first, &event(EventKind::DiscoveryImported, "discovery:x"))
        .await
        .unwrap();
    assert_eq!(stored, first);
    assert_eq!(events_of(store, EventKind::DiscoveryImported).await, 1);

    // A later import: more events, a person's sign-in, a match with an NHI.
    let mut later = observed("aws", "arn:aws:iam::1:user/ci", IdentityClass::Human, 3);
    later.nhi_id = Some(registered.id.clone());
    later.evidence.sources = vec!["later.json".into()];
    let merged = store
        .record_observed(
            std::slice::from_ref(&later),
            &event(EventKind::DiscoveryImported, "discovery:x"),
        )
        .await
        .unwrap();
    let ci = &merged[0];
    assert_eq!(ci.events, 5);
    assert_eq!(
        ci.class,
        IdentityClass::Human,
        "a person's sign-in outweighs"
    );
    assert_eq!(ci.nhi_id.as_deref(), Some(registered.id.as_str()));
    assert_eq!(ci.first_seen, first[0].first_seen);
    assert_eq!(ci.last_seen, later.last_seen);
    assert_eq!(ci.evidence.operations["s3:GetObject"], 5);
    assert_eq!(
        ci.evidence.sources,
        ["arn:aws:iam::1:user/ci.json", "later.json"]
    );
    assert_eq!(
        store
            .get_observed("aws", "arn:aws:iam::1:user/ci")
            .await
            .unwrap()
            .as_ref(),
        Some(ci)
    );

    // Pages in (platform, principal) order, cursor `platform:principal`, by every filter.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let batch = store
            .list_observed(
                &ObservedFilter::default(),
                &Page {
                    after: after.clone(),
                    limit: 2,
                },
            )
            .await
            .unwrap();
        let Some(last) = batch.last() else { break };
        after = Some(format!("{}:{}", last.platform, last.principal));
        seen.extend(batch.into_iter().map(|i| i.principal));
    }
    assert_eq!(
        seen,
        [
            "arn:aws:iam::1:user/alice",
            "arn:aws:iam::1:user/ci",
            "ci[bot]"
        ]
    );
    let shadow = store
        .list_observed(
            &ObservedFilter {
                shadow_only: true,
                ..Default::default()
            },
            &page(10),
        )
        .await
        .unwrap();
    assert_eq!(shadow.len(), 1);
    assert_eq!(shadow[0].principal, "ci[bot]");
    let humans = store
        .list_observed(
            &ObservedFilter {
                class: Some(IdentityClass::Human),
                platform: Some("aws".into()),
                ..Default::default()
            },
            &page(10),
        )
        .await
        .unwrap();
    assert_eq!(humans.len(), 2);
    let matched = store
        .list_observed(
            &ObservedFilter {
                nhi_id: Some(registered.id.clone()),
                ..Default::default()
            },
            &page(10),
        )
        .await
        .unwrap();
    assert_eq!(matched.len(), 1);
}

async fn logical_agents_keep_one_membership_per_nhi(store: &dyn Store) {
    let t = team(store, "payments").await;
    let (a, b, c) = (nhi("a", &t), nhi("b", &t), nhi("c", &t));
    for n in [&a, &b, &c] {
        register(store, n).await;
    }
    let member = |nhi_id: &str| Member {
        nhi_id: nhi_id.to_owned(),
        linked_at: now(),
        linked_by: "operator:x".into(),
    };
    let agent = LogicalAgent {
        id: id(),
        name: "invoice-bot".into(),
        team_id: t.id.clone(),
        description: String::new(),
        created_at: now(),
        created_by: "operator:x".into(),
        members: vec![member(&a.id), member(&b.id)],
    };
    let created = event(EventKind::LogicalAgentCreated, "logical_agent:x");
    store.create_logical_agent(&agent, &created).await.unwrap();
    assert_eq!(
        store.get_logical_agent(&agent.id).await.unwrap().as_ref(),
        Some(&agent)
    );

    // One membership per NHI; one name per agent; nothing half-written on refusal.
    let rival = LogicalAgent {
        id: id(),
        name: "rival".into(),
        members: vec![member(&c.id), member(&a.id)],
        ..agent.clone()
    };
    assert!(matches!(
        store.create_logical_agent(&rival, &created).await,
        Err(StoreError::Conflict)
    ));
    assert!(store.get_logical_agent(&rival.id).await.unwrap().is_none());
    let same_name = LogicalAgent {
        id: id(),
        members: vec![member(&c.id)],
        ..agent.clone()
    };
    assert!(matches!(
        store.create_logical_agent(&same_name, &created).await,
        Err(StoreError::Conflict)
    ));
    let linked = event(EventKind::LogicalAgentLinked, "logical_agent:x");
    assert!(matches!(
        store
            .link_logical_agent(&agent.id, &member(&a.id), &linked)
            .await,
        Err(StoreError::Conflict)
    ));
    store
        .link_logical_agent(&agent.id, &member(&c.id), &linked)
        .await
        .unwrap();
    let mut members = store.linked_nhis().await.unwrap();
    members.sort();
    let mut expected = vec![a.id.clone(), b.id.clone(), c.id.clone()];
    expected.sort();
    assert_eq!(members, expected);

    let unlinked = event(EventKind::LogicalAgentUnlinked, "logical_agent:x");
    assert!(
        store
            .unlink_logical_agent(&agent.id, &b.id, &unlinked)
            .await
            .unwrap()
    );
    assert!(
        !store
            .unlink_logical_agent(&agent.id, &b.id, &unlinked)
            .await
            .unwrap()
    );
    assert_eq!(events_of(store, EventKind::LogicalAgentUnlinked).await, 1);
    let listed = store.list_logical_agents(&page(10)).await.unwrap();
    assert_eq!(listed.len(), 1);
    let ids: Vec<&str> = listed[0]
        .members
        .iter()
        .map(|m| m.nhi_id.as_str())
        .collect();
    assert_eq!(ids, [a.id.as_str(), c.id.as_str()]);
}
