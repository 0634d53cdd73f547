//! Per-task issuance, approvals and delegation: what may be issued, to whom, for how long, and
//! when a human must say yes first.
//!
//! Every rule here is a pure function of the NHI, the request, the configured limits and the
//! time passed in; the server only loads the inputs and stores the outcome.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value, json};
use thiserror::Error;

use crate::model::string_enum;
use crate::{Grant, Nhi, NhiStatus, Scope, Timestamp};

/// Lifetimes and depths the operator configures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssuanceLimits {
    /// The lifetime of a task credential when the request names none.
    pub default_ttl_seconds: u32,
    /// No task credential lives longer, whatever is asked.
    pub max_ttl_seconds: u32,
    /// How many times a credential may be handed down (1 = a sub-agent, but not its own).
    pub max_delegation_depth: u32,
}

impl Default for IssuanceLimits {
    fn default() -> Self {
        Self {
            default_ttl_seconds: 15 * 60,
            max_ttl_seconds: 60 * 60,
            max_delegation_depth: 3,
        }
    }
}

/// A request's lifetime can be anything from a second to a year; beyond that it is a mistake,
/// not a wish to be capped.
pub const MAX_REQUESTED_TTL_SECONDS: u32 = 366 * 24 * 3600;

string_enum!(
    /// Where a task is. A task past its lifetime is `ended` whatever is stored.
    TaskState {
        Active => "active",
        PendingApproval => "pending_approval",
        Denied => "denied",
        Ended => "ended",
    }
);

string_enum!(
    /// Where an approval request is.
    ApprovalState {
        Pending => "pending",
        Approved => "approved",
        Denied => "denied",
        Expired => "expired",
    }
);

string_enum!(
    /// What a human is asked to decide. One model, one inbox.
    ApprovalKind {
        /// A task asked for more than its NHI's scope ceiling.
        ScopeEscalation => "scope_escalation",
        /// A guardrail marked `@approval_required` held back one action.
        PolicyApproval => "policy_approval",
        /// An action out of the NHI's behaviour baseline, held back by a step-up response
        /// policy; approving it also makes it part of the baseline.
        Anomaly => "anomaly",
        /// An NHI suspended after an anomaly; approving resumes it. A review of the NHI
        /// itself: no task.
        Resume => "resume",
        /// An NHI unused too long, or past its expiry under the `review` policy; approving
        /// decommissions it. A review of the NHI itself: no task.
        Decommission => "decommission",
        /// An NHI whose owner is gone (its team deleted, its contact removed), or a high-risk
        /// NHI due its periodic owner attestation; approving confirms the owner. A review of
        /// the NHI itself: no task.
        Ownership => "ownership",
        /// A shadow NHI found by discovery, registered suspended for its presumed owner team
        /// to confirm; approving activates it and settles the finding, denying decommissions
        /// the registration and leaves the finding open. A review of the NHI itself: no task.
        Adoption => "adoption",
    }
);

impl ApprovalKind {
    /// A review of the NHI itself rather than of something it asked for: it has no task and no
    /// scope, and deciding it acts on the NHI (resumes, decommissions, confirms its owner).
    pub fn is_nhi_review(self) -> bool {
        matches!(
            self,
            Self::Resume | Self::Decommission | Self::Ownership | Self::Adoption
        )
    }
}

string_enum!(
    /// How much could go wrong if the request were granted wrongly.
    RiskLevel {
        Low => "low",
        Medium => "medium",
        High => "high",
    }
);

/// Why something cannot be issued or decided. Each has a stable code for the API.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum IssuanceError {
    #[error("nhi {id} is {status}")]
    NhiNotActive { id: String, status: NhiStatus },
    #[error("nhi {0} has expired")]
    NhiExpired(String),
    #[error("the scope asked for is empty")]
    EmptyScope,
    #[error("ttl_seconds must be between 1 and {MAX_REQUESTED_TTL_SECONDS}")]
    TtlOutOfRange,
    #[error("the scope asked for is broader than the {what}: {excess}")]
    ScopeTooBroad { what: &'static str, excess: String },
    #[error("delegation depth {depth} is over the configured maximum of {max}")]
    TooDeep { depth: u32, max: u32 },
    #[error("the parent credential has expired or been revoked")]
    ParentNotLive,
    #[error("approval request is {0}, not pending")]
    NotPending(ApprovalState),
    #[error("an approval may only narrow the request: {0}")]
    NotNarrower(String),
    #[error("nobody may decide a request they made")]
    OwnRequest,
    #[error("{0} has already approved this request; a quorum needs other reviewers")]
    AlreadyVoted(String),
    #[error(
        "separation of duties: a member of the nhi's owner team may deny this request but not approve it"
    )]
    OwnTeamNhi,
}

impl IssuanceError {
    pub fn code(&self) -> &'static str {
        match self {
            IssuanceError::NhiNotActive { .. } => "nhi_not_active",
            IssuanceError::NhiExpired(_) => "nhi_expired",
            IssuanceError::EmptyScope => "empty_scope",
            IssuanceError::TtlOutOfRange => "invalid_ttl",
            IssuanceError::ScopeTooBroad { .. } => "scope_too_broad",
            IssuanceError::TooDeep { .. } => "delegation_too_deep",
            IssuanceError::ParentNotLive => "parent_not_live",
            IssuanceError::NotPending(_) => "approval_not_pending",
            IssuanceError::NotNarrower(_) => "not_narrower",
            IssuanceError::OwnRequest => "own_request",
            IssuanceError::AlreadyVoted(_) => "already_voted",
            IssuanceError::OwnTeamNhi => "own_team_nhi",
        }
    }
}

fn joined(grants: impl IntoIterator<Item = impl fmt::Display>) -> String {
    grants
        .into_iter()
        .map(|g| g.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An NHI that may hold a new credential at `now`.
pub fn ensure_usable(nhi: &Nhi, now: Timestamp) -> Result<(), IssuanceError> {
    if nhi.status != NhiStatus::Active {
        return Err(IssuanceError::NhiNotActive {
            id: nhi.id.clone(),
            status: nhi.status,
        });
    }
    if nhi.expires_at.is_some_and(|e| e <= now) {
        return Err(IssuanceError::NhiExpired(nhi.id.clone()));
    }
    Ok(())
}

/// The lifetime a request gets: what it asked (or the default), capped by the configuration.
pub fn granted_ttl(requested: Option<u32>, limits: &IssuanceLimits) -> Result<u32, IssuanceError> {
    let ttl = requested.unwrap_or(limits.default_ttl_seconds);
    if ttl == 0 || ttl > MAX_REQUESTED_TTL_SECONDS {
        return Err(IssuanceError::TtlOutOfRange);
    }
    Ok(ttl.min(limits.max_ttl_seconds))
}

/// When a credential starting at `start` for `ttl_seconds` ends: never after the NHI itself.
pub fn expiry(nhi: &Nhi, start: Timestamp, ttl_seconds: u32) -> Timestamp {
    let end = start.plus_seconds(i64::from(ttl_seconds));
    nhi.expires_at.map_or(end, |e| e.min(end))
}

/// What a task request gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskPlan {
    /// Within the ceiling: issue at once for `ttl_seconds`.
    Issue { ttl_seconds: u32 },
    /// Beyond the ceiling: a human decides. `excess` is what the ceiling does not cover.
    NeedsApproval {
        ttl_seconds: u32,
        excess: Vec<Grant>,
    },
}

/// Decides a task request by the NHI itself. Requests made by a person on an NHI's behalf
/// always need a second person, and go through [`plan_requested_by_operator`].
pub fn plan_task(
    nhi: &Nhi,
    scope: &Scope,
    ttl_seconds: Option<u32>,
    limits: &IssuanceLimits,
    now: Timestamp,
) -> Result<TaskPlan, IssuanceError> {
    ensure_usable(nhi, now)?;
    if scope.is_empty() {
        return Err(IssuanceError::EmptyScope);
    }
    let ttl_seconds = granted_ttl(ttl_seconds, limits)?;
    let excess: Vec<Grant> = scope.excess_over(&nhi.scope_ceiling).cloned().collect();
    Ok(if excess.is_empty() {
        TaskPlan::Issue { ttl_seconds }
    } else {
        TaskPlan::NeedsApproval {
            ttl_seconds,
            excess,
        }
    })
}

/// A request an operator makes for an NHI: always an approval, never an instant credential.
pub fn plan_requested_by_operator(
    nhi: &Nhi,
    scope: &Scope,
    ttl_seconds: Option<u32>,
    limits: &IssuanceLimits,
    now: Timestamp,
) -> Result<TaskPlan, IssuanceError> {
    Ok(match plan_task(nhi, scope, ttl_seconds, limits, now)? {
        TaskPlan::Issue { ttl_seconds } => TaskPlan::NeedsApproval {
            ttl_seconds,
            excess: Vec::new(),
        },
        plan => plan,
    })
}

/// One unit of work an agent asked a credential for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Task {
    pub id: String,
    pub nhi_id: String,
    pub purpose: String,
    pub scope: Scope,
    pub ttl_seconds: u32,
    pub state: TaskState,
    /// The actor (`nhi:…` or `operator:…`) who asked.
    pub requested_by: String,
    pub created_at: Timestamp,
    pub approval_id: Option<String>,
    /// When it became active: its credential's lifetime starts here.
    pub activated_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// The task's one credential, once minted.
    pub credential_id: Option<String>,
    /// Where the agent wants to hear that its approval request was decided.
    pub callback_url: Option<String>,
}

impl Task {
    /// The state as of `now`: an active task past its lifetime has ended by itself.
    pub fn state_at(&self, now: Timestamp) -> TaskState {
        match (self.state, self.expires_at) {
            (TaskState::Active, Some(end)) if end <= now => TaskState::Ended,
            (state, _) => state,
        }
    }
}

/// A request for a human to say yes to something an NHI may not do on its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Approval {
    pub id: String,
    pub kind: ApprovalKind,
    pub nhi_id: String,
    /// The task that waits on the request; `None` for a review of the NHI itself.
    pub task_id: Option<String>,
    pub requested_by: String,
    pub purpose: String,
    pub requested_scope: Scope,
    /// The grants beyond the NHI's ceiling when it was asked.
    pub excess: Vec<String>,
    pub requested_ttl_seconds: u32,
    /// The guardrail policies that raised it (for `policy_approval`).
    pub policies: Vec<String>,
    pub risk: Risk,
    /// How many reviewers must approve: one, or a quorum for high-risk requests.
    pub required_approvals: u32,
    pub state: ApprovalState,
    pub created_at: Timestamp,
    /// Unanswered by then, it is expired, and so denied: a request never waits forever.
    pub expires_at: Timestamp,
    pub decided_at: Option<Timestamp>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub granted_scope: Option<Scope>,
    pub granted_ttl_seconds: Option<u32>,
    /// The fallback team the request was escalated to: its reviewers may decide it too.
    pub escalated_to: Option<String>,
    pub escalated_at: Option<Timestamp>,
}

/// A reviewer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Yes, optionally to less than was asked.
    Approve {
        reason: String,
        scope: Option<Scope>,
        ttl_seconds: Option<u32>,
    },
    Deny {
        reason: String,
    },
}

/// A risk level and the facts that made it, for the reviewer to read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Risk {
    pub level: RiskLevel,
    pub factors: Vec<String>,
}

/// What the risk of a request is judged from.
#[derive(Clone, Copy, Debug)]
pub struct RiskFacts<'a> {
    /// The NHI's environment (`production`, `prod`, `staging`, ...).
    pub environment: &'a str,
    /// The NHI's own risk tag, 0-100 (0 without one).
    pub nhi_risk: i64,
    /// The grants a human is asked for.
    pub asked: &'a [Grant],
    /// The sensitivity tags of the resources those grants reach, from the resource catalogue.
    pub sensitivity: &'a [String],
    /// The lifetime asked for.
    pub ttl_seconds: u32,
}

/// Operations that change or remove things, or move data out.
const DESTRUCTIVE_OPERATIONS: [&str; 6] = ["write", "delete", "admin", "export", "purge", "*"];

/// Five points or more is high, two to four medium.
fn level_of(points: u32) -> RiskLevel {
    match points {
        0..=1 => RiskLevel::Low,
        2..=4 => RiskLevel::Medium,
        _ => RiskLevel::High,
    }
}

/// Judges the risk of a review of an NHI itself by the same points as a request: production
/// (2) and a risky NHI (2 at 70 or more), and for a resumption (2) because approving it gives
/// back all the NHI could do after an anomaly. `reasons` say why the review was opened and
/// carry no points: they are what the reviewer reads first.
pub fn review_risk(
    kind: ApprovalKind,
    environment: &str,
    nhi_risk: i64,
    reasons: &[String],
) -> Risk {
    let mut points = 0;
    let mut factors = reasons.to_vec();
    if matches!(environment, "production" | "prod") {
        points += 2;
        factors.push(format!("the nhi runs in {environment}"));
    }
    if nhi_risk >= 70 {
        points += 2;
        factors.push(format!("the nhi's risk tag is {nhi_risk}"));
    }
    if kind == ApprovalKind::Resume {
        points += 2;
        factors.push("resuming gives back everything the nhi could do before the anomaly".into());
    }
    Risk {
        level: level_of(points),
        factors,
    }
}

/// Judges a request's risk by points: production (2), a wildcard service or resource (2), a
/// destructive operation (1), sensitive resources (2), a risky NHI (2 at 70 or more), a
/// lifetime over an hour (1). Five or more is high, two to four medium: production alone, or a
/// whole service alone, is medium; both with a destructive operation is high.
pub fn assess_risk(facts: RiskFacts<'_>) -> Risk {
    let mut points = 0;
    let mut factors = Vec::new();
    let mut add = |weight: u32, factor: String| {
        points += weight;
        factors.push(factor);
    };
    if matches!(facts.environment, "production" | "prod") {
        add(2, format!("the nhi runs in {}", facts.environment));
    }
    if facts
        .asked
        .iter()
        .any(|g| g.service() == "*" || g.resource().is_none_or(|r| r.contains('*')))
    {
        add(
            2,
            "a grant reaches every resource of its service, or more".into(),
        );
    }
    if let Some(op) = facts
        .asked
        .iter()
        .find(|g| DESTRUCTIVE_OPERATIONS.contains(&g.operation()))
    {
        add(
            1,
            format!("the operation {:?} changes or exports data", op.operation()),
        );
    }
    if !facts.sensitivity.is_empty() {
        add(
            2,
            format!("the resources are tagged {}", facts.sensitivity.join(", ")),
        );
    }
    if facts.nhi_risk >= 70 {
        add(2, format!("the nhi's risk tag is {}", facts.nhi_risk));
    }
    if facts.ttl_seconds > 3600 {
        add(1, format!("the lifetime asked is {} s", facts.ttl_seconds));
    }
    Risk {
        level: level_of(points),
        factors,
    }
}

/// A standing rule an admin set so that the same safe request does not come back a hundred
/// times: one NHI's requests for grants within `scope` are approved without a reviewer until
/// `expires_at`, unless they are high risk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StandingRule {
    pub id: String,
    pub nhi_id: String,
    pub scope: Scope,
    pub reason: String,
    pub created_by: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl StandingRule {
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }

    /// Whether the rule approves `request`, whose asked grants are `asked`: the same NHI, the
    /// rule active, the request not high risk, and every grant asked within the rule's scope.
    pub fn approves(&self, request: &Approval, asked: &[Grant], now: Timestamp) -> bool {
        self.nhi_id == request.nhi_id
            && self.is_active(now)
            && request.risk.level != RiskLevel::High
            && !asked.is_empty()
            && Scope::new(asked.iter().cloned()).is_ok_and(|s| s.is_subset_of(&self.scope))
    }
}

/// One reviewer's approval of a request that needs a quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Vote {
    pub reviewer: String,
    pub scope: Scope,
    pub ttl_seconds: u32,
    pub reason: String,
    pub at: Timestamp,
}

/// What a decision comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ruling {
    /// The request is decided: denied, or approved by the last reviewer its quorum needed.
    Decided(Box<Approval>),
    /// An approval was counted; `remaining` more are needed.
    Voted { vote: Vote, remaining: u32 },
}

impl Approval {
    /// The request approved by a standing rule, as asked.
    pub fn approved_by_rule(&self, rule: &StandingRule, now: Timestamp) -> Approval {
        Approval {
            state: ApprovalState::Approved,
            decided_at: Some(now),
            decided_by: Some(format!("rule:{}", rule.id)),
            reason: Some(format!("standing rule: {}", rule.reason)),
            granted_scope: Some(self.requested_scope.clone()),
            granted_ttl_seconds: Some(self.requested_ttl_seconds),
            ..self.clone()
        }
    }

    /// Whether the request should now go to a fallback team as well: still pending and
    /// unexpired, not escalated before, and unanswered for `after_seconds`.
    pub fn escalation_due(&self, after_seconds: u32, now: Timestamp) -> bool {
        self.state_at(now) == ApprovalState::Pending
            && self.escalated_at.is_none()
            && self.created_at.plus_seconds(i64::from(after_seconds)) <= now
    }

    /// The request escalated to `team_id` at `now`.
    pub fn escalated(&self, team_id: &str, now: Timestamp) -> Approval {
        Approval {
            escalated_to: Some(team_id.to_owned()),
            escalated_at: Some(now),
            ..self.clone()
        }
    }

    /// The state as of `now`: a pending request past its deadline has expired.
    pub fn state_at(&self, now: Timestamp) -> ApprovalState {
        match self.state {
            ApprovalState::Pending if self.expires_at <= now => ApprovalState::Expired,
            state => state,
        }
    }

    /// Applies a decision by `decider` (an actor string), given the approvals already counted
    /// (`votes`). Only a pending, unexpired request can be decided, never by whoever asked, and
    /// by each reviewer once. A deny decides at once. An approval can only narrow: what was
    /// asked, and what every earlier reviewer approved (scope and lifetime); the last approval
    /// the quorum needs decides, with its own, narrowest, scope and lifetime.
    pub fn decide(
        &self,
        decision: Decision,
        decider: &str,
        votes: &[Vote],
        now: Timestamp,
    ) -> Result<Ruling, IssuanceError> {
        let state = self.state_at(now);
        if state != ApprovalState::Pending {
            return Err(IssuanceError::NotPending(state));
        }
        if decider == self.requested_by {
            return Err(IssuanceError::OwnRequest);
        }
        if votes.iter().any(|v| v.reviewer == decider) {
            return Err(IssuanceError::AlreadyVoted(decider.to_owned()));
        }
        let mut next = self.clone();
        next.decided_at = Some(now);
        next.decided_by = Some(decider.to_owned());
        let (reason, scope, ttl_seconds) = match decision {
            Decision::Deny { reason } => {
                next.state = ApprovalState::Denied;
                next.reason = Some(reason);
                return Ok(Ruling::Decided(Box::new(next)));
            }
            Decision::Approve {
                reason,
                scope,
                ttl_seconds,
            } => (reason, scope, ttl_seconds),
        };
        if self.kind.is_nhi_review() {
            if scope.is_some() || ttl_seconds.is_some() {
                return Err(IssuanceError::NotNarrower(
                    "a review of an nhi grants no scope or lifetime".into(),
                ));
            }
            return Ok(self.count_or_decide(next, decider, reason, None, votes, now));
        }
        // What this reviewer may approve at most: the narrowest of the request and the votes.
        let bound_scope = votes.last().map_or(&self.requested_scope, |v| &v.scope);
        let (bound_ttl, bound_by) = votes
            .iter()
            .map(|v| v.ttl_seconds)
            .min()
            .map_or((self.requested_ttl_seconds, "asked for"), |t| {
                (t.min(self.requested_ttl_seconds), "already approved")
            });
        let scope = scope.unwrap_or_else(|| bound_scope.clone());
        if scope.is_empty() {
            return Err(IssuanceError::EmptyScope);
        }
        if !scope.is_subset_of(&self.requested_scope) {
            return Err(IssuanceError::NotNarrower(format!(
                "{} was not asked for",
                joined(scope.excess_over(&self.requested_scope))
            )));
        }
        if let Some(vote) = votes.iter().find(|v| !scope.is_subset_of(&v.scope)) {
            return Err(IssuanceError::NotNarrower(format!(
                "{} was not approved by {}",
                joined(scope.excess_over(&vote.scope)),
                vote.reviewer
            )));
        }
        let ttl = ttl_seconds.unwrap_or(bound_ttl);
        if ttl == 0 || ttl > bound_ttl {
            return Err(IssuanceError::NotNarrower(format!(
                "ttl_seconds must be between 1 and the {bound_ttl} {bound_by}"
            )));
        }
        Ok(self.count_or_decide(next, decider, reason, Some((scope, ttl)), votes, now))
    }

    /// An approval of `granted` (none for a review of the NHI): one more vote while the quorum
    /// is not reached, the decision once it is.
    fn count_or_decide(
        &self,
        mut next: Approval,
        decider: &str,
        reason: String,
        granted: Option<(Scope, u32)>,
        votes: &[Vote],
        now: Timestamp,
    ) -> Ruling {
        let counted = u32::try_from(votes.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        if counted < self.required_approvals {
            let (scope, ttl_seconds) = granted.unwrap_or_default();
            return Ruling::Voted {
                vote: Vote {
                    reviewer: decider.to_owned(),
                    scope,
                    ttl_seconds,
                    reason,
                    at: now,
                },
                remaining: self.required_approvals - counted,
            };
        }
        next.state = ApprovalState::Approved;
        next.reason = Some(reason);
        if let Some((scope, ttl)) = granted {
            next.granted_scope = Some(scope);
            next.granted_ttl_seconds = Some(ttl);
        }
        Ruling::Decided(Box::new(next))
    }
}

/// Separation of duties, when the policy is on: nobody approves (or counts an approval towards
/// a quorum of) a request about an NHI their own team owns, admins included. Denying stays
/// open to them: refusing is always safe.
pub fn ensure_separate(
    decision: &Decision,
    member_of_owner_team: bool,
    enforced: bool,
) -> Result<(), IssuanceError> {
    match decision {
        Decision::Approve { .. } if enforced && member_of_owner_team => {
            Err(IssuanceError::OwnTeamNhi)
        }
        _ => Ok(()),
    }
}

/// The credential a delegation hands down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delegation {
    pub scope: Scope,
    pub expires_at: Timestamp,
    pub depth: u32,
}

/// What the parent credential brings to a delegation.
#[derive(Clone, Copy, Debug)]
pub struct Parent<'a> {
    pub scope: &'a Scope,
    pub expires_at: Timestamp,
    pub depth: u32,
    pub live: bool,
}

/// Hands a credential down to `child`: the scope only narrows (and stays within the child's own
/// ceiling), the lifetime never outlives the parent, and the chain is never deeper than the
/// configuration allows.
pub fn plan_delegation(
    parent: Parent<'_>,
    child: &Nhi,
    requested_scope: Option<&Scope>,
    ttl_seconds: Option<u32>,
    limits: &IssuanceLimits,
    now: Timestamp,
) -> Result<Delegation, IssuanceError> {
    if !parent.live || parent.expires_at <= now {
        return Err(IssuanceError::ParentNotLive);
    }
    ensure_usable(child, now)?;
    let depth = parent.depth + 1;
    if depth > limits.max_delegation_depth {
        return Err(IssuanceError::TooDeep {
            depth,
            max: limits.max_delegation_depth,
        });
    }
    let scope = requested_scope.unwrap_or(parent.scope).clone();
    if scope.is_empty() {
        return Err(IssuanceError::EmptyScope);
    }
    if !scope.is_subset_of(parent.scope) {
        return Err(IssuanceError::ScopeTooBroad {
            what: "parent credential",
            excess: joined(scope.excess_over(parent.scope)),
        });
    }
    if !scope.is_subset_of(&child.scope_ceiling) {
        return Err(IssuanceError::ScopeTooBroad {
            what: "sub-agent's ceiling",
            excess: joined(scope.excess_over(&child.scope_ceiling)),
        });
    }
    let ttl = granted_ttl(ttl_seconds, limits)?;
    Ok(Delegation {
        scope,
        expires_at: expiry(child, now, ttl).min(parent.expires_at),
        depth,
    })
}

/// The claims of an RFC 9068 access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessTokenClaims {
    pub issuer: String,
    pub audience: Vec<String>,
    /// The NHI on whose authority the token acts: the root of a delegation chain.
    pub subject: String,
    /// The NHI the token was issued to and that presents it.
    pub client_id: String,
    pub jti: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub scope: Scope,
    pub task_id: Option<String>,
    /// RFC 8693 `act`: the current actor outermost, earlier actors nested inside.
    pub act: Option<Value>,
}

impl AccessTokenClaims {
    /// The JSON claims set. `scope` is the space-separated grants (RFC 6749 §3.3);
    /// `authorization_details` (RFC 9396) carries the same grants in structured form.
    pub fn to_json(&self) -> Value {
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("sub".into(), json!(self.subject));
        claims.insert(
            "aud".into(),
            match self.audience.as_slice() {
                [one] => json!(one),
                many => json!(many),
            },
        );
        claims.insert("exp".into(), json!(self.expires_at.unix_millis() / 1000));
        claims.insert("iat".into(), json!(self.issued_at.unix_millis() / 1000));
        claims.insert("nbf".into(), json!(self.issued_at.unix_millis() / 1000));
        claims.insert("jti".into(), json!(self.jti));
        claims.insert("client_id".into(), json!(self.client_id));
        claims.insert("scope".into(), json!(self.scope.to_strings().join(" ")));
        claims.insert(
            "authorization_details".into(),
            authorization_details(&self.scope),
        );
        if let Some(task) = &self.task_id {
            claims.insert("task_id".into(), json!(task));
        }
        if let Some(act) = &self.act {
            claims.insert("act".into(), act.clone());
        }
        Value::Object(claims)
    }
}

/// The RFC 9396 type name of a Custos grant.
pub const AUTHORIZATION_DETAILS_TYPE: &str = "urn:custos:grant";

/// Each grant as an RFC 9396 authorization details object: the service, the operation as its one
/// action, and the resource pattern (absent for every resource of the service).
pub fn authorization_details(scope: &Scope) -> Value {
    Value::Array(
        scope
            .grants()
            .iter()
            .map(|g| {
                let mut detail = json!({
                    "type": AUTHORIZATION_DETAILS_TYPE,
                    "service": g.service(),
                    "actions": [g.operation()],
                });
                if let Some(resource) = g.resource() {
                    detail["identifier"] = json!(resource);
                }
                detail
            })
            .collect(),
    )
}

/// The `act` claim of a token delegated to `actor` from a parent token whose own `act` was
/// `parent_act` (RFC 8693 §4.1: the newest actor is outermost).
pub fn delegated_act(actor: &str, parent_act: Option<&Value>) -> Value {
    let mut act = Map::new();
    act.insert("sub".into(), json!(actor));
    if let Some(parent) = parent_act {
        act.insert("act".into(), parent.clone());
    }
    Value::Object(act)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{NhiKind, Owner};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_millis(seconds * 1000).unwrap()
    }

    fn scope(grants: &[&str]) -> Scope {
        Scope::parse(grants).unwrap()
    }

    fn agent(ceiling: &[&str]) -> Nhi {
        Nhi {
            id: "n1".into(),
            name: "bot".into(),
            kind: NhiKind::AiAgent,
            platform: "openai".into(),
            environment: "production".into(),
            status: NhiStatus::Active,
            owner: Owner {
                team_id: "t1".into(),
                application: None,
                contact: None,
            },
            purpose: "p".into(),
            scope_ceiling: scope(ceiling),
            tags: BTreeMap::new(),
            external_ids: BTreeMap::new(),
            created_at: at(0),
            updated_at: at(0),
            expires_at: None,
            last_used_at: None,
            version: 1,
        }
    }

    #[test]
    fn tasks_within_the_ceiling_issue_at_once_and_are_capped() {
        let nhi = agent(&["crm:*"]);
        let limits = IssuanceLimits::default();
        let plan = plan_task(&nhi, &scope(&["crm:read"]), Some(7200), &limits, at(10)).unwrap();
        assert_eq!(plan, TaskPlan::Issue { ttl_seconds: 3600 });
        let plan = plan_task(&nhi, &scope(&["crm:read"]), None, &limits, at(10)).unwrap();
        assert_eq!(plan, TaskPlan::Issue { ttl_seconds: 900 });
    }

    #[test]
    fn tasks_beyond_the_ceiling_wait_with_the_excess() {
        let nhi = agent(&["crm:read"]);
        let plan = plan_task(
            &nhi,
            &scope(&["crm:read:a", "mail:send"]),
            Some(60),
            &IssuanceLimits::default(),
            at(10),
        )
        .unwrap();
        assert_eq!(
            plan,
            TaskPlan::NeedsApproval {
                ttl_seconds: 60,
                excess: scope(&["mail:send"]).grants().to_vec()
            }
        );
    }

    #[test]
    fn operator_requests_always_wait() {
        let nhi = agent(&["crm:*"]);
        let plan = plan_requested_by_operator(
            &nhi,
            &scope(&["crm:read"]),
            Some(60),
            &IssuanceLimits::default(),
            at(1),
        )
        .unwrap();
        assert!(matches!(plan, TaskPlan::NeedsApproval { excess, .. } if excess.is_empty()));
    }

    #[test]
    fn suspended_expired_empty_and_absurd_requests_are_refused() {
        let limits = IssuanceLimits::default();
        let mut nhi = agent(&["crm:*"]);
        let s = scope(&["crm:read"]);
        assert_eq!(
            plan_task(&nhi, &Scope::default(), None, &limits, at(1)),
            Err(IssuanceError::EmptyScope)
        );
        assert_eq!(
            plan_task(&nhi, &s, Some(0), &limits, at(1)),
            Err(IssuanceError::TtlOutOfRange)
        );
        nhi.expires_at = Some(at(5));
        assert_eq!(
            plan_task(&nhi, &s, None, &limits, at(5))
                .unwrap_err()
                .code(),
            "nhi_expired"
        );
        assert_eq!(expiry(&nhi, at(1), 900), at(5));
        nhi.status = NhiStatus::Suspended;
        assert_eq!(
            plan_task(&nhi, &s, None, &limits, at(1))
                .unwrap_err()
                .code(),
            "nhi_not_active"
        );
    }

    fn pending() -> Approval {
        Approval {
            id: "a1".into(),
            kind: ApprovalKind::ScopeEscalation,
            nhi_id: "n1".into(),
            task_id: Some("t1".into()),
            requested_by: "nhi:n1".into(),
            purpose: "p".into(),
            requested_scope: scope(&["crm:read", "mail:send"]),
            excess: vec!["mail:send".into()],
            requested_ttl_seconds: 600,
            policies: Vec::new(),
            risk: Risk {
                level: RiskLevel::Low,
                factors: Vec::new(),
            },
            required_approvals: 1,
            state: ApprovalState::Pending,
            created_at: at(1),
            expires_at: at(100),
            decided_at: None,
            decided_by: None,
            reason: None,
            granted_scope: None,
            granted_ttl_seconds: None,
            escalated_to: None,
            escalated_at: None,
        }
    }

    fn approve(scope: Option<Scope>, ttl: Option<u32>) -> Decision {
        Decision::Approve {
            reason: "ok".into(),
            scope,
            ttl_seconds: ttl,
        }
    }

    fn decided(ruling: Result<Ruling, IssuanceError>) -> Approval {
        match ruling {
            Ok(Ruling::Decided(approval)) => *approval,
            other => panic!("not decided: {other:?}"),
        }
    }

    #[test]
    fn approvals_only_narrow_and_happen_once() {
        let narrower = decided(pending().decide(
            approve(Some(scope(&["mail:send"])), Some(60)),
            "operator:o",
            &[],
            at(2),
        ));
        assert_eq!(narrower.state, ApprovalState::Approved);
        assert_eq!(narrower.granted_scope, Some(scope(&["mail:send"])));
        assert_eq!(narrower.granted_ttl_seconds, Some(60));
        assert_eq!(
            narrower.decide(approve(None, None), "operator:o", &[], at(3)),
            Err(IssuanceError::NotPending(ApprovalState::Approved))
        );
        assert_eq!(
            pending()
                .decide(
                    approve(Some(scope(&["mail:*"])), None),
                    "operator:o",
                    &[],
                    at(2)
                )
                .unwrap_err()
                .code(),
            "not_narrower"
        );
        assert_eq!(
            pending()
                .decide(approve(None, Some(601)), "operator:o", &[], at(2))
                .unwrap_err()
                .code(),
            "not_narrower"
        );
        assert_eq!(
            pending().decide(approve(None, None), "nhi:n1", &[], at(2)),
            Err(IssuanceError::OwnRequest)
        );
    }

    #[test]
    fn an_unanswered_request_expires_and_cannot_be_decided() {
        let request = pending();
        assert_eq!(request.state_at(at(99)), ApprovalState::Pending);
        assert_eq!(request.state_at(at(100)), ApprovalState::Expired);
        for decision in [
            approve(None, None),
            Decision::Deny {
                reason: "no".into(),
            },
        ] {
            assert_eq!(
                request.decide(decision, "operator:o", &[], at(100)),
                Err(IssuanceError::NotPending(ApprovalState::Expired))
            );
        }
    }

    #[test]
    fn a_quorum_needs_distinct_reviewers_each_narrowing() {
        let request = Approval {
            required_approvals: 2,
            ..pending()
        };
        let Ok(Ruling::Voted { vote, remaining: 1 }) = request.decide(
            approve(Some(scope(&["mail:send"])), Some(300)),
            "operator:a",
            &[],
            at(2),
        ) else {
            panic!("the first approval is a vote")
        };
        let votes = [vote];
        assert_eq!(
            request.decide(approve(None, None), "operator:a", &votes, at(3)),
            Err(IssuanceError::AlreadyVoted("operator:a".into()))
        );
        // The second reviewer may not widen what the first approved, in scope or lifetime.
        for wider in [
            approve(Some(scope(&["crm:read"])), None),
            approve(None, Some(301)),
        ] {
            assert_eq!(
                request
                    .decide(wider, "operator:b", &votes, at(3))
                    .unwrap_err()
                    .code(),
                "not_narrower"
            );
        }
        let done = decided(request.decide(approve(None, Some(120)), "operator:b", &votes, at(3)));
        assert_eq!(done.state, ApprovalState::Approved);
        assert_eq!(done.granted_scope, Some(scope(&["mail:send"])));
        assert_eq!(done.granted_ttl_seconds, Some(120));
        assert_eq!(done.decided_by.as_deref(), Some("operator:b"));
        // One deny decides, whatever was approved before it.
        let denied = decided(request.decide(
            Decision::Deny {
                reason: "no".into(),
            },
            "operator:c",
            &votes,
            at(3),
        ));
        assert_eq!(denied.state, ApprovalState::Denied);
    }

    #[test]
    fn a_request_escalates_once_after_its_wait_and_never_once_over() {
        let request = pending();
        assert!(!request.escalation_due(60, at(60)));
        assert!(request.escalation_due(60, at(61)));
        let escalated = request.escalated("fallback", at(61));
        assert_eq!(escalated.escalated_to.as_deref(), Some("fallback"));
        assert!(!escalated.escalation_due(60, at(90)), "once");
        // Expired or decided requests are past escalating.
        assert!(!request.escalation_due(60, at(100)));
        let denied = decided(request.decide(
            Decision::Deny {
                reason: "no".into(),
            },
            "operator:o",
            &[],
            at(70),
        ));
        assert!(!denied.escalation_due(60, at(80)));
    }

    #[test]
    fn separation_of_duties_refuses_approvals_by_the_owner_team_only() {
        let deny = Decision::Deny {
            reason: "no".into(),
        };
        assert_eq!(
            ensure_separate(&approve(None, None), true, true),
            Err(IssuanceError::OwnTeamNhi)
        );
        assert_eq!(IssuanceError::OwnTeamNhi.code(), "own_team_nhi");
        assert_eq!(ensure_separate(&deny, true, true), Ok(()));
        assert_eq!(ensure_separate(&approve(None, None), false, true), Ok(()));
        assert_eq!(ensure_separate(&approve(None, None), true, false), Ok(()));
    }

    #[test]
    fn risk_is_judged_from_the_request_with_its_reasons() {
        let grants = |texts: &[&str]| -> Vec<Grant> {
            texts.iter().map(|t| Grant::parse(t).unwrap()).collect()
        };
        let read = grants(&["crm:read:orders/1"]);
        let low = assess_risk(RiskFacts {
            environment: "dev",
            nhi_risk: 0,
            asked: &read,
            sensitivity: &[],
            ttl_seconds: 600,
        });
        assert_eq!((low.level, low.factors.len()), (RiskLevel::Low, 0));
        let export = grants(&["crm:export:customers/*"]);
        let pii = vec!["pii".to_owned()];
        let high = assess_risk(RiskFacts {
            environment: "production",
            nhi_risk: 10,
            asked: &export,
            sensitivity: &pii,
            ttl_seconds: 600,
        });
        assert_eq!(high.level, RiskLevel::High);
        assert_eq!(high.factors.len(), 4, "{:?}", high.factors);
        let medium = assess_risk(RiskFacts {
            environment: "staging",
            nhi_risk: 80,
            asked: &read,
            sensitivity: &[],
            ttl_seconds: 600,
        });
        assert_eq!(medium.level, RiskLevel::Medium);
    }

    #[test]
    fn delegation_narrows_shortens_and_stops_at_the_cap() {
        let limits = IssuanceLimits {
            max_delegation_depth: 2,
            ..Default::default()
        };
        let parent_scope = scope(&["crm:read", "mail:send"]);
        let parent = Parent {
            scope: &parent_scope,
            expires_at: at(100),
            depth: 1,
            live: true,
        };
        let child = agent(&["crm:*"]);
        let d = plan_delegation(
            parent,
            &child,
            Some(&scope(&["crm:read"])),
            None,
            &limits,
            at(10),
        )
        .unwrap();
        assert_eq!((d.depth, d.expires_at), (2, at(100)));
        let wider = plan_delegation(
            parent,
            &child,
            Some(&scope(&["crm:*"])),
            None,
            &limits,
            at(10),
        );
        assert!(matches!(
            wider,
            Err(IssuanceError::ScopeTooBroad {
                what: "parent credential",
                ..
            })
        ));
        let beyond_child = plan_delegation(parent, &child, None, None, &limits, at(10));
        assert!(matches!(
            beyond_child,
            Err(IssuanceError::ScopeTooBroad {
                what: "sub-agent's ceiling",
                ..
            })
        ));
        let deep = Parent { depth: 2, ..parent };
        assert_eq!(
            plan_delegation(
                deep,
                &child,
                Some(&scope(&["crm:read"])),
                None,
                &limits,
                at(10)
            ),
            Err(IssuanceError::TooDeep { depth: 3, max: 2 })
        );
        let dead = Parent {
            live: false,
            ..parent
        };
        assert_eq!(
            plan_delegation(
                dead,
                &child,
                Some(&scope(&["crm:read"])),
                None,
                &limits,
                at(10)
            ),
            Err(IssuanceError::ParentNotLive)
        );
    }

    #[test]
    fn claims_carry_rfc_9068_and_9396_fields() {
        let claims = AccessTokenClaims {
            issuer: "https://custos.example".into(),
            audience: vec!["custos".into()],
            subject: "n0".into(),
            client_id: "n1".into(),
            jti: "j1".into(),
            issued_at: at(10),
            expires_at: at(70),
            scope: scope(&["crm:read:customers/*", "mail:send"]),
            task_id: Some("t1".into()),
            act: Some(delegated_act("n1", None)),
        }
        .to_json();
        assert_eq!(claims["scope"], "crm:read:customers/* mail:send");
        assert_eq!(claims["aud"], "custos");
        assert_eq!(
            (claims["iat"].as_i64(), claims["exp"].as_i64()),
            (Some(10), Some(70))
        );
        assert_eq!(claims["act"], json!({"sub": "n1"}));
        assert_eq!(
            claims["authorization_details"][0],
            json!({"type": "urn:custos:grant", "service": "crm", "actions": ["read"], "identifier": "customers/*"})
        );
        assert_eq!(
            delegated_act("n2", Some(&json!({"sub": "n1"}))),
            json!({"sub": "n2", "act": {"sub": "n1"}})
        );
    }
}
