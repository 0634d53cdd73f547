//! The posture report: each NHI classified into the OWASP Non-Human Identities Top 10 (2025),
//! each classification with the evidence that made it.
//!
//! The rules, over [`NhiFacts`] (the inventory, the live credentials' summary and the
//! unresolved findings). A decommissioned NHI is judged only by NHI1 (a tombstone holding live
//! credentials); everything else is about NHIs that can still act.
//!
//! - **NHI1 Improper Offboarding**: a decommissioned NHI with live credentials; an NHI past its
//!   `expires_at` with live credentials; an active NHI unused for the idle period with live
//!   credentials; an NHI whose owner is gone ([`OwnerStatus::Gone`]); an `orphaned` finding.
//! - **NHI2 Secret Leakage**: a `leaked_secret` finding.
//! - **NHI3 Vulnerable Third-Party NHI**: kind `oauth_app` or a `third_party` tag, with a broad
//!   ceiling ([`Breadth::is_broad`]).
//! - **NHI4 Insecure Authentication**: an agent, workload, service account or automation that
//!   authenticates with a live static key (a shared secret) and has no client key registered
//!   for `private_key_jwt`; a `credential_stuffing` finding.
//! - **NHI5 Overprivileged NHI**: a broad ceiling: a `*` operation, a service-wide grant, or
//!   [`crate::discovery::risk::BROAD_SERVICES`] services or more.
//! - **NHI6 Insecure Cloud Deployment Configurations**: a production NHI holding a live static
//!   key (a deployment that should use short-lived federated credentials); a workload or
//!   service account tagged `legacy_token` (a long-lived token secret mounted into it).
//! - **NHI7 Long-Lived Secrets**: a live static key that never expires, is issued to live
//!   longer than the rotation age, or is older than it; a live access token living over a day; a `stale_key` or `key_rotated`
//!   finding (the key-age job flagged or rotated a key).
//! - **NHI8 Environment Isolation**: an `environment_crossing` finding.
//! - **NHI9 NHI Reuse**: a `reused_secret` finding.
//! - **NHI10 Human Use of NHI**: an `interactive_use` finding.
//!
//! Identities seen but not in the inventory (`shadow_nhi` findings, which name no NHI) are not
//! classified here: the report lists them in a section of their own, "unmanaged identities".

use serde::Serialize;

use crate::discovery::risk::{Breadth, NhiFacts, OwnerStatus, RiskSettings, overdue_key_days};
use crate::{NhiKind, NhiStatus, Timestamp};

/// An access token living longer than this (a day) is long-lived.
pub const LONG_TOKEN_SECONDS: i64 = 86_400;

/// The OWASP Non-Human Identities Top 10, 2025.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Category {
    #[serde(rename = "NHI1")]
    ImproperOffboarding,
    #[serde(rename = "NHI2")]
    SecretLeakage,
    #[serde(rename = "NHI3")]
    VulnerableThirdParty,
    #[serde(rename = "NHI4")]
    InsecureAuthentication,
    #[serde(rename = "NHI5")]
    Overprivileged,
    #[serde(rename = "NHI6")]
    InsecureCloudDeployment,
    #[serde(rename = "NHI7")]
    LongLivedSecrets,
    #[serde(rename = "NHI8")]
    EnvironmentIsolation,
    #[serde(rename = "NHI9")]
    Reuse,
    #[serde(rename = "NHI10")]
    HumanUse,
}

impl Category {
    pub const ALL: [Category; 10] = [
        Category::ImproperOffboarding,
        Category::SecretLeakage,
        Category::VulnerableThirdParty,
        Category::InsecureAuthentication,
        Category::Overprivileged,
        Category::InsecureCloudDeployment,
        Category::LongLivedSecrets,
        Category::EnvironmentIsolation,
        Category::Reuse,
        Category::HumanUse,
    ];

    /// `NHI1` … `NHI10`.
    pub const fn id(self) -> &'static str {
        match self {
            Category::ImproperOffboarding => "NHI1",
            Category::SecretLeakage => "NHI2",
            Category::VulnerableThirdParty => "NHI3",
            Category::InsecureAuthentication => "NHI4",
            Category::Overprivileged => "NHI5",
            Category::InsecureCloudDeployment => "NHI6",
            Category::LongLivedSecrets => "NHI7",
            Category::EnvironmentIsolation => "NHI8",
            Category::Reuse => "NHI9",
            Category::HumanUse => "NHI10",
        }
    }

    /// The title OWASP gives it.
    pub const fn title(self) -> &'static str {
        match self {
            Category::ImproperOffboarding => "Improper Offboarding",
            Category::SecretLeakage => "Secret Leakage",
            Category::VulnerableThirdParty => "Vulnerable Third-Party NHI",
            Category::InsecureAuthentication => "Insecure Authentication",
            Category::Overprivileged => "Overprivileged NHI",
            Category::InsecureCloudDeployment => "Insecure Cloud Deployment Configurations",
            Category::LongLivedSecrets => "Long-Lived Secrets",
            Category::EnvironmentIsolation => "Environment Isolation",
            Category::Reuse => "NHI Reuse",
            Category::HumanUse => "Human Use of NHI",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One NHI in one category, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hit {
    pub category: Category,
    /// Each rule that matched, one line each.
    pub evidence: Vec<String>,
}

/// The categories an NHI falls into, in category order, each with its evidence.
pub fn classify(
    facts: &NhiFacts,
    owner: &OwnerStatus,
    settings: &RiskSettings,
    now: Timestamp,
) -> Vec<Hit> {
    let mut evidence: [Vec<String>; 10] = Default::default();
    let mut note = |category: Category, line: String| evidence[category.index()].push(line);
    let nhi = &facts.nhi;
    let creds = &facts.credentials;
    let finding = |kind: &str| {
        let n = facts.findings_of(kind);
        (n > 0).then(|| format!("{n} unresolved {kind} finding(s)"))
    };

    use Category::*;
    if nhi.status == NhiStatus::Decommissioned {
        if creds.live > 0 {
            note(
                ImproperOffboarding,
                format!("decommissioned with {} live credential(s)", creds.live),
            );
        }
        return collect(evidence);
    }
    if facts.past_expiry(now) && creds.live > 0 {
        note(
            ImproperOffboarding,
            format!(
                "expired at {} but {} with {} live credential(s)",
                nhi.expires_at.map(|e| e.to_string()).unwrap_or_default(),
                nhi.status,
                creds.live
            ),
        );
    }
    let unused = facts.unused_days(now);
    if nhi.status == NhiStatus::Active
        && creds.live > 0
        && settings.idle_days > 0
        && unused >= i64::from(settings.idle_days)
    {
        note(
            ImproperOffboarding,
            format!(
                "unused for {unused} days (idle after {}) with {} live credential(s)",
                settings.idle_days, creds.live
            ),
        );
    }
    if let OwnerStatus::Gone(why) = owner {
        note(ImproperOffboarding, format!("owner gone: {why}"));
    }
    if let Some(line) = finding("orphaned") {
        note(ImproperOffboarding, line);
    }
    if let Some(line) = finding("leaked_secret") {
        note(SecretLeakage, line);
    }

    let breadth = Breadth::of(&nhi.scope_ceiling);
    let broad = describe_breadth(&breadth);
    let third_party = nhi.kind == NhiKind::OauthApp || nhi.tags.contains_key("third_party");
    if third_party && let Some(broad) = &broad {
        let why = if nhi.kind == NhiKind::OauthApp {
            "an oauth_app"
        } else {
            "tagged third_party"
        };
        note(VulnerableThirdParty, format!("{why} with {broad}"));
    }
    let signs_could = matches!(
        nhi.kind,
        NhiKind::AiAgent | NhiKind::Workload | NhiKind::ServiceAccount | NhiKind::Automation
    );
    if signs_could && creds.static_keys > 0 && creds.client_keys == 0 {
        note(
            InsecureAuthentication,
            format!(
                "a {} authenticating with {} static key(s) and no client key for private_key_jwt",
                nhi.kind, creds.static_keys
            ),
        );
    }
    if let Some(line) = finding("credential_stuffing") {
        note(InsecureAuthentication, line);
    }
    if let Some(broad) = broad {
        note(Overprivileged, broad);
    }
    if facts.is_production() && creds.static_keys > 0 {
        note(
            InsecureCloudDeployment,
            format!(
                "runs in {} with {} live static key(s)",
                nhi.environment, creds.static_keys
            ),
        );
    }
    if matches!(nhi.kind, NhiKind::Workload | NhiKind::ServiceAccount)
        && nhi.tags.contains_key("legacy_token")
    {
        note(
            InsecureCloudDeployment,
            format!("a {} with a legacy long-lived token secret", nhi.kind),
        );
    }
    if creds.static_keys_without_expiry > 0 {
        note(
            LongLivedSecrets,
            format!(
                "{} live static key(s) never expire",
                creds.static_keys_without_expiry
            ),
        );
    }
    if let Some(seconds) = creds.longest_static_key_seconds.filter(|s| {
        settings.rotate_keys_after_days > 0
            && *s > i64::from(settings.rotate_keys_after_days) * 86_400
    }) {
        note(
            LongLivedSecrets,
            format!(
                "a live static key lives {} days (rotation age {} days)",
                seconds / 86_400,
                settings.rotate_keys_after_days
            ),
        );
    }
    if let Some(days) = overdue_key_days(facts, settings, now) {
        note(
            LongLivedSecrets,
            format!(
                "a static key is {days} days old (rotation age {} days)",
                settings.rotate_keys_after_days
            ),
        );
    }
    if let Some(seconds) = creds
        .longest_token_seconds
        .filter(|s| *s > LONG_TOKEN_SECONDS)
    {
        note(
            LongLivedSecrets,
            format!("a live access token lives {} hours", seconds / 3600),
        );
    }
    for kind in ["stale_key", "key_rotated"] {
        if let Some(line) = finding(kind) {
            note(LongLivedSecrets, line);
        }
    }
    for (category, kind) in [
        (EnvironmentIsolation, "environment_crossing"),
        (Reuse, "reused_secret"),
        (HumanUse, "interactive_use"),
    ] {
        if let Some(line) = finding(kind) {
            note(category, line);
        }
    }
    collect(evidence)
}

fn describe_breadth(breadth: &Breadth) -> Option<String> {
    let mut parts = Vec::new();
    if !breadth.wildcard_operations.is_empty() {
        parts.push(format!(
            "every operation: {}",
            breadth.wildcard_operations.join(", ")
        ));
    }
    if !breadth.service_wide.is_empty() {
        parts.push(format!(
            "service-wide grants: {}",
            breadth.service_wide.join(", ")
        ));
    }
    if breadth.services >= crate::discovery::risk::BROAD_SERVICES {
        parts.push(format!("{} services", breadth.services));
    }
    (!parts.is_empty()).then(|| format!("a broad ceiling ({})", parts.join("; ")))
}

fn collect(evidence: [Vec<String>; 10]) -> Vec<Hit> {
    Category::ALL
        .into_iter()
        .zip(evidence)
        .filter(|(_, lines)| !lines.is_empty())
        .map(|(category, evidence)| Hit { category, evidence })
        .collect()
}

/// One affected NHI in a category's list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Affected {
    pub nhi_id: String,
    pub name: String,
    pub evidence: Vec<String>,
}

/// One category's count and the first affected NHIs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CategoryTally {
    pub id: &'static str,
    pub title: &'static str,
    /// Every affected NHI, however many are listed.
    pub count: u64,
    /// The first affected NHIs in id order, at most the report's cap.
    pub nhis: Vec<Affected>,
    /// Whether `nhis` stops short of `count`.
    pub truncated: bool,
}

/// The counts per category, built by [`Tallies::add`] one NHI at a time so that a report over
/// a million NHIs holds only the capped lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tallies {
    /// NHIs classified (every NHI read, decommissioned ones too).
    pub nhis: u64,
    /// NHIs in at least one category.
    pub affected: u64,
    pub categories: Vec<CategoryTally>,
    #[serde(skip)]
    cap: usize,
}

impl Tallies {
    /// Empty tallies that list at most `cap` NHIs per category.
    pub fn new(cap: usize) -> Self {
        Self {
            nhis: 0,
            affected: 0,
            categories: Category::ALL
                .into_iter()
                .map(|c| CategoryTally {
                    id: c.id(),
                    title: c.title(),
                    count: 0,
                    nhis: Vec::new(),
                    truncated: false,
                })
                .collect(),
            cap,
        }
    }

    /// Counts one NHI's hits.
    pub fn add(&mut self, nhi_id: &str, name: &str, hits: &[Hit]) {
        self.nhis += 1;
        self.affected += u64::from(!hits.is_empty());
        for hit in hits {
            let tally = &mut self.categories[hit.category.index()];
            tally.count += 1;
            if tally.nhis.len() < self.cap {
                tally.nhis.push(Affected {
                    nhi_id: nhi_id.to_owned(),
                    name: name.to_owned(),
                    evidence: hit.evidence.clone(),
                });
            } else {
                tally.truncated = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::risk::tests::{at, facts_of as facts};
    use crate::discovery::risk::{CredentialSummary, FindingTally};
    use crate::finding::Severity;

    fn settings() -> RiskSettings {
        RiskSettings {
            rotate_keys_after_days: 60,
            idle_days: 90,
            sensitive_services: Vec::new(),
        }
    }

    fn ids(hits: &[Hit]) -> Vec<&'static str> {
        hits.iter().map(|h| h.category.id()).collect()
    }

    #[test]
    fn a_well_kept_nhi_is_in_no_category() {
        let f = facts(NhiKind::AiAgent, &["crm:read:customers/*"]);
        assert!(classify(&f, &OwnerStatus::Valid, &settings(), at(100)).is_empty());
    }

    #[test]
    fn inventory_rules_and_finding_rules_each_name_their_evidence() {
        let mut f = facts(NhiKind::OauthApp, &["crm:*"]);
        f.nhi.environment = "production".into();
        f.credentials = CredentialSummary {
            live: 2,
            static_keys: 1,
            static_keys_without_expiry: 1,
            oldest_static_key: Some(at(1)),
            access_tokens: 1,
            longest_token_seconds: Some(2 * 86_400),
            ..Default::default()
        };
        for kind in [
            "leaked_secret",
            "environment_crossing",
            "reused_secret",
            "interactive_use",
            "orphaned",
        ] {
            f.findings.push(FindingTally {
                kind: kind.into(),
                severity: Severity::High,
                count: 1,
            });
        }
        let hits = classify(&f, &OwnerStatus::Valid, &settings(), at(100));
        assert_eq!(
            ids(&hits),
            [
                "NHI1", "NHI2", "NHI3", "NHI5", "NHI6", "NHI7", "NHI8", "NHI9", "NHI10"
            ]
        );
        assert_eq!(
            hits[2].evidence,
            [
                "an oauth_app with a broad ceiling (every operation: crm:*; service-wide grants: crm:*)"
            ]
        );
        assert_eq!(
            hits[5].evidence,
            [
                "1 live static key(s) never expire",
                "a static key is 99 days old (rotation age 60 days)",
                "a live access token lives 48 hours"
            ]
        );
    }

    #[test]
    fn a_tombstone_counts_only_for_its_live_credentials() {
        let mut f = facts(NhiKind::Workload, &["crm:*"]);
        f.nhi.status = NhiStatus::Decommissioned;
        assert!(classify(&f, &OwnerStatus::Valid, &settings(), at(100)).is_empty());
        f.credentials.live = 1;
        let hits = classify(&f, &OwnerStatus::Valid, &settings(), at(100));
        assert_eq!(ids(&hits), ["NHI1"]);
    }

    #[test]
    fn tallies_cap_the_lists_but_not_the_counts() {
        let mut tallies = Tallies::new(1);
        let hit = Hit {
            category: Category::Overprivileged,
            evidence: vec!["x".into()],
        };
        tallies.add("a", "a", std::slice::from_ref(&hit));
        tallies.add("b", "b", &[hit]);
        tallies.add("c", "c", &[]);
        let nhi5 = &tallies.categories[4];
        assert_eq!(
            (nhi5.id, nhi5.count, nhi5.nhis.len(), nhi5.truncated),
            ("NHI5", 2, 1, true)
        );
        assert_eq!((tallies.nhis, tallies.affected), (3, 2));
    }
}
