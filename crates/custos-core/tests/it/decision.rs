//! The decision pipeline over a live state held in plain maps: the order of the checks, the
//! reason each refusal names, and failing closed on anything missing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use custos_core::decision::{
    Ask, LiveCredential, LiveNhi, LiveTask, LiveView, Presented, Reason, decide, hour_and_weekday,
};
use custos_core::guardrails::{Guardrails, NhiFacts};
use custos_core::issuance::TaskState;
use custos_core::{NhiStatus, Scope, Timestamp};

#[derive(Default)]
struct Maps {
    credentials: HashMap<String, Arc<LiveCredential>>,
    nhis: HashMap<String, Arc<LiveNhi>>,
    tasks: HashMap<String, Arc<LiveTask>>,
    revoked: HashSet<String>,
}

impl LiveView for Maps {
    fn credential(&self, id: &str) -> Option<Arc<LiveCredential>> {
        self.credentials.get(id).cloned()
    }
    fn nhi(&self, id: &str) -> Option<Arc<LiveNhi>> {
        self.nhis.get(id).cloned()
    }
    fn task(&self, id: &str) -> Option<Arc<LiveTask>> {
        self.tasks.get(id).cloned()
    }
    fn is_revoked(&self, id: &str) -> bool {
        self.revoked.contains(id)
    }
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_millis(seconds * 1000).unwrap()
}

const NOW: i64 = 1_800_000_000;

impl Maps {
    fn put_nhi(&mut self, guardrails: &Guardrails, id: &str, status: NhiStatus, ceiling: &[&str]) {
        let principal = guardrails.principal(&NhiFacts {
            id,
            name: id,
            kind: "ai_agent",
            platform: "custom",
            environment: "production",
            status: status.as_str(),
            risk: 0,
            owner_team: "team-1",
        });
        self.nhis.insert(
            id.into(),
            Arc::new(LiveNhi {
                id: id.into(),
                name: id.into(),
                status,
                scope_ceiling: Scope::parse(ceiling).unwrap(),
                principal,
            }),
        );
    }

    fn put_credential(&mut self, id: &str, nhi: &str, parent: Option<&str>, task: Option<&str>) {
        self.credentials.insert(
            id.into(),
            Arc::new(LiveCredential {
                id: id.into(),
                nhi_id: nhi.into(),
                fingerprint: format!("fp_{id}"),
                expires_at: Some(at(NOW + 600)),
                revoked: false,
                task_id: task.map(Into::into),
                parent_id: parent.map(Into::into),
            }),
        );
    }
}

fn token(id: &str, scope: &[&str]) -> Presented {
    Presented {
        credential_id: id.into(),
        expires_at: Some(at(NOW + 600)),
        not_before: None,
        scope: Some(Scope::parse(scope).unwrap()),
    }
}

fn read(resource: &str) -> Ask<'_> {
    Ask {
        service: "crm",
        operation: "read",
        resource,
        hour: 10,
        weekday: 2,
    }
}

/// A three-link delegation: root (planner) → child (researcher) → leaf (summariser).
fn chain() -> (Maps, Guardrails) {
    let guardrails = Guardrails::empty();
    let mut live = Maps::default();
    for nhi in ["planner", "researcher", "summariser"] {
        live.put_nhi(&guardrails, nhi, NhiStatus::Active, &["crm:read"]);
    }
    live.put_credential("root", "planner", None, None);
    live.put_credential("child", "researcher", Some("root"), None);
    live.put_credential("leaf", "summariser", Some("child"), None);
    (live, guardrails)
}

fn reason(
    live: &Maps,
    guardrails: &Guardrails,
    presented: &Presented,
    ask: &Ask<'_>,
    now: i64,
) -> Reason {
    decide(presented, live, guardrails, ask, at(now)).reason
}

#[test]
fn a_live_chain_within_scope_is_allowed() {
    let (live, guardrails) = chain();
    let leaf = token("leaf", &["crm:read:customers/*"]);
    let decision = decide(&leaf, &live, &guardrails, &read("customers/1"), at(NOW));
    assert_eq!(decision.reason, Reason::Allowed);
    assert_eq!(decision.nhi_id.as_deref(), Some("summariser"));
    assert_eq!(
        reason(&live, &guardrails, &leaf, &read("orders/1"), NOW),
        Reason::OutOfScope
    );
}

#[test]
fn the_narrower_of_token_scope_and_current_ceiling_applies() {
    let (mut live, guardrails) = chain();
    let leaf = token("leaf", &["crm:read"]);
    assert_eq!(
        reason(&live, &guardrails, &leaf, &read("anything"), NOW),
        Reason::Allowed
    );
    live.put_nhi(
        &guardrails,
        "summariser",
        NhiStatus::Active,
        &["crm:read:public/*"],
    );
    assert_eq!(
        reason(&live, &guardrails, &leaf, &read("anything"), NOW),
        Reason::OutOfScope
    );
    assert_eq!(
        reason(&live, &guardrails, &leaf, &read("public/1"), NOW),
        Reason::Allowed
    );
}

#[test]
fn an_ancestor_revoked_alone_refuses_the_descendant() {
    let (mut live, guardrails) = chain();
    let leaf = token("leaf", &["crm:read"]);
    live.revoked.insert("root".into());
    assert_eq!(
        reason(&live, &guardrails, &leaf, &read("x"), NOW),
        Reason::AncestorRevoked
    );
    // An older copy of the ancestor saying it is live does not help.
    let (mut live, _) = chain();
    let mut child = (*live.credentials["child"]).clone();
    child.revoked = true;
    live.credentials.insert("child".into(), Arc::new(child));
    assert_eq!(
        reason(&live, &guardrails, &leaf, &read("x"), NOW),
        Reason::AncestorRevoked
    );
    // An ancestor missing from the live state fails closed.
    let (mut live, _) = chain();
    live.credentials.remove("root");
    assert_eq!(
        reason(&live, &guardrails, &leaf, &read("x"), NOW),
        Reason::AncestorRevoked
    );
    // So does a loop.
    let (mut live, _) = chain();
    live.put_credential("root", "planner", Some("leaf"), None);
    assert_eq!(
        reason(&live, &guardrails, &leaf, &read("x"), NOW),
        Reason::AncestorRevoked
    );
}

#[test]
fn revocation_is_read_from_the_permanent_set_too() {
    let (mut live, guardrails) = chain();
    let leaf = token("leaf", &["crm:read"]);
    live.revoked.insert("leaf".into());
    assert_eq!(
        reason(&live, &guardrails, &leaf, &read("x"), NOW),
        Reason::Revoked
    );
}

#[test]
fn a_suspended_delegator_is_named() {
    let (mut live, guardrails) = chain();
    let leaf = token("leaf", &["crm:read"]);
    live.put_nhi(&guardrails, "planner", NhiStatus::Suspended, &["crm:read"]);
    // Suspension revokes the delegated credentials too; the suspension is what is reported.
    live.revoked
        .extend(["root".to_owned(), "child".to_owned(), "leaf".to_owned()]);
    let decision = decide(&leaf, &live, &guardrails, &read("x"), at(NOW));
    assert_eq!(decision.reason, Reason::NhiSuspended);
    assert_eq!(decision.refused_nhi.as_deref(), Some("planner"));
    live.put_nhi(
        &guardrails,
        "summariser",
        NhiStatus::Decommissioned,
        &["crm:read"],
    );
    let decision = decide(&leaf, &live, &guardrails, &read("x"), at(NOW));
    assert_eq!(decision.reason, Reason::NhiDecommissioned);
    assert_eq!(
        decision.refused_nhi, None,
        "the holder itself is not named again"
    );
}

#[test]
fn time_is_checked_on_the_token_and_on_the_live_credential() {
    let (mut live, guardrails) = chain();
    let leaf = token("leaf", &["crm:read"]);
    assert_eq!(
        reason(&live, &guardrails, &leaf, &read("x"), NOW + 600),
        Reason::Expired
    );
    let early = Presented {
        not_before: Some(at(NOW + 10)),
        ..leaf.clone()
    };
    assert_eq!(
        reason(&live, &guardrails, &early, &read("x"), NOW),
        Reason::NotYetValid
    );
    // A static key carries no expiry of its own; its live record does (rotation shortens it).
    let key = Presented {
        credential_id: "leaf".into(),
        expires_at: None,
        not_before: None,
        scope: None,
    };
    let mut shortened = (*live.credentials["leaf"]).clone();
    shortened.expires_at = Some(at(NOW - 1));
    live.credentials.insert("leaf".into(), Arc::new(shortened));
    assert_eq!(
        reason(&live, &guardrails, &key, &read("x"), NOW),
        Reason::Expired
    );
    // An expired ancestor refuses too.
    let (mut live, _) = chain();
    let mut root = (*live.credentials["root"]).clone();
    root.expires_at = Some(at(NOW - 1));
    live.credentials.insert("root".into(), Arc::new(root));
    assert_eq!(
        reason(&live, &guardrails, &leaf, &read("x"), NOW),
        Reason::AncestorRevoked
    );
}

#[test]
fn a_task_credential_lives_with_its_task() {
    let (mut live, guardrails) = chain();
    live.put_credential("task-cred", "planner", None, Some("task-1"));
    let presented = token("task-cred", &["crm:read"]);
    // A task missing from the live state fails closed.
    assert_eq!(
        reason(&live, &guardrails, &presented, &read("x"), NOW),
        Reason::TaskEnded
    );
    let task = |state, expires| LiveTask {
        id: "task-1".into(),
        nhi_id: "planner".into(),
        purpose: "report".into(),
        state,
        expires_at: Some(at(expires)),
        approved: false,
    };
    live.tasks
        .insert("task-1".into(), Arc::new(task(TaskState::Active, NOW + 60)));
    assert_eq!(
        reason(&live, &guardrails, &presented, &read("x"), NOW),
        Reason::Allowed
    );
    assert_eq!(
        reason(&live, &guardrails, &presented, &read("x"), NOW + 60),
        Reason::TaskEnded
    );
    live.tasks
        .insert("task-1".into(), Arc::new(task(TaskState::Ended, NOW + 60)));
    live.revoked.insert("task-cred".into());
    assert_eq!(
        reason(&live, &guardrails, &presented, &read("x"), NOW),
        Reason::TaskEnded
    );
}

#[test]
fn a_task_a_reviewer_approved_beyond_the_ceiling_is_bounded_by_the_approval() {
    let (mut live, guardrails) = chain();
    live.put_credential("task-cred", "planner", Some("root"), Some("task-1"));
    let task = |approved, nhi: &str| {
        Arc::new(LiveTask {
            id: "task-1".into(),
            nhi_id: nhi.into(),
            purpose: "close the month".into(),
            state: TaskState::Active,
            expires_at: Some(at(NOW + 60)),
            approved,
        })
    };
    let ledger = Ask {
        service: "ledger",
        ..read("accounts/1")
    };
    let presented = token("task-cred", &["ledger:read"]);
    // The planner's ceiling holds crm:read only. Approved, the task's scope is what counts.
    live.tasks.insert("task-1".into(), task(true, "planner"));
    assert_eq!(
        reason(&live, &guardrails, &presented, &ledger, NOW),
        Reason::Allowed
    );
    // ... and only its scope.
    assert_eq!(
        reason(
            &live,
            &guardrails,
            &token("task-cred", &["ledger:read"]),
            &read("x"),
            NOW
        ),
        Reason::OutOfScope
    );
    // Not approved, or approved for another NHI (a token delegated from the task), the
    // holder's ceiling bounds it.
    live.tasks.insert("task-1".into(), task(false, "planner"));
    assert_eq!(
        reason(&live, &guardrails, &presented, &ledger, NOW),
        Reason::OutOfScope
    );
    live.tasks.insert("task-1".into(), task(true, "researcher"));
    assert_eq!(
        reason(&live, &guardrails, &presented, &ledger, NOW),
        Reason::OutOfScope
    );
}

#[test]
fn unknown_credentials_and_nhis_fail_closed() {
    let (mut live, guardrails) = chain();
    assert_eq!(
        reason(
            &live,
            &guardrails,
            &token("nope", &["crm:read"]),
            &read("x"),
            NOW
        ),
        Reason::UnknownCredential
    );
    live.nhis.remove("summariser");
    assert_eq!(
        reason(
            &live,
            &guardrails,
            &token("leaf", &["crm:read"]),
            &read("x"),
            NOW
        ),
        Reason::NhiDecommissioned
    );
}

#[test]
fn hours_and_weekdays_are_utc() {
    // 1970-01-01 00:00 was a Thursday; 2026-11-30 13:45 UTC is a Monday.
    assert_eq!(hour_and_weekday(at(0)), (0, 3));
    assert_eq!(hour_and_weekday(at(1_796_046_300)), (13, 0));
    assert_eq!(hour_and_weekday(at(1_796_046_300 + 6 * 86_400)), (13, 6));
}
