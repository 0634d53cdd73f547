//! The continuous-authorization decision: may this credential do this operation on this
//! resource, now?
//!
//! Pure: the caller has already verified the presented token's signature (or looked up its
//! static key) and hands in what it proved ([`Presented`]), a view of the live state it keeps
//! in memory ([`LiveView`]), the compiled guardrails and the time. The checks run in a fixed
//! order and the first that fails names the reason: time, the credential's own live state,
//! every delegation ancestor, the task, every NHI along the chain, the scope, then the
//! guardrail policies. Anything missing from the view refuses: the decision fails closed.

use std::sync::Arc;

use crate::guardrails::{ActionFacts, GuardrailOutcome, Guardrails, Principal};
use crate::issuance::TaskState;
use crate::{Action, NhiStatus, Scope, Timestamp};

/// Delegation chains are bounded when they are issued; a longer walk means a loop or corrupt
/// state, and refuses.
const MAX_CHAIN: usize = 32;

/// What the presented credential proved about itself once its signature or secret checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presented {
    /// The credential's id: an access token's `jti`, or the static key's id.
    pub credential_id: String,
    /// The token's own `exp`; `None` for a static key (its expiry is in the live state).
    pub expires_at: Option<Timestamp>,
    /// The token's own `nbf`, if any.
    pub not_before: Option<Timestamp>,
    /// The token's scope; `None` for a static key, which may do what its NHI's ceiling allows.
    pub scope: Option<Scope>,
}

/// A credential as the decision needs it, kept current in memory by every write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveCredential {
    pub id: String,
    pub nhi_id: String,
    /// The keyed fingerprint the audit trail knows the credential by.
    pub fingerprint: String,
    pub expires_at: Option<Timestamp>,
    pub revoked: bool,
    pub task_id: Option<String>,
    pub parent_id: Option<String>,
}

/// An NHI as the decision needs it, with its guardrail principal prepared once.
pub struct LiveNhi {
    pub id: String,
    pub name: String,
    pub status: NhiStatus,
    pub scope_ceiling: Scope,
    pub principal: Principal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveTask {
    pub id: String,
    /// The NHI that asked for the task.
    pub nhi_id: String,
    pub purpose: String,
    pub state: TaskState,
    pub expires_at: Option<Timestamp>,
    /// A reviewer approved the task: what it allows counts as approved by a human, so a
    /// guardrail that asks for approval is satisfied within its scope.
    pub approved: bool,
}

/// The live state a decision reads. Implementations answer from memory.
pub trait LiveView {
    fn credential(&self, id: &str) -> Option<Arc<LiveCredential>>;
    fn nhi(&self, id: &str) -> Option<Arc<LiveNhi>>;
    fn task(&self, id: &str) -> Option<Arc<LiveTask>>;
    /// Revocation is permanent, so a revoked id may be answered from a set that only grows,
    /// whatever an older copy of the credential says.
    fn is_revoked(&self, credential_id: &str) -> bool;
}

/// The operation asked about, and the circumstances the guardrails may look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask<'a> {
    pub service: &'a str,
    pub operation: &'a str,
    /// The resource id; empty means the service as a whole.
    pub resource: &'a str,
    /// Hour of the day, 0–23, and day of the week, 0 = Monday, both UTC.
    pub hour: u8,
    pub weekday: u8,
}

/// Why a decision came out as it did. The codes are the AuthZEN `context.reason` values and
/// are stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Allowed,
    /// The token's signature, issuer, audience or form did not check out.
    InvalidToken,
    /// The credential is unknown to the live state.
    UnknownCredential,
    NotYetValid,
    Expired,
    Revoked,
    /// A credential this one was delegated from is revoked, expired or gone.
    AncestorRevoked,
    /// The task the credential was issued for has ended (or was never active).
    TaskEnded,
    NhiSuspended,
    NhiDecommissioned,
    OutOfScope,
    PolicyForbid,
    ApprovalRequired,
    /// The enforcement point named a subject other than the NHI holding the credential.
    SubjectMismatch,
    /// The decision could not be recorded in the trail, so it is not given.
    AuditUnavailable,
    /// The action departed from the NHI's behaviour baseline, and the response policy
    /// suspends it.
    Anomaly,
    /// Strict mode: this node cannot confirm that what it holds in memory is current (it
    /// lost the other nodes' change notices, or has not heard its own heartbeat back within
    /// the bound), so it refuses rather than risk allowing what another node revoked.
    StateUnconfirmed,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::InvalidToken => "invalid_token",
            Reason::UnknownCredential => "unknown_credential",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Expired => "expired",
            Reason::Revoked => "revoked",
            Reason::AncestorRevoked => "ancestor_revoked",
            Reason::TaskEnded => "task_ended",
            Reason::NhiSuspended => "nhi_suspended",
            Reason::NhiDecommissioned => "nhi_decommissioned",
            Reason::OutOfScope => "out_of_scope",
            Reason::PolicyForbid => "policy_forbid",
            Reason::ApprovalRequired => "approval_required",
            Reason::Anomaly => "anomaly",
            Reason::SubjectMismatch => "subject_mismatch",
            Reason::AuditUnavailable => "audit_unavailable",
            Reason::StateUnconfirmed => "state_unconfirmed",
        }
    }
}

/// The answer, with what an enforcement point or an auditor needs to know about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub reason: Reason,
    /// The NHI that holds the credential, once known.
    pub nhi_id: Option<String>,
    /// The NHI whose state refused it, when that is an ancestor's NHI rather than the holder.
    pub refused_nhi: Option<String>,
    /// The guardrail policies that forbade the action or asked for approval.
    pub policies: Vec<String>,
    /// The task the credential belongs to, if any.
    pub task_id: Option<String>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.reason == Reason::Allowed
    }

    /// A refusal known before anything about the credential is (a token that does not verify).
    pub fn refuse(reason: Reason) -> Self {
        Decision {
            reason,
            nhi_id: None,
            refused_nhi: None,
            policies: Vec::new(),
            task_id: None,
        }
    }
}

fn nhi_refusal(status: NhiStatus) -> Option<Reason> {
    match status {
        NhiStatus::Active => None,
        NhiStatus::Suspended => Some(Reason::NhiSuspended),
        NhiStatus::Decommissioned => Some(Reason::NhiDecommissioned),
    }
}

fn refuse(mut decision: Decision, reason: Reason) -> Decision {
    decision.reason = reason;
    decision
}

/// The hour of the day (0–23) and the day of the week (0 = Monday) of `now`, in UTC.
pub fn hour_and_weekday(now: Timestamp) -> (u8, u8) {
    let seconds = now.unix_millis().div_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let hour = seconds.rem_euclid(86_400) / 3600;
    // 1970-01-01 was a Thursday, day 3 counting from Monday.
    let weekday = (days + 3).rem_euclid(7);
    (hour as u8, weekday as u8)
}

fn live_at(credential: &LiveCredential, now: Timestamp) -> bool {
    credential.expires_at.is_none_or(|end| now < end)
}

/// Decides one ask. See the module documentation for the order of the checks.
pub fn decide(
    presented: &Presented,
    live: &impl LiveView,
    guardrails: &Guardrails,
    ask: &Ask<'_>,
    now: Timestamp,
) -> Decision {
    if presented.expires_at.is_some_and(|end| now >= end) {
        return Decision::refuse(Reason::Expired);
    }
    if presented.not_before.is_some_and(|start| now < start) {
        return Decision::refuse(Reason::NotYetValid);
    }
    let Some(credential) = live.credential(&presented.credential_id) else {
        return Decision::refuse(Reason::UnknownCredential);
    };
    let mut decision = Decision {
        nhi_id: Some(credential.nhi_id.clone()),
        task_id: credential.task_id.clone(),
        ..Decision::refuse(Reason::Allowed)
    };
    // The delegation chain, walked once: every ancestor must be known.
    let mut ancestors = Vec::new();
    let mut parent = credential.parent_id.clone();
    while let Some(id) = parent {
        if ancestors.len() >= MAX_CHAIN {
            return refuse(decision, Reason::AncestorRevoked);
        }
        let Some(ancestor) = live.credential(&id) else {
            return refuse(decision, Reason::AncestorRevoked);
        };
        parent = ancestor.parent_id.clone();
        ancestors.push(ancestor);
    }
    // The NHIs first, the holder's then its delegators': suspending an NHI also revokes its
    // credentials and everything delegated from them, and the suspension is the more useful
    // answer.
    let mut holder = None;
    for id in std::iter::once(&credential.nhi_id).chain(ancestors.iter().map(|a| &a.nhi_id)) {
        let refused = match live.nhi(id) {
            None => Some(Reason::NhiDecommissioned),
            Some(nhi) => {
                let refused = nhi_refusal(nhi.status);
                if holder.is_none() {
                    holder = Some(nhi);
                }
                refused
            }
        };
        if let Some(reason) = refused {
            if *id != credential.nhi_id {
                decision.refused_nhi = Some(id.clone());
            }
            return refuse(decision, reason);
        }
    }
    let Some(holder) = holder else {
        return refuse(decision, Reason::UnknownCredential);
    };
    // The task next: ending a task revokes its credential, and the end is the better answer.
    let task = match &credential.task_id {
        None => None,
        Some(task_id) => match live.task(task_id) {
            Some(task)
                if task.state == TaskState::Active && task.expires_at.is_none_or(|e| now < e) =>
            {
                Some(task)
            }
            _ => return refuse(decision, Reason::TaskEnded),
        },
    };
    if credential.revoked || live.is_revoked(&credential.id) {
        return refuse(decision, Reason::Revoked);
    }
    if !live_at(&credential, now) {
        return refuse(decision, Reason::Expired);
    }
    if ancestors
        .iter()
        .any(|a| a.revoked || live.is_revoked(&a.id) || !live_at(a, now))
    {
        return refuse(decision, Reason::AncestorRevoked);
    }
    let depth = ancestors.len() as u32;
    let action = Action {
        service: ask.service.to_owned(),
        operation: ask.operation.to_owned(),
        resource: (!ask.resource.is_empty()).then(|| ask.resource.to_owned()),
    };
    let scope = presented.scope.as_ref().unwrap_or(&holder.scope_ceiling);
    // A token's scope was within the ceiling when it was issued, and the ceiling may have been
    // narrowed since: the narrower of the two applies. A task a reviewer approved (beyond the
    // ceiling, or it would not have asked) is bounded by what the reviewer approved, for the
    // NHI it was approved for; a token delegated from it still meets its holder's ceiling.
    let approved_for_holder = || {
        task.as_ref()
            .is_some_and(|task| task.approved && task.nhi_id == holder.id)
    };
    if !scope.covers(&action) || !(holder.scope_ceiling.covers(&action) || approved_for_holder()) {
        return refuse(decision, Reason::OutOfScope);
    }
    let facts = ActionFacts {
        service: ask.service,
        operation: ask.operation,
        resource: ask.resource,
        delegated: depth > 0,
        depth,
        hour: ask.hour,
        weekday: ask.weekday,
        purpose: task.as_ref().map_or("", |t| t.purpose.as_str()),
    };
    match guardrails.evaluate(&holder.principal, &facts) {
        GuardrailOutcome::Allow => decision,
        GuardrailOutcome::Forbid { policies } => {
            decision.policies = policies;
            refuse(decision, Reason::PolicyForbid)
        }
        GuardrailOutcome::ApprovalRequired { .. } if task.as_ref().is_some_and(|t| t.approved) => {
            decision
        }
        GuardrailOutcome::ApprovalRequired { policies } => {
            decision.policies = policies;
            refuse(decision, Reason::ApprovalRequired)
        }
    }
}
