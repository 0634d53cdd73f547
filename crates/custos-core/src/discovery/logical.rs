//! Logical agents: one agent's identities on several platforms, linked into one.
//!
//! An agent that reads tickets in Okta, writes to S3 and opens pull requests on GitHub has
//! three NHIs, one per platform. Linking them lets a reviewer see the agent whole. Links are
//! made by a person; what is computed here are the suggestions they confirm, each with the
//! reasons behind it: a workload's annotation naming the other identity (the strongest sign),
//! one owner team with names that differ only by platform words, or one owner team with the
//! same stated purpose.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// A confirmed logical agent and its member NHIs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogicalAgent {
    pub id: String,
    pub name: String,
    /// The team that owns the agent as a whole.
    pub team_id: String,
    pub description: String,
    pub created_at: Timestamp,
    /// `operator:<id>`.
    pub created_by: String,
    pub members: Vec<Member>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub nhi_id: String,
    pub linked_at: Timestamp,
    pub linked_by: String,
}

/// What the suggester needs to know of one NHI not yet in a logical agent.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub nhi_id: String,
    pub name: String,
    pub platform: String,
    pub team_id: String,
    pub purpose: String,
    /// Its own ids as `platform:external_id` (from `external_ids`).
    pub ids: Vec<String>,
    /// Ids of other identities that something about it names as the same agent's, as
    /// `platform:external_id`: a Kubernetes service account's `eks.amazonaws.com/role-arn`
    /// annotation names the AWS role its pods act as.
    pub claims: Vec<String>,
}

/// A proposed link of two or more NHIs, with why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Suggestion {
    /// A name for the agent: the shared name stem, or the first member's name.
    pub name: String,
    pub team_id: String,
    pub nhi_ids: Vec<String>,
    pub reasons: Vec<String>,
    /// 0 to 1: 0.9 for an annotation, 0.7 for a shared name, 0.5 for a shared purpose.
    pub confidence: f64,
}

/// Words that say where or how an identity runs rather than which agent it is; dropped when
/// comparing names, so `invoice-bot-aws-prod` and `invoice_bot_github` share `invoice-bot`.
const PLATFORM_WORDS: &[&str] = &[
    "aws",
    "gcp",
    "azure",
    "k8s",
    "kube",
    "kubernetes",
    "eks",
    "gke",
    "aks",
    "github",
    "gh",
    "gitlab",
    "okta",
    "slack",
    "prod",
    "production",
    "staging",
    "stage",
    "dev",
    "test",
    "qa",
    "sa",
    "svc",
    "serviceaccount",
    "role",
    "user",
    "iam",
    "key",
    "token",
    "app",
    "oauth",
    "client",
    "identity",
    "id",
];

/// The part of a name that identifies the agent: lowercase words, platform and environment
/// words dropped, joined by `-`. Empty when nothing is left.
pub fn name_stem(name: &str) -> String {
    let mut words = Vec::new();
    for word in name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_ascii_lowercase();
        if !PLATFORM_WORDS.contains(&word.as_str()) && !word.chars().all(|c| c.is_ascii_digit()) {
            words.push(word);
        }
    }
    words.join("-")
}

fn normalised_purpose(purpose: &str) -> String {
    purpose
        .split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Suggested links among `candidates` (NHIs in no logical agent yet), strongest first. A
/// suggestion always spans at least two platforms (one platform's identities of one agent
/// are that agent's credentials, not separate identities) and one owner team, except an
/// annotation, which is explicit enough to cross teams. Each NHI appears in at most one
/// suggestion: the strongest that holds it.
pub fn suggest(candidates: &[Candidate]) -> Vec<Suggestion> {
    let mut suggestions = Vec::new();
    let mut taken: BTreeSet<&str> = BTreeSet::new();

    // Annotations: a claim naming another candidate's id.
    let mut by_id: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, candidate) in candidates.iter().enumerate() {
        for id in &candidate.ids {
            by_id.insert(id.as_str(), index);
        }
    }
    for candidate in candidates {
        for claim in &candidate.claims {
            let Some(&other) = by_id.get(claim.as_str()) else {
                continue;
            };
            let other = &candidates[other];
            if other.nhi_id == candidate.nhi_id
                || taken.contains(candidate.nhi_id.as_str())
                || taken.contains(other.nhi_id.as_str())
            {
                continue;
            }
            taken.insert(&candidate.nhi_id);
            taken.insert(&other.nhi_id);
            suggestions.push(Suggestion {
                name: pick_name(&[candidate, other]),
                team_id: candidate.team_id.clone(),
                nhi_ids: vec![candidate.nhi_id.clone(), other.nhi_id.clone()],
                reasons: vec![format!("{} names {claim} as its identity", candidate.name)],
                confidence: 0.9,
            });
        }
    }

    // Shared name stems, then shared purposes, within one team.
    type Key<'a> = (&'a str, String);
    /// How a grouping keys a candidate; an empty key groups nothing.
    type KeyOf = fn(&Candidate) -> String;
    let groupings: [(KeyOf, f64, &str); 2] = [
        (
            |c| name_stem(&c.name),
            0.7,
            "the same name apart from platform words",
        ),
        (|c| normalised_purpose(&c.purpose), 0.5, "the same purpose"),
    ];
    for (key_of, confidence, why) in groupings {
        let mut groups: BTreeMap<Key<'_>, Vec<&Candidate>> = BTreeMap::new();
        for candidate in candidates {
            if taken.contains(candidate.nhi_id.as_str()) {
                continue;
            }
            let key = key_of(candidate);
            if key.is_empty() {
                continue;
            }
            groups
                .entry((candidate.team_id.as_str(), key))
                .or_default()
                .push(candidate);
        }
        for ((team, key), members) in groups {
            let platforms: BTreeSet<&str> = members.iter().map(|c| c.platform.as_str()).collect();
            if platforms.len() < 2 {
                continue;
            }
            for member in &members {
                taken.insert(&member.nhi_id);
            }
            suggestions.push(Suggestion {
                name: if confidence >= 0.7 {
                    key.clone()
                } else {
                    pick_name(&members)
                },
                team_id: team.to_owned(),
                nhi_ids: members.iter().map(|c| c.nhi_id.clone()).collect(),
                reasons: vec![format!(
                    "{why} ({key:?}) on {} platforms: {}",
                    platforms.len(),
                    platforms.into_iter().collect::<Vec<_>>().join(", ")
                )],
                confidence,
            });
        }
    }
    suggestions.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then_with(|| a.name.cmp(&b.name))
    });
    suggestions
}

fn pick_name(members: &[&Candidate]) -> String {
    members
        .iter()
        .map(|c| name_stem(&c.name))
        .find(|stem| !stem.is_empty())
        .unwrap_or_else(|| members[0].name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: &str, name: &str, platform: &str, team: &str, purpose: &str) -> Candidate {
        Candidate {
            nhi_id: id.into(),
            name: name.into(),
            platform: platform.into(),
            team_id: team.into(),
            purpose: purpose.into(),
            ids: Vec::new(),
            claims: Vec::new(),
        }
    }

    #[test]
    fn stems_drop_platform_and_environment_words() {
        assert_eq!(name_stem("invoice-bot-aws-prod"), "invoice-bot");
        assert_eq!(name_stem("Invoice_Bot (GitHub)"), "invoice-bot");
        assert_eq!(name_stem("svc-42"), "");
    }

    #[test]
    fn names_link_across_platforms_within_a_team_only() {
        let candidates = [
            candidate("a", "invoice-bot-aws", "aws", "t1", "x"),
            candidate("b", "invoice_bot_github", "github", "t1", "y"),
            candidate("c", "invoice-bot", "okta", "t2", "z"),
            candidate("d", "invoice-bot-staging", "aws", "t1", "w"),
        ];
        let suggestions = suggest(&candidates);
        assert_eq!(suggestions.len(), 1);
        assert_eq!(suggestions[0].nhi_ids, ["a", "b", "d"]);
        assert_eq!(suggestions[0].name, "invoice-bot");
    }

    #[test]
    fn an_annotation_wins_and_one_platform_is_not_a_link() {
        let mut sa = candidate("sa", "payments-runner", "kubernetes", "t1", "p");
        sa.claims = vec!["aws:arn:aws:iam::1:role/pay".into()];
        let mut role = candidate("role", "pay", "aws", "t2", "p");
        role.ids = vec!["aws:arn:aws:iam::1:role/pay".into()];
        let lone = candidate("x", "payments-other", "kubernetes", "t1", "p");
        let suggestions = suggest(&[sa, role, lone]);
        assert_eq!(suggestions.len(), 1);
        assert_eq!(suggestions[0].nhi_ids, ["sa", "role"]);
        assert!(suggestions[0].confidence > 0.8);
    }
}
