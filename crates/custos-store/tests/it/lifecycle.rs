//! Decommissioning workflows' storage: one per NHI, moved on from the step it is at only,
//! each move with its events and notifications in one transaction.

use custos_core::issuance::{ApprovalKind, ApprovalState, TaskState};
use custos_core::lifecycle::{Decommission, DecommissionStep, DecommissionTrigger, Teardown};
use custos_core::{EventKind, Page, Scope};
use custos_store::{
    ApprovalFilter, DecommissionFilter, DeliveryFilter, NotificationDelivery, Store, StoreError,
};

use crate::conformance;
use crate::conformance::{approval_for, credential, task};
use crate::support::{event, events_of, id, nhi, now, pending_delivery, register, team};

conformance!(
    an_nhi_has_one_workflow_and_asking_again_returns_it,
    a_step_is_recorded_once_with_its_events_and_notifications,
    workflows_are_listed_by_nhi_state_and_team,
    a_job_lock_is_held_by_one_holder_at_a_time,
    a_review_of_an_nhi_has_no_task_and_is_decided_once,
    a_key_is_replaced_once_and_its_sealed_secret_collected_once,
    tasks_past_their_lifetime_are_listed_and_closed_once,
);

fn workflow(nhi_id: &str) -> Decommission {
    Decommission::start(
        id(),
        nhi_id.to_owned(),
        DecommissionTrigger::Request,
        "operator:o".to_owned(),
        "shut down".to_owned(),
        now(),
        None,
    )
}

fn notice(subject: &str) -> NotificationDelivery {
    pending_delivery(subject, r#"{"type":"nhi.decommissioned"}"#, now())
}

/// Starting a workflow writes it with its event; starting another for the same NHI writes
/// nothing and returns the first; an unknown NHI is a missing reference.
async fn an_nhi_has_one_workflow_and_asking_again_returns_it(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let first = workflow(&n.id);
    let started = event(EventKind::DecommissionStarted, &format!("nhi:{}", n.id));
    assert_eq!(
        store.start_decommission(&first, &started).await.unwrap(),
        None
    );
    let second = workflow(&n.id);
    let again = event(EventKind::DecommissionStarted, &format!("nhi:{}", n.id));
    assert_eq!(
        store.start_decommission(&second, &again).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(events_of(store, EventKind::DecommissionStarted).await, 1);
    assert_eq!(
        store.get_decommission(&first.id).await.unwrap(),
        Some(first)
    );
    assert_eq!(store.get_decommission(&second.id).await.unwrap(), None);

    let err = store
        .start_decommission(&workflow("no-such-nhi"), &again)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::MissingReference), "{err:?}");
}

/// A step is recorded only from the step the workflow is at: the first record wins, a second
/// from the same step writes nothing (no event, no notification), and a failure is counted
/// without moving the workflow.
async fn a_step_is_recorded_once_with_its_events_and_notifications(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let start = workflow(&n.id);
    store
        .start_decommission(&start, &event(EventKind::DecommissionStarted, "s"))
        .await
        .unwrap();

    store
        .record_decommission_failure(&start.id, "the store was away", now())
        .await
        .unwrap();
    let failed = store.get_decommission(&start.id).await.unwrap().unwrap();
    assert_eq!(failed.step, DecommissionStep::Revoke);
    assert_eq!(failed.failures, 1);
    assert_eq!(failed.last_error.as_deref(), Some("the store was away"));

    let teardown = Teardown {
        revoked_credentials: vec!["c1".into()],
        revoked_at: Some(now()),
        last_refused_after_ms: Some(0.5),
        ..Default::default()
    };
    let revoked = failed.advanced(teardown.clone(), now());
    assert_eq!(revoked.failures, 1, "failures are history, kept");
    assert_eq!(revoked.last_error, None, "the step that failed is done now");
    let progressed = || event(EventKind::DecommissionProgressed, "p");
    assert!(
        store
            .advance_decommission(DecommissionStep::Revoke, &revoked, &[progressed()], &[])
            .await
            .unwrap()
    );
    assert!(
        !store
            .advance_decommission(DecommissionStep::Revoke, &revoked, &[progressed()], &[])
            .await
            .unwrap(),
        "a step is recorded once"
    );
    assert_eq!(events_of(store, EventKind::DecommissionProgressed).await, 1);
    let stored = store.get_decommission(&start.id).await.unwrap().unwrap();
    assert_eq!(stored, revoked);
    assert_eq!(stored.teardown, teardown);

    // Walk to the end; the last record carries the notices and the receipt.
    let mut current = stored;
    while current.step != DecommissionStep::Notify {
        let next = current.advanced(current.teardown.clone(), now());
        assert!(
            store
                .advance_decommission(current.step, &next, &[progressed()], &[])
                .await
                .unwrap()
        );
        current = next;
    }
    let mut done = current.advanced(current.teardown.clone(), now());
    done.receipt = Some("header.claims.signature".into());
    let notices = [notice(&format!("decommission:{}", done.id))];
    let completed = event(EventKind::DecommissionCompleted, "c");
    assert!(
        store
            .advance_decommission(
                DecommissionStep::Notify,
                &done,
                &[progressed(), completed.clone()],
                &notices
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .advance_decommission(DecommissionStep::Notify, &done, &[completed], &notices)
            .await
            .unwrap()
    );
    assert_eq!(events_of(store, EventKind::DecommissionCompleted).await, 1);
    let queued = store
        .list_notification_deliveries(
            &DeliveryFilter::default(),
            &Page {
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(queued.len(), 1, "the notices are queued once");
    let finished = store.get_decommission(&done.id).await.unwrap().unwrap();
    assert!(finished.is_done());
    assert_eq!(finished.finished_at, done.finished_at);
    assert_eq!(finished.receipt, done.receipt);
    // A finished workflow counts no more failures.
    store
        .record_decommission_failure(&done.id, "late", now())
        .await
        .unwrap();
    assert_eq!(
        store.get_decommission(&done.id).await.unwrap(),
        Some(finished)
    );
}

/// A workflow the listing test started, and what it should be found by.
struct Listed {
    id: String,
    nhi_id: String,
    team_id: String,
    done: bool,
}

/// Newest first, filtered by NHI, by running or done, and by the NHI's team; pages visit
/// each workflow once.
async fn workflows_are_listed_by_nhi_state_and_team(store: &dyn Store) {
    let red = team(store, "red").await;
    let blue = team(store, "blue").await;
    let mut ids = Vec::new();
    for (i, owner) in [&red, &blue, &red, &blue, &red].into_iter().enumerate() {
        let n = nhi(&format!("bot-{i}"), owner);
        register(store, &n).await;
        let mut w = workflow(&n.id);
        w.started_at = now().plus_seconds(i as i64);
        w.updated_at = w.started_at;
        store
            .start_decommission(&w, &event(EventKind::DecommissionStarted, "s"))
            .await
            .unwrap();
        if i % 2 == 0 {
            let mut current = w.clone();
            while !current.is_done() {
                let next = current.advanced(current.teardown.clone(), now());
                store
                    .advance_decommission(current.step, &next, &[], &[])
                    .await
                    .unwrap();
                current = next;
            }
        }
        ids.push(Listed {
            id: w.id.clone(),
            nhi_id: n.id.clone(),
            team_id: owner.id.clone(),
            done: i % 2 == 0,
        });
    }
    let list = |filter: DecommissionFilter| async move {
        store
            .list_decommissions(
                &filter,
                &Page {
                    after: None,
                    limit: 50,
                },
            )
            .await
            .unwrap()
            .into_iter()
            .map(|w| w.id)
            .collect::<Vec<_>>()
    };
    let newest_first = |pick: &dyn Fn(&Listed) -> bool| {
        ids.iter()
            .rev()
            .filter(|w| pick(w))
            .map(|w| w.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list(DecommissionFilter::default()).await,
        newest_first(&|_| true)
    );
    assert_eq!(
        list(DecommissionFilter {
            finished: Some(true),
            ..Default::default()
        })
        .await,
        newest_first(&|w| w.done)
    );
    assert_eq!(
        list(DecommissionFilter {
            finished: Some(false),
            ..Default::default()
        })
        .await,
        newest_first(&|w| !w.done)
    );
    assert_eq!(
        list(DecommissionFilter {
            nhi_id: Some(ids[1].nhi_id.clone()),
            ..Default::default()
        })
        .await,
        [ids[1].id.clone()]
    );
    assert_eq!(
        list(DecommissionFilter {
            team_ids: Some(vec![blue.id.clone()]),
            ..Default::default()
        })
        .await,
        newest_first(&|w| w.team_id == blue.id)
    );
    assert!(
        list(DecommissionFilter {
            team_ids: Some(vec![]),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    let mut seen = Vec::new();
    let mut page = Page {
        after: None,
        limit: 2,
    };
    loop {
        let batch = store
            .list_decommissions(&DecommissionFilter::default(), &page)
            .await
            .unwrap();
        if batch.is_empty() {
            break;
        }
        page.after = batch.last().map(|w| w.id.clone());
        seen.extend(batch.into_iter().map(|w| w.id));
    }
    assert_eq!(seen, newest_first(&|_| true));
}

/// On PostgreSQL a job's lock is held by one holder (one connection) at a time and freed when
/// dropped; other jobs' locks are separate. SQLite serves one node, which always holds it.
async fn a_job_lock_is_held_by_one_holder_at_a_time(store: &dyn Store) {
    let first = store.lock_job("lifecycle").await.unwrap();
    assert!(first.is_some());
    let second = store.lock_job("lifecycle").await.unwrap();
    let other_job = store.lock_job("another-job").await.unwrap();
    assert!(other_job.is_some());
    match store.backend() {
        "postgres" => assert!(second.is_none(), "one holder at a time"),
        _ => assert!(second.is_some(), "a single node holds every lock"),
    }
    drop((first, second, other_job));
    // Dropping rolls the holding transaction back; the lock is free once it is done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while store.lock_job("lifecycle").await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was never freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A review of the NHI itself is filed with no task, found by its kind, and decided once
/// without touching any task.
async fn a_review_of_an_nhi_has_no_task_and_is_decided_once(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let mut review = approval_for(&task(&n, TaskState::PendingApproval));
    review.kind = ApprovalKind::Decommission;
    review.task_id = None;
    review.requested_scope = Scope::default();
    review.excess = Vec::new();
    review.requested_by = "system".into();
    let notice = notice(&format!("approval:{}", review.id));
    store
        .file_review(
            &review,
            &[event(
                EventKind::ApprovalRequested,
                &format!("approval:{}", review.id),
            )],
            std::slice::from_ref(&notice),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_approval(&review.id).await.unwrap(),
        Some(review.clone())
    );
    let filter = ApprovalFilter {
        nhi_id: Some(n.id.clone()),
        kind: Some(ApprovalKind::Decommission),
        ..Default::default()
    };
    let page = Page {
        after: None,
        limit: 10,
    };
    assert_eq!(
        store.list_approvals(&filter, &page).await.unwrap(),
        vec![review.clone()]
    );
    let queued = store
        .list_notification_deliveries(&DeliveryFilter::default(), &page)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1, "the notice is queued with the review");

    let mut decided = review.clone();
    decided.state = ApprovalState::Approved;
    decided.decided_at = Some(now());
    decided.decided_by = Some("operator:r".into());
    decided.reason = Some("idle".into());
    store
        .decide_approval(&decided, None, &event(EventKind::ApprovalDecided, "a"), &[])
        .await
        .unwrap();
    assert_eq!(
        store.get_approval(&review.id).await.unwrap(),
        Some(decided.clone())
    );
    let err = store
        .decide_approval(&decided, None, &event(EventKind::ApprovalDecided, "a"), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Precondition(_)), "{err:?}");
    assert_eq!(events_of(store, EventKind::ApprovalDecided).await, 1);
}

/// An aging key is listed until it is replaced; a replacement's sealed secret is handed out
/// once; a key is replaced once, by the scheduler or by hand.
async fn a_key_is_replaced_once_and_its_sealed_secret_collected_once(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let mut old = credential(&n, &[30], None);
    old.expires_at = Some(now().plus_seconds(86_400));
    store
        .create_credential(&old, &event(EventKind::CredentialIssued, "c"))
        .await
        .unwrap();
    let mut revoked = credential(&n, &[31], None);
    revoked.revoked_at = Some(now());
    store
        .create_credential(&revoked, &event(EventKind::CredentialIssued, "c"))
        .await
        .unwrap();
    let cutoff = now();
    let page = Page {
        after: None,
        limit: 10,
    };
    let aging = store.aging_static_keys(cutoff, now(), &page).await.unwrap();
    assert_eq!(aging.iter().map(|c| &c.id).collect::<Vec<_>>(), [&old.id]);
    // Keyset paging: nothing after the last one seen.
    let after = Page {
        after: Some(old.id.clone()),
        limit: 10,
    };
    assert!(
        store
            .aging_static_keys(cutoff, now(), &after)
            .await
            .unwrap()
            .is_empty()
    );

    let mut new = credential(&n, &[32], None);
    new.expires_at = Some(now().plus_seconds(90 * 86_400));
    store
        .rotate_credential(
            &old.id,
            now().plus_seconds(3600),
            &new,
            Some(b"sealed secret"),
            &event(EventKind::CredentialRotated, "c"),
        )
        .await
        .unwrap();
    assert!(
        store
            .aging_static_keys(now(), now(), &page)
            .await
            .unwrap()
            .iter()
            .all(|c| c.id != old.id)
    );
    let err = store
        .rotate_credential(
            &old.id,
            now().plus_seconds(60),
            &credential(&n, &[33], None),
            None,
            &event(EventKind::CredentialRotated, "c"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Precondition(_)),
        "replaced once: {err:?}"
    );

    let collected = store
        .collect_rotated_secret(&old.id, now(), &event(EventKind::CredentialCollected, "c"))
        .await
        .unwrap();
    assert_eq!(collected, Some((new.id.clone(), b"sealed secret".to_vec())));
    let again = store
        .collect_rotated_secret(&old.id, now(), &event(EventKind::CredentialCollected, "c"))
        .await
        .unwrap();
    assert_eq!(again, None, "handed out once");
    assert_eq!(events_of(store, EventKind::CredentialCollected).await, 1);
    // A rotation by hand shows the secret at once: nothing waits to be collected.
    let mut newer = credential(&n, &[34], None);
    newer.expires_at = Some(now().plus_seconds(90 * 86_400));
    store
        .rotate_credential(
            &new.id,
            now().plus_seconds(3600),
            &newer,
            None,
            &event(EventKind::CredentialRotated, "c"),
        )
        .await
        .unwrap();
    let none = store
        .collect_rotated_secret(&new.id, now(), &event(EventKind::CredentialCollected, "c"))
        .await
        .unwrap();
    assert_eq!(none, None);
}

/// Active tasks past their lifetime are listed, soonest ended first, and closed once as of
/// their expiry; live and pending ones are left alone.
async fn tasks_past_their_lifetime_are_listed_and_closed_once(store: &dyn Store) {
    let owners = team(store, "owners").await;
    let n = nhi("bot", &owners);
    register(store, &n).await;
    let at = now();
    let mut ended = task(&n, TaskState::Active);
    ended.activated_at = Some(at);
    ended.expires_at = Some(at.plus_seconds(10));
    let mut live = task(&n, TaskState::Active);
    live.activated_at = Some(at);
    live.expires_at = Some(at.plus_seconds(1000));
    let pending = task(&n, TaskState::PendingApproval);
    for t in [&ended, &live, &pending] {
        store
            .create_task(t, None, None, &[event(EventKind::TaskRequested, "t")], &[])
            .await
            .unwrap();
    }
    let later = at.plus_seconds(100);
    let due = store.expired_tasks(later, 10).await.unwrap();
    assert_eq!(due.iter().map(|t| &t.id).collect::<Vec<_>>(), [&ended.id]);
    let closed = event(EventKind::TaskExpired, &format!("task:{}", ended.id));
    assert!(
        store
            .close_expired_task(&ended.id, later, &closed)
            .await
            .unwrap()
    );
    assert!(
        !store
            .close_expired_task(&ended.id, later, &closed)
            .await
            .unwrap()
    );
    assert!(
        !store
            .close_expired_task(&live.id, later, &closed)
            .await
            .unwrap(),
        "not yet past"
    );
    let stored = store.get_task(&ended.id).await.unwrap().unwrap();
    assert_eq!(stored.state, TaskState::Ended);
    assert_eq!(stored.ended_at, ended.expires_at);
    assert!(store.expired_tasks(later, 10).await.unwrap().is_empty());
    assert_eq!(events_of(store, EventKind::TaskExpired).await, 1);
}
