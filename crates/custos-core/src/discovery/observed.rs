//! Identities as imports saw them, merged across records, files and imports.
//!
//! An import folds every [`Sighting`] of one `(platform, principal)` into one
//! [`ObservedIdentity`]; the store merges it with what earlier imports saw. The evidence is
//! bounded whatever the volume of logs: counts grow, but each list keeps a fixed number of
//! entries, so a principal seen a billion times costs the same few kilobytes as one seen once.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{IdentityClass, Sighting};
use crate::Timestamp;
use crate::baseline::Outcome;

/// The most distinct source files an identity's evidence names.
pub const SOURCES_KEPT: usize = 20;
/// The most distinct `service:operation` pairs counted one by one; the rest count as `other`.
pub const OPERATIONS_KEPT: usize = 50;
/// The most distinct source addresses kept.
pub const ADDRESSES_KEPT: usize = 20;
/// The most distinct user agents kept.
pub const USER_AGENTS_KEPT: usize = 10;
/// The most facts (from listings) kept, and the longest value.
pub const FACTS_KEPT: usize = 40;
const FACT_VALUE_MAX: usize = 512;
const USER_AGENT_MAX: usize = 256;

/// One identity, everything the imports saw of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservedIdentity {
    pub platform: String,
    pub principal: String,
    pub display_name: String,
    pub class: IdentityClass,
    pub class_reason: String,
    /// The registered NHI it was matched with, if any.
    pub nhi_id: Option<String>,
    pub first_seen: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
    /// Log records seen, over every import.
    pub events: i64,
    pub evidence: Evidence,
    pub first_imported_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Which observed identities to list.
#[derive(Clone, Debug, Default)]
pub struct ObservedFilter {
    pub platform: Option<String>,
    pub class: Option<IdentityClass>,
    /// Only non-human identities matched with no NHI.
    pub shadow_only: bool,
    pub nhi_id: Option<String>,
}

/// What was seen, in bounded space.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// The files (or uploads) it was seen in, first ones first.
    #[serde(default)]
    pub sources: Vec<String>,
    /// `service:operation` → how many records.
    #[serde(default)]
    pub operations: BTreeMap<String, i64>,
    /// Records whose operation was not counted by name (past [`OPERATIONS_KEPT`]).
    #[serde(default)]
    pub other_operations: i64,
    /// Records the platform refused or denied.
    #[serde(default)]
    pub refusals: i64,
    #[serde(default)]
    pub source_addresses: BTreeSet<String>,
    #[serde(default)]
    pub user_agents: BTreeSet<String>,
    /// What a platform listing states (creation time, key ages, annotations).
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
}

impl ObservedIdentity {
    /// The identity as one sighting shows it, read from `source` at `now`.
    pub fn from_sighting(sighting: &Sighting, source: &str, now: Timestamp) -> Self {
        let mut identity = ObservedIdentity {
            platform: sighting.platform.to_owned(),
            principal: sighting.principal.clone(),
            display_name: sighting.display_name.clone(),
            class: sighting.class,
            class_reason: sighting.class_reason.to_owned(),
            nhi_id: None,
            first_seen: None,
            last_seen: None,
            events: 0,
            evidence: Evidence::default(),
            first_imported_at: now,
            updated_at: now,
        };
        identity.evidence.add_source(source);
        identity.absorb(sighting);
        identity
    }

    /// Adds one more sighting of this identity.
    pub fn absorb(&mut self, sighting: &Sighting) {
        self.reclassify_from(sighting.class, sighting.class_reason);
        if let Some(at) = sighting.at {
            self.seen_at(at);
        }
        if let Some(activity) = &sighting.activity {
            self.events = self.events.saturating_add(1);
            let evidence = &mut self.evidence;
            let key = format!("{}:{}", activity.service, activity.operation);
            evidence.count_operation(key, 1);
            if activity.outcome != Outcome::Allowed {
                evidence.refusals = evidence.refusals.saturating_add(1);
            }
            if let Some(address) = activity.source {
                bounded_insert(
                    &mut evidence.source_addresses,
                    address.to_string(),
                    ADDRESSES_KEPT,
                );
            }
            if let Some(agent) = &activity.user_agent {
                bounded_insert(
                    &mut evidence.user_agents,
                    truncate(agent, USER_AGENT_MAX),
                    USER_AGENTS_KEPT,
                );
            }
        }
        for (key, value) in &sighting.facts {
            self.evidence.set_fact(key, value);
        }
    }

    /// Merges what a later import saw of the same identity into this one (the stored one).
    /// The match with an NHI is the later import's, which looked it up against the inventory
    /// as it is now.
    pub fn merge(&mut self, later: &ObservedIdentity) {
        self.reclassify_from(later.class, &later.class_reason);
        if !later.display_name.is_empty() {
            self.display_name.clone_from(&later.display_name);
        }
        if later.nhi_id.is_some() {
            self.nhi_id.clone_from(&later.nhi_id);
        }
        if let Some(at) = later.first_seen {
            self.seen_at(at);
        }
        if let Some(at) = later.last_seen {
            self.seen_at(at);
        }
        self.events = self.events.saturating_add(later.events);
        self.first_imported_at = self.first_imported_at.min(later.first_imported_at);
        self.updated_at = self.updated_at.max(later.updated_at);
        let (ours, theirs) = (&mut self.evidence, &later.evidence);
        for source in &theirs.sources {
            ours.add_source(source);
        }
        for (operation, count) in &theirs.operations {
            ours.count_operation(operation.clone(), *count);
        }
        ours.other_operations = ours
            .other_operations
            .saturating_add(theirs.other_operations);
        ours.refusals = ours.refusals.saturating_add(theirs.refusals);
        for address in &theirs.source_addresses {
            bounded_insert(&mut ours.source_addresses, address.clone(), ADDRESSES_KEPT);
        }
        for agent in &theirs.user_agents {
            bounded_insert(&mut ours.user_agents, agent.clone(), USER_AGENTS_KEPT);
        }
        for (key, value) in &theirs.facts {
            ours.set_fact(key, value);
        }
    }

    /// Whether this is an identity the inventory should hold but does not: a non-human one
    /// matched with no NHI.
    pub fn is_shadow(&self) -> bool {
        self.class == IdentityClass::NonHuman && self.nhi_id.is_none()
    }

    fn seen_at(&mut self, at: Timestamp) {
        self.first_seen = Some(self.first_seen.map_or(at, |first| first.min(at)));
        self.last_seen = Some(self.last_seen.map_or(at, |last| last.max(at)));
    }

    /// One sign of a person outweighs any number of machine-like records: a console sign-in
    /// proves someone sat at it, while a person's scripted calls look like a machine's. The
    /// platform class holds only while every record says so.
    fn reclassify_from(&mut self, class: IdentityClass, reason: &str) {
        let rank = |class: IdentityClass| match class {
            IdentityClass::Platform => 0,
            IdentityClass::NonHuman => 1,
            IdentityClass::Human => 2,
        };
        if rank(class) > rank(self.class) {
            self.class = class;
            reason.clone_into(&mut self.class_reason);
        }
    }
}

impl Evidence {
    fn add_source(&mut self, source: &str) {
        if self.sources.len() < SOURCES_KEPT && !self.sources.iter().any(|s| s == source) {
            self.sources.push(source.to_owned());
        }
    }

    fn count_operation(&mut self, key: String, count: i64) {
        if let Some(existing) = self.operations.get_mut(&key) {
            *existing = existing.saturating_add(count);
        } else if self.operations.len() < OPERATIONS_KEPT {
            self.operations.insert(key, count);
        } else {
            self.other_operations = self.other_operations.saturating_add(count);
        }
    }

    fn set_fact(&mut self, key: &str, value: &str) {
        if self.facts.len() < FACTS_KEPT || self.facts.contains_key(key) {
            self.facts
                .insert(key.to_owned(), truncate(value, FACT_VALUE_MAX));
        }
    }
}

fn bounded_insert(set: &mut BTreeSet<String>, value: String, kept: usize) {
    if set.len() < kept {
        set.insert(value);
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
