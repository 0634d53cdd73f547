//! Findings of behaviour baselining, and the policies that say how to respond to them.
//!
//! A finding is something the server noticed about an NHI (or about traffic it could not tie
//! to one): an anomaly against the NHI's learned baseline, credential stuffing, use across
//! environments and the like. Findings are deduplicated by a key so that a behaviour that keeps
//! happening is one finding seen many times, not a flood: while a finding with a key is
//! unresolved, a repeat folds into it ([`Finding::fold`]). A human then resolves it, and the
//! next repeat opens a new finding.
//!
//! What is done about a finding is decided by response policies: the most specific policy
//! that applies to the NHI (its own, its owner team's, its kind's, or the default) names an
//! action and the least severity it acts on.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::baseline::{Assessment, Observation};
use crate::model::string_enum;

string_enum!(
    /// Where a finding is. `open` and `acknowledged` are unresolved: a repeat of the same
    /// behaviour folds into them. `dismissed` and `accepted` are resolved, and a repeat after
    /// them opens a new finding.
    FindingState {
        /// Noticed, and nobody has looked at it yet.
        Open => "open",
        /// An operator has seen it and is looking into it; it is still unresolved.
        Acknowledged => "acknowledged",
        /// Judged not to be a problem (a false positive, say).
        Dismissed => "dismissed",
        /// Judged to be expected behaviour from now on (the baseline should take it in).
        Accepted => "accepted",
    }
);

impl FindingState {
    /// Whether a human has settled the finding. A resolved finding never changes again, and
    /// its dedupe key is free for a new finding.
    pub const fn is_resolved(self) -> bool {
        matches!(self, FindingState::Dismissed | FindingState::Accepted)
    }
}

string_enum!(
    /// How bad a finding could be. Ordered: `low < medium < high`, so that a policy's least
    /// severity and the fold of two findings (the worse one wins) are comparisons.
    Severity {
        Low => "low",
        Medium => "medium",
        High => "high",
    }
);

string_enum!(
    /// What is done about a finding, from doing nothing beyond keeping it to suspending the NHI.
    /// Ordered by how far the response reaches.
    ResponseAction {
        /// Keep the finding for review; nobody is told.
        Record => "record",
        /// Keep it and notify the owner team's channels.
        Alert => "alert",
        /// Hold the NHI's next sensitive action for a human's approval.
        StepUp => "step_up",
        /// Suspend the NHI until an operator resumes it.
        Suspend => "suspend",
    }
);

/// How many of the first and of the latest sample events a folded finding keeps in its
/// evidence: a long-running behaviour keeps how it started and how it looks now, in bounded
/// space.
pub const EVIDENCE_EVENTS_KEPT: usize = 10;

/// The key under which an NHI's behaviour departures fold into one finding (`assessment` is
/// of `event`), the server's and the evaluation harness's alike.
///
/// An anomaly whose main departure is a new value (a service, operation, resource prefix,
/// source network or client) is keyed by that value: the same new network used again, on any
/// day, folds into the finding still open about it instead of alerting afresh, and once the
/// finding is resolved a repeat opens a new one. Any other departure (an hour, a rate,
/// refusals, the person, a named detection) is keyed by NHI, kind and UTC day: a day's make one
/// finding (its evidence keeps how they started and how they look now), and a new day's open a
/// new one, so that a finding left open does not silence the alerts of a later attack.
pub fn departure_key(assessment: &Assessment, nhi_id: &str, event: &Observation<'_>) -> String {
    let kind = assessment.finding_kind();
    match assessment.departing_value(event) {
        Some((feature, value)) if kind == "anomaly" => {
            format!("{kind}:{nhi_id}:{}:{value:016x}", feature.code())
        }
        _ => {
            let day = event.at.unix_millis().div_euclid(86_400_000);
            format!("{kind}:{nhi_id}:{day}")
        }
    }
}

/// Something the server noticed, with its evidence and what was done about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    /// What was noticed: `anomaly`, `credential_stuffing`, `environment_crossing`,
    /// `interactive_use`, `delegation_fan_out`, and later `shadow_nhi`, `reused_secret`,
    /// `stale`, `orphaned`. A string, not an enum, so that a new detector needs no migration.
    pub kind: String,
    /// The NHI it is about; `None` when it is about something not (yet) in the inventory, such
    /// as a shadow NHI.
    pub nhi_id: Option<String>,
    /// At most one unresolved finding exists per key; a repeat folds into it instead of
    /// opening another.
    pub dedupe_key: String,
    pub state: FindingState,
    pub severity: Severity,
    /// How far from the baseline the behaviour was (detector-specific; higher is worse).
    pub score: f64,
    /// One line for a human.
    pub summary: String,
    /// A JSON object. It may hold `"events": [..]`, samples of what was seen; folding keeps
    /// the first and the latest [`EVIDENCE_EVENTS_KEPT`] of them.
    pub evidence: serde_json::Value,
    /// What was done about it when it was opened.
    pub action: ResponseAction,
    /// The approval request a `step_up` response opened, once it exists.
    pub approval_id: Option<String>,
    /// How many times it was seen: 1 when opened, one more for each repeat folded in.
    pub occurrences: i64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub created_at: Timestamp,
    /// When an operator acknowledged it, and who (`operator:<id>`). The reason they gave is in
    /// the `finding.acknowledged` event.
    pub acknowledged_at: Option<Timestamp>,
    pub acknowledged_by: Option<String>,
    /// When it was dismissed or accepted, by whom (`operator:<id>`), and the reason given.
    pub resolved_at: Option<Timestamp>,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
}

/// What a new finding says, before anyone has looked at it.
#[derive(Clone, Debug)]
pub struct Noticed {
    pub kind: String,
    pub nhi_id: Option<String>,
    pub dedupe_key: String,
    pub severity: Severity,
    pub score: f64,
    pub summary: String,
    pub evidence: serde_json::Value,
    pub action: ResponseAction,
}

impl Finding {
    /// A finding just opened: seen once, now, and not yet looked at.
    pub fn opened(id: String, noticed: Noticed, now: Timestamp) -> Self {
        Self {
            id,
            kind: noticed.kind,
            nhi_id: noticed.nhi_id,
            dedupe_key: noticed.dedupe_key,
            state: FindingState::Open,
            severity: noticed.severity,
            score: noticed.score,
            summary: noticed.summary,
            evidence: noticed.evidence,
            action: noticed.action,
            approval_id: None,
            occurrences: 1,
            first_seen: now,
            last_seen: now,
            created_at: now,
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            resolved_by: None,
            resolution: None,
        }
    }

    /// Folds a repeat of this (unresolved) finding into it: one more occurrence, the later
    /// last sighting, the earlier first one, the higher score and the worse severity, and the
    /// repeat's sample events appended to the evidence, keeping the first and the latest
    /// [`EVIDENCE_EVENTS_KEPT`]. Everything else (summary, action, the rest of the evidence)
    /// stays as first recorded: it is what the response was based on.
    pub fn fold(&mut self, repeat: &Finding) {
        self.occurrences = self.occurrences.saturating_add(1);
        self.first_seen = self.first_seen.min(repeat.first_seen);
        self.last_seen = self.last_seen.max(repeat.last_seen);
        if repeat.score > self.score {
            self.score = repeat.score;
        }
        self.severity = self.severity.max(repeat.severity);
        let new_events = match repeat.evidence.get("events") {
            Some(serde_json::Value::Array(events)) if !events.is_empty() => events.clone(),
            _ => return,
        };
        let Some(evidence) = self.evidence.as_object_mut() else {
            return;
        };
        let mut events = match evidence.remove("events") {
            Some(serde_json::Value::Array(events)) => events,
            _ => Vec::new(),
        };
        events.extend(new_events);
        if events.len() > 2 * EVIDENCE_EVENTS_KEPT {
            events.drain(EVIDENCE_EVENTS_KEPT..events.len() - EVIDENCE_EVENTS_KEPT);
        }
        evidence.insert("events".to_owned(), serde_json::Value::Array(events));
    }
}

/// What a response policy applies to. Stored as a type (`default`, `nhi`, `team`, `kind`) and
/// an id (none for `default`); on the wire as `{"type": "nhi", "id": "…"}`, or
/// `{"type": "default"}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum ResponseTarget {
    /// Every NHI no more specific policy covers.
    Default,
    /// One NHI, by id.
    Nhi(String),
    /// The NHIs a team owns, by team id.
    Team(String),
    /// The NHIs of one kind (`ai_agent`, `service_account`, …).
    Kind(String),
}

impl ResponseTarget {
    /// The stored type: `default`, `nhi`, `team` or `kind`.
    pub const fn target_type(&self) -> &'static str {
        match self {
            ResponseTarget::Default => "default",
            ResponseTarget::Nhi(_) => "nhi",
            ResponseTarget::Team(_) => "team",
            ResponseTarget::Kind(_) => "kind",
        }
    }

    /// The stored id: the NHI's, the team's or the kind's name; `None` for the default.
    pub fn target_id(&self) -> Option<&str> {
        match self {
            ResponseTarget::Default => None,
            ResponseTarget::Nhi(id) | ResponseTarget::Team(id) | ResponseTarget::Kind(id) => {
                Some(id)
            }
        }
    }

    /// Reads back what [`target_type`](Self::target_type) and [`target_id`](Self::target_id)
    /// wrote; `None` for a type that does not exist or an id where there should (not) be one.
    pub fn from_parts(target_type: &str, target_id: Option<String>) -> Option<Self> {
        match (target_type, target_id) {
            ("default", None) => Some(ResponseTarget::Default),
            ("nhi", Some(id)) => Some(ResponseTarget::Nhi(id)),
            ("team", Some(id)) => Some(ResponseTarget::Team(id)),
            ("kind", Some(id)) => Some(ResponseTarget::Kind(id)),
            _ => None,
        }
    }
}

/// An admin's rule for what to do about findings: for what it targets, findings at
/// `min_severity` or worse get `action`. Revoked, never deleted, so the trail of what was in
/// force stays readable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponsePolicy {
    pub id: String,
    pub target: ResponseTarget,
    pub action: ResponseAction,
    pub min_severity: Severity,
    /// The actor who set it (`operator:<id>`).
    pub created_by: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// Which findings to list. Every filter that is set must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FindingFilter {
    pub kind: Option<String>,
    pub nhi_id: Option<String>,
    pub state: Option<FindingState>,
    /// Only `open` and `acknowledged` findings: the work still to do.
    pub unresolved_only: bool,
    /// Only findings about NHIs owned by these teams: a reviewer's view, as for NHIs and
    /// approval requests. Findings about no NHI are outside every team's view. An empty list
    /// matches nothing.
    pub team_ids: Option<Vec<String>>,
    /// Only findings whose response opened this approval request.
    pub approval_id: Option<String>,
    /// Only findings under this dedupe key (the unresolved one and the resolved ones).
    pub dedupe_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_unix_millis(millis).unwrap()
    }

    fn finding(events: std::ops::Range<i64>, seen: i64, severity: Severity, score: f64) -> Finding {
        Finding {
            id: "f".into(),
            kind: "anomaly".into(),
            nhi_id: Some("n".into()),
            dedupe_key: "anomaly:n".into(),
            state: FindingState::Open,
            severity,
            score,
            summary: "unusual".into(),
            evidence: json!({ "reason": "new service", "events": events.collect::<Vec<_>>() }),
            action: ResponseAction::Record,
            approval_id: None,
            occurrences: 1,
            first_seen: at(seen),
            last_seen: at(seen),
            created_at: at(seen),
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            resolved_by: None,
            resolution: None,
        }
    }

    #[test]
    fn only_dismissed_and_accepted_are_resolved() {
        let resolved: Vec<_> = FindingState::ALL
            .iter()
            .filter(|s| s.is_resolved())
            .collect();
        assert_eq!(
            resolved,
            [&FindingState::Dismissed, &FindingState::Accepted]
        );
    }

    #[test]
    fn severities_order_from_low_to_high() {
        assert!(Severity::Low < Severity::Medium && Severity::Medium < Severity::High);
        assert_eq!(Severity::parse("medium"), Some(Severity::Medium));
        assert_eq!(ResponseAction::StepUp.as_str(), "step_up");
    }

    #[test]
    fn a_fold_keeps_the_worst_and_the_latest() {
        let mut stored = finding(0..3, 100, Severity::Medium, 2.0);
        let repeat = finding(3..5, 200, Severity::Low, 5.0);
        stored.fold(&repeat);
        assert_eq!(stored.occurrences, 2);
        assert_eq!(stored.first_seen, at(100));
        assert_eq!(stored.last_seen, at(200));
        assert_eq!(stored.severity, Severity::Medium);
        assert_eq!(stored.score, 5.0);
        assert_eq!(stored.evidence["events"], json!([0, 1, 2, 3, 4]));
        assert_eq!(stored.evidence["reason"], "new service");
        let earlier = finding(5..6, 50, Severity::High, 1.0);
        stored.fold(&earlier);
        assert_eq!((stored.first_seen, stored.last_seen), (at(50), at(200)));
        assert_eq!((stored.severity, stored.score), (Severity::High, 5.0));
    }

    #[test]
    fn a_fold_keeps_the_first_and_the_latest_sample_events() {
        let mut stored = finding(0..15, 1, Severity::Low, 1.0);
        stored.fold(&finding(15..30, 2, Severity::Low, 1.0));
        let kept: Vec<i64> = (0..10).chain(20..30).collect();
        assert_eq!(stored.evidence["events"], json!(kept));
        stored.fold(&finding(30..31, 3, Severity::Low, 1.0));
        let kept: Vec<i64> = (0..10).chain(21..31).collect();
        assert_eq!(stored.evidence["events"], json!(kept));
    }

    #[test]
    fn a_fold_starts_the_sample_list_when_there_was_none() {
        let mut stored = finding(0..0, 1, Severity::Low, 1.0);
        stored.evidence = json!({});
        stored.fold(&finding(0..2, 2, Severity::Low, 1.0));
        assert_eq!(stored.evidence, json!({ "events": [0, 1] }));
        stored.fold(&Finding {
            evidence: json!({}),
            ..finding(0..0, 3, Severity::Low, 1.0)
        });
        assert_eq!(stored.evidence, json!({ "events": [0, 1] }));
        assert_eq!(stored.occurrences, 3);
    }

    #[test]
    fn targets_round_trip_through_their_stored_and_wire_forms() {
        for target in [
            ResponseTarget::Default,
            ResponseTarget::Nhi("n1".into()),
            ResponseTarget::Team("t1".into()),
            ResponseTarget::Kind("ai_agent".into()),
        ] {
            let back = ResponseTarget::from_parts(
                target.target_type(),
                target.target_id().map(str::to_owned),
            );
            assert_eq!(back.as_ref(), Some(&target));
            let wire = serde_json::to_value(&target).unwrap();
            assert_eq!(
                serde_json::from_value::<ResponseTarget>(wire).unwrap(),
                target
            );
        }
        assert_eq!(
            serde_json::to_value(ResponseTarget::Default).unwrap(),
            json!({ "type": "default" })
        );
        assert_eq!(
            serde_json::to_value(ResponseTarget::Team("t1".into())).unwrap(),
            json!({ "type": "team", "id": "t1" })
        );
        assert_eq!(
            ResponseTarget::from_parts("default", Some("x".into())),
            None
        );
        assert_eq!(ResponseTarget::from_parts("nhi", None), None);
        assert_eq!(ResponseTarget::from_parts("owner", Some("x".into())), None);
    }
}
