//! The inventory: teams, operators, NHIs and their credentials, and the rules for changing them.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::validate::{self, ValidationErrors};
use crate::{Scope, Timestamp};

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name { $($(#[$vmeta])* #[serde(rename = $text)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use string_enum;

string_enum!(
    /// What an operator may do. Reviewers act only for their teams.
    Role { Admin => "admin", Reviewer => "reviewer", Auditor => "auditor" }
);

string_enum!(
    /// The kinds of non-human identity Custos governs.
    NhiKind {
        AiAgent => "ai_agent",
        ServiceAccount => "service_account",
        Workload => "workload",
        ApiKey => "api_key",
        Automation => "automation",
        OauthApp => "oauth_app",
    }
);

string_enum!(
    /// Where an NHI is in its life. Decommissioned NHIs are tombstones kept for the trail.
    NhiStatus { Active => "active", Suspended => "suspended", Decommissioned => "decommissioned" }
);

string_enum!(
    /// The kinds of stored credential.
    CredentialKind {
        /// A long-lived secret for legacy and bootstrap use; its keyed hash is stored.
        StaticKey => "static_key",
        /// A short-lived signed access token (a JWT); its keyed hash and claims are stored.
        AccessToken => "access_token",
        /// A public key the NHI signs client assertions with (RFC 7523 `private_key_jwt`).
        ClientKey => "client_key",
    }
);

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub contact: String,
    pub created_at: Timestamp,
    /// The team that sees this team's approval requests when nobody here answered in time
    /// (or at once, when separation of duties keeps this team from approving).
    pub fallback_team_id: Option<String>,
    /// How long a request waits here before it goes to the fallback team as well; `None`: the
    /// configured default.
    pub escalate_after_seconds: Option<u32>,
}

/// The shortest and longest wait before a request is escalated to a fallback team.
pub const ESCALATE_AFTER_SECONDS: std::ops::RangeInclusive<u32> = 60..=30 * 24 * 3600;

impl Team {
    pub fn new(
        id: String,
        name: String,
        contact: String,
        now: Timestamp,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        validate::text(&mut errors, "name", &name, 100);
        validate::text(&mut errors, "contact", &contact, 320);
        errors.into_result()?;
        Ok(Self {
            id,
            name,
            contact,
            created_at: now,
            fallback_team_id: None,
            escalate_after_seconds: None,
        })
    }

    /// Sets where and when this team's requests escalate. The fallback (an id, already
    /// resolved) must not be the team itself, and the wait must be within
    /// [`ESCALATE_AFTER_SECONDS`]; a wait needs a fallback to wait for.
    pub fn with_escalation(
        mut self,
        fallback_team_id: Option<String>,
        escalate_after_seconds: Option<u32>,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if fallback_team_id.as_deref() == Some(self.id.as_str()) {
            errors.push("fallback_team", "a team cannot be its own fallback");
        }
        if let Some(seconds) = escalate_after_seconds {
            if !ESCALATE_AFTER_SECONDS.contains(&seconds) {
                errors.push(
                    "escalate_after_seconds",
                    format!(
                        "must be between {} and {}",
                        ESCALATE_AFTER_SECONDS.start(),
                        ESCALATE_AFTER_SECONDS.end()
                    ),
                );
            } else if fallback_team_id.is_none() {
                errors.push(
                    "escalate_after_seconds",
                    "needs a fallback_team to escalate to",
                );
            }
        }
        errors.into_result()?;
        self.fallback_team_id = fallback_team_id;
        self.escalate_after_seconds = escalate_after_seconds;
        Ok(self)
    }
}

/// A person (or a person's tool) using the management API. The token itself is never kept:
/// only its keyed hash, in the store, and a short hint to recognise it in listings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Operator {
    pub id: String,
    pub name: String,
    pub roles: Vec<Role>,
    /// Team ids this operator reviews for (and is a member of).
    pub teams: Vec<String>,
    pub token_hint: String,
    pub created_at: Timestamp,
    pub created_by: Option<String>,
    pub revoked_at: Option<Timestamp>,
}

impl Operator {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }

    /// Checks the parts an admin chose. Team ids must already have been resolved.
    pub fn validate(name: &str, roles: &[Role], teams: &[String]) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        validate::text(&mut errors, "name", name, 100);
        if roles.is_empty() {
            errors.push("roles", "at least one role is required");
        }
        if roles.contains(&Role::Reviewer) && teams.is_empty() {
            errors.push("teams", "a reviewer must review for at least one team");
        }
        errors.into_result()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub team_id: String,
    pub application: Option<String>,
    pub contact: Option<String>,
}

/// A registered non-human identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Nhi {
    pub id: String,
    pub name: String,
    pub kind: NhiKind,
    pub platform: String,
    pub environment: String,
    pub status: NhiStatus,
    pub owner: Owner,
    pub purpose: String,
    pub scope_ceiling: Scope,
    pub tags: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    /// Incremented on every change; the HTTP layer's ETag.
    pub version: i64,
}

/// What a registration supplies. The owner team has been resolved to an id by the caller.
#[derive(Clone, Debug)]
pub struct NhiDraft {
    pub name: String,
    pub kind: NhiKind,
    pub platform: String,
    pub environment: String,
    pub owner: Owner,
    pub purpose: String,
    pub scope_ceiling: Scope,
    pub tags: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
    pub expires_at: Option<Timestamp>,
}

/// A partial update: `None` leaves a field as it is; `expires_at: Some(None)` clears it.
#[derive(Clone, Debug, Default)]
pub struct NhiChanges {
    pub name: Option<String>,
    pub kind: Option<NhiKind>,
    pub platform: Option<String>,
    pub environment: Option<String>,
    pub owner: Option<Owner>,
    pub purpose: Option<String>,
    pub scope_ceiling: Option<Scope>,
    pub tags: Option<BTreeMap<String, String>>,
    pub external_ids: Option<BTreeMap<String, String>>,
    pub expires_at: Option<Option<Timestamp>>,
}

/// A status change that the NHI's current status does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} an nhi that is {from}")]
pub struct TransitionError {
    pub action: &'static str,
    pub from: NhiStatus,
}

/// Checks the descriptive fields every NHI must have right, whether new or changed.
fn validate_fields(errors: &mut ValidationErrors, nhi: &Nhi) {
    validate::text(errors, "name", &nhi.name, 200);
    validate::slug(errors, "platform", &nhi.platform);
    validate::slug(errors, "environment", &nhi.environment);
    validate::text(errors, "purpose", &nhi.purpose, 2000);
    if let Some(application) = &nhi.owner.application {
        validate::text(errors, "owner.application", application, 200);
    }
    if let Some(contact) = &nhi.owner.contact {
        validate::text(errors, "owner.contact", contact, 320);
    }
    validate::labels(errors, "tags", &nhi.tags);
    validate::labels(errors, "external_ids", &nhi.external_ids);
}

impl Nhi {
    /// Registers a new NHI from a draft: validated, active, version 1.
    pub fn register(draft: NhiDraft, id: String, now: Timestamp) -> Result<Self, ValidationErrors> {
        let nhi = Self {
            id,
            name: draft.name,
            kind: draft.kind,
            platform: draft.platform,
            environment: draft.environment,
            status: NhiStatus::Active,
            owner: draft.owner,
            purpose: draft.purpose,
            scope_ceiling: draft.scope_ceiling,
            tags: draft.tags,
            external_ids: draft.external_ids,
            created_at: now,
            updated_at: now,
            expires_at: draft.expires_at,
            last_used_at: None,
            version: 1,
        };
        let mut errors = ValidationErrors::default();
        validate_fields(&mut errors, &nhi);
        if nhi.expires_at.is_some_and(|e| e <= now) {
            errors.push("expires_at", "must be in the future");
        }
        errors.into_result()?;
        Ok(nhi)
    }

    /// Applies a partial update. Returns the new state and the names of the fields that really
    /// changed; an update that changes nothing returns an empty list and the same version.
    pub fn apply(
        &self,
        changes: NhiChanges,
        now: Timestamp,
    ) -> Result<(Nhi, Vec<&'static str>), ValidationErrors> {
        let mut next = self.clone();
        let mut changed = Vec::new();
        macro_rules! set {
            ($field:ident) => {
                if let Some(value) = changes.$field {
                    if next.$field != value {
                        next.$field = value;
                        changed.push(stringify!($field));
                    }
                }
            };
        }
        set!(name);
        set!(kind);
        set!(platform);
        set!(environment);
        set!(owner);
        set!(purpose);
        set!(scope_ceiling);
        set!(tags);
        set!(external_ids);
        set!(expires_at);
        let mut errors = ValidationErrors::default();
        if self.status == NhiStatus::Decommissioned && !changed.is_empty() {
            errors.push(
                "status",
                "a decommissioned nhi is a tombstone and cannot be changed",
            );
        }
        validate_fields(&mut errors, &next);
        if changed.contains(&"expires_at") && next.expires_at.is_some_and(|e| e <= now) {
            errors.push("expires_at", "must be in the future");
        }
        errors.into_result()?;
        if !changed.is_empty() {
            next.version += 1;
            next.updated_at = now;
        }
        Ok((next, changed))
    }

    /// Suspends an active NHI. Suspending a suspended one is a no-op (`Ok(None)`).
    pub fn suspend(&self, now: Timestamp) -> Result<Option<Nhi>, TransitionError> {
        self.transition("suspend", NhiStatus::Active, NhiStatus::Suspended, now)
    }

    /// Makes an NHI a tombstone, from active or suspended: kept for the trail, its name taken
    /// for good, never used or changed again. Already a tombstone: a no-op (`Ok(None)`).
    pub fn tombstone(&self, now: Timestamp) -> Option<Nhi> {
        if self.status == NhiStatus::Decommissioned {
            return None;
        }
        let mut next = self.clone();
        next.status = NhiStatus::Decommissioned;
        next.version += 1;
        next.updated_at = now;
        Some(next)
    }

    /// Resumes a suspended NHI. Resuming an active one is a no-op (`Ok(None)`).
    pub fn resume(&self, now: Timestamp) -> Result<Option<Nhi>, TransitionError> {
        self.transition("resume", NhiStatus::Suspended, NhiStatus::Active, now)
    }

    fn transition(
        &self,
        action: &'static str,
        from: NhiStatus,
        to: NhiStatus,
        now: Timestamp,
    ) -> Result<Option<Nhi>, TransitionError> {
        if self.status == to {
            return Ok(None);
        }
        if self.status != from {
            return Err(TransitionError {
                action,
                from: self.status,
            });
        }
        let mut next = self.clone();
        next.status = to;
        next.version += 1;
        next.updated_at = now;
        Ok(Some(next))
    }
}

/// A stored credential. The secret is never kept: `secret_hash` is a keyed hash of it, and
/// `fingerprint` a non-secret prefix of that hash that names it in listings and the trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Credential {
    pub id: String,
    pub nhi_id: String,
    pub kind: CredentialKind,
    #[serde(skip)]
    pub secret_hash: Vec<u8>,
    pub fingerprint: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub created_by: String,
    /// What an access token may do; `None` for static keys and client keys, which carry the
    /// NHI's ceiling only as a limit on what they can ask for.
    pub scope: Option<Scope>,
    /// The task an access token was issued for.
    pub task_id: Option<String>,
    /// The credential this one was derived from by delegation: revoking the parent revokes it.
    pub parent_id: Option<String>,
    /// How many delegations separate this credential from one issued directly (0).
    pub depth: u32,
    /// The public JWK of a client key, as registered.
    pub public_jwk: Option<String>,
    /// When the decision point last let it through (recorded in batches, a few seconds late).
    pub last_used_at: Option<Timestamp>,
}

impl Credential {
    /// Usable at `now`: not revoked and not expired.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// What the inventory list can be filtered by. All filters combine with AND.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NhiFilter {
    pub status: Option<NhiStatus>,
    pub kind: Option<NhiKind>,
    pub platform: Option<String>,
    pub environment: Option<String>,
    /// Only NHIs owned by one of these teams (a reviewer's view, or the `team` filter).
    pub owner_teams: Option<Vec<String>>,
    /// `(key, Some(value))` for an exact tag, `(key, None)` for "has the tag".
    pub tags: Vec<(String, Option<String>)>,
    pub expires_before: Option<Timestamp>,
    /// Not used since: never used, or last used before this time.
    pub unused_since: Option<Timestamp>,
    /// Case-insensitive substring of the name.
    pub name_contains: Option<String>,
}

/// One page of a listing; `after` is the last id of the previous page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub after: Option<String>,
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> NhiDraft {
        NhiDraft {
            name: "invoice-bot".into(),
            kind: NhiKind::AiAgent,
            platform: "openai".into(),
            environment: "production".into(),
            owner: Owner {
                team_id: "t1".into(),
                application: None,
                contact: None,
            },
            purpose: "reconciles invoices".into(),
            scope_ceiling: Scope::parse(&["erp:read"]).unwrap(),
            tags: BTreeMap::new(),
            external_ids: BTreeMap::new(),
            expires_at: None,
        }
    }

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms).unwrap()
    }

    #[test]
    fn register_validates_everything_at_once() {
        let mut bad = draft();
        bad.name = " ".into();
        bad.platform = "Open AI".into();
        bad.purpose = String::new();
        bad.expires_at = Some(at(5));
        let errors = Nhi::register(bad, "n1".into(), at(10)).unwrap_err();
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "platform", "purpose", "expires_at"]);
    }

    #[test]
    fn apply_bumps_version_only_on_real_change() {
        let nhi = Nhi::register(draft(), "n1".into(), at(10)).unwrap();
        let (same, changed) = nhi
            .apply(
                NhiChanges {
                    name: Some("invoice-bot".into()),
                    ..Default::default()
                },
                at(20),
            )
            .unwrap();
        assert!(changed.is_empty());
        assert_eq!(same.version, 1);
        let (next, changed) = nhi
            .apply(
                NhiChanges {
                    purpose: Some("pays invoices".into()),
                    ..Default::default()
                },
                at(20),
            )
            .unwrap();
        assert_eq!(changed, ["purpose"]);
        assert_eq!((next.version, next.updated_at), (2, at(20)));
    }

    #[test]
    fn status_transitions() {
        let nhi = Nhi::register(draft(), "n1".into(), at(10)).unwrap();
        assert!(nhi.resume(at(11)).unwrap().is_none());
        let suspended = nhi.suspend(at(11)).unwrap().unwrap();
        assert_eq!(suspended.status, NhiStatus::Suspended);
        assert!(suspended.suspend(at(12)).unwrap().is_none());
        let mut tomb = nhi.clone();
        tomb.status = NhiStatus::Decommissioned;
        assert_eq!(
            tomb.resume(at(12)).unwrap_err().from,
            NhiStatus::Decommissioned
        );
        assert!(
            tomb.apply(
                NhiChanges {
                    purpose: Some("x".into()),
                    ..Default::default()
                },
                at(12)
            )
            .is_err()
        );
    }
}
