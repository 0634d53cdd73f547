//! A replay of real CloudTrail records through behaviour baselining: the Invictus IR capture
//! of a Stratus Red Team run, about 2,900 records over 55 minutes, committed as
//! `testdata/cloudtrail-invictus/records.json.gz` (see its README for the source).
//!
//! One profile per principal (`userIdentity.arn`, else its `type`, else the service that
//! invoked the call), its events in `eventTime` order; the service is `eventSource` without
//! `.amazonaws.com`, the operation `eventName`, the resource the obvious request parameter
//! (a bucket, instance, role, user, secret, ...) or none, the source `sourceIPAddress` when it
//! is an address, the user agent `userAgent`. A record with an `errorCode` is a refusal:
//! `Refused` when the credential itself was refused (an invalid, expired or unsigned token),
//! else `Denied`.
//!
//! The capture is 55 minutes long, so probation cannot be counted in days: these settings end
//! it after a principal's first 5 events (`probation_days: 0`, `probation_events: 5`), with
//! the default alert threshold. Everything is still scored in probation; `out_of_baseline` is
//! reported whether or not probation would have kept it from being enforced.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::net::IpAddr;

use custos_core::Timestamp;
use custos_core::baseline::{
    Feature, Fleet, Observation, ObservationKind, Outcome, Profile, Settings,
};
use serde_json::Value;

const RECORDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/cloudtrail-invictus/records.json.gz"
);

struct Record {
    at: Timestamp,
    principal: String,
    service: String,
    operation: String,
    resource: String,
    outcome: Outcome,
    source: Option<IpAddr>,
    user_agent: Option<String>,
}

impl Record {
    fn observation(&self) -> Observation<'_> {
        Observation {
            at: self.at,
            kind: ObservationKind::Action,
            service: &self.service,
            operation: &self.operation,
            resource: &self.resource,
            outcome: self.outcome,
            source: self.source,
            user_agent: self.user_agent.as_deref(),
            environment: None,
        }
    }
}

/// Request parameters that name what a call acts on, in order of preference.
const RESOURCE_PARAMETERS: &[&str] = &[
    "bucketName",
    "instanceId",
    "roleName",
    "userName",
    "policyArn",
    "secretId",
    "keyId",
    "functionName",
    "volumeId",
    "snapshotId",
    "groupName",
    "trailName",
    "dBInstanceIdentifier",
    "name",
];

fn resource(parameters: Option<&Value>) -> String {
    let Some(Value::Object(parameters)) = parameters else {
        return String::new();
    };
    for key in RESOURCE_PARAMETERS {
        if let Some(Value::String(value)) = parameters.get(*key) {
            return value.clone();
        }
    }
    // EC2's `instancesSet.items[0].instanceId`.
    parameters
        .get("instancesSet")
        .and_then(|set| set.get("items"))
        .and_then(|items| items.get(0))
        .and_then(|item| item.get("instanceId"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_default()
}

fn outcome(error: Option<&str>) -> Outcome {
    match error {
        None => Outcome::Allowed,
        Some(
            "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "AuthFailure"
            | "InvalidAccessKeyId"
            | "IncompleteSignature"
            | "UnrecognizedClientException",
        ) => Outcome::Refused,
        Some(_) => Outcome::Denied,
    }
}

fn principal(record: &Value) -> String {
    let identity = record.get("userIdentity");
    let field = |name: &str| {
        identity
            .and_then(|i| i.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    field("arn")
        .or_else(|| field("type"))
        .or_else(|| field("invokedBy").map(|by| format!("invoked by {by}")))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn read() -> Vec<Record> {
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(RECORDS).unwrap())
        .read_to_end(&mut text)
        .unwrap();
    let file: Value = serde_json::from_slice(&text).unwrap();
    let mut records = Vec::new();
    {
        for record in file["Records"].as_array().unwrap() {
            let text = |name: &str| record.get(name).and_then(Value::as_str);
            let Some(at) = text("eventTime").and_then(|t| Timestamp::parse_rfc3339(t).ok()) else {
                continue;
            };
            records.push(Record {
                at,
                principal: principal(record),
                service: text("eventSource")
                    .unwrap_or("")
                    .trim_end_matches(".amazonaws.com")
                    .to_owned(),
                operation: text("eventName").unwrap_or("").to_owned(),
                resource: resource(record.get("requestParameters")),
                outcome: outcome(text("errorCode")),
                source: text("sourceIPAddress").and_then(|s| s.parse().ok()),
                user_agent: text("userAgent").map(str::to_owned),
            });
        }
    }
    // Stable: records of the same second keep the order of their files.
    records.sort_by_key(|record| record.at);
    records
}

#[derive(Default)]
struct Summary {
    events: usize,
    first_calls: usize,
    first_calls_out: Vec<String>,
    /// For a Stratus Red Team principal, each first call with its score.
    first_call_scores: Vec<String>,
    out_of_baseline: usize,
    detections: BTreeMap<&'static str, usize>,
}

/// A short name for a principal: an assumed role's role name, a user's name.
fn short(principal: &str) -> &str {
    match principal.split_once('/') {
        Some((_, rest)) if principal.contains(":assumed-role/") => {
            rest.split('/').next().unwrap_or(rest)
        }
        Some((_, rest)) => rest,
        None => principal,
    }
}

#[test]
fn stratus_red_team_first_calls_are_scored() {
    let records = read();
    assert!(records.len() > 2000, "{} records", records.len());
    let settings = Settings {
        probation_days: 0,
        probation_events: 5,
        ..Settings::default()
    };
    let fleet = Fleet::new();
    let mut profiles: BTreeMap<String, Profile> = BTreeMap::new();
    let mut made: HashSet<(String, String, String)> = HashSet::new();
    let mut services: HashSet<(String, String)> = HashSet::new();
    let mut summaries: BTreeMap<String, Summary> = BTreeMap::new();
    for record in &records {
        let profile = profiles
            .entry(record.principal.clone())
            .or_insert_with(|| Profile::new(record.at, None));
        let assessment = profile.observe(&record.observation(), &fleet, &settings);
        let summary = summaries.entry(record.principal.clone()).or_default();
        summary.events += 1;
        summary.out_of_baseline += usize::from(assessment.out_of_baseline);
        for detection in assessment.detections.iter() {
            *summary.detections.entry(detection.code()).or_default() += 1;
        }
        let new_service = services.insert((record.principal.clone(), record.service.clone()));
        let first_call = made.insert((
            record.principal.clone(),
            record.service.clone(),
            record.operation.clone(),
        ));
        if !first_call {
            continue;
        }
        summary.first_calls += 1;
        if record.principal.contains("stratus-red-team") {
            // A first call is scored: by its operation's novelty, or, when the service is
            // new too, by the service's (the operation's novelty is implied by it).
            let operation = assessment.bits[Feature::ALL
                .iter()
                .position(|f| *f == Feature::Operation)
                .unwrap()];
            let service = assessment.bits[0];
            assert!(
                operation > 0.0 || (new_service && service > 0.0),
                "{} {}:{} not scored: {:?}",
                record.principal,
                record.service,
                record.operation,
                assessment.contributions()
            );
        }
        if record.principal.contains("stratus-red-team") {
            let parts: Vec<String> = assessment
                .contributions()
                .iter()
                .map(|(feature, bits)| format!("{}={bits:.1}", feature.code()))
                .collect();
            summary.first_call_scores.push(format!(
                "{}:{} {:.1} bits [{}]{}{}",
                record.service,
                record.operation,
                assessment.score,
                parts.join(" "),
                if assessment.out_of_baseline {
                    " out of baseline"
                } else {
                    ""
                },
                if assessment.in_probation {
                    " (in probation)"
                } else {
                    ""
                },
            ));
        }
        if assessment.out_of_baseline {
            let mut note = format!(
                "{}:{} ({:.1} bits",
                record.service, record.operation, assessment.score
            );
            for detection in assessment.detections.iter() {
                note.push_str(", ");
                note.push_str(detection.code());
            }
            if assessment.in_probation {
                note.push_str(", in probation");
            }
            note.push(')');
            summary.first_calls_out.push(note);
        }
    }

    println!(
        "CloudTrail replay: {} records, {} principals; probation: the first {} events",
        records.len(),
        summaries.len(),
        settings.probation_events
    );
    println!(
        "{:<48} {:>6} {:>11} {:>9} {:>5}",
        "principal", "events", "first calls", "flagged", "out"
    );
    for (principal, summary) in &summaries {
        println!(
            "{:<48} {:>6} {:>11} {:>9} {:>5}",
            short(principal),
            summary.events,
            summary.first_calls,
            summary.first_calls_out.len(),
            summary.out_of_baseline
        );
    }
    println!();
    for (principal, summary) in &summaries {
        if principal.contains("stratus-red-team") {
            println!("{}: first calls", short(principal));
            for note in &summary.first_call_scores {
                println!("  {note}");
            }
        } else if !summary.first_calls_out.is_empty() {
            println!(
                "{}: {} first calls out of baseline, e.g. {}",
                short(principal),
                summary.first_calls_out.len(),
                summary.first_calls_out[..summary.first_calls_out.len().min(3)].join("; ")
            );
        }
        for (detection, count) in &summary.detections {
            println!("  {detection}: {count} events");
        }
    }
}
