//! The evaluation harness of behaviour baselining: a simulated fleet of agents with injected
//! attacks, run through the detector, with precision, recall and false alerts per 1,000
//! NHI-days per attack type.
//!
//! The fleet is made of applications, each a group of NHIs that share services, networks, an
//! SDK and an environment. Every NHI follows one of four archetypes:
//!
//! - *interactive* assistants, busy on weekday working hours in their own time zone, in bursts
//!   of calls (one task each), with days off, the odd evening and the odd weekend session,
//!   each working for one to three people (one a day), in whose sessions every call is made;
//! - *batch* jobs (ETL), from hourly to nightly runs of tens to thousands of calls, some on
//!   weekdays only, with runs that vary in size, skipped runs and the catch-up after them;
//! - *always-on* services with a diurnal curve and quieter weekends;
//! - *weekly* report jobs: one run a week of hundreds of calls.
//!
//! Each NHI uses 2–6 services and 3–15 operations with skewed (Zipf) frequencies, resources
//! under a few prefixes (some agents touch new resource ids all the time, a few have flat ids
//! so that every resource is new), 1–3 of its application's /24 networks, one SDK user agent
//! that is upgraded now and then, its home environment, 0.5–2% refusals, and (one in five
//! interactive or always-on NHIs) delegations to a few usual delegatees. Behaviour drifts: rates
//! grow by up to 6% a week and new resource prefixes appear. New legitimate services are rolled
//! out a few times over the period: every NHI of one application starts calling a service
//! nobody used before, within six hours of each other.
//!
//! After a warm-up of `warmup_days` (the probation), `attack_share` of the NHIs is attacked once
//! each, the attacks spread evenly over the seven [`AttackKind`]s, each departing from the
//! victim's habits in its own way only. Someone else using the credential (off hours, a new
//! source, stuffing, another environment) does so outside any person's session; the agent
//! itself led astray (a new service, an exfiltration, a fan-out) acts within the session's
//! (see [`AttackKind::uses_stolen_credential`]). Victims are drawn among the NHIs that had the events
//! probation needs by the end of the warm-up.
//!
//! Alerts are counted as the server's findings are: one per
//! [`departure_key`](crate::finding::departure_key), that is per NHI and new value departed by
//! (a new network used again folds into its finding), else per NHI, finding kind and UTC day.
//! Nobody resolves a finding in the simulation, so every repeat folds. An alert is true when
//! the event that opened it belongs to an attack.
//!
//! Most rollouts come with a grant: a person adds the service to the NHIs' scope ceilings a few
//! hours to three days before (see [`Generator::grants`] and `Profile::expect_service`); the
//! rest were held unused all along. An NHI's peer group is its application.
//!
//! Pure and deterministic: the generator has its own PRNG seeded by the caller's seed.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use super::{Assessment, Fleet, Observation, ObservationKind, Outcome, Profile, Settings};
use crate::Timestamp;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// Monday 2026-01-05 00:00 UTC: day 0 of every simulation.
const START_MS: i64 = 1_767_571_200_000;

/// How big a fleet to simulate, for how long, and how much of it to attack.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimulationConfig {
    pub nhis: usize,
    /// Days evaluated after the warm-up.
    pub days: u32,
    /// Days of warm-up before the evaluation: the probation's length.
    pub warmup_days: u32,
    /// The share of NHIs attacked once in the evaluated days, spread evenly over the attack
    /// types.
    pub attack_share: f64,
    pub seed: u64,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        Self {
            nhis: 1000,
            days: 14,
            warmup_days: 14,
            attack_share: 0.1,
            seed: 1,
        }
    }
}

/// The attacks the harness injects, each testing one signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum AttackKind {
    /// Calls to a sensitive service the NHI never used, from its usual network, agent and hours.
    NewService,
    /// One of its read operations at 10–50× its usual hourly rate (all operations together),
    /// across many resource ids.
    ExfiltrationBurst,
    /// Its usual operations at an hour of the day it is never active.
    OffHours,
    /// Its usual operations from a network it never used.
    NewSource,
    /// A burst of refused calls across several services within minutes.
    CredentialStuffing,
    /// Delegations to many distinct NHIs within an hour.
    DelegationFanOut,
    /// Its usual calls carrying another environment's label.
    EnvironmentCrossing,
}

impl AttackKind {
    pub const ALL: [AttackKind; 7] = [
        AttackKind::NewService,
        AttackKind::ExfiltrationBurst,
        AttackKind::OffHours,
        AttackKind::NewSource,
        AttackKind::CredentialStuffing,
        AttackKind::DelegationFanOut,
        AttackKind::EnvironmentCrossing,
    ];

    pub const fn code(self) -> &'static str {
        match self {
            AttackKind::NewService => "new_service",
            AttackKind::ExfiltrationBurst => "exfiltration_burst",
            AttackKind::OffHours => "off_hours",
            AttackKind::NewSource => "new_source",
            AttackKind::CredentialStuffing => "credential_stuffing",
            AttackKind::DelegationFanOut => "delegation_fan_out",
            AttackKind::EnvironmentCrossing => "environment_crossing",
        }
    }

    /// Whether the attack is someone else using the NHI's credential, outside the sessions
    /// of the people it works for (so its calls carry no person), rather than the agent
    /// itself led astray within one (a prompt injection: a new service, an exfiltration, a
    /// fan-out of delegations), whose calls carry the person of the session.
    pub const fn uses_stolen_credential(self) -> bool {
        matches!(
            self,
            AttackKind::OffHours
                | AttackKind::NewSource
                | AttackKind::CredentialStuffing
                | AttackKind::EnvironmentCrossing
        )
    }
}

/// How an NHI behaves over the day and the week.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Archetype {
    Interactive,
    Batch,
    AlwaysOn,
    Weekly,
}

impl Archetype {
    pub const fn code(self) -> &'static str {
        match self {
            Archetype::Interactive => "interactive",
            Archetype::Batch => "batch",
            Archetype::AlwaysOn => "always_on",
            Archetype::Weekly => "weekly",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The catalogue of services.

#[derive(Clone, Copy, Debug)]
struct Op {
    name: &'static str,
    read: bool,
}

const fn r(name: &'static str) -> Op {
    Op { name, read: true }
}

const fn w(name: &'static str) -> Op {
    Op { name, read: false }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Used by the fleet from the start, by popularity.
    Common,
    /// Sensitive: rarely used by agents, and what an attacker reaches for.
    Sensitive,
    /// Used by nobody until an application rolls it out.
    Rollout,
}

struct ServiceDef {
    name: &'static str,
    ops: &'static [Op],
    prefixes: &'static [&'static str],
    /// Relative weight of the service when applications and NHIs choose theirs.
    popularity: f64,
    class: Class,
}

const fn svc(
    name: &'static str,
    ops: &'static [Op],
    prefixes: &'static [&'static str],
    popularity: f64,
    class: Class,
) -> ServiceDef {
    ServiceDef {
        name,
        ops,
        prefixes,
        popularity,
        class,
    }
}

#[rustfmt::skip]
const SERVICES: &[ServiceDef] = &[
    svc("s3", &[r("GetObject"), w("PutObject"), r("ListObjectsV2"), r("HeadObject"), w("DeleteObject"), w("CopyObject")],
        &["reports-bucket", "uploads-bucket", "exports-bucket", "models-bucket", "logs-bucket", "media-bucket", "backups-bucket", "datalake-bucket"], 6.0, Class::Common),
    svc("dynamodb", &[r("GetItem"), w("PutItem"), r("Query"), w("UpdateItem"), r("Scan"), r("BatchGetItem"), w("BatchWriteItem"), w("DeleteItem")],
        &["orders", "customers", "sessions", "events", "users", "carts", "audit", "jobs"], 5.0, Class::Common),
    svc("sqs", &[w("SendMessage"), r("ReceiveMessage"), w("DeleteMessage"), r("GetQueueAttributes"), w("ChangeMessageVisibility")],
        &["ingest-queue", "jobs-queue", "dlq", "notifications-queue", "webhooks-queue"], 4.0, Class::Common),
    svc("sns", &[w("Publish"), r("ListTopics")], &["alerts-topic", "events-topic", "billing-topic"], 2.0, Class::Common),
    svc("lambda", &[w("Invoke"), r("GetFunction")], &["fn-enrich", "fn-resize", "fn-score", "fn-notify"], 2.0, Class::Common),
    svc("llm", &[w("chat.completions"), w("embeddings.create"), w("moderations.create"), r("models.list")],
        &["gpt-4o", "claude-sonnet", "llama-70b", "embed-v3"], 9.0, Class::Common),
    svc("crm", &[r("customers.read"), r("customers.search"), w("customers.update"), w("notes.create"), r("leads.list"), w("leads.update"), r("accounts.read"), r("contacts.export")],
        &["customers", "leads", "accounts", "contacts", "notes", "opportunities"], 5.0, Class::Common),
    svc("tickets", &[r("tickets.get"), r("tickets.list"), w("tickets.comment"), w("tickets.update"), w("tickets.create"), w("tickets.assign"), r("tickets.search")],
        &["tickets", "queues", "macros", "users"], 5.0, Class::Common),
    svc("mail", &[w("messages.send"), r("messages.list"), r("messages.get"), w("drafts.create"), r("threads.get")],
        &["inbox", "sent", "drafts", "threads", "labels"], 4.0, Class::Common),
    svc("calendar", &[r("events.list"), w("events.create"), r("freebusy.query"), w("events.update")],
        &["calendars", "events", "rooms"], 3.0, Class::Common),
    svc("docs", &[r("documents.get"), r("documents.search"), w("documents.create"), w("documents.update"), r("comments.list"), r("documents.export")],
        &["documents", "folders", "drives", "templates"], 5.0, Class::Common),
    svc("search", &[r("query"), r("suggest"), w("index.upsert")], &["kb", "products", "docs-index", "web"], 4.0, Class::Common),
    svc("billing", &[r("invoices.get"), r("invoices.list"), w("charges.create"), w("refunds.create"), r("customers.balance")],
        &["invoices", "charges", "refunds", "customers"], 2.0, Class::Common),
    svc("inventory", &[r("items.get"), r("items.list"), w("stock.update"), w("reservations.create")],
        &["items", "warehouses", "reservations", "skus"], 2.0, Class::Common),
    svc("analytics", &[w("events.track"), r("reports.run"), r("queries.execute"), r("dashboards.get")],
        &["events", "reports", "dashboards", "funnels"], 3.0, Class::Common),
    svc("payments", &[r("payments.get"), w("payments.create"), r("payouts.list"), w("refunds.create")],
        &["payments", "payouts", "disputes"], 1.5, Class::Common),
    svc("warehouse", &[r("query.execute"), r("tables.describe"), w("load.start"), r("export.start")],
        &["sales", "marketing", "finance", "ops", "product"], 3.0, Class::Common),
    svc("github", &[r("repos.get"), r("pulls.list"), w("pulls.create"), w("issues.create"), r("contents.get"), w("checks.create"), r("commits.list")],
        &["repos", "orgs", "gists"], 3.0, Class::Common),
    svc("slack", &[w("chat.postMessage"), r("conversations.history"), r("users.info"), w("files.upload"), r("conversations.list")],
        &["channels", "users", "files", "dms"], 4.0, Class::Common),
    svc("jira", &[r("issue.get"), w("issue.create"), r("search"), w("transitions.do"), w("comment.add")],
        &["issues", "projects", "boards"], 3.0, Class::Common),
    svc("secretsmanager", &[r("GetSecretValue"), r("ListSecrets"), r("DescribeSecret")], &["prod", "staging", "shared"], 0.6, Class::Sensitive),
    svc("kms", &[w("Decrypt"), w("Encrypt"), w("GenerateDataKey"), r("ListKeys"), r("DescribeKey")], &["key", "alias"], 0.4, Class::Sensitive),
    svc("ssm", &[r("GetParameter"), r("GetParameters"), r("GetParametersByPath"), r("DescribeParameters")], &["config", "app", "shared"], 0.5, Class::Sensitive),
    svc("iam", &[r("ListUsers"), r("ListRoles"), r("GetUser"), w("CreateAccessKey"), w("AttachUserPolicy"), r("ListAttachedRolePolicies")],
        &["user", "role", "policy"], 0.08, Class::Sensitive),
    svc("organizations", &[r("ListAccounts"), r("DescribeOrganization"), r("ListRoots")], &["accounts", "ou", "root"], 0.0, Class::Sensitive),
    svc("cloudtrail", &[r("DescribeTrails"), w("StopLogging"), r("LookupEvents"), w("DeleteTrail")], &["trail", "events"], 0.05, Class::Sensitive),
    svc("bedrock", &[w("InvokeModel"), w("Converse"), r("ListFoundationModels")], &["anthropic.claude-3", "amazon.titan", "meta.llama3"], 0.0, Class::Rollout),
    svc("vectordb", &[w("upsert"), r("query"), w("delete"), r("fetch")], &["collections", "namespaces"], 0.0, Class::Rollout),
    svc("featurestore", &[r("features.get"), w("features.put"), r("features.batch_get")], &["features", "entities"], 0.0, Class::Rollout),
    svc("evals", &[w("runs.create"), r("runs.get"), r("datasets.list")], &["runs", "datasets"], 0.0, Class::Rollout),
    svc("rerank", &[w("rerank"), r("models.list")], &["models"], 0.0, Class::Rollout),
    svc("guardrails", &[r("check"), r("policies.get")], &["policies", "checks"], 0.0, Class::Rollout),
    svc("translate", &[w("TranslateText"), r("ListLanguages")], &["text", "terminology"], 0.0, Class::Rollout),
    svc("transcribe", &[w("StartTranscriptionJob"), r("GetTranscriptionJob")], &["jobs", "vocabularies"], 0.0, Class::Rollout),
];

/// SDK families, each with its releases in order. Versions differ, products do not: an upgrade
/// is not a new client.
#[rustfmt::skip]
const USER_AGENTS: &[&[&str]] = &[
    &["aws-sdk-go/1.44.298 (go1.20.5; linux; amd64)", "aws-sdk-go/1.45.19 (go1.21.1; linux; amd64)", "aws-sdk-go/1.48.4 (go1.21.4; linux; amd64)", "aws-sdk-go/1.50.8 (go1.22.0; linux; amd64)"],
    &["Boto3/1.28.57 md/Botocore#1.31.57 ua/2.0 os/linux#5.10.186 md/arch#x86_64 lang/python#3.11.5 md/pyimpl#CPython cfg/retry-mode#standard Botocore/1.31.57",
      "Boto3/1.33.2 md/Botocore#1.33.2 ua/2.0 os/linux#5.10.192 md/arch#x86_64 lang/python#3.11.6 md/pyimpl#CPython cfg/retry-mode#standard Botocore/1.33.2",
      "Boto3/1.34.11 md/Botocore#1.34.11 ua/2.0 os/linux#6.1.61 md/arch#x86_64 lang/python#3.12.1 md/pyimpl#CPython cfg/retry-mode#standard Botocore/1.34.11"],
    &["custos-agent-sdk/0.9.2 python/3.11.4 linux", "custos-agent-sdk/0.10.0 python/3.11.6 linux", "custos-agent-sdk/0.11.1 python/3.12.1 linux"],
    &["langchain-agents/0.1.12 node/20.10.0 linux", "langchain-agents/0.1.19 node/20.11.0 linux", "langchain-agents/0.2.3 node/20.11.1 linux"],
    &["aws-sdk-java/2.20.162 Linux/5.10.192 OpenJDK_64-Bit_Server_VM/17.0.8+7-LTS Java/17.0.8 vendor/Amazon.com_Inc. io/sync http/Apache cfg/retry-mode/legacy",
      "aws-sdk-java/2.21.29 Linux/5.10.197 OpenJDK_64-Bit_Server_VM/17.0.9+8-LTS Java/17.0.9 vendor/Amazon.com_Inc. io/sync http/Apache cfg/retry-mode/legacy",
      "aws-sdk-java/2.22.12 Linux/6.1.66 OpenJDK_64-Bit_Server_VM/21.0.1+12-LTS Java/21.0.1 vendor/Amazon.com_Inc. io/sync http/Apache cfg/retry-mode/legacy"],
    &["openai-python/1.12.0 python/3.11.7", "openai-python/1.14.3 python/3.11.8", "openai-python/1.16.2 python/3.12.2"],
];

const ENVIRONMENTS: [&str; 3] = ["production", "staging", "development"];

/// The service, operation and environment text of delegation events.
const DELEGATION_SERVICE: &str = "custos";
const DELEGATION_OPERATION: &str = "token.exchange";

// ---------------------------------------------------------------------------------------------
// A small PRNG: xoshiro256** seeded by SplitMix64.

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Streams are named by the seed and a path of tags, so that what one NHI does on one day does
/// not depend on anything generated before it.
mod tag {
    pub const PERSONA: u64 = 1;
    pub const APPS: u64 = 2;
    pub const DAY: u64 = 3;
    pub const SESSION: u64 = 4;
    pub const RUN: u64 = 5;
    pub const DRIFT: u64 = 6;
    pub const VICTIMS: u64 = 7;
    pub const ATTACK: u64 = 8;
    pub const ROLLOUT: u64 = 9;
    pub const PEOPLE: u64 = 10;
    pub const GRANT: u64 = 11;
}

#[derive(Clone, Debug)]
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64, tags: &[u64]) -> Self {
        let mut state = seed;
        let mut mixed = splitmix(&mut state);
        for &tag in tags {
            let mut s = mixed ^ tag.wrapping_mul(0xd1b5_4a32_d192_ed03);
            mixed = splitmix(&mut s);
        }
        let mut s = mixed;
        Rng([
            splitmix(&mut s),
            splitmix(&mut s),
            splitmix(&mut s),
            splitmix(&mut s),
        ])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.f64()
    }

    fn range_u(&mut self, low: u64, high_inclusive: u64) -> u64 {
        low + self.below(high_inclusive - low + 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64();
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.f64()).ln()
    }

    fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        if mean < 30.0 {
            let limit = (-mean).exp();
            let mut product = self.f64();
            let mut count = 0;
            while product > limit {
                count += 1;
                product *= self.f64();
            }
            count
        } else {
            (mean + mean.sqrt() * self.normal()).round().max(0.0) as u64
        }
    }

    /// At least 1, with the given mean.
    fn geometric(&mut self, mean: f64) -> u64 {
        if mean <= 1.0 {
            return 1;
        }
        let p = 1.0 / mean;
        1 + ((1.0 - self.f64()).ln() / (1.0 - p).ln()).floor() as u64
    }

    /// An index drawn by weight; `None` when every weight is 0.
    fn weighted(&mut self, weights: impl Iterator<Item = f64> + Clone) -> Option<usize> {
        let total: f64 = weights.clone().sum();
        if total <= 0.0 {
            return None;
        }
        let mut target = self.f64() * total;
        let mut last = None;
        for (index, weight) in weights.enumerate() {
            if weight <= 0.0 {
                continue;
            }
            last = Some(index);
            if target < weight {
                return Some(index);
            }
            target -= weight;
        }
        last
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events.

/// What an event touched. Kept compact; [`Resource::write`] renders the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    None,
    /// `prefix/id`.
    Path(&'static str, u32),
    /// A flat id with no collection: every one is its own prefix.
    Flat(u64),
    /// Another NHI, for a delegation.
    Nhi(u32),
}

impl Resource {
    pub fn write(&self, out: &mut String) {
        match *self {
            Resource::None => {}
            Resource::Path(prefix, id) => {
                let _ = write!(out, "{prefix}/{id}");
            }
            Resource::Flat(id) => {
                let _ = write!(out, "obj-{id:016x}");
            }
            Resource::Nhi(id) => {
                let _ = write!(out, "nhi-{id:05}");
            }
        }
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }
}

/// One simulated event, owned. [`Event::observation`] lends it as the detector's input.
#[derive(Clone, Debug)]
pub struct Event {
    pub nhi: u32,
    pub at: Timestamp,
    pub kind: ObservationKind,
    pub service: &'static str,
    pub operation: &'static str,
    pub resource: Resource,
    pub outcome: Outcome,
    pub source: Option<IpAddr>,
    pub user_agent: &'static str,
    pub environment: &'static str,
    /// The person the NHI acted for (see [`Event::write_person`]).
    pub on_behalf_of: Option<u32>,
    /// The attack this event belongs to, as an index into [`Generator::attacks`].
    pub attack: Option<u32>,
    /// The persona's operation, for the warm-up statistics.
    op: u16,
}

impl Event {
    /// The text of the person the NHI acted for, if any, appended to `out`.
    pub fn write_person(&self, out: &mut String) {
        if let Some(person) = self.on_behalf_of {
            let _ = write!(out, "person-{person:06}@example.com");
        }
    }

    /// The detector's view of the event, with `resource` the text of [`Event::resource`] and
    /// `person` that of the person acted for ([`Event::write_person`]).
    pub fn observation<'a>(&'a self, resource: &'a str, person: &'a str) -> Observation<'a> {
        Observation {
            at: self.at,
            kind: self.kind,
            service: self.service,
            operation: self.operation,
            resource,
            outcome: self.outcome,
            source: self.source,
            user_agent: Some(self.user_agent),
            environment: Some(self.environment),
            on_behalf_of: self.on_behalf_of.is_some().then_some(person),
        }
    }
}

const NO_OP: u16 = u16::MAX;

// ---------------------------------------------------------------------------------------------
// The fleet.

#[derive(Clone, Debug)]
struct App {
    members: Vec<u32>,
    services: Vec<usize>,
    subnets: Vec<[u8; 3]>,
    user_agent: usize,
    environment: usize,
}

#[derive(Clone, Debug)]
struct OpUse {
    service: usize,
    op: usize,
    weight: f64,
    /// Indexes into the service's prefixes, with weights.
    prefixes: Vec<(usize, f64)>,
    /// Used from this time on (rollouts); 0 for the NHI's own operations.
    from_ms: i64,
    warm_events: u64,
    warm_hours: u64,
    last_hour: i64,
}

#[derive(Clone, Debug)]
enum Schedule {
    Interactive {
        tz_hours: i64,
        start_hour: f64,
        length_hours: f64,
        tasks_per_hour: f64,
        task_size: f64,
    },
    Batch {
        runs_per_day: u32,
        offset_minutes: f64,
        duration_minutes: f64,
        events_per_run: f64,
        weekdays_only: bool,
    },
    AlwaysOn {
        tz_hours: i64,
        events_per_hour: f64,
        amplitude: f64,
        weekend: f64,
        cluster: f64,
    },
    Weekly {
        weekday: u32,
        offset_minutes: f64,
        duration_minutes: f64,
        events_per_run: f64,
    },
}

#[derive(Clone, Debug)]
struct Persona {
    archetype: Archetype,
    schedule: Schedule,
    ops: Vec<OpUse>,
    sources: Vec<([u8; 3], f64)>,
    user_agent: usize,
    version: usize,
    upgrade_ms: i64,
    environment: usize,
    refusal: f64,
    /// Resource ids: new ones nearly every call, or a small working set.
    fresh_ids: bool,
    /// Resources are flat ids, each its own prefix.
    flat: bool,
    delegatees: Vec<(u32, f64)>,
    delegation: f64,
    /// The people an interactive assistant works for, one a day, in their signed-in
    /// sessions (0 for the others); numbered from `nhi * 4`.
    people: u32,
    /// Growth of rates per week.
    growth: f64,
    warm_events: u64,
    /// UTC hours of the day with events in the warm-up.
    warm_hours_of_day: u32,
    warm_hours: u64,
    last_hour: i64,
}

impl Persona {
    fn services(&self) -> Vec<usize> {
        let mut services: Vec<usize> = self.ops.iter().map(|op| op.service).collect();
        services.sort_unstable();
        services.dedup();
        services
    }

    /// The person the NHI works for at `at_ms`, if it works for people: the same one all
    /// (UTC) day.
    fn person_at(&self, nhi: usize, at_ms: i64) -> Option<u32> {
        (self.people > 0).then(|| {
            let day = (at_ms - START_MS).div_euclid(DAY_MS) as u32;
            nhi as u32 * 4 + (day + nhi as u32) % self.people
        })
    }

    fn growth_at(&self, at_ms: i64) -> f64 {
        let weeks = (at_ms - START_MS) as f64 / (7.0 * DAY_MS as f64);
        (1.0 + self.growth).powf(weeks)
    }

    fn user_agent_at(&self, at_ms: i64) -> &'static str {
        let versions = USER_AGENTS[self.user_agent];
        let version = if at_ms >= self.upgrade_ms {
            self.version + 1
        } else {
            self.version
        };
        versions[version.min(versions.len() - 1)]
    }
}

#[derive(Clone, Copy, Debug)]
struct Session {
    start: i64,
    end: i64,
    shape: Shape,
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Bursts (a task, a request's fan-out) arriving at random, of `size` calls on average.
    Clusters { events_per_hour: f64, size: f64 },
    /// A run of `count` calls spread over the session.
    Run { count: u64 },
}

/// An attack as planned and as injected.
#[derive(Clone, Debug, Serialize)]
pub struct Attack {
    pub kind: AttackKind,
    pub nhi: u32,
    pub archetype: Archetype,
    /// The first day it may be injected on (counted from the simulation's start).
    pub day: u32,
    pub injected: bool,
    pub events: u32,
    /// For an off-hours attack, the UTC hour of the day it happens at.
    #[serde(skip)]
    hour: u32,
    /// For a new-service attack, the service.
    #[serde(skip)]
    service: usize,
}

/// Generates the fleet's events in time order, day after day.
pub struct Generator {
    config: SimulationConfig,
    min_warmup_events: u64,
    personas: Vec<Persona>,
    apps: Vec<App>,
    attacks: Vec<Attack>,
    /// Per NHI, its attack (index) still to inject.
    pending: Vec<Option<usize>>,
    next_day: u32,
    ready: std::vec::IntoIter<Event>,
    carry: Vec<Event>,
    /// The services people granted NHIs ahead of rollouts, in time order.
    grants: Vec<Grant>,
}

/// A person granted an NHI a service: its scope ceiling gained it (see
/// [`Profile::expect_service`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub nhi: u32,
    pub service: &'static str,
    pub at: Timestamp,
}

/// The share of rollouts whose NHIs were granted the new service shortly before (the rest held
/// it in their scope ceilings all along, unused, and get no word of its coming).
const ROLLOUTS_GRANTED: f64 = 0.75;

/// The simulation's event stream, for the benchmark: the events of the warm-up and of the
/// evaluated days, attacks included, in time order.
pub fn events(config: &SimulationConfig) -> Generator {
    Generator::new(config, Settings::default().probation_events)
}

impl Generator {
    /// A generator of the fleet described by `config`; attack victims are drawn among the NHIs
    /// with at least `min_warmup_events` events in the warm-up.
    pub fn new(config: &SimulationConfig, min_warmup_events: u64) -> Self {
        let (apps, personas) = build_fleet(config);
        let mut generator = Generator {
            config: config.clone(),
            min_warmup_events,
            pending: vec![None; personas.len()],
            personas,
            apps,
            attacks: Vec::new(),
            next_day: 0,
            ready: Vec::new().into_iter(),
            carry: Vec::new(),
            grants: Vec::new(),
        };
        generator.plan_rollouts();
        generator
    }

    /// The grants ahead of rollouts, in time order: each takes effect at its time.
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// The attacks, planned once the warm-up is generated.
    pub fn attacks(&self) -> &[Attack] {
        &self.attacks
    }

    pub fn archetype(&self, nhi: u32) -> Archetype {
        self.personas[nhi as usize].archetype
    }

    /// The environment NHI `nhi` is registered in.
    pub fn environment(&self, nhi: u32) -> &'static str {
        ENVIRONMENTS[self.personas[nhi as usize].environment]
    }

    /// The application the NHI belongs to: its peer group.
    pub fn application(&self, nhi: u32) -> usize {
        self.apps
            .iter()
            .position(|app| app.members.contains(&nhi))
            .unwrap_or(usize::MAX)
    }

    pub fn nhis(&self) -> usize {
        self.personas.len()
    }

    pub fn start() -> Timestamp {
        timestamp(START_MS)
    }

    fn total_days(&self) -> u32 {
        self.config.warmup_days + self.config.days
    }

    fn end_ms(&self) -> i64 {
        START_MS + i64::from(self.total_days()) * DAY_MS
    }

    /// New services rolled out a few times over the period, each to one application's NHIs;
    /// most granted to them by a person from one to 72 hours before.
    fn plan_rollouts(&mut self) {
        let mut rng = Rng::new(self.config.seed, &[tag::ROLLOUT]);
        // A stream of its own, so that adding grants left the events as they were.
        let mut grant_rng = Rng::new(self.config.seed, &[tag::GRANT]);
        let per_period = |days: u32| -> usize {
            (self.config.nhis as f64 * f64::from(days) / 3500.0).round() as usize
        };
        let warmup = per_period(self.config.warmup_days);
        let evaluated = per_period(self.config.days).max(1);
        let rollout_services: Vec<usize> = SERVICES
            .iter()
            .enumerate()
            .filter(|(_, s)| s.class == Class::Rollout)
            .map(|(i, _)| i)
            .collect();
        let mut candidates: Vec<usize> = (0..self.apps.len())
            .filter(|&app| self.apps[app].members.len() >= 10)
            .collect();
        if candidates.is_empty() {
            candidates = (0..self.apps.len()).collect();
        }
        rng.shuffle(&mut candidates);
        for n in 0..warmup + evaluated {
            let (first, days) = if n < warmup {
                (0, self.config.warmup_days)
            } else {
                (self.config.warmup_days, self.config.days)
            };
            let start = START_MS
                + i64::from(first) * DAY_MS
                + (rng.f64() * f64::from(days.max(1)) * DAY_MS as f64) as i64;
            let service = rollout_services[n % rollout_services.len()];
            let app = candidates[n % candidates.len()];
            let def = &SERVICES[service];
            let ops: Vec<usize> = {
                let mut all: Vec<usize> = (0..def.ops.len()).collect();
                rng.shuffle(&mut all);
                all.truncate(1 + rng.index(2.min(def.ops.len())));
                all
            };
            let granted_at = grant_rng.chance(ROLLOUTS_GRANTED).then(|| {
                timestamp(
                    (start - (grant_rng.range(1.0, 72.0) * HOUR_MS as f64) as i64).max(START_MS),
                )
            });
            for &member in &self.apps[app].members {
                if let Some(at) = granted_at {
                    self.grants.push(Grant {
                        nhi: member,
                        service: def.name,
                        at,
                    });
                }
                let persona = &mut self.personas[member as usize];
                let adopt = start + (rng.f64() * 6.0 * HOUR_MS as f64) as i64;
                let total: f64 = persona.ops.iter().map(|op| op.weight).sum();
                let share = rng.range(0.05, 0.2);
                for (k, &op) in ops.iter().enumerate() {
                    persona.ops.push(OpUse {
                        service,
                        op,
                        weight: total * share / (1.0 - share) / (k + 1) as f64,
                        prefixes: vec![(rng.index(def.prefixes.len()), 1.0)],
                        from_ms: adopt,
                        warm_events: 0,
                        warm_hours: 0,
                        last_hour: -1,
                    });
                }
            }
        }
        self.grants.sort_by_key(|grant| (grant.at, grant.nhi));
    }

    /// Generates the next day, and emits what happens before its end.
    fn fill_day(&mut self) {
        let day = self.next_day;
        self.next_day += 1;
        if day == self.config.warmup_days {
            self.plan_attacks();
        }
        let day_start = START_MS + i64::from(day) * DAY_MS;
        let day_end = day_start + DAY_MS;
        let mut batch = std::mem::take(&mut self.carry);
        for nhi in 0..self.personas.len() {
            self.drift(nhi, day);
            let first = batch.len();
            self.generate(nhi, day, &mut batch);
            if let Some(attack) = self.pending[nhi]
                && self.attacks[attack].day <= day
            {
                self.inject(attack, day, first, &mut batch);
            }
        }
        batch.sort_by_key(|event| (event.at, event.nhi));
        let split = batch.partition_point(|event| event.at < timestamp(day_end));
        self.carry = batch.split_off(split);
        if day + 1 == self.total_days() {
            self.carry.clear();
        }
        let warmup_end = START_MS + i64::from(self.config.warmup_days) * DAY_MS;
        if day_start < warmup_end {
            for event in &batch {
                if event.attack.is_none() && event.at.unix_millis() < warmup_end {
                    self.note_warmup(event);
                }
            }
        }
        self.ready = batch.into_iter();
    }

    fn note_warmup(&mut self, event: &Event) {
        let persona = &mut self.personas[event.nhi as usize];
        let hour = event.at.unix_millis().div_euclid(HOUR_MS);
        persona.warm_events += 1;
        persona.warm_hours_of_day |= 1 << hour.rem_euclid(24);
        if hour != persona.last_hour {
            persona.last_hour = hour;
            persona.warm_hours += 1;
        }
        if event.op != NO_OP {
            let op = &mut persona.ops[usize::from(event.op)];
            op.warm_events += 1;
            if hour != op.last_hour {
                op.last_hour = hour;
                op.warm_hours += 1;
            }
        }
    }

    /// Slow drift: now and then an operation starts touching a new resource prefix.
    fn drift(&mut self, nhi: usize, day: u32) {
        let mut rng = Rng::new(self.config.seed, &[tag::DRIFT, nhi as u64, u64::from(day)]);
        let persona = &mut self.personas[nhi];
        if persona.flat || !rng.chance(0.02) {
            return;
        }
        let index = rng.index(persona.ops.len());
        let op = &mut persona.ops[index];
        let pool = SERVICES[op.service].prefixes;
        let unused: Vec<usize> = (0..pool.len())
            .filter(|p| !op.prefixes.iter().any(|(q, _)| q == p))
            .collect();
        if unused.is_empty() {
            return;
        }
        let total: f64 = op.prefixes.iter().map(|(_, w)| w).sum();
        op.prefixes
            .push((unused[rng.index(unused.len())], total * rng.range(0.1, 0.4)));
    }

    // -----------------------------------------------------------------------------------------
    // Normal behaviour.

    fn generate(&self, nhi: usize, day: u32, out: &mut Vec<Event>) {
        let persona = &self.personas[nhi];
        let day_start = START_MS + i64::from(day) * DAY_MS;
        let mut sessions = Vec::new();
        match persona.schedule {
            Schedule::Interactive { .. } => {
                // Local days overlapping this UTC day; keep the sessions that start in it.
                for local in [i64::from(day) - 1, i64::from(day), i64::from(day) + 1] {
                    if local >= 0 {
                        self.interactive_sessions(nhi, local, &mut sessions);
                    }
                }
            }
            Schedule::AlwaysOn { .. } => self.always_on_sessions(nhi, day, &mut sessions),
            Schedule::Batch { .. } | Schedule::Weekly { .. } => {
                for local in [i64::from(day) - 1, i64::from(day)] {
                    if local >= 0 {
                        self.run_sessions(nhi, local, &mut sessions);
                    }
                }
            }
        }
        for session in sessions
            .into_iter()
            .filter(|s| s.start >= day_start && s.start < day_start + DAY_MS)
        {
            let mut rng = Rng::new(
                self.config.seed,
                &[tag::SESSION, nhi as u64, session.start as u64],
            );
            match session.shape {
                Shape::Clusters {
                    events_per_hour,
                    size,
                } => {
                    let hours = (session.end - session.start) as f64 / HOUR_MS as f64;
                    let clusters = rng.poisson(events_per_hour * hours / size);
                    for _ in 0..clusters {
                        let mut at = session.start
                            + (rng.f64() * (session.end - session.start) as f64) as i64;
                        if persona.delegation > 0.0 && rng.chance(persona.delegation) {
                            out.push(self.delegation(nhi, &mut rng, at));
                        }
                        let calls = rng.geometric(size);
                        let Some(primary) = pick_op(persona, &mut rng, at) else {
                            continue;
                        };
                        for _ in 0..calls {
                            let op = if rng.chance(0.7) {
                                Some(primary)
                            } else {
                                pick_op(persona, &mut rng, at)
                            };
                            if let Some(op) = op {
                                out.push(self.action(nhi, &mut rng, at, op));
                            }
                            at += (rng.exponential(6.0) * 1000.0) as i64 + 50;
                        }
                    }
                }
                Shape::Run { count } => {
                    let span = (session.end - session.start).max(1) as f64;
                    let mut times: Vec<i64> = (0..count)
                        .map(|_| session.start + (rng.f64() * span) as i64)
                        .collect();
                    times.sort_unstable();
                    for at in times {
                        if let Some(op) = pick_op(persona, &mut rng, at) {
                            out.push(self.action(nhi, &mut rng, at, op));
                        }
                    }
                }
            }
        }
    }

    fn interactive_sessions(&self, nhi: usize, local_day: i64, out: &mut Vec<Session>) {
        let persona = &self.personas[nhi];
        let Schedule::Interactive {
            tz_hours,
            start_hour,
            length_hours,
            tasks_per_hour,
            task_size,
        } = persona.schedule
        else {
            return;
        };
        let mut rng = Rng::new(self.config.seed, &[tag::DAY, nhi as u64, local_day as u64]);
        // Local midnight, in UTC.
        let midnight = START_MS + local_day * DAY_MS - tz_hours * HOUR_MS;
        let at = |hour: f64| midnight + (hour * HOUR_MS as f64) as i64;
        let growth = persona.growth_at(midnight);
        let rate = tasks_per_hour * task_size * growth * rng.lognormal(1.0, 0.3);
        let clusters = |events_per_hour: f64| Shape::Clusters {
            events_per_hour,
            size: task_size,
        };
        let weekday = local_day.rem_euclid(7) < 5;
        if weekday {
            if !rng.chance(0.05) {
                let start = start_hour + 0.35 * rng.normal();
                let end = start + length_hours + 0.5 * rng.normal();
                let (lunch, back) = (12.0 + 0.3 * rng.normal(), 13.0 + 0.3 * rng.normal());
                if start < lunch && back < end {
                    out.push(Session {
                        start: at(start),
                        end: at(lunch),
                        shape: clusters(rate),
                    });
                    out.push(Session {
                        start: at(lunch),
                        end: at(back),
                        shape: clusters(rate * 0.4),
                    });
                    out.push(Session {
                        start: at(back),
                        end: at(end),
                        shape: clusters(rate),
                    });
                } else if start < end {
                    out.push(Session {
                        start: at(start),
                        end: at(end),
                        shape: clusters(rate),
                    });
                }
            }
            if rng.chance(0.03) {
                let start = rng.range(19.5, 21.5);
                out.push(Session {
                    start: at(start),
                    end: at(start + rng.range(0.5, 1.5)),
                    shape: clusters(rate * 0.6),
                });
            }
        } else if rng.chance(0.03) {
            let start = rng.range(10.0, 16.0);
            out.push(Session {
                start: at(start),
                end: at(start + rng.range(1.0, 3.0)),
                shape: clusters(rate * 0.7),
            });
        }
    }

    fn always_on_sessions(&self, nhi: usize, day: u32, out: &mut Vec<Session>) {
        let persona = &self.personas[nhi];
        let Schedule::AlwaysOn {
            tz_hours,
            events_per_hour,
            amplitude,
            weekend,
            cluster,
        } = persona.schedule
        else {
            return;
        };
        let mut rng = Rng::new(self.config.seed, &[tag::DAY, nhi as u64, u64::from(day)]);
        let day_start = START_MS + i64::from(day) * DAY_MS;
        let factor = rng.lognormal(1.0, 0.15) * persona.growth_at(day_start);
        for hour in 0..24i64 {
            let local = (hour + tz_hours).rem_euclid(24) as f64;
            let local_day = (i64::from(day) * 24 + hour + tz_hours).div_euclid(24);
            let weekend_factor = if local_day.rem_euclid(7) >= 5 {
                weekend
            } else {
                1.0
            };
            let diurnal = 1.0 + amplitude * (std::f64::consts::TAU * (local - 14.0) / 24.0).cos();
            out.push(Session {
                start: day_start + hour * HOUR_MS,
                end: day_start + (hour + 1) * HOUR_MS,
                shape: Shape::Clusters {
                    events_per_hour: events_per_hour * diurnal * weekend_factor * factor,
                    size: cluster,
                },
            });
        }
    }

    /// Batch and weekly runs of UTC day `day`.
    fn run_sessions(&self, nhi: usize, day: i64, out: &mut Vec<Session>) {
        let persona = &self.personas[nhi];
        let seed = self.config.seed;
        let skipped = |day: i64, run: u32| -> bool {
            day >= 0
                && Rng::new(seed, &[tag::RUN, nhi as u64, day as u64, u64::from(run), 1])
                    .chance(0.02)
        };
        let midnight = START_MS + day * DAY_MS;
        match persona.schedule {
            Schedule::Batch {
                runs_per_day,
                offset_minutes,
                duration_minutes,
                events_per_run,
                weekdays_only,
            } => {
                if weekdays_only && day.rem_euclid(7) >= 5 {
                    return;
                }
                let spacing = 1440.0 / f64::from(runs_per_day);
                for run in 0..runs_per_day {
                    if skipped(day, run) {
                        continue;
                    }
                    let mut rng =
                        Rng::new(seed, &[tag::RUN, nhi as u64, day as u64, u64::from(run), 2]);
                    // The run before was skipped: this one catches up.
                    let (previous_day, previous_run) = if run == 0 {
                        (
                            day - if weekdays_only && day.rem_euclid(7) == 0 {
                                3
                            } else {
                                1
                            },
                            runs_per_day - 1,
                        )
                    } else {
                        (day, run - 1)
                    };
                    let catch_up: f64 = if skipped(previous_day, previous_run) {
                        2.0
                    } else {
                        1.0
                    };
                    let start = midnight
                        + ((offset_minutes
                            + spacing * f64::from(run)
                            + rng.range(-5.0, 5.0).max(-offset_minutes))
                            * MINUTE_MS as f64) as i64;
                    let duration = duration_minutes * rng.range(0.8, 1.25) * catch_up.sqrt();
                    let count = events_per_run
                        * persona.growth_at(start)
                        * rng.lognormal(1.0, 0.25)
                        * catch_up;
                    out.push(Session {
                        start,
                        end: start + (duration * MINUTE_MS as f64) as i64,
                        shape: Shape::Run {
                            count: rng.poisson(count).max(1),
                        },
                    });
                }
            }
            Schedule::Weekly {
                weekday,
                offset_minutes,
                duration_minutes,
                events_per_run,
            } => {
                if day.rem_euclid(7) != i64::from(weekday) {
                    return;
                }
                let mut rng = Rng::new(seed, &[tag::RUN, nhi as u64, day as u64, 0, 2]);
                let start =
                    midnight + ((offset_minutes + rng.range(0.0, 5.0)) * MINUTE_MS as f64) as i64;
                let count = events_per_run * persona.growth_at(start) * rng.lognormal(1.0, 0.2);
                out.push(Session {
                    start,
                    end: start
                        + (duration_minutes * rng.range(0.8, 1.25) * MINUTE_MS as f64) as i64,
                    shape: Shape::Run {
                        count: rng.poisson(count).max(1),
                    },
                });
            }
            _ => {}
        }
    }

    /// An action by the NHI with its usual everything.
    fn action(&self, nhi: usize, rng: &mut Rng, at: i64, op: usize) -> Event {
        let persona = &self.personas[nhi];
        let usage = &persona.ops[op];
        let def = &SERVICES[usage.service];
        let resource = self.usual_resource(persona, rng, usage);
        let outcome = if rng.chance(persona.refusal) {
            if rng.chance(0.8) {
                Outcome::Denied
            } else {
                Outcome::Refused
            }
        } else {
            Outcome::Allowed
        };
        Event {
            nhi: nhi as u32,
            at: timestamp(at),
            kind: ObservationKind::Action,
            service: def.name,
            operation: def.ops[usage.op].name,
            resource,
            outcome,
            source: Some(usual_source(persona, rng)),
            user_agent: persona.user_agent_at(at),
            environment: ENVIRONMENTS[persona.environment],
            on_behalf_of: persona.person_at(nhi, at),
            attack: None,
            op: op as u16,
        }
    }

    fn usual_resource(&self, persona: &Persona, rng: &mut Rng, usage: &OpUse) -> Resource {
        if persona.flat {
            return Resource::Flat(rng.next_u64());
        }
        let def = &SERVICES[usage.service];
        let prefix = rng
            .weighted(usage.prefixes.iter().map(|(_, w)| *w))
            .map_or(0, |i| usage.prefixes[i].0);
        let id = if persona.fresh_ids {
            rng.next_u64() as u32
        } else {
            (rng.f64().powi(3) * 200.0) as u32
        };
        Resource::Path(def.prefixes[prefix], id)
    }

    fn delegation(&self, nhi: usize, rng: &mut Rng, at: i64) -> Event {
        let persona = &self.personas[nhi];
        let delegatee = rng
            .weighted(persona.delegatees.iter().map(|(_, w)| *w))
            .map_or(0, |i| persona.delegatees[i].0);
        Event {
            nhi: nhi as u32,
            at: timestamp(at),
            kind: ObservationKind::Delegation,
            service: DELEGATION_SERVICE,
            operation: DELEGATION_OPERATION,
            resource: Resource::Nhi(delegatee),
            outcome: Outcome::Allowed,
            source: Some(usual_source(persona, rng)),
            user_agent: persona.user_agent_at(at),
            environment: ENVIRONMENTS[persona.environment],
            on_behalf_of: persona.person_at(nhi, at),
            attack: None,
            op: NO_OP,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Attacks.

    /// Draws the victims, once the warm-up is known: `attack_share` of the fleet, the types in
    /// turn, each on an NHI that probation has let go by then and that the type can apply to.
    fn plan_attacks(&mut self) {
        let mut rng = Rng::new(self.config.seed, &[tag::VICTIMS]);
        let count = (self.config.attack_share * self.personas.len() as f64).round() as usize;
        let mut order: Vec<u32> = (0..self.personas.len() as u32).collect();
        rng.shuffle(&mut order);
        let mut used = vec![false; self.personas.len()];
        let days = self.config.days.max(1);
        let mut last_service = 0;
        for n in 0..count {
            let kind = AttackKind::ALL[n % AttackKind::ALL.len()];
            let victim = order
                .iter()
                .copied()
                .find(|&nhi| !used[nhi as usize] && self.eligible(nhi as usize, kind));
            let Some(nhi) = victim else { continue };
            used[nhi as usize] = true;
            let persona = &self.personas[nhi as usize];
            // Spread evenly over the evaluated days (but the last three, so that a victim that
            // rests at weekends is active after), so that two attacks seldom fall on the same
            // day: in a fleet, attacks are rare and independent, and two at once would look
            // alike to the fleet's counts of recent take-ups (see `Fleet`) only because the
            // simulation packs so many into two weeks. A weekly job's attack is left a week to
            // meet its next run.
            let span = if days > 6 { days - 3 } else { days };
            let mut day = ((n as f64 + rng.f64()) * f64::from(span) / count as f64) as u32;
            if persona.archetype == Archetype::Weekly && days > 7 && day >= days - 7 {
                day -= 7;
            }
            let day = self.config.warmup_days + day.min(days - 1);
            let hour = if kind == AttackKind::OffHours {
                let quiet = quiet_hours(persona.warm_hours_of_day);
                quiet[rng.index(quiet.len())]
            } else {
                0
            };
            // New services in turn, the victim's own skipped.
            let service = if kind == AttackKind::NewService {
                let own = persona.services();
                let choices: Vec<usize> = SERVICES
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| s.class == Class::Sensitive && !own.contains(i))
                    .map(|(i, _)| i)
                    .collect();
                let service = choices
                    .iter()
                    .copied()
                    .find(|&s| s > last_service)
                    .unwrap_or(choices[0]);
                last_service = service;
                service
            } else {
                0
            };
            self.pending[nhi as usize] = Some(self.attacks.len());
            self.attacks.push(Attack {
                kind,
                nhi,
                archetype: persona.archetype,
                day,
                injected: false,
                events: 0,
                hour,
                service,
            });
        }
    }

    fn eligible(&self, nhi: usize, kind: AttackKind) -> bool {
        let persona = &self.personas[nhi];
        if persona.warm_events < self.min_warmup_events.max(1) {
            return false;
        }
        match kind {
            AttackKind::ExfiltrationBurst => persona
                .ops
                .iter()
                .any(|op| SERVICES[op.service].ops[op.op].read && op.warm_events > 0),
            AttackKind::OffHours => !quiet_hours(persona.warm_hours_of_day).is_empty(),
            _ => true,
        }
    }

    /// Injects attack `index` on `day` if it can be: anchored at one of the victim's own events
    /// of the day (its usual hours), else left for a later day.
    fn inject(&mut self, index: usize, day: u32, first: usize, out: &mut Vec<Event>) {
        let attack = self.attacks[index].clone();
        let nhi = attack.nhi as usize;
        let mut rng = Rng::new(self.config.seed, &[tag::ATTACK, index as u64]);
        let day_start = START_MS + i64::from(day) * DAY_MS;
        let anchor = if attack.kind == AttackKind::OffHours {
            day_start
                + i64::from(attack.hour) * HOUR_MS
                + (rng.range(0.0, 15.0) * MINUTE_MS as f64) as i64
        } else {
            let own: Vec<i64> = out[first..]
                .iter()
                .filter(|e| e.kind == ObservationKind::Action)
                .map(|e| e.at.unix_millis())
                .collect();
            if own.is_empty() {
                return;
            }
            own[rng.index(own.len())]
        };
        if anchor >= self.end_ms() {
            return;
        }
        let start = out.len();
        self.attack_events(&attack, &mut rng, anchor, out);
        for event in &mut out[start..] {
            event.attack = Some(index as u32);
            if attack.kind.uses_stolen_credential() {
                event.on_behalf_of = None;
            }
        }
        let events = (out.len() - start) as u32;
        self.pending[nhi] = None;
        let attack = &mut self.attacks[index];
        attack.injected = events > 0;
        attack.events = events;
    }

    fn attack_events(&self, attack: &Attack, rng: &mut Rng, anchor: i64, out: &mut Vec<Event>) {
        let nhi = attack.nhi as usize;
        let persona = &self.personas[nhi];
        let spread = |rng: &mut Rng, n: u64, minutes: f64| -> Vec<i64> {
            let mut times: Vec<i64> = (0..n)
                .map(|_| anchor + (rng.f64() * minutes * MINUTE_MS as f64) as i64)
                .collect();
            times.sort_unstable();
            times
        };
        // The operations it used in the warm-up, by weight.
        let usual_op = |rng: &mut Rng| -> usize {
            rng.weighted(persona.ops.iter().map(
                |op| {
                    if op.warm_events > 0 { op.weight } else { 0.0 }
                },
            ))
            .unwrap_or(0)
        };
        match attack.kind {
            AttackKind::NewService => {
                let def = &SERVICES[attack.service];
                let n = rng.range_u(5, 20);
                let minutes = rng.range(5.0, 30.0);
                for at in spread(rng, n, minutes) {
                    let op = def.ops[rng.index(def.ops.len().min(3))];
                    let prefix = def.prefixes[rng.index(def.prefixes.len())];
                    let usual = usual_op(rng);
                    let mut event = self.action(nhi, rng, at, usual);
                    event.service = def.name;
                    event.operation = op.name;
                    event.resource = Resource::Path(prefix, rng.below(50) as u32);
                    event.outcome = Outcome::Allowed;
                    event.op = NO_OP;
                    out.push(event);
                }
            }
            AttackKind::ExfiltrationBurst => {
                let op = (0..persona.ops.len())
                    .filter(|&i| {
                        let usage = &persona.ops[i];
                        SERVICES[usage.service].ops[usage.op].read && usage.warm_events > 0
                    })
                    .max_by_key(|&i| persona.ops[i].warm_events)
                    .unwrap_or(0);
                // The NHI's usual hourly rate, all its operations together.
                let hourly = persona.warm_events as f64 / persona.warm_hours.max(1) as f64;
                let n = (rng.range(10.0, 50.0) * hourly)
                    .ceil()
                    .clamp(20.0, 20_000.0) as u64;
                let minutes = rng.range(15.0, 55.0);
                for at in spread(rng, n, minutes) {
                    let mut event = self.action(nhi, rng, at, op);
                    event.outcome = Outcome::Allowed;
                    if let Resource::Path(prefix, _) = event.resource {
                        event.resource = Resource::Path(prefix, rng.next_u64() as u32);
                    }
                    out.push(event);
                }
            }
            AttackKind::OffHours => {
                let hourly = persona.warm_events as f64 / persona.warm_hours.max(1) as f64;
                let minutes = rng.range(20.0, 40.0);
                let n = (hourly * minutes / 60.0).round().clamp(5.0, 300.0) as u64;
                for at in spread(rng, n, minutes) {
                    let op = usual_op(rng);
                    out.push(self.action(nhi, rng, at, op));
                }
            }
            AttackKind::NewSource => {
                let own: Vec<[u8; 3]> = persona.sources.iter().map(|(s, _)| *s).collect();
                let network = loop {
                    let candidate = if rng.chance(0.5) {
                        [10, 200 + rng.below(50) as u8, rng.below(256) as u8]
                    } else {
                        [185, 220, 100 + rng.below(10) as u8]
                    };
                    if !own.contains(&candidate) {
                        break candidate;
                    }
                };
                let n = rng.range_u(10, 40);
                let minutes = rng.range(10.0, 60.0);
                for at in spread(rng, n, minutes) {
                    let op = usual_op(rng);
                    let mut event = self.action(nhi, rng, at, op);
                    event.source = Some(address(network, rng));
                    out.push(event);
                }
            }
            AttackKind::CredentialStuffing => {
                // Its own services first, then popular ones, three to five in all.
                let mut services = persona.services();
                rng.shuffle(&mut services);
                let wanted = rng.range_u(3, 5) as usize;
                services.truncate(wanted);
                let mut popular: Vec<usize> = SERVICES
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.class == Class::Common && s.popularity >= 4.0)
                    .map(|(i, _)| i)
                    .collect();
                rng.shuffle(&mut popular);
                for service in popular {
                    if services.len() >= wanted {
                        break;
                    }
                    if !services.contains(&service) {
                        services.push(service);
                    }
                }
                let n = rng.range_u(15, 60);
                let minutes = rng.range(2.0, 8.0);
                for at in spread(rng, n, minutes) {
                    let service = services[rng.index(services.len())];
                    let def = &SERVICES[service];
                    let own: Vec<usize> = (0..persona.ops.len())
                        .filter(|&i| persona.ops[i].service == service)
                        .collect();
                    let mut event = if own.is_empty() {
                        let usual = usual_op(rng);
                        let mut event = self.action(nhi, rng, at, usual);
                        event.service = def.name;
                        event.operation = def.ops[rng.index(def.ops.len())].name;
                        event.resource =
                            Resource::Path(def.prefixes[rng.index(def.prefixes.len())], 1);
                        event.op = NO_OP;
                        event
                    } else {
                        let op = own[rng.index(own.len())];
                        self.action(nhi, rng, at, op)
                    };
                    event.outcome = Outcome::Refused;
                    out.push(event);
                }
            }
            AttackKind::DelegationFanOut => {
                let n = rng.range_u(15, 40);
                let fleet = self.personas.len() as u64;
                let minutes = rng.range(10.0, 50.0);
                for at in spread(rng, n, minutes) {
                    let mut event = self.delegation(nhi, rng, at);
                    let mut delegatee = rng.below(fleet.max(2)) as u32;
                    if persona.delegatees.iter().any(|(d, _)| *d == delegatee)
                        || delegatee as usize == nhi
                    {
                        delegatee = (fleet + u64::from(delegatee)) as u32;
                    }
                    event.resource = Resource::Nhi(delegatee);
                    out.push(event);
                }
            }
            AttackKind::EnvironmentCrossing => {
                let other = (persona.environment + 1 + rng.index(ENVIRONMENTS.len() - 1))
                    % ENVIRONMENTS.len();
                let n = rng.range_u(5, 20);
                let minutes = rng.range(5.0, 30.0);
                for at in spread(rng, n, minutes) {
                    let op = usual_op(rng);
                    let mut event = self.action(nhi, rng, at, op);
                    event.environment = ENVIRONMENTS[other];
                    out.push(event);
                }
            }
        }
    }
}

impl Iterator for Generator {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.ready.next() {
                return Some(event);
            }
            if self.next_day >= self.total_days() {
                return None;
            }
            self.fill_day();
        }
    }
}

/// UTC hours of the day at which the NHI was never active in the warm-up, nor in the hour
/// before or after.
fn quiet_hours(mask: u32) -> Vec<u32> {
    (0..24u32)
        .filter(|&h| {
            let around = [(h + 23) % 24, h, (h + 1) % 24];
            around.iter().all(|&a| mask & (1 << a) == 0)
        })
        .collect()
}

fn pick_op(persona: &Persona, rng: &mut Rng, at: i64) -> Option<usize> {
    rng.weighted(
        persona
            .ops
            .iter()
            .map(|op| if op.from_ms <= at { op.weight } else { 0.0 }),
    )
}

fn usual_source(persona: &Persona, rng: &mut Rng) -> IpAddr {
    let network = rng
        .weighted(persona.sources.iter().map(|(_, w)| *w))
        .map_or([10, 0, 0], |i| persona.sources[i].0);
    address(network, rng)
}

fn address(network: [u8; 3], rng: &mut Rng) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        network[0],
        network[1],
        network[2],
        1 + rng.below(254) as u8,
    ))
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms).expect("simulated times lie in this century")
}

fn build_fleet(config: &SimulationConfig) -> (Vec<App>, Vec<Persona>) {
    let mut rng = Rng::new(config.seed, &[tag::APPS]);
    let common: Vec<usize> = SERVICES
        .iter()
        .enumerate()
        .filter(|(_, s)| s.class != Class::Rollout && s.popularity > 0.0)
        .map(|(i, _)| i)
        .collect();
    let pick_service = |rng: &mut Rng, taken: &[usize]| -> Option<usize> {
        rng.weighted(common.iter().map(|&i| {
            if taken.contains(&i) {
                0.0
            } else {
                SERVICES[i].popularity
            }
        }))
        .map(|k| common[k])
    };
    // Applications of 4 to 50 NHIs.
    let mut apps: Vec<App> = Vec::new();
    let mut assigned = 0;
    while assigned < config.nhis {
        let size = (rng.range_u(4, 50) as usize).min(config.nhis - assigned);
        let mut services = Vec::new();
        for _ in 0..rng.range_u(3, 8) {
            if let Some(s) = pick_service(&mut rng, &services) {
                services.push(s);
            }
        }
        let a = apps.len() as u8;
        let subnets = (0..rng.range_u(2, 4))
            .map(|k| {
                [
                    10,
                    a.wrapping_mul(3).wrapping_add(k as u8),
                    rng.below(256) as u8,
                ]
            })
            .collect();
        let environment = match rng.f64() {
            x if x < 0.7 => 0,
            x if x < 0.9 => 1,
            _ => 2,
        };
        apps.push(App {
            members: (assigned as u32..(assigned + size) as u32).collect(),
            services,
            subnets,
            user_agent: rng.index(USER_AGENTS.len()),
            environment,
        });
        assigned += size;
    }
    let mut personas = Vec::with_capacity(config.nhis);
    for app in &apps {
        for &nhi in &app.members {
            let mut rng = Rng::new(config.seed, &[tag::PERSONA, u64::from(nhi)]);
            let mut persona = new_persona(&mut rng, config, app, nhi, &pick_service);
            // From a stream of its own, so that adding people changed nothing else.
            if persona.archetype == Archetype::Interactive {
                let mut rng = Rng::new(config.seed, &[tag::PEOPLE, u64::from(nhi)]);
                persona.people = match rng.f64() {
                    x if x < 0.6 => 1,
                    x if x < 0.85 => 2,
                    _ => 3,
                };
            }
            personas.push(persona);
        }
    }
    (apps, personas)
}

fn new_persona(
    rng: &mut Rng,
    config: &SimulationConfig,
    app: &App,
    nhi: u32,
    pick_service: &dyn Fn(&mut Rng, &[usize]) -> Option<usize>,
) -> Persona {
    let archetype = match rng.f64() {
        x if x < 0.35 => Archetype::Interactive,
        x if x < 0.55 => Archetype::Batch,
        x if x < 0.90 => Archetype::AlwaysOn,
        _ => Archetype::Weekly,
    };
    const ZONES: [i64; 14] = [-8, -7, -6, -5, -4, -3, 0, 1, 2, 3, 5, 8, 9, 10];
    let schedule = match archetype {
        Archetype::Interactive => Schedule::Interactive {
            tz_hours: ZONES[rng.index(ZONES.len())],
            start_hour: (9.0 + 0.6 * rng.normal()).clamp(7.0, 11.0),
            length_hours: (8.5 + 0.7 * rng.normal()).clamp(6.0, 10.5),
            tasks_per_hour: rng.lognormal(3.0, 0.6),
            task_size: rng.range(3.0, 8.0),
        },
        Archetype::Batch => {
            let runs_per_day = match rng.f64() {
                x if x < 0.65 => 1,
                x if x < 0.80 => 2,
                x if x < 0.90 => 4,
                _ => 24,
            };
            let (duration_minutes, events_per_run) = match runs_per_day {
                1 => (rng.range(15.0, 90.0), rng.lognormal(600.0, 0.9)),
                2 | 4 => (rng.range(10.0, 60.0), rng.lognormal(200.0, 0.8)),
                _ => (rng.range(3.0, 15.0), rng.lognormal(30.0, 0.7)),
            };
            Schedule::Batch {
                runs_per_day,
                offset_minutes: rng.range(0.0, 1440.0 / f64::from(runs_per_day) - 1.0),
                duration_minutes,
                events_per_run: events_per_run.clamp(10.0, 20_000.0),
                weekdays_only: runs_per_day == 1 && rng.chance(0.25),
            }
        }
        Archetype::AlwaysOn => Schedule::AlwaysOn {
            tz_hours: ZONES[rng.index(ZONES.len())],
            events_per_hour: rng.lognormal(10.0, 1.1).clamp(0.5, 2000.0),
            amplitude: rng.range(0.2, 0.8),
            weekend: rng.range(0.3, 1.0),
            cluster: rng.range(1.0, 4.0),
        },
        Archetype::Weekly => Schedule::Weekly {
            weekday: if rng.chance(0.6) {
                0
            } else {
                rng.below(7) as u32
            },
            offset_minutes: rng.range(60.0, 480.0),
            duration_minutes: rng.range(30.0, 180.0),
            events_per_run: rng.lognormal(800.0, 0.6).clamp(150.0, 20_000.0),
        },
    };
    // 2 to 6 services, mostly the application's own.
    let mut services: Vec<usize> = Vec::new();
    let wanted = rng.range_u(2, 6) as usize;
    let mut own = app.services.clone();
    rng.shuffle(&mut own);
    for service in own {
        if services.len() >= wanted {
            break;
        }
        if rng.chance(0.85) {
            services.push(service);
        }
    }
    while services.len() < wanted {
        match pick_service(rng, &services) {
            Some(service) => services.push(service),
            None => break,
        }
    }
    // 3 to 15 operations over them, at least one each, with Zipf frequencies.
    let wanted_ops = (rng.range_u(3, 15) as usize).max(services.len());
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    let mut available: Vec<(usize, usize)> = services
        .iter()
        .flat_map(|&s| (0..SERVICES[s].ops.len()).map(move |o| (s, o)))
        .collect();
    rng.shuffle(&mut available);
    for &service in &services {
        if let Some(k) = available.iter().position(|(s, _)| *s == service) {
            pairs.push(available.remove(k));
        }
    }
    while pairs.len() < wanted_ops && !available.is_empty() {
        pairs.push(available.remove(0));
    }
    rng.shuffle(&mut pairs);
    let exponent = rng.range(0.8, 1.4);
    let ops = pairs
        .into_iter()
        .enumerate()
        .map(|(rank, (service, op))| {
            let pool = SERVICES[service].prefixes.len();
            let mut prefixes: Vec<(usize, f64)> = Vec::new();
            for k in 0..rng.range_u(1, 3) {
                let p = rng.index(pool);
                if !prefixes.iter().any(|(q, _)| *q == p) {
                    prefixes.push((p, 1.0 / (k + 1) as f64));
                }
            }
            OpUse {
                service,
                op,
                weight: 1.0 / ((rank + 1) as f64).powf(exponent),
                prefixes,
                from_ms: 0,
                warm_events: 0,
                warm_hours: 0,
                last_hour: -1,
            }
        })
        .collect();
    // 1 to 3 of the application's networks, the first the busiest.
    let mut subnets = app.subnets.clone();
    rng.shuffle(&mut subnets);
    subnets.truncate(rng.range_u(1, 3) as usize);
    let sources = subnets
        .into_iter()
        .enumerate()
        .map(|(k, s)| {
            // The others from as busy as the first to a rarely used fallback.
            let weight = if k == 0 {
                1.0
            } else {
                rng.range(0.01f64.ln(), 0.0).exp()
            };
            (s, weight)
        })
        .collect();
    let total_ms = i64::from(config.warmup_days + config.days) * DAY_MS;
    let upgrade_ms = if rng.chance(0.25) {
        START_MS + (rng.f64() * total_ms as f64) as i64
    } else {
        i64::MAX
    };
    let versions = USER_AGENTS[app.user_agent].len();
    let delegates = matches!(archetype, Archetype::Interactive | Archetype::AlwaysOn)
        && app.members.len() > 1
        && rng.chance(0.2);
    let delegatees = if delegates {
        let mut others: Vec<u32> = app.members.iter().copied().filter(|&m| m != nhi).collect();
        rng.shuffle(&mut others);
        others.truncate(rng.range_u(1, 4) as usize);
        others
            .into_iter()
            .enumerate()
            .map(|(k, d)| (d, 1.0 / (k + 1) as f64))
            .collect()
    } else {
        Vec::new()
    };
    Persona {
        archetype,
        schedule,
        ops,
        sources,
        user_agent: app.user_agent,
        version: rng.index(versions - 1),
        upgrade_ms,
        environment: app.environment,
        refusal: (rng.range(0.005f64.ln(), 0.02f64.ln())).exp(),
        fresh_ids: rng.chance(0.4),
        flat: rng.chance(0.05),
        delegatees,
        delegation: if delegates { rng.range(0.05, 0.2) } else { 0.0 },
        people: 0,
        growth: rng.range(0.0, 0.06),
        warm_events: 0,
        warm_hours_of_day: 0,
        warm_hours: 0,
        last_hour: -1,
    }
}

// ---------------------------------------------------------------------------------------------
// The run and its report.

/// One attack type's results.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttackResult {
    pub kind: &'static str,
    pub injected: u32,
    /// Attacks with at least one event out of baseline after probation.
    pub detected: u32,
    pub recall: f64,
    /// The lowest, over the attacks, of the highest score among an attack's events: how close
    /// the weakest attack came to the threshold (named detections aside).
    pub weakest_score: f32,
    /// The highest score of each attack's events, lowest first.
    #[serde(skip)]
    pub scores: Vec<f32>,
}

/// How the alerts of one finding kind (and main feature, for anomalies) split.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertCount {
    /// `kind` or `anomaly:feature`.
    pub finding: String,
    pub true_alerts: u64,
    pub false_alerts: u64,
}

/// A missed attack, for whoever tunes the detector.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Miss {
    pub kind: &'static str,
    pub nhi: u32,
    pub archetype: &'static str,
    pub events: u32,
    /// The highest score among its events, and that event's bits.
    pub best_score: f32,
    pub best_bits: String,
    /// The attack's events that were scored while the profile was still in probation.
    pub in_probation: u32,
}

/// A false alert, for whoever tunes the detector.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FalseAlert {
    pub nhi: u32,
    pub archetype: &'static str,
    pub at: Timestamp,
    pub finding: String,
    pub score: f32,
    pub event: String,
    /// Each feature's bits, as `feature=bits`.
    pub bits: String,
}

/// What a simulation found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimulationReport {
    pub nhis: usize,
    pub days: u32,
    pub warmup_days: u32,
    pub seed: u64,
    pub alert_bits: f32,
    /// NHI-days evaluated (after the warm-up).
    pub nhi_days: u64,
    /// Events scored, warm-up included.
    pub events: u64,
    pub evaluated_events: u64,
    pub attacks: Vec<AttackResult>,
    pub alerts: u64,
    pub true_alerts: u64,
    pub false_alerts: u64,
    pub precision: f64,
    pub false_alerts_per_1000_nhi_days: f64,
    pub alerts_by_finding: Vec<AlertCount>,
    /// False alerts by finding and the archetype of the NHI, as `finding archetype`.
    pub false_alerts_by_archetype: Vec<(String, u64)>,
    /// NHIs still in probation when the evaluation starts.
    pub in_probation_at_evaluation: usize,
    pub profile_bytes_in_memory: usize,
    /// The largest encoded profile at the end.
    pub profile_bytes_encoded: usize,
    pub misses: Vec<Miss>,
    /// The first false alerts, in time order.
    pub false_alert_samples: Vec<FalseAlert>,
    /// Every false alert's finding and score, for tuning.
    #[serde(skip)]
    pub false_alert_scores: Vec<(String, f32)>,
}

const FALSE_ALERT_SAMPLES: usize = 40;

/// Simulates the fleet described by `config`, scores every event with `settings`, and counts.
pub fn run(config: &SimulationConfig, settings: &Settings) -> SimulationReport {
    let mut generator = Generator::new(config, settings.probation_events);
    let fleet = Fleet::new();
    let start = Generator::start();
    let mut profiles: Vec<Profile> = (0..generator.nhis() as u32)
        .map(|nhi| {
            let mut profile = Profile::new(start, Some(generator.environment(nhi)));
            profile.set_peer_group(&format!("app-{}", generator.application(nhi)));
            profile
        })
        .collect();
    let evaluation_start = START_MS + i64::from(config.warmup_days) * DAY_MS;
    let mut in_probation_at_evaluation = None;
    let mut events = 0u64;
    let mut evaluated_events = 0u64;
    let mut detected: HashMap<u32, Trace> = HashMap::new();
    let mut open: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut by_finding: HashMap<String, (u64, u64)> = HashMap::new();
    let mut by_archetype: HashMap<String, u64> = HashMap::new();
    let mut false_alert_scores = Vec::new();
    let (mut alerts, mut true_alerts, mut false_alerts) = (0u64, 0u64, 0u64);
    let mut samples = Vec::new();
    let mut resource = String::new();
    let mut person = String::new();
    let grants = generator.grants().to_vec();
    let mut next_grant = 0;
    while let Some(event) = generator.next() {
        while let Some(grant) = grants.get(next_grant)
            && grant.at <= event.at
        {
            profiles[grant.nhi as usize].expect_service(grant.service, grant.at);
            next_grant += 1;
        }
        let at = event.at.unix_millis();
        if in_probation_at_evaluation.is_none() && at >= evaluation_start {
            let at_start = timestamp(evaluation_start);
            in_probation_at_evaluation = Some(
                profiles
                    .iter()
                    .filter(|p| p.in_probation(at_start, settings))
                    .count(),
            );
        }
        resource.clear();
        event.resource.write(&mut resource);
        person.clear();
        event.write_person(&mut person);
        let observation = event.observation(&resource, &person);
        let assessment = profiles[event.nhi as usize].observe(&observation, &fleet, settings);
        events += 1;
        let alerting = assessment.out_of_baseline && !assessment.in_probation;
        if let Some(attack) = event.attack {
            let trace = detected.entry(attack).or_default();
            trace.detected |= alerting;
            if assessment.score > trace.best_score {
                trace.best_score = assessment.score;
                trace.best_bits = bits_text(&assessment);
            }
            trace.in_probation += u32::from(assessment.in_probation);
        }
        if at < evaluation_start {
            continue;
        }
        evaluated_events += 1;
        if !alerting {
            continue;
        }
        let kind = assessment.finding_kind();
        let feature = if kind == "anomaly" {
            assessment.main_feature()
        } else {
            None
        };
        if !open.insert(crate::finding::departure_key(
            &assessment,
            &event.nhi.to_string(),
            &observation,
        )) {
            continue;
        }
        alerts += 1;
        let finding = match feature {
            Some(feature) => format!("{kind}:{}", feature.code()),
            None => kind.to_owned(),
        };
        let counts = by_finding.entry(finding.clone()).or_default();
        if event.attack.is_some() {
            true_alerts += 1;
            counts.0 += 1;
        } else {
            false_alerts += 1;
            counts.1 += 1;
            false_alert_scores.push((finding.clone(), assessment.score));
            *by_archetype
                .entry(format!(
                    "{finding} {}",
                    generator.archetype(event.nhi).code()
                ))
                .or_default() += 1;
            if samples.len() < FALSE_ALERT_SAMPLES {
                samples.push(false_alert(
                    &generator,
                    &event,
                    &resource,
                    finding,
                    &assessment,
                ));
            }
        }
    }
    let attacks = AttackKind::ALL
        .iter()
        .map(|&kind| {
            let of_kind = generator
                .attacks()
                .iter()
                .enumerate()
                .filter(|(_, a)| a.kind == kind && a.injected);
            let injected = of_kind.clone().count() as u32;
            let weakest_score = of_kind
                .clone()
                .map(|(i, _)| detected.get(&(i as u32)).map_or(0.0, |t| t.best_score))
                .fold(f32::INFINITY, f32::min);
            let found = of_kind
                .clone()
                .filter(|(i, _)| detected.get(&(*i as u32)).is_some_and(|d| d.detected))
                .count() as u32;
            AttackResult {
                kind: kind.code(),
                injected,
                detected: found,
                recall: if injected == 0 {
                    0.0
                } else {
                    f64::from(found) / f64::from(injected)
                },
                weakest_score: if injected == 0 { 0.0 } else { weakest_score },
                scores: {
                    let mut scores: Vec<f32> = of_kind
                        .clone()
                        .map(|(i, _)| detected.get(&(i as u32)).map_or(0.0, |t| t.best_score))
                        .collect();
                    scores.sort_by(f32::total_cmp);
                    scores
                },
            }
        })
        .collect();
    let misses = generator
        .attacks()
        .iter()
        .enumerate()
        .filter(|(i, a)| a.injected && !detected.get(&(*i as u32)).is_some_and(|d| d.detected))
        .map(|(i, a)| {
            let trace = detected.get(&(i as u32));
            Miss {
                kind: a.kind.code(),
                nhi: a.nhi,
                archetype: a.archetype.code(),
                events: a.events,
                best_score: trace.map_or(0.0, |t| t.best_score),
                best_bits: trace.map(|t| t.best_bits.clone()).unwrap_or_default(),
                in_probation: trace.map_or(0, |t| t.in_probation),
            }
        })
        .collect();
    let mut alerts_by_finding: Vec<AlertCount> = by_finding
        .into_iter()
        .map(|(finding, (t, f))| AlertCount {
            finding,
            true_alerts: t,
            false_alerts: f,
        })
        .collect();
    alerts_by_finding.sort_by(|a, b| a.finding.cmp(&b.finding));
    let mut false_alerts_by_archetype: Vec<(String, u64)> = by_archetype.into_iter().collect();
    false_alerts_by_archetype.sort();
    let nhi_days = config.nhis as u64 * u64::from(config.days);
    SimulationReport {
        nhis: config.nhis,
        days: config.days,
        warmup_days: config.warmup_days,
        seed: config.seed,
        alert_bits: settings.alert_bits,
        nhi_days,
        events,
        evaluated_events,
        attacks,
        alerts,
        true_alerts,
        false_alerts,
        precision: if alerts == 0 {
            1.0
        } else {
            true_alerts as f64 / alerts as f64
        },
        false_alerts_per_1000_nhi_days: if nhi_days == 0 {
            0.0
        } else {
            false_alerts as f64 * 1000.0 / nhi_days as f64
        },
        alerts_by_finding,
        false_alerts_by_archetype,
        in_probation_at_evaluation: in_probation_at_evaluation.unwrap_or(profiles.len()),
        profile_bytes_in_memory: std::mem::size_of::<Profile>(),
        profile_bytes_encoded: profiles.iter().map(|p| p.encode().len()).max().unwrap_or(0),
        misses,
        false_alert_samples: samples,
        false_alert_scores,
    }
}

fn false_alert(
    generator: &Generator,
    event: &Event,
    resource: &str,
    finding: String,
    assessment: &Assessment,
) -> FalseAlert {
    FalseAlert {
        nhi: event.nhi,
        archetype: generator.archetype(event.nhi).code(),
        at: event.at,
        finding,
        score: assessment.score,
        event: format!(
            "{:?} {}:{} {} {:?} {} {}",
            event.kind,
            event.service,
            event.operation,
            resource,
            event.outcome,
            event.source.map(|s| s.to_string()).unwrap_or_default(),
            event.environment
        ),
        bits: bits_text(assessment),
    }
}

/// Each feature's bits, as `feature=bits`, largest first.
fn bits_text(assessment: &Assessment) -> String {
    let mut bits = String::new();
    for (feature, value) in assessment.contributions() {
        let _ = write!(bits, "{}={value:.1} ", feature.code());
    }
    for detection in assessment.detections.iter() {
        let _ = write!(bits, "{} ", detection.code());
    }
    bits.trim_end().to_owned()
}

/// What became of one attack's events.
#[derive(Default)]
struct Trace {
    detected: bool,
    best_score: f32,
    best_bits: String,
    in_probation: u32,
}

/// The bars of the issue: recall of at least 0.95 on every attack type, at most one false
/// alert per 1,000 NHI-days.
pub const MIN_RECALL: f64 = 0.95;
pub const MAX_FALSE_ALERTS_PER_1000_NHI_DAYS: f64 = 1.0;

impl SimulationReport {
    /// `Ok` when every bar is met, else what fell short.
    pub fn meets_bars(&self) -> Result<(), String> {
        let mut failures = Vec::new();
        for attack in &self.attacks {
            if attack.injected == 0 {
                failures.push(format!("no {} attack was injected", attack.kind));
            } else if attack.recall < MIN_RECALL {
                failures.push(format!(
                    "recall of {} is {:.3} ({} of {}), below {MIN_RECALL}",
                    attack.kind, attack.recall, attack.detected, attack.injected
                ));
            }
        }
        if self.false_alerts_per_1000_nhi_days > MAX_FALSE_ALERTS_PER_1000_NHI_DAYS {
            failures.push(format!(
                "{:.2} false alerts per 1,000 NHI-days, above {MAX_FALSE_ALERTS_PER_1000_NHI_DAYS}",
                self.false_alerts_per_1000_nhi_days
            ));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    /// The report as a plain-text table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} NHIs x {} days evaluated (after {} days of warm-up), seed {}, alert at {} bits",
            self.nhis, self.days, self.warmup_days, self.seed, self.alert_bits
        );
        let _ = writeln!(
            out,
            "{} events scored ({} in the evaluated days), {} NHI-days; {} NHIs still in probation at the start",
            self.events, self.evaluated_events, self.nhi_days, self.in_probation_at_evaluation
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<22} {:>8} {:>8} {:>7} {:>8}",
            "attack", "injected", "detected", "recall", "weakest"
        );
        for attack in &self.attacks {
            let _ = writeln!(
                out,
                "{:<22} {:>8} {:>8} {:>7.3} {:>8.1}",
                attack.kind, attack.injected, attack.detected, attack.recall, attack.weakest_score
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "alerts {} (true {}, false {}), precision {:.3}",
            self.alerts, self.true_alerts, self.false_alerts, self.precision
        );
        let _ = writeln!(
            out,
            "false alerts per 1,000 NHI-days: {:.3}",
            self.false_alerts_per_1000_nhi_days
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<28} {:>6} {:>6}", "finding", "true", "false");
        for count in &self.alerts_by_finding {
            let _ = writeln!(
                out,
                "{:<28} {:>6} {:>6}",
                count.finding, count.true_alerts, count.false_alerts
            );
        }
        if !self.false_alerts_by_archetype.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "{:<40} {:>6}", "false alerts by archetype", "false");
            for (key, count) in &self.false_alerts_by_archetype {
                let _ = writeln!(out, "{key:<40} {count:>6}");
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "profile: {} bytes in memory, at most {} bytes encoded",
            self.profile_bytes_in_memory, self.profile_bytes_encoded
        );
        out
    }
}
