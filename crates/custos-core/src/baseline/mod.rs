//! Behaviour baselining: a learnt profile of what each NHI normally does, and a score of how
//! far one event departs from it.
//!
//! Custos cannot see an agent's reasoning, only its actions. Every decision (and every
//! observed event imported from a platform's logs) is an [`Observation`]; the NHI's
//! [`Profile`] scores it against what it has learnt and then, unless the event is out of
//! baseline after probation, learns from it. The score is the summed surprisal, in bits, of
//! the event's features: a value never seen for a class (service, operation, resource prefix,
//! source network, user agent, hour of week) is as surprising as new values of that class have
//! been rare for this NHI, weighted for services and operations by how rare the value is
//! across the fleet ([`Fleet`]); a rate above the learnt hourly rate is scored by an
//! over-dispersed Poisson tail; a refusal by the learnt denial rate; acting for a person (or
//! for nobody) by how often it does, and a person it never acted for by how rarely new people
//! come. A person it acts for makes a new hour less surprising: people keep irregular hours,
//! and a stolen credential used at night carries nobody's session. Named detections
//! ([`Detection`]) catch patterns the generic score would miss or under-weigh.
//!
//! Memory is bounded: a profile is a fixed-size value (no heap), at most [`Profile::MAX_BYTES`]
//! in memory and encoded. First-seen sets are one Bloom filter; only the operations with the
//! highest rates keep their names and rate state.
//!
//! Pure: the time of each event comes with it, and nothing here reads a clock or a random
//! generator.

mod encode;
mod fleet;
mod profile;
pub mod simulate;

pub use encode::ProfileError;
pub use fleet::Fleet;
pub use profile::{BaselineSummary, OperationSummary, Profile};

use std::net::IpAddr;

use crate::Timestamp;

/// How a profile learns and when an event is out of baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Probation lasts at least this long from the profile's first event...
    pub probation_days: u32,
    /// ...and until it has seen at least this many events.
    pub probation_events: u64,
    /// An event whose score reaches this many bits is out of baseline.
    pub alert_bits: f32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            probation_days: 14,
            probation_events: 200,
            alert_bits: 10.0,
        }
    }
}

/// What became of the action an event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed.
    Allowed,
    /// The credential was good but the action was refused (out of scope, a guardrail).
    Denied,
    /// The credential itself was refused: unknown, revoked, expired, a bad signature.
    Refused,
    /// The credential was presented in the name of another NHI than its holder.
    Misattributed,
}

impl Outcome {
    fn is_refusal(self) -> bool {
        !matches!(self, Outcome::Allowed)
    }
}

/// Whether an event is an action on a resource or a delegation to another NHI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObservationKind {
    Action,
    /// A token exchange: `resource` names the NHI the credential was delegated to.
    Delegation,
}

/// One thing an NHI did, as a decision or an imported log record saw it.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    pub at: Timestamp,
    pub kind: ObservationKind,
    pub service: &'a str,
    pub operation: &'a str,
    pub resource: &'a str,
    pub outcome: Outcome,
    /// The network address the call came from, when the enforcement point or log knows it.
    pub source: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    /// The environment (e.g. `production`, `staging`) the call came from, when known.
    pub environment: Option<&'a str>,
    /// The person the NHI acted for, when the enforcement point or log knows it: an
    /// assistant working in a person's signed-in session (the gateway authenticated the
    /// person), CloudTrail's `onBehalfOf`. `None` when the NHI acted on its own.
    pub on_behalf_of: Option<&'a str>,
}

impl<'a> Observation<'a> {
    /// An allowed action with nothing known about where it came from.
    pub fn action(at: Timestamp, service: &'a str, operation: &'a str, resource: &'a str) -> Self {
        Self {
            at,
            kind: ObservationKind::Action,
            service,
            operation,
            resource,
            outcome: Outcome::Allowed,
            source: None,
            user_agent: None,
            environment: None,
            on_behalf_of: None,
        }
    }
}

/// A feature of an event that can depart from the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    Service,
    Operation,
    ResourcePrefix,
    SourceNetwork,
    UserAgent,
    HourOfWeek,
    Rate,
    DenialRate,
    /// Acting for a person, or on its own, against its habit; or for a person it never
    /// acted for.
    OnBehalfOf,
}

impl Feature {
    pub const ALL: [Feature; 9] = [
        Feature::Service,
        Feature::Operation,
        Feature::ResourcePrefix,
        Feature::SourceNetwork,
        Feature::UserAgent,
        Feature::HourOfWeek,
        Feature::Rate,
        Feature::DenialRate,
        Feature::OnBehalfOf,
    ];

    pub const fn code(self) -> &'static str {
        match self {
            Feature::Service => "service",
            Feature::Operation => "operation",
            Feature::ResourcePrefix => "resource_prefix",
            Feature::SourceNetwork => "source_network",
            Feature::UserAgent => "user_agent",
            Feature::HourOfWeek => "hour_of_week",
            Feature::Rate => "rate",
            Feature::DenialRate => "denial_rate",
            Feature::OnBehalfOf => "on_behalf_of",
        }
    }
}

/// A pattern recognised by name, beyond the generic score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detection {
    /// A burst of refusals for one credential, across services (or one secret presented in
    /// another NHI's name).
    CredentialStuffing,
    /// Used from an environment other than its own (OWASP NHI8).
    EnvironmentCrossing,
    /// A person at a browser, console or interactive tool using the NHI's credential (NHI10).
    InteractiveUse,
    /// Delegations to many more NHIs in an hour than it has ever made.
    DelegationFanOut,
}

impl Detection {
    pub const ALL: [Detection; 4] = [
        Detection::CredentialStuffing,
        Detection::EnvironmentCrossing,
        Detection::InteractiveUse,
        Detection::DelegationFanOut,
    ];

    pub const fn code(self) -> &'static str {
        match self {
            Detection::CredentialStuffing => "credential_stuffing",
            Detection::EnvironmentCrossing => "environment_crossing",
            Detection::InteractiveUse => "interactive_use",
            Detection::DelegationFanOut => "delegation_fan_out",
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The named detections one event set off, as a set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Detections(u8);

impl Detections {
    pub fn insert(&mut self, detection: Detection) {
        self.0 |= detection.bit();
    }

    pub fn contains(self, detection: Detection) -> bool {
        self.0 & detection.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Detection> {
        Detection::ALL
            .into_iter()
            .filter(move |d| self.contains(*d))
    }
}

/// How one event compares with its NHI's baseline. Fixed-size: scoring allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assessment {
    /// Summed weighted surprisal, in bits.
    pub score: f32,
    /// Each feature's part of the score, indexed as [`Feature::ALL`].
    pub bits: [f32; 9],
    pub detections: Detections,
    /// The profile was still learning: what this says is recorded, never enforced.
    pub in_probation: bool,
    /// The score reached the alert threshold or a named detection fired.
    pub out_of_baseline: bool,
}

impl Assessment {
    /// The features that contributed, largest first.
    pub fn contributions(&self) -> Vec<(Feature, f32)> {
        let mut parts: Vec<(Feature, f32)> = Feature::ALL
            .into_iter()
            .zip(self.bits)
            .filter(|(_, bits)| *bits > 0.0)
            .collect();
        parts.sort_by(|a, b| b.1.total_cmp(&a.1));
        parts
    }

    /// The finding kind this event belongs to: the first named detection, else `anomaly`.
    pub fn finding_kind(&self) -> &'static str {
        self.detections
            .iter()
            .next()
            .map_or("anomaly", Detection::code)
    }

    /// The feature that contributed most, if any did.
    pub fn main_feature(&self) -> Option<Feature> {
        self.contributions().first().map(|(feature, _)| *feature)
    }

    /// The new value that `event` (the event assessed) departed by most, hashed, with its
    /// feature: a service, operation, resource prefix, source network or client never seen
    /// before. `None` when its main departure is from a habit (an hour, a rate, refusals, the
    /// person acted for) rather than a value.
    pub fn departing_value(&self, event: &Observation<'_>) -> Option<(Feature, u64)> {
        let feature = self.main_feature()?;
        // Indexed as `Feature::ALL`, whose order is the enum's.
        let value = profile::first_seen_values(event)
            .get(feature as usize)
            .copied()
            .flatten()?;
        Some((feature, value))
    }
}

/// A stable 64-bit hash (FNV-1a with a final mix), so that hashes persisted in profiles
/// mean the same after a restart and on another node. `class` separates feature classes.
pub(crate) fn stable_hash(class: u8, parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(class);
    for part in parts {
        for &byte in *part {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // The finaliser of SplitMix64: FNV's low bits are weak on short inputs.
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The first segment of a resource path: `customers/42/orders` → `customers`. Resource ids
/// are unbounded; their top-level collection is what an agent's habits are made of.
pub fn resource_prefix(resource: &str) -> &str {
    let trimmed = resource.trim_start_matches('/');
    // ARNs (`arn:partition:service:region:account:resource`): keep up to the resource's type,
    // or the bucket of an S3 object.
    if trimmed.starts_with("arn:") {
        let mut colons = 0;
        for (index, c) in trimmed.char_indices() {
            if c == ':' {
                colons += 1;
                if colons == 6 {
                    return &trimmed[..index];
                }
            } else if c == '/' && colons >= 5 {
                return &trimmed[..index];
            }
        }
        return trimmed;
    }
    trimmed.split(['/', ':']).next().unwrap_or("")
}

/// The network an address belongs to, for first-seen purposes: a /24 for IPv4, a /48 for IPv6.
pub fn source_network(address: IpAddr) -> [u8; 7] {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            [4, a, b, c, 0, 0, 0]
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [6, o[0], o[1], o[2], o[3], o[4], o[5]]
        }
    }
}

/// What kind of client a user agent names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientClass {
    /// A web browser.
    Browser = 0,
    /// A cloud provider's web console acting for a signed-in person.
    Console = 1,
    /// A tool a person types into: curl, wget, Postman, HTTPie, Insomnia.
    InteractiveTool = 2,
    /// Anything else: SDKs, services, scripts.
    Program = 3,
}

impl ClientClass {
    pub fn of(user_agent: &str) -> Self {
        let lower = user_agent.trim().to_ascii_lowercase();
        if lower.contains("console.amazonaws.com")
            || lower.contains("signin.amazonaws.com")
            || lower.starts_with("aws-internal")
            || lower.contains("console.cloud.google.com")
            || lower.contains("portal.azure.com")
        {
            ClientClass::Console
        } else if lower.starts_with("mozilla/") || lower.starts_with("opera/") {
            ClientClass::Browser
        } else if ["curl/", "wget/", "postmanruntime/", "httpie/", "insomnia/"]
            .iter()
            .any(|tool| lower.starts_with(tool))
        {
            ClientClass::InteractiveTool
        } else {
            ClientClass::Program
        }
    }

    pub const fn is_human(self) -> bool {
        !matches!(self, ClientClass::Program)
    }
}

/// Whole hours since the epoch, and the hour of the week (0 = Monday 00:00 UTC).
pub(crate) fn hours(at: Timestamp) -> (u32, usize) {
    let hour = at.unix_millis().div_euclid(3_600_000);
    // 1970-01-01 was a Thursday: hour 0 of the epoch is hour 72 of its week.
    let of_week = (hour + 72).rem_euclid(168) as usize;
    (u32::try_from(hour).unwrap_or(u32::MAX), of_week)
}
