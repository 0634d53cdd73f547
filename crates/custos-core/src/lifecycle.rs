//! Decommissioning: the durable workflow that retires an NHI for good.
//!
//! A workflow walks a fixed list of steps, each recorded before the next begins:
//! revoke every credential (the NHI suspended first, so that nothing new is minted meanwhile)
//! → tombstone the NHI → archive its trail with proofs → notify its owner → done, with a signed
//! teardown receipt. Every step can be done again without harm, so a workflow interrupted at
//! any point (a crash, a restart) is resumed from the step it recorded and finishes once: the
//! store moves a workflow from one step to the next only from the step it is at.
//!
//! Pure: the server runs the steps; this module says what they are and what they record.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Timestamp;
use crate::model::string_enum;

string_enum!(
    /// The step a workflow is at: the next to do, or `done` (or `cancelled`, a staged
    /// workflow stopped during its watch).
    DecommissionStep {
        /// Staged mode only: the NHI is suspended (its credentials kept) and what it would have
        /// been refused is watched until the watch ends; then the rest follows.
        Watch => "watch",
        Revoke => "revoke",
        Tombstone => "tombstone",
        Archive => "archive",
        Notify => "notify",
        Done => "done",
        Cancelled => "cancelled",
    }
);

string_enum!(
    /// What started a workflow.
    DecommissionTrigger {
        /// An operator asked (`POST /v1/nhis/{id}/decommission`, `custos nhi decommission`).
        Request => "request",
        /// A reviewer approved a decommission review.
        Review => "review",
        /// The NHI passed its `expires_at`, or was unused too long.
        Timeout => "timeout",
        /// A deployment system said the agent was shut down.
        Webhook => "webhook",
    }
);

string_enum!(
    /// What the scheduler does with an NHI past its `expires_at`.
    ExpiryAction {
        /// Decommission it at once (trigger `timeout`).
        Decommission => "decommission",
        /// Open a decommission review in its owner team's inbox; a reviewer decides.
        Review => "review",
    }
);

string_enum!(
    /// What the scheduler does with a static key older than the rotation age.
    KeyAgeAction {
        /// Replace it: the new secret waits, sealed, for the NHI to collect with the old key,
        /// which keeps working for the rotation grace period; the owner is told.
        Rotate => "rotate",
        /// Leave it, and open a finding and tell the owner that it is due a rotation.
        Flag => "flag",
    }
);

/// The tag with which one NHI overrides the configured [`ExpiryAction`].
pub const EXPIRY_ACTION_TAG: &str = "custos.lifecycle.on_expiry";
/// The tag with which one NHI overrides the configured [`KeyAgeAction`].
pub const KEY_AGE_ACTION_TAG: &str = "custos.lifecycle.on_key_age";

/// What the lifecycle scheduler does, configured for the whole server; an NHI's tags
/// [`EXPIRY_ACTION_TAG`] and [`KEY_AGE_ACTION_TAG`] override the two actions for it alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifecyclePolicy {
    /// Unused this many days, an NHI is due a decommission review.
    pub idle_days: u32,
    pub on_expiry: ExpiryAction,
    /// A static key this many days old is due a rotation; 0: none is (keys that live under
    /// a day and a half are short-lived enough as they are).
    pub rotate_keys_after_days: u32,
    pub on_key_age: KeyAgeAction,
    /// A high-risk NHI's owner confirms, this often, that it still owns and needs it.
    pub attest_every_days: u32,
}

impl Default for LifecyclePolicy {
    fn default() -> Self {
        Self {
            idle_days: 90,
            on_expiry: ExpiryAction::Decommission,
            rotate_keys_after_days: 60,
            on_key_age: KeyAgeAction::Rotate,
            attest_every_days: 90,
        }
    }
}

impl LifecyclePolicy {
    /// The expiry action for one NHI: its tag if it has a valid one, else the server's.
    pub fn on_expiry_for(&self, tags: &std::collections::BTreeMap<String, String>) -> ExpiryAction {
        tags.get(EXPIRY_ACTION_TAG)
            .and_then(|v| ExpiryAction::parse(v))
            .unwrap_or(self.on_expiry)
    }

    /// The key-age action for one NHI: its tag if it has a valid one, else the server's.
    pub fn on_key_age_for(
        &self,
        tags: &std::collections::BTreeMap<String, String>,
    ) -> KeyAgeAction {
        tags.get(KEY_AGE_ACTION_TAG)
            .and_then(|v| KeyAgeAction::parse(v))
            .unwrap_or(self.on_key_age)
    }
}

impl DecommissionStep {
    /// The step after this one; `done` stays `done`.
    pub fn next(self) -> Self {
        match self {
            Self::Watch => Self::Revoke,
            Self::Revoke => Self::Tombstone,
            Self::Tombstone => Self::Archive,
            Self::Archive => Self::Notify,
            Self::Notify | Self::Done => Self::Done,
            Self::Cancelled => Self::Cancelled,
        }
    }
}

/// Where an NHI's trail was archived: one or more files (a file holds at most as many events
/// as one audit export, 10,000), each a self-contained export that verifies offline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedTrail {
    /// In log order: the first file holds the oldest events.
    pub files: Vec<ArchivedFile>,
    /// How many of the NHI's events they hold in all, each with its inclusion proof.
    pub events: u64,
    /// The size of the log at the signed checkpoint the last file's proofs lead to.
    pub tree_size: u64,
}

/// One file of an archived trail.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedFile {
    /// The file's name inside the archive directory.
    pub file: String,
    /// SHA-256 of the file's bytes, lowercase hex.
    pub sha256: String,
    pub events: u64,
}

/// What a workflow did, step by step: the body of its teardown receipt.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Teardown {
    /// The credentials this workflow revoked (delegated descendants included), by id.
    pub revoked_credentials: Vec<String>,
    /// When the revocation was written.
    pub revoked_at: Option<Timestamp>,
    /// Measured from the start of the revocation until the decision point refused the last
    /// of the NHI's credentials, in milliseconds; `None` if there was none to revoke, or the
    /// run that revoked them was interrupted before it recorded its timing.
    pub last_refused_after_ms: Option<f64>,
    pub archive: Option<ArchivedTrail>,
    /// How many notifications to the owner were queued.
    pub notifications: u32,
    /// Staged mode: the watch before the revocation, and what it saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<Watch>,
}

/// A staged decommission's watch: the NHI suspended, its credentials kept, every use refused
/// and counted, so that its owner learns what still depends on it before anything is revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    /// When the watch ends and the revocation follows.
    pub until: Timestamp,
    /// Filled in when the watch ends: how many calls were refused during it (`None` before).
    pub refused_calls: Option<u64>,
    pub last_refused_at: Option<Timestamp>,
    /// The services those calls were for, each once, at most 20.
    #[serde(default)]
    pub services: Vec<String>,
}

/// The longest a staged decommission may watch, in days.
pub const MAX_WATCH_DAYS: u32 = 90;

/// One NHI's decommissioning workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decommission {
    pub id: String,
    pub nhi_id: String,
    /// The next step to do; `done` when finished.
    pub step: DecommissionStep,
    pub trigger: DecommissionTrigger,
    /// Who asked: `operator:<id>`, `system`, or `webhook:<source>`.
    pub requested_by: String,
    pub reason: String,
    pub teardown: Teardown,
    /// The signed teardown receipt (a compact JWS), once done.
    pub receipt: Option<String>,
    /// How many times a step failed and was tried again, and the last failure: a workflow
    /// that keeps failing is stuck and says why.
    pub failures: u32,
    pub last_error: Option<String>,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

impl Decommission {
    /// A workflow about to start at its first step.
    /// With `watch_until`, it is staged: it starts by watching until then.
    pub fn start(
        id: String,
        nhi_id: String,
        trigger: DecommissionTrigger,
        requested_by: String,
        reason: String,
        now: Timestamp,
        watch_until: Option<Timestamp>,
    ) -> Self {
        Self {
            id,
            nhi_id,
            step: if watch_until.is_some() {
                DecommissionStep::Watch
            } else {
                DecommissionStep::Revoke
            },
            trigger,
            requested_by,
            reason,
            teardown: Teardown {
                watch: watch_until.map(|until| Watch {
                    until,
                    refused_calls: None,
                    last_refused_at: None,
                    services: Vec::new(),
                }),
                ..Default::default()
            },
            receipt: None,
            failures: 0,
            last_error: None,
            started_at: now,
            updated_at: now,
            finished_at: None,
        }
    }

    /// Finished: done, or cancelled during its watch.
    pub fn is_done(&self) -> bool {
        matches!(
            self.step,
            DecommissionStep::Done | DecommissionStep::Cancelled
        )
    }

    /// A staged workflow still watching, whose watch has not ended by `now`.
    pub fn watching(&self, now: Timestamp) -> bool {
        self.step == DecommissionStep::Watch
            && self.teardown.watch.as_ref().is_some_and(|w| now < w.until)
    }

    /// This workflow stopped during its watch.
    pub fn cancelled(&self, now: Timestamp) -> Self {
        Self {
            step: DecommissionStep::Cancelled,
            last_error: None,
            updated_at: now,
            finished_at: Some(now),
            ..self.clone()
        }
    }

    /// This workflow with its current step done, recording `teardown`: at the next step,
    /// and finished if that is `done`.
    pub fn advanced(&self, teardown: Teardown, now: Timestamp) -> Self {
        let step = self.step.next();
        Self {
            step,
            teardown,
            last_error: None,
            updated_at: now,
            finished_at: (step == DecommissionStep::Done).then_some(now),
            ..self.clone()
        }
    }

    /// The claims of the teardown receipt, signed by the server once the workflow is done:
    /// what was revoked and when, how long until the last credential was refused, where the
    /// trail is archived, and who asked why.
    pub fn receipt_claims(&self, issuer: &str, now: Timestamp) -> Value {
        json!({
            "iss": issuer,
            "sub": self.nhi_id,
            "jti": self.id,
            "iat": now.unix_millis().div_euclid(1000),
            "decommission": {
                "trigger": self.trigger,
                "requested_by": self.requested_by,
                "reason": self.reason,
                "started_at": self.started_at,
                "finished_at": now,
                "revoked_credentials": self.teardown.revoked_credentials,
                "revoked_at": self.teardown.revoked_at,
                "last_refused_after_ms": self.teardown.last_refused_after_ms,
                "archive": self.teardown.archive,
                "notifications": self.teardown.notifications,
                "watch": self.teardown.watch,
            },
        })
    }
}

/// The media type of a teardown receipt's JWS header (`typ`).
pub const RECEIPT_TYPE: &str = "custos-teardown+jwt";

/// The name of part `part` (from 1) of an NHI's archived trail inside the archive directory:
/// `nhi-<id>.trail.json`, then `nhi-<id>.trail.2.json`, …; rewritten whole if the archive step
/// runs again.
pub fn archive_file_name(nhi_id: &str, part: usize) -> String {
    if part <= 1 {
        format!("nhi-{nhi_id}.trail.json")
    } else {
        format!("nhi-{nhi_id}.trail.{part}.json")
    }
}

impl fmt::Display for Decommission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "decommission {} of nhi {} at {}",
            self.id, self.nhi_id, self.step
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_800_000_000_000 + seconds * 1000).unwrap()
    }

    #[test]
    fn a_workflow_walks_every_step_once_and_finishes() {
        let mut workflow = Decommission::start(
            "w".into(),
            "n".into(),
            DecommissionTrigger::Request,
            "operator:o".into(),
            "shut down".into(),
            at(0),
            None,
        );
        let mut seen = vec![workflow.step];
        for second in 1..=4 {
            assert!(!workflow.is_done());
            workflow = workflow.advanced(workflow.teardown.clone(), at(second));
            seen.push(workflow.step);
        }
        // Every step but the staged watch and the cancellation, in order.
        assert_eq!(seen, DecommissionStep::ALL[1..6]);
        assert!(workflow.is_done());
        assert_eq!(workflow.finished_at, Some(at(4)));
        assert_eq!(workflow.started_at, at(0));
        assert_eq!(DecommissionStep::Done.next(), DecommissionStep::Done);
    }

    #[test]
    fn the_receipt_says_what_was_revoked_and_where_the_trail_is() {
        let mut workflow = Decommission::start(
            "w".into(),
            "n".into(),
            DecommissionTrigger::Webhook,
            "webhook:deployer".into(),
            "agent shut down".into(),
            at(0),
            None,
        );
        workflow.teardown = Teardown {
            revoked_credentials: vec!["c1".into(), "c2".into()],
            revoked_at: Some(at(1)),
            last_refused_after_ms: Some(0.25),
            archive: Some(ArchivedTrail {
                files: vec![ArchivedFile {
                    file: archive_file_name("n", 1),
                    sha256: "ab".into(),
                    events: 7,
                }],
                events: 7,
                tree_size: 90,
            }),
            notifications: 2,
            watch: None,
        };
        let claims = workflow.receipt_claims("https://custos.example", at(5));
        assert_eq!(claims["sub"], "n");
        assert_eq!(claims["jti"], "w");
        let body = &claims["decommission"];
        assert_eq!(body["trigger"], "webhook");
        assert_eq!(body["revoked_credentials"], json!(["c1", "c2"]));
        assert_eq!(body["last_refused_after_ms"], 0.25);
        assert_eq!(body["archive"]["files"][0]["file"], "nhi-n.trail.json");
        assert_eq!(archive_file_name("n", 3), "nhi-n.trail.3.json");
        assert_eq!(body["archive"]["events"], 7);
        assert_eq!(body["notifications"], 2);
    }

    #[test]
    fn a_staged_workflow_watches_first_and_may_be_cancelled_only_then() {
        let workflow = Decommission::start(
            "w".into(),
            "n".into(),
            DecommissionTrigger::Request,
            "operator:o".into(),
            "retire".into(),
            at(0),
            Some(at(600)),
        );
        assert_eq!(workflow.step, DecommissionStep::Watch);
        assert!(workflow.watching(at(599)));
        assert!(!workflow.watching(at(600)), "the watch ends at its time");
        let next = workflow.advanced(workflow.teardown.clone(), at(600));
        assert_eq!(next.step, DecommissionStep::Revoke);
        assert!(!next.watching(at(0)), "only the watch step watches");
        let cancelled = workflow.cancelled(at(10));
        assert!(cancelled.is_done());
        assert_eq!(cancelled.finished_at, Some(at(10)));
        assert_eq!(
            DecommissionStep::Cancelled.next(),
            DecommissionStep::Cancelled
        );
    }
}
