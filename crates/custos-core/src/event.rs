//! Domain events: one for every change. The store appends each in the same transaction as the
//! change it describes, so the trail and the state cannot disagree.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::Timestamp;

/// Who caused a change.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Actor {
    Operator(String),
    Nhi(String),
    /// The server itself: bootstrap and background jobs.
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Operator(id) => write!(f, "operator:{id}"),
            Actor::Nhi(id) => write!(f, "nhi:{id}"),
            Actor::System => f.write_str("system"),
        }
    }
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    ServerBootstrapped,
    TeamCreated,
    /// An admin changed a team's fallback team or escalation wait.
    TeamUpdated,
    OperatorCreated,
    OperatorRevoked,
    /// An operator signed in to the web UI (a session began).
    OperatorSignedIn,
    /// A web UI session ended: signed out.
    OperatorSignedOut,
    NhiRegistered,
    NhiUpdated,
    NhiSuspended,
    NhiResumed,
    CredentialIssued,
    CredentialRevoked,
    CredentialRotated,
    TaskRequested,
    TaskActivated,
    TaskEnded,
    ApprovalRequested,
    ApprovalDecided,
    /// A reviewer approved a request that needs a quorum; more approvals are needed.
    ApprovalVoted,
    /// A request passed its deadline unanswered, and so was denied.
    ApprovalExpired,
    /// A request went to the owner team's fallback team as well: unanswered past the team's
    /// wait, or at once because separation of duties keeps the owner team from approving.
    ApprovalEscalated,
    /// An admin set a standing rule that approves one NHI's requests within a scope.
    ApprovalRuleCreated,
    ApprovalRuleRevoked,
    SigningKeyCreated,
    SigningKeyRetired,
    /// An enforcement point asked whether a credential may do something, and was answered.
    AccessDecided,
    /// A new version of the guardrail policies and the resource catalogue was kept.
    PoliciesUpdated,
    /// A notification channel (webhook or email) was added.
    NotificationChannelCreated,
    /// A notification channel was disabled; its pending deliveries were given up.
    NotificationChannelDisabled,
    /// A notification could not be delivered and was given up after its retries.
    NotificationFailed,
    /// Behaviour baselining noticed something and opened a finding (a repeat of an unresolved
    /// finding folds into it and writes no event).
    FindingOpened,
    /// An operator saw a finding and is looking into it; it stays unresolved.
    FindingAcknowledged,
    /// An operator judged a finding not to be a problem.
    FindingDismissed,
    /// An operator judged a finding to be expected behaviour.
    FindingAccepted,
    /// An admin set what to do about findings for an NHI, a team, a kind or by default.
    ResponsePolicyCreated,
    ResponsePolicyRevoked,
    /// A decommissioning workflow began for an NHI (by request, review, timeout or webhook).
    DecommissionStarted,
    /// A step of a decommissioning workflow was done and recorded; `details.step` names it.
    DecommissionProgressed,
    /// The NHI became a tombstone: kept for the trail, never used or changed again.
    NhiDecommissioned,
    /// A decommissioning workflow finished, with its signed teardown receipt.
    DecommissionCompleted,
    /// An admin allowed a deployment system to report agents shut down.
    DeploymentHookCreated,
    DeploymentHookDisabled,
    /// The NHI's owner team confirmed it still owns and needs it (an ownership review approved).
    NhiOwnerAttested,
    /// The NHI was given to another owner team; `details.from_team` and `details.to_team`.
    NhiOwnerTransferred,
    /// An NHI collected the secret of the key that replaced its aging static key.
    CredentialCollected,
    /// Active tasks past their lifetime were closed (their credentials had expired with them).
    TaskExpired,
    /// A staged decommission was stopped during its watch; the NHI is resumed.
    DecommissionCancelled,
    /// A discovery import was read: `details` say the format, the source and the counts.
    DiscoveryImported,
    /// Someone linked NHIs on several platforms into one logical agent.
    LogicalAgentCreated,
    /// An NHI joined a logical agent.
    LogicalAgentLinked,
    /// An NHI left a logical agent.
    LogicalAgentUnlinked,
}

impl EventKind {
    pub const ALL: [EventKind; 52] = [
        EventKind::ServerBootstrapped,
        EventKind::TeamCreated,
        EventKind::TeamUpdated,
        EventKind::OperatorCreated,
        EventKind::OperatorRevoked,
        EventKind::OperatorSignedIn,
        EventKind::OperatorSignedOut,
        EventKind::NhiRegistered,
        EventKind::NhiUpdated,
        EventKind::NhiSuspended,
        EventKind::NhiResumed,
        EventKind::CredentialIssued,
        EventKind::CredentialRevoked,
        EventKind::CredentialRotated,
        EventKind::TaskRequested,
        EventKind::TaskActivated,
        EventKind::TaskEnded,
        EventKind::ApprovalRequested,
        EventKind::ApprovalDecided,
        EventKind::ApprovalVoted,
        EventKind::ApprovalExpired,
        EventKind::ApprovalEscalated,
        EventKind::ApprovalRuleCreated,
        EventKind::ApprovalRuleRevoked,
        EventKind::SigningKeyCreated,
        EventKind::SigningKeyRetired,
        EventKind::AccessDecided,
        EventKind::PoliciesUpdated,
        EventKind::NotificationChannelCreated,
        EventKind::NotificationChannelDisabled,
        EventKind::NotificationFailed,
        EventKind::FindingOpened,
        EventKind::FindingAcknowledged,
        EventKind::FindingDismissed,
        EventKind::FindingAccepted,
        EventKind::ResponsePolicyCreated,
        EventKind::ResponsePolicyRevoked,
        EventKind::DecommissionStarted,
        EventKind::DecommissionProgressed,
        EventKind::NhiDecommissioned,
        EventKind::DecommissionCompleted,
        EventKind::DeploymentHookCreated,
        EventKind::DeploymentHookDisabled,
        EventKind::NhiOwnerAttested,
        EventKind::NhiOwnerTransferred,
        EventKind::CredentialCollected,
        EventKind::TaskExpired,
        EventKind::DecommissionCancelled,
        EventKind::DiscoveryImported,
        EventKind::LogicalAgentCreated,
        EventKind::LogicalAgentLinked,
        EventKind::LogicalAgentUnlinked,
    ];

    /// The stable name of the event type, as stored and as shown in the trail.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::ServerBootstrapped => "server.bootstrapped",
            EventKind::TeamCreated => "team.created",
            EventKind::TeamUpdated => "team.updated",
            EventKind::OperatorCreated => "operator.created",
            EventKind::OperatorRevoked => "operator.revoked",
            EventKind::OperatorSignedIn => "operator.signed_in",
            EventKind::OperatorSignedOut => "operator.signed_out",
            EventKind::NhiRegistered => "nhi.registered",
            EventKind::NhiUpdated => "nhi.updated",
            EventKind::NhiSuspended => "nhi.suspended",
            EventKind::NhiResumed => "nhi.resumed",
            EventKind::CredentialIssued => "credential.issued",
            EventKind::CredentialRevoked => "credential.revoked",
            EventKind::CredentialRotated => "credential.rotated",
            EventKind::TaskRequested => "task.requested",
            EventKind::TaskActivated => "task.activated",
            EventKind::TaskEnded => "task.ended",
            EventKind::ApprovalRequested => "approval.requested",
            EventKind::ApprovalDecided => "approval.decided",
            EventKind::ApprovalVoted => "approval.voted",
            EventKind::ApprovalExpired => "approval.expired",
            EventKind::ApprovalEscalated => "approval.escalated",
            EventKind::ApprovalRuleCreated => "approval_rule.created",
            EventKind::ApprovalRuleRevoked => "approval_rule.revoked",
            EventKind::SigningKeyCreated => "signing_key.created",
            EventKind::SigningKeyRetired => "signing_key.retired",
            EventKind::AccessDecided => "access.decided",
            EventKind::PoliciesUpdated => "policies.updated",
            EventKind::NotificationChannelCreated => "notification.channel_created",
            EventKind::NotificationChannelDisabled => "notification.channel_disabled",
            EventKind::NotificationFailed => "notification.failed",
            EventKind::FindingOpened => "finding.opened",
            EventKind::FindingAcknowledged => "finding.acknowledged",
            EventKind::FindingDismissed => "finding.dismissed",
            EventKind::FindingAccepted => "finding.accepted",
            EventKind::ResponsePolicyCreated => "response_policy.created",
            EventKind::ResponsePolicyRevoked => "response_policy.revoked",
            EventKind::DecommissionStarted => "decommission.started",
            EventKind::DecommissionProgressed => "decommission.progressed",
            EventKind::NhiDecommissioned => "nhi.decommissioned",
            EventKind::DecommissionCompleted => "decommission.completed",
            EventKind::DeploymentHookCreated => "deployment_hook.created",
            EventKind::DeploymentHookDisabled => "deployment_hook.disabled",
            EventKind::NhiOwnerAttested => "nhi.owner_attested",
            EventKind::NhiOwnerTransferred => "nhi.owner_transferred",
            EventKind::CredentialCollected => "credential.collected",
            EventKind::TaskExpired => "task.expired",
            EventKind::DecommissionCancelled => "decommission.cancelled",
            EventKind::DiscoveryImported => "discovery.imported",
            EventKind::LogicalAgentCreated => "logical_agent.created",
            EventKind::LogicalAgentLinked => "logical_agent.linked",
            EventKind::LogicalAgentUnlinked => "logical_agent.unlinked",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether the change this event records can change an access decision that a node
    /// answers from memory: the state of a credential, an NHI, a task or an approval, or the
    /// guardrail policies. A node that sees one committed by another node must drop what it
    /// holds; on PostgreSQL the store announces each (NOTIFY) in the transaction that commits
    /// it. Findings and response policies change no decision themselves (a suspension they
    /// bring is its own `nhi.suspended`), nor does a decision's own `access.decided`.
    pub const fn changes_decisions(self) -> bool {
        matches!(
            self,
            EventKind::NhiUpdated
                | EventKind::NhiOwnerTransferred
                | EventKind::NhiSuspended
                | EventKind::NhiResumed
                | EventKind::NhiDecommissioned
                | EventKind::CredentialRevoked
                | EventKind::CredentialRotated
                | EventKind::TaskEnded
                | EventKind::ApprovalDecided
                | EventKind::ApprovalExpired
                | EventKind::PoliciesUpdated
        )
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A change, described. `subject` names what changed (`nhi:<id>`, `team:<id>`, …); `details`
/// are flat strings so the trail can be encoded canonically. Secrets never appear here: a
/// credential is named by its fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DomainEvent {
    pub id: String,
    pub kind: EventKind,
    pub actor: Actor,
    pub subject: String,
    pub occurred_at: Timestamp,
    pub details: BTreeMap<String, String>,
}

impl DomainEvent {
    pub fn new(
        id: String,
        kind: EventKind,
        actor: Actor,
        subject: String,
        occurred_at: Timestamp,
    ) -> Self {
        Self {
            id,
            kind,
            actor,
            subject,
            occurred_at,
            details: BTreeMap::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// Adds a detail only when there is one.
    pub fn with_some(self, key: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(value) => self.with(key, value),
            None => self,
        }
    }
}

/// An event as read back from the store, with its position in the trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoredEvent {
    pub seq: i64,
    #[serde(flatten)]
    pub event: DomainEvent,
}

impl Actor {
    /// Reads back the text form written by `Display`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once(':') {
            Some(("operator", id)) => Some(Actor::Operator(id.to_owned())),
            Some(("nhi", id)) => Some(Actor::Nhi(id.to_owned())),
            None if text == "system" => Some(Actor::System),
            _ => None,
        }
    }
}
