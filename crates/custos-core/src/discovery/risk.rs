//! Every NHI's risk: a score from 0 to 100 made of named factors, each with its points and the
//! reason it applies, so that a reader sees why an NHI is on top of the list.
//!
//! The facts come from the inventory ([`NhiFacts`]: the NHI, a summary of its live
//! credentials, its unresolved findings) and from who is left to own it ([`OwnerStatus`]).
//! The factors and their points:
//!
//! | factor | points |
//! | --- | --- |
//! | `scope_breadth` | 15 for a `*` operation, 10 for a service-wide grant (no resource part), 5 for [`BROAD_SERVICES`] services or more |
//! | `static_secrets` | 10 for live static keys |
//! | `credential_age` | 10 for a live static key older than the rotation age |
//! | `credential_lifetime` | 10 for a live static key that never expires, else 5 for a live credential living over [`LONG_LIFETIME_SECONDS`] |
//! | `sensitivity` | 10 for a `sensitivity`/`data_classification` tag in [`SENSITIVE_TAG_VALUES`], or a grant on a configured sensitive service |
//! | `production` | 10 in `production` or `prod` |
//! | `owner` | 15 when its owner team has no active member left or its contact is a revoked operator |
//! | `unused` | 10 when unused for the idle period and still holding live credentials |
//! | `past_expiry` | 10 when past its `expires_at` and not decommissioned |
//! | `findings` | 10 per unresolved high, 5 per medium, 2 per low finding, at most 20 |
//! | `delegation_fan_out` | 2 per live credential another NHI holds delegated from its credentials, at most 10 |
//!
//! The sum is capped at 100; 70 or more is high, 40 or more medium (the levels of
//! [`RiskLevel`], as for requests).

use serde::Serialize;

use crate::finding::Severity;
use crate::issuance::RiskLevel;
use crate::{Nhi, NhiStatus, Scope, Timestamp};

/// From this many services a ceiling counts as broad.
pub const BROAD_SERVICES: usize = 5;
/// A credential living longer than this (30 days) is long-lived.
pub const LONG_LIFETIME_SECONDS: i64 = 30 * 86_400;
/// Values of the `sensitivity` or `data_classification` tag that mark an NHI as touching
/// sensitive data (compared lowercase).
pub const SENSITIVE_TAG_VALUES: [&str; 7] = [
    "high",
    "critical",
    "restricted",
    "confidential",
    "secret",
    "pii",
    "sensitive",
];
/// The tags read for sensitivity.
pub const SENSITIVITY_TAGS: [&str; 2] = ["sensitivity", "data_classification"];

/// What an NHI's live credentials (not revoked, not expired) add up to, aggregated by the
/// store per NHI.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CredentialSummary {
    pub live: u32,
    pub static_keys: u32,
    /// Live static keys with no `expires_at`.
    pub static_keys_without_expiry: u32,
    /// When the oldest live static key was made.
    pub oldest_static_key: Option<Timestamp>,
    pub access_tokens: u32,
    /// Registered public keys for `private_key_jwt`.
    pub client_keys: u32,
    /// The longest `expires_at - created_at` of a live static key, in seconds.
    pub longest_static_key_seconds: Option<i64>,
    /// The longest `expires_at - created_at` of a live access token, in seconds.
    pub longest_token_seconds: Option<i64>,
    /// The longest `expires_at - created_at` of any live credential with an expiry, in seconds.
    pub longest_lifetime_seconds: Option<i64>,
    /// Live credentials held by other NHIs and delegated directly from one of this NHI's
    /// credentials (its own tokens, obtained with its key, are not delegations).
    pub delegated: u32,
}

/// How many unresolved findings of one kind and severity an NHI has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FindingTally {
    pub kind: String,
    pub severity: Severity,
    pub count: u32,
}

/// What the store knows about one NHI for its risk and posture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NhiFacts {
    pub nhi: Nhi,
    pub credentials: CredentialSummary,
    pub findings: Vec<FindingTally>,
}

impl NhiFacts {
    /// Unresolved findings of `kind`.
    pub fn findings_of(&self, kind: &str) -> u32 {
        self.findings
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| f.count)
            .sum()
    }

    /// Days since last use (since registration if never used), counted in whole days.
    pub fn unused_days(&self, now: Timestamp) -> i64 {
        let since = self.nhi.last_used_at.unwrap_or(self.nhi.created_at);
        (now.unix_millis() - since.unix_millis()).max(0) / 86_400_000
    }

    pub fn is_production(&self) -> bool {
        matches!(self.nhi.environment.as_str(), "production" | "prod")
    }

    pub fn past_expiry(&self, now: Timestamp) -> bool {
        self.nhi.status != NhiStatus::Decommissioned
            && self.nhi.expires_at.is_some_and(|e| e <= now)
    }
}

/// Whether someone still owns the NHI: the orphan job's rule (a team that had members and has
/// no active one left; a contact naming a revoked operator and no active one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "why", rename_all = "snake_case")]
pub enum OwnerStatus {
    Valid,
    Gone(String),
}

/// The server's settings the factors read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RiskSettings {
    /// A static key older than this many days is due a rotation; 0: never.
    pub rotate_keys_after_days: u32,
    /// Unused this many days, an NHI is idle.
    pub idle_days: u32,
    /// Services whose grants count as sensitive (`hr`, `payments`, ...).
    pub sensitive_services: Vec<String>,
}

/// One reason an NHI is risky, and what it weighs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RiskFactor {
    /// A stable name (`scope_breadth`, `static_secrets`, ...).
    pub name: &'static str,
    pub points: u32,
    pub reason: String,
}

/// An NHI's risk: the capped sum of its factors' points, its level, and the factors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RiskScore {
    pub score: u32,
    pub level: RiskLevel,
    pub factors: Vec<RiskFactor>,
}

/// How broad a scope ceiling is, for risk and for the over-privilege rule (NHI5).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Breadth {
    /// Grants whose operation is `*`.
    pub wildcard_operations: Vec<String>,
    /// Grants with no resource part: every resource of the service.
    pub service_wide: Vec<String>,
    pub services: usize,
}

impl Breadth {
    pub fn of(scope: &Scope) -> Self {
        let mut services: Vec<&str> = scope.grants().iter().map(|g| g.service()).collect();
        services.dedup();
        Self {
            wildcard_operations: scope
                .grants()
                .iter()
                .filter(|g| g.operation() == "*")
                .map(ToString::to_string)
                .collect(),
            service_wide: scope
                .grants()
                .iter()
                .filter(|g| g.resource().is_none())
                .map(ToString::to_string)
                .collect(),
            services: services.len(),
        }
    }

    /// A `*` operation, a service-wide grant, or [`BROAD_SERVICES`] services or more.
    pub fn is_broad(&self) -> bool {
        !self.wildcard_operations.is_empty()
            || !self.service_wide.is_empty()
            || self.services >= BROAD_SERVICES
    }
}

/// Why an NHI touches sensitive data, if it does: its tag, or a grant on a sensitive service.
pub fn sensitivity(nhi: &Nhi, sensitive_services: &[String]) -> Option<String> {
    for tag in SENSITIVITY_TAGS {
        if let Some(value) = nhi.tags.get(tag)
            && SENSITIVE_TAG_VALUES.contains(&value.to_lowercase().as_str())
        {
            return Some(format!("tagged {tag}={value}"));
        }
    }
    nhi.scope_ceiling
        .grants()
        .iter()
        .find(|g| sensitive_services.iter().any(|s| s == g.service()))
        .map(|g| format!("its ceiling grants {g} on a sensitive service"))
}

/// A static key older than the rotation age: its age in days.
pub fn overdue_key_days(facts: &NhiFacts, settings: &RiskSettings, now: Timestamp) -> Option<i64> {
    let oldest = facts.credentials.oldest_static_key?;
    let days = (now.unix_millis() - oldest.unix_millis()) / 86_400_000;
    (settings.rotate_keys_after_days > 0 && days >= i64::from(settings.rotate_keys_after_days))
        .then_some(days)
}

/// Scores one NHI.
pub fn score(
    facts: &NhiFacts,
    owner: &OwnerStatus,
    settings: &RiskSettings,
    now: Timestamp,
) -> RiskScore {
    let mut factors = Vec::new();
    let mut add = |name: &'static str, points: u32, reason: String| {
        factors.push(RiskFactor {
            name,
            points,
            reason,
        });
    };
    let nhi = &facts.nhi;
    let creds = &facts.credentials;

    let breadth = Breadth::of(&nhi.scope_ceiling);
    let mut points = 0;
    let mut reasons = Vec::new();
    if let Some(first) = breadth.wildcard_operations.first() {
        points += 15;
        reasons.push(format!("{first} allows every operation"));
    }
    if let Some(first) = breadth.service_wide.first() {
        points += 10;
        reasons.push(format!("{first} reaches every resource of its service"));
    }
    if breadth.services >= BROAD_SERVICES {
        points += 5;
        reasons.push(format!("the ceiling spans {} services", breadth.services));
    }
    if points > 0 {
        add("scope_breadth", points, reasons.join("; "));
    }
    if creds.static_keys > 0 {
        add(
            "static_secrets",
            10,
            format!("{} live static key(s)", creds.static_keys),
        );
    }
    if let Some(days) = overdue_key_days(facts, settings, now) {
        add(
            "credential_age",
            10,
            format!(
                "a static key is {days} days old (rotation age {} days)",
                settings.rotate_keys_after_days
            ),
        );
    }
    if creds.static_keys_without_expiry > 0 {
        add(
            "credential_lifetime",
            10,
            format!(
                "{} live static key(s) never expire",
                creds.static_keys_without_expiry
            ),
        );
    } else if let Some(seconds) = creds
        .longest_lifetime_seconds
        .filter(|s| *s > LONG_LIFETIME_SECONDS)
    {
        add(
            "credential_lifetime",
            5,
            format!("a live credential lives {} days", seconds / 86_400),
        );
    }
    if let Some(why) = sensitivity(nhi, &settings.sensitive_services) {
        add("sensitivity", 10, why);
    }
    if facts.is_production() {
        add("production", 10, format!("runs in {}", nhi.environment));
    }
    if let OwnerStatus::Gone(why) = owner {
        add("owner", 15, why.clone());
    }
    let unused = facts.unused_days(now);
    if creds.live > 0 && settings.idle_days > 0 && unused >= i64::from(settings.idle_days) {
        add(
            "unused",
            10,
            format!(
                "unused for {unused} days with {} live credential(s)",
                creds.live
            ),
        );
    }
    if facts.past_expiry(now) {
        add(
            "past_expiry",
            10,
            format!("past its expiry but still {}", nhi.status),
        );
    }
    let mut finding_points = 0;
    let mut kinds = Vec::new();
    for tally in &facts.findings {
        let each = match tally.severity {
            Severity::High => 10,
            Severity::Medium => 5,
            Severity::Low => 2,
        };
        finding_points += each * tally.count;
        kinds.push(format!("{} {} {}", tally.count, tally.severity, tally.kind));
    }
    if finding_points > 0 {
        add(
            "findings",
            finding_points.min(20),
            format!("unresolved findings: {}", kinds.join(", ")),
        );
    }
    if creds.delegated > 0 {
        add(
            "delegation_fan_out",
            (2 * creds.delegated).min(10),
            format!(
                "{} live credential(s) delegated from its credentials",
                creds.delegated
            ),
        );
    }
    let score = factors.iter().map(|f| f.points).sum::<u32>().min(100);
    let level = match score {
        70.. => RiskLevel::High,
        40.. => RiskLevel::Medium,
        _ => RiskLevel::Low,
    };
    RiskScore {
        score,
        level,
        factors,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{NhiKind, Owner};

    pub(crate) fn at(days: i64) -> Timestamp {
        Timestamp::from_unix_millis(days * 86_400_000).unwrap()
    }

    fn facts(ceiling: &[&str]) -> NhiFacts {
        facts_of(NhiKind::AiAgent, ceiling)
    }

    /// An active staging NHI of `kind` on team `t1`, registered at day 0 and last used on day
    /// 99, with nothing else: the base the risk and posture tests change one thing of.
    pub(crate) fn facts_of(kind: NhiKind, ceiling: &[&str]) -> NhiFacts {
        NhiFacts {
            nhi: Nhi {
                id: "n1".into(),
                name: "bot".into(),
                kind,
                platform: "openai".into(),
                environment: "staging".into(),
                status: NhiStatus::Active,
                owner: Owner {
                    team_id: "t1".into(),
                    application: None,
                    contact: None,
                },
                purpose: "p".into(),
                scope_ceiling: Scope::parse(ceiling).unwrap(),
                tags: BTreeMap::new(),
                external_ids: BTreeMap::new(),
                created_at: at(0),
                updated_at: at(0),
                expires_at: None,
                last_used_at: Some(at(99)),
                version: 1,
            },
            credentials: CredentialSummary::default(),
            findings: Vec::new(),
        }
    }

    fn settings() -> RiskSettings {
        RiskSettings {
            rotate_keys_after_days: 60,
            idle_days: 90,
            sensitive_services: vec!["hr".into()],
        }
    }

    #[test]
    fn a_narrow_recent_nhi_scores_nothing() {
        let risk = score(
            &facts(&["crm:read:customers/*"]),
            &OwnerStatus::Valid,
            &settings(),
            at(100),
        );
        assert_eq!(
            (risk.score, risk.level, risk.factors.len()),
            (0, RiskLevel::Low, 0)
        );
    }

    #[test]
    fn every_factor_is_named_with_its_points_and_the_sum_is_capped() {
        let mut f = facts(&["hr:*", "a:read", "b:read", "c:read", "d:read"]);
        f.nhi.environment = "production".into();
        f.nhi.last_used_at = None;
        f.nhi.expires_at = Some(at(50));
        f.credentials = CredentialSummary {
            live: 3,
            static_keys: 2,
            static_keys_without_expiry: 1,
            oldest_static_key: Some(at(10)),
            delegated: 7,
            ..Default::default()
        };
        f.findings = vec![FindingTally {
            kind: "leaked_secret".into(),
            severity: Severity::High,
            count: 3,
        }];
        let risk = score(
            &f,
            &OwnerStatus::Gone("team gone".into()),
            &settings(),
            at(100),
        );
        let named: Vec<_> = risk.factors.iter().map(|f| (f.name, f.points)).collect();
        assert_eq!(
            named,
            [
                ("scope_breadth", 30),
                ("static_secrets", 10),
                ("credential_age", 10),
                ("credential_lifetime", 10),
                ("sensitivity", 10),
                ("production", 10),
                ("owner", 15),
                ("unused", 10),
                ("past_expiry", 10),
                ("findings", 20),
                ("delegation_fan_out", 10),
            ]
        );
        assert_eq!((risk.score, risk.level), (100, RiskLevel::High));
        assert_eq!(
            risk.factors[2].reason,
            "a static key is 90 days old (rotation age 60 days)"
        );
    }

    #[test]
    fn sensitivity_reads_the_tag_first() {
        let mut f = facts(&["hr:read:people/*"]);
        assert_eq!(
            sensitivity(&f.nhi, &["hr".into()]).as_deref(),
            Some("its ceiling grants hr:read:people/* on a sensitive service")
        );
        f.nhi
            .tags
            .insert("data_classification".into(), "PII".into());
        assert_eq!(
            sensitivity(&f.nhi, &[]).as_deref(),
            Some("tagged data_classification=PII")
        );
    }
}
