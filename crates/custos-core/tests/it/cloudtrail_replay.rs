//! A replay of real CloudTrail records through behaviour baselining: the Invictus IR capture
//! of a Stratus Red Team run, about 2,900 records over 55 minutes, committed as
//! `testdata/cloudtrail-invictus/records.json.gz` (see its README for the source).
//!
//! The records are read by the discovery reader (`formats::read(Format::CloudTrail, …)`), so
//! the replay sees what an import sees. One profile per principal: the reader's, which is
//! `userIdentity.arn` when there is one (an assumed role's session ARN, as before), else the
//! service that acted (`ec2.amazonaws.com`) or the type and name (`IAMUser/bert-jan`, a
//! sign-in step without an ARN). The small reader this test had keyed those last records by
//! type alone (`AWSService`, `IAMUser`); only the Stratus Red Team principals, which all have
//! an ARN, are asserted on, so nothing asserted depends on the difference. Events are taken in
//! `eventTime` order; the reader gives the service, operation, resource, outcome (`Refused`
//! for a refused credential, `Denied` for any other error), source and user agent.
//!
//! The capture is 55 minutes long, so probation cannot be counted in days: these settings end
//! it after a principal's first 5 events (`probation_days: 0`, `probation_events: 5`), with
//! the default alert threshold. Everything is still scored in probation; `out_of_baseline` is
//! reported whether or not probation would have kept it from being enforced.

use std::collections::{BTreeMap, HashSet};
use std::io::BufReader;
use std::net::IpAddr;

use custos_core::Timestamp;
use custos_core::baseline::{
    Feature, Fleet, Observation, ObservationKind, Outcome, Profile, Settings,
};
use custos_core::discovery::formats;
use custos_core::discovery::{Format, Malformed, Position, Sink};

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
    on_behalf_of: Option<String>,
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
            on_behalf_of: self.on_behalf_of.as_deref(),
        }
    }
}

/// Keeps each sighting's activity as a replayed event, and the malformed records.
#[derive(Default)]
struct Replay {
    records: Vec<Record>,
    malformed: Vec<Malformed>,
}

impl Sink for Replay {
    fn record(&mut self, _: Position, record: custos_core::discovery::Record) {
        let custos_core::discovery::Record::Sighting(sighting) = record else {
            panic!("an inventory row from CloudTrail");
        };
        let activity = sighting
            .activity
            .expect("a CloudTrail record is an activity");
        self.records.push(Record {
            at: sighting.at.expect("a CloudTrail record has its time"),
            principal: sighting.principal,
            service: activity.service,
            operation: activity.operation,
            resource: activity.resource,
            outcome: activity.outcome,
            source: activity.source,
            user_agent: activity.user_agent,
            on_behalf_of: activity.on_behalf_of,
        });
    }

    fn malformed(&mut self, malformed: Malformed) {
        self.malformed.push(malformed);
    }
}

fn read() -> Vec<Record> {
    let file = flate2::read::GzDecoder::new(std::fs::File::open(RECORDS).unwrap());
    let mut replay = Replay::default();
    formats::read(Format::CloudTrail, BufReader::new(file), &mut replay).unwrap();
    assert!(replay.malformed.is_empty(), "{:?}", replay.malformed);
    let mut records = replay.records;
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
