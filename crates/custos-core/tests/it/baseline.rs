//! Behaviour baselining: the profile's stored form and size, probation, the named detections
//! and the anomalies each on its own pattern (and not on normal traffic), folding a departure
//! in, and the evaluation harness at a small size.

use std::net::{IpAddr, Ipv4Addr};

use custos_core::Timestamp;
use custos_core::baseline::{
    Detection, Feature, Fleet, Observation, ObservationKind, Outcome, Profile, Settings,
};

/// Monday 2026-01-05 00:00 UTC.
const MONDAY_MS: i64 = 1_767_571_200_000;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
const SDK: &str = "custos-agent-sdk/1.2.0 python/3.11.4 linux";

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms).unwrap()
}

/// An owned event, lent to the profile as an [`Observation`].
#[derive(Clone, Debug)]
struct Event {
    at: i64,
    kind: ObservationKind,
    service: String,
    operation: String,
    resource: String,
    outcome: Outcome,
    source: Option<IpAddr>,
    user_agent: Option<String>,
    environment: Option<String>,
    on_behalf_of: Option<String>,
}

impl Event {
    fn action(at: i64, service: &str, operation: &str, resource: &str) -> Self {
        Event {
            at,
            kind: ObservationKind::Action,
            service: service.into(),
            operation: operation.into(),
            resource: resource.into(),
            outcome: Outcome::Allowed,
            source: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 20))),
            user_agent: Some(SDK.into()),
            environment: Some("production".into()),
            on_behalf_of: None,
        }
    }

    fn observation(&self) -> Observation<'_> {
        Observation {
            at: ts(self.at),
            kind: self.kind,
            service: &self.service,
            operation: &self.operation,
            resource: &self.resource,
            outcome: self.outcome,
            source: self.source,
            user_agent: self.user_agent.as_deref(),
            environment: self.environment.as_deref(),
            on_behalf_of: self.on_behalf_of.as_deref(),
        }
    }
}

/// A small deterministic generator for the tests' traffic.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One event of an agent's normal work: CRM reads and updates, ticket reads, mail, from two
/// networks, with about 1% refusals and a delegation to one of two usual delegatees now and
/// then.
fn normal(at: i64, rng: &mut Lcg) -> Event {
    let roll = rng.below(100);
    let mut event = match roll {
        0..=54 => Event::action(
            at,
            "crm",
            "customers.read",
            &format!("customers/{}", rng.below(5000)),
        ),
        55..=74 => Event::action(
            at,
            "crm",
            "customers.update",
            &format!("customers/{}", rng.below(5000)),
        ),
        75..=89 => Event::action(
            at,
            "tickets",
            "tickets.get",
            &format!("tickets/{}", rng.below(900)),
        ),
        90..=95 => Event::action(at, "mail", "messages.send", "outbox/1"),
        _ => Event {
            kind: ObservationKind::Delegation,
            resource: format!("nhi-helper-{}", rng.below(2)),
            ..Event::action(at, "custos", "token.exchange", "")
        },
    };
    if rng.below(2) == 0 {
        event.source = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 2, rng.below(250) as u8)));
    }
    if event.kind == ObservationKind::Action && rng.below(100) == 0 {
        event.outcome = Outcome::Denied;
    }
    event
}

/// A weekday's work, 09:00–17:00 UTC, an event every two minutes or so.
fn workday(day: i64, rng: &mut Lcg) -> Vec<Event> {
    let start = MONDAY_MS + day * DAY_MS + 9 * HOUR_MS;
    let mut at = start;
    let mut events = Vec::new();
    while at < start + 8 * HOUR_MS {
        events.push(normal(at, rng));
        at += 60_000 + rng.below(120_000) as i64;
    }
    events
}

/// A profile that learnt three weeks of weekday work (well past probation), its fleet, and the
/// generator to go on with.
fn learnt() -> (Profile, Fleet, Lcg) {
    let fleet = Fleet::new();
    let mut profile = Profile::new(ts(MONDAY_MS), Some("production"));
    let mut rng = Lcg(7);
    let settings = Settings::default();
    for day in (0..21).filter(|d| d % 7 < 5) {
        for event in workday(day, &mut rng) {
            profile.observe(&event.observation(), &fleet, &settings);
        }
    }
    assert!(!profile.in_probation(ts(MONDAY_MS + 21 * DAY_MS), &settings));
    (profile, fleet, rng)
}

/// 10:30 on the Tuesday after the learnt weeks.
const TUESDAY_1030: i64 = MONDAY_MS + 22 * DAY_MS + 10 * HOUR_MS + 30 * MINUTE_MS;

fn assess(
    profile: &mut Profile,
    fleet: &Fleet,
    event: &Event,
) -> custos_core::baseline::Assessment {
    profile.observe(&event.observation(), fleet, &Settings::default())
}

mod detections {
    use super::*;

    #[test]
    fn normal_traffic_is_within_the_baseline() {
        let (mut profile, fleet, mut rng) = learnt();
        let settings = Settings::default();
        let mut events = 0;
        for day in [21, 22, 23, 24, 25] {
            for event in workday(day, &mut rng) {
                let assessment = profile.observe(&event.observation(), &fleet, &settings);
                assert!(
                    !assessment.out_of_baseline,
                    "{event:?}: {:?}",
                    assessment.contributions()
                );
                assert!(assessment.detections.is_empty());
                events += 1;
            }
        }
        assert!(events > 1000);
    }

    #[test]
    fn a_new_service_is_an_anomaly_of_the_service() {
        let (mut profile, fleet, _) = learnt();
        let event = Event::action(TUESDAY_1030, "iam", "CreateAccessKey", "user/admin");
        let assessment = assess(&mut profile, &fleet, &event);
        assert!(
            assessment.out_of_baseline,
            "{:?}",
            assessment.contributions()
        );
        assert!(!assessment.in_probation);
        assert_eq!(assessment.finding_kind(), "anomaly");
        assert_eq!(assessment.main_feature(), Some(Feature::Service));
        // The operation and prefix are the service's: their novelty is not counted again.
        assert_eq!(assessment.bits[1], 0.0);
        assert_eq!(assessment.bits[2], 0.0);
    }

    #[test]
    fn a_new_source_network_is_an_anomaly_of_the_source() {
        let (mut profile, fleet, _) = learnt();
        let mut event = Event::action(TUESDAY_1030, "crm", "customers.read", "customers/1");
        event.source = Some("203.0.113.9".parse().unwrap());
        let assessment = assess(&mut profile, &fleet, &event);
        assert!(
            assessment.out_of_baseline,
            "{:?}",
            assessment.contributions()
        );
        assert_eq!(assessment.main_feature(), Some(Feature::SourceNetwork));
        // Another address in a known /24 is not new.
        let mut known = event.clone();
        known.source = Some("10.0.2.251".parse().unwrap());
        assert_eq!(assess(&mut profile, &fleet, &known).bits[3], 0.0);
    }

    #[test]
    fn use_at_night_is_an_anomaly_of_the_hour() {
        let (mut profile, fleet, _) = learnt();
        let night = MONDAY_MS + 22 * DAY_MS + 3 * HOUR_MS;
        let event = Event::action(night, "crm", "customers.read", "customers/1");
        let assessment = assess(&mut profile, &fleet, &event);
        assert!(
            assessment.out_of_baseline,
            "{:?}",
            assessment.contributions()
        );
        assert_eq!(assessment.main_feature(), Some(Feature::HourOfWeek));
    }

    #[test]
    fn a_saturday_at_the_usual_hours_counts_less_than_a_night() {
        let (profile, fleet, _) = learnt();
        let saturday = MONDAY_MS + 26 * DAY_MS + 11 * HOUR_MS;
        let night = MONDAY_MS + 22 * DAY_MS + 3 * HOUR_MS;
        let hour_bits = |at: i64| {
            let mut profile = profile.clone();
            let event = Event::action(at, "crm", "customers.read", "customers/1");
            assess(&mut profile, &fleet, &event).bits[5]
        };
        assert!(hour_bits(saturday) > 0.0);
        assert!(hour_bits(saturday) < hour_bits(night));
    }

    #[test]
    fn a_burst_is_an_anomaly_of_the_rate() {
        let (mut profile, fleet, _) = learnt();
        let mut fired = None;
        for i in 0..600 {
            let event = Event::action(
                TUESDAY_1030 + i * 2_000,
                "crm",
                "customers.read",
                &format!("customers/{}", 100_000 + i),
            );
            let assessment = assess(&mut profile, &fleet, &event);
            if assessment.out_of_baseline {
                fired = Some((i, assessment));
                break;
            }
        }
        let (i, assessment) = fired.expect("a burst of 600 reads in 20 minutes is out of baseline");
        assert_eq!(assessment.main_feature(), Some(Feature::Rate));
        // The usual hour holds about 16 reads; the burst stands out well before its end.
        assert!(i < 200, "only after {i} reads");
    }

    #[test]
    fn a_burst_of_refusals_across_services_is_credential_stuffing() {
        let (mut profile, fleet, _) = learnt();
        let services = [
            ("crm", "customers.read", "customers/1"),
            ("tickets", "tickets.get", "tickets/1"),
            ("mail", "messages.send", "outbox/1"),
        ];
        let mut fired = false;
        for i in 0..20 {
            let (service, operation, resource) = services[i % 3];
            let mut event = Event::action(
                TUESDAY_1030 + i as i64 * 5_000,
                service,
                operation,
                resource,
            );
            event.outcome = Outcome::Refused;
            let assessment = assess(&mut profile, &fleet, &event);
            fired |= assessment
                .detections
                .contains(Detection::CredentialStuffing);
        }
        assert!(fired);
    }

    #[test]
    fn a_few_refusals_are_not_credential_stuffing() {
        let (mut profile, fleet, _) = learnt();
        let calls = [
            ("crm", "customers.read", "customers/1"),
            ("tickets", "tickets.get", "tickets/1"),
            ("mail", "messages.send", "outbox/1"),
        ];
        for (i, (service, operation, resource)) in calls.into_iter().enumerate() {
            let mut event = Event::action(
                TUESDAY_1030 + i as i64 * 60_000,
                service,
                operation,
                resource,
            );
            event.outcome = Outcome::Denied;
            let assessment = assess(&mut profile, &fleet, &event);
            assert!(assessment.detections.is_empty());
        }
    }

    #[test]
    fn a_secret_presented_in_another_name_is_credential_stuffing_at_once() {
        let (mut profile, fleet, _) = learnt();
        let mut event = Event::action(TUESDAY_1030, "crm", "customers.read", "customers/1");
        event.outcome = Outcome::Misattributed;
        let assessment = assess(&mut profile, &fleet, &event);
        assert!(
            assessment
                .detections
                .contains(Detection::CredentialStuffing)
        );
        assert_eq!(assessment.finding_kind(), "credential_stuffing");
    }

    #[test]
    fn another_environment_is_an_environment_crossing() {
        let (mut profile, fleet, _) = learnt();
        let mut event = Event::action(TUESDAY_1030, "crm", "customers.read", "customers/1");
        event.environment = Some("staging".into());
        let assessment = assess(&mut profile, &fleet, &event);
        assert!(assessment.out_of_baseline);
        assert_eq!(assessment.finding_kind(), "environment_crossing");
        // `prod` is another name of `production`.
        event.environment = Some("prod".into());
        assert!(assess(&mut profile, &fleet, &event).detections.is_empty());
    }

    #[test]
    fn a_person_at_a_browser_or_curl_is_interactive_use() {
        let (profile, fleet, _) = learnt();
        for agent in [
            "curl/8.4.0",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0",
            "PostmanRuntime/7.36.0",
        ] {
            let mut profile = profile.clone();
            let mut event = Event::action(TUESDAY_1030, "crm", "customers.read", "customers/1");
            event.user_agent = Some(agent.into());
            let assessment = assess(&mut profile, &fleet, &event);
            assert!(
                assessment.detections.contains(Detection::InteractiveUse),
                "{agent}"
            );
        }
    }

    #[test]
    fn an_sdk_upgrade_is_not_a_new_client() {
        let (mut profile, fleet, _) = learnt();
        let mut event = Event::action(TUESDAY_1030, "crm", "customers.read", "customers/1");
        event.user_agent = Some("custos-agent-sdk/1.3.1 python/3.12.1 linux".into());
        let assessment = assess(&mut profile, &fleet, &event);
        assert_eq!(assessment.bits[4], 0.0);
        assert!(!assessment.out_of_baseline);
        // Runtime versions in parentheses are versions too.
        let fleet = Fleet::new();
        let mut go = Profile::new(ts(MONDAY_MS), None);
        let settings = Settings::default();
        let mut first = Event::action(MONDAY_MS, "s3", "GetObject", "bucket/1");
        first.user_agent = Some("aws-sdk-go/1.44.298 (go1.20.5; linux; amd64)".into());
        go.observe(&first.observation(), &fleet, &settings);
        let mut upgraded = first.clone();
        upgraded.at += 1000;
        upgraded.user_agent = Some("aws-sdk-go/1.50.8 (go1.22.0; linux; amd64)".into());
        assert_eq!(
            go.observe(&upgraded.observation(), &fleet, &settings).bits[4],
            0.0
        );
    }

    #[test]
    fn delegations_to_many_nhis_in_an_hour_are_a_fan_out() {
        let (mut profile, fleet, _) = learnt();
        let mut fired = None;
        for i in 0..20 {
            let event = Event {
                kind: ObservationKind::Delegation,
                resource: format!("nhi-other-{i}"),
                ..Event::action(TUESDAY_1030 + i * 60_000, "custos", "token.exchange", "")
            };
            let assessment = assess(&mut profile, &fleet, &event);
            if assessment.detections.contains(Detection::DelegationFanOut) {
                fired = Some(i);
                break;
            }
        }
        assert!(fired.is_some_and(|i| i < 15), "{fired:?}");
    }

    #[test]
    fn a_fan_out_across_an_hours_edge_is_counted_whole() {
        let (mut profile, fleet, _) = learnt();
        let edge = MONDAY_MS + 22 * DAY_MS + 11 * HOUR_MS;
        let mut fired = false;
        for i in 0..14 {
            // Seven delegations before 11:00 and seven after.
            let event = Event {
                kind: ObservationKind::Delegation,
                resource: format!("nhi-other-{i}"),
                ..Event::action(
                    edge - 7 * 60_000 + i * 60_000,
                    "custos",
                    "token.exchange",
                    "",
                )
            };
            fired |= assess(&mut profile, &fleet, &event)
                .detections
                .contains(Detection::DelegationFanOut);
        }
        assert!(fired);
    }

    #[test]
    fn folding_in_makes_a_departure_normal() {
        let (mut profile, fleet, _) = learnt();
        let event = Event::action(TUESDAY_1030, "iam", "ListUsers", "user/all");
        assert!(assess(&mut profile, &fleet, &event).out_of_baseline);
        // A departure is not learnt: it stays out of baseline...
        let mut again = event.clone();
        again.at += 60_000;
        assert!(assess(&mut profile, &fleet, &again).out_of_baseline);
        // ...until a person says it is the new normal.
        profile.fold_in(&event.observation(), &fleet);
        again.at += 60_000;
        let assessment = assess(&mut profile, &fleet, &again);
        assert!(
            !assessment.out_of_baseline,
            "{:?}",
            assessment.contributions()
        );
        assert_eq!(assessment.bits[0], 0.0);
    }

    #[test]
    fn a_service_peers_of_its_group_are_taking_up_weighs_less() {
        // Profiles learnt alike, the first two of one application; the first takes up a new
        // service before the others.
        let (learnt, fleet, _) = learnt();
        let in_group = |group: &str| {
            let mut profile = learnt.clone();
            profile.set_peer_group(group);
            profile
        };
        let (mut first, peer, stranger) = (
            in_group("team-a/app"),
            in_group("team-a/app"),
            in_group("team-b/other"),
        );
        let event = Event::action(TUESDAY_1030, "bedrock", "InvokeModel", "models/1");
        // Every assessment tells the fleet of a take-up: the one alone is made in a fleet of
        // its own.
        let alone = assess(&mut peer.clone(), &Fleet::new(), &event);
        assert!(alone.out_of_baseline);
        assess(&mut first, &fleet, &event);

        // An NHI of another group follows: one attacker with two stolen credentials is not a
        // rollout. It weighs a little less, and still departs.
        let after_a_stranger = assess(&mut stranger.clone(), &fleet, &event);
        assert!(after_a_stranger.bits[0] < alone.bits[0]);
        assert!(after_a_stranger.bits[0] > 0.8 * alone.bits[0]);
        assert!(after_a_stranger.out_of_baseline);

        // Its peer follows: a rollout, within the baseline.
        let stored = Profile::decode(&peer.encode()).unwrap();
        let after_a_peer = assess(&mut peer.clone(), &fleet, &event);
        assert!(after_a_peer.bits[0] < alone.bits[0] / 2.0);
        assert!(
            !after_a_peer.out_of_baseline,
            "{:?}",
            after_a_peer.contributions()
        );
        // The group is kept in the stored form.
        assert!(stored.has_peer_group());
        assert!(!assess(&mut stored.clone(), &fleet, &event).out_of_baseline);
    }

    #[test]
    fn a_service_granted_lately_is_expected_for_a_few_weeks() {
        let (learnt, _, _) = learnt();
        // Each assessment in a fleet of its own: a departure tells the fleet of a take-up.
        let fleet = Fleet::new;
        let event = Event::action(TUESDAY_1030, "bedrock", "InvokeModel", "models/1");
        let unannounced = assess(&mut learnt.clone(), &fleet(), &event);
        assert!(unannounced.out_of_baseline);

        // Granted the day before: within the baseline, and learnt.
        let mut granted = learnt.clone();
        granted.expect_service("bedrock", ts(TUESDAY_1030 - DAY_MS));
        let assessment = assess(&mut granted, &fleet(), &event);
        assert!(
            !assessment.out_of_baseline,
            "{:?}",
            assessment.contributions()
        );
        assert!(assessment.bits[0] > 0.0, "still noted, at a fraction");
        assert!(assessment.bits[0] < unannounced.bits[0] / 4.0);

        // A grant of another service says nothing of this one.
        let mut other = learnt.clone();
        other.expect_service("translate", ts(TUESDAY_1030 - DAY_MS));
        assert!(assess(&mut other, &fleet(), &event).out_of_baseline);

        // A grant left unused for four weeks is forgotten: a service held long and never
        // used is what a stolen credential reaches for.
        let mut stale = learnt.clone();
        stale.expect_service("bedrock", ts(TUESDAY_1030 - 28 * DAY_MS));
        let late = assess(&mut stale, &fleet(), &event);
        assert_eq!(late.bits[0], unannounced.bits[0]);

        // The word survives the profile's encoding.
        let mut stored = learnt.clone();
        stored.expect_service("bedrock", ts(TUESDAY_1030 - DAY_MS));
        let mut read_back = Profile::decode(&stored.encode()).unwrap();
        assert!(!assess(&mut read_back, &fleet(), &event).out_of_baseline);
    }
}

mod people {
    use super::*;

    const ANN: &str = "ann@example.com";

    /// An assistant that learnt three weeks of weekday work, all of it for Ann, in her
    /// signed-in sessions.
    fn assistant() -> (Profile, Fleet) {
        let fleet = Fleet::new();
        let mut profile = Profile::new(ts(MONDAY_MS), Some("production"));
        let mut rng = Lcg(21);
        let settings = Settings::default();
        for day in (0..21).filter(|d| d % 7 < 5) {
            for mut event in workday(day, &mut rng) {
                event.on_behalf_of = Some(ANN.into());
                profile.observe(&event.observation(), &fleet, &settings);
            }
        }
        (profile, fleet)
    }

    fn read(at: i64, person: Option<&str>) -> Event {
        Event {
            on_behalf_of: person.map(str::to_owned),
            ..Event::action(at, "crm", "customers.read", "customers/1")
        }
    }

    /// 21:30 on the Tuesday after the learnt weeks: an hour it has never been active.
    const TUESDAY_EVENING: i64 = MONDAY_MS + 22 * DAY_MS + 21 * HOUR_MS + 30 * MINUTE_MS;

    #[test]
    fn its_person_working_late_is_within_the_baseline() {
        let (profile, fleet) = assistant();
        let with_ann = assess(
            &mut profile.clone(),
            &fleet,
            &read(TUESDAY_EVENING, Some(ANN)),
        );
        assert!(!with_ann.out_of_baseline, "{:?}", with_ann.contributions());
        assert_eq!(with_ann.bits[8], 0.0);
        // The hour still counts, for less than without her.
        let alone = assess(&mut profile.clone(), &fleet, &read(TUESDAY_EVENING, None));
        assert!(with_ann.bits[5] > 0.0);
        assert!(with_ann.bits[5] < alone.bits[5] / 2.0);
    }

    #[test]
    fn its_credential_used_without_its_person_is_an_anomaly() {
        let (profile, fleet) = assistant();
        // At night: the hour and the missing person.
        let night = assess(&mut profile.clone(), &fleet, &read(TUESDAY_EVENING, None));
        assert!(night.out_of_baseline, "{:?}", night.contributions());
        let features: Vec<Feature> = night.contributions().iter().map(|(f, _)| *f).collect();
        assert!(features.contains(&Feature::OnBehalfOf), "{features:?}");
        assert!(features.contains(&Feature::HourOfWeek), "{features:?}");
        // At its usual hours, the missing person alone.
        let day = assess(&mut profile.clone(), &fleet, &read(TUESDAY_1030, None));
        assert!(day.out_of_baseline, "{:?}", day.contributions());
        assert_eq!(day.main_feature(), Some(Feature::OnBehalfOf));
        assert_eq!(day.finding_kind(), "anomaly");
    }

    #[test]
    fn a_person_it_never_acted_for_is_scored() {
        let (mut profile, fleet) = assistant();
        let bo = assess(
            &mut profile,
            &fleet,
            &read(TUESDAY_1030, Some("bo@example.com")),
        );
        assert!(bo.bits[8] > 0.0, "{:?}", bo.contributions());
        assert_eq!(bo.main_feature(), Some(Feature::OnBehalfOf));
        let summary = profile.summary(ts(TUESDAY_1030), &Settings::default());
        assert_eq!(summary.people, 1);
        assert_eq!(summary.for_person_share, 1.0);
    }

    #[test]
    fn an_nhi_that_acts_on_its_own_says_nothing_by_it() {
        let (mut profile, fleet, _) = learnt();
        let alone = assess(&mut profile.clone(), &fleet, &read(TUESDAY_1030, None));
        assert_eq!(alone.bits[8], 0.0);
        // Suddenly acting for a person is news.
        let for_ann = assess(&mut profile, &fleet, &read(TUESDAY_1030, Some(ANN)));
        assert!(for_ann.bits[8] > 0.0);
    }

    /// An assistant of the whole company, a new person at nearly every call, does not fill
    /// the first-seen filter with them: a new service is still new.
    #[test]
    fn many_people_do_not_blind_the_other_classes() {
        let fleet = Fleet::new();
        let settings = Settings::default();
        let mut profile = Profile::new(ts(MONDAY_MS), Some("production"));
        let mut rng = Lcg(23);
        let mut people = 0;
        for day in (0..21).filter(|d| d % 7 < 5) {
            for mut event in workday(day, &mut rng) {
                people += 1;
                event.on_behalf_of = Some(format!("person-{people}@example.com"));
                profile.observe(&event.observation(), &fleet, &settings);
            }
        }
        assert!(people > 3000);
        let summary = profile.summary(ts(TUESDAY_1030), &settings);
        assert_eq!(usize::from(summary.people), people);
        let mut event = Event::action(TUESDAY_1030, "iam", "CreateAccessKey", "user/admin");
        event.on_behalf_of = Some("someone-new@example.com".into());
        let assessment = assess(&mut profile, &fleet, &event);
        assert!(assessment.bits[0] > 0.0, "{:?}", assessment.contributions());
        assert!(assessment.out_of_baseline);
        // A new person is no news to it.
        assert!(assessment.bits[8] < 1.0, "{:?}", assessment.contributions());
    }

    /// An NHI that does both (a team's assistant with scheduled jobs of its own) is not
    /// scored for either.
    #[test]
    fn an_nhi_that_does_both_is_scored_for_neither() {
        let fleet = Fleet::new();
        let settings = Settings::default();
        let mut profile = Profile::new(ts(MONDAY_MS), Some("production"));
        let mut rng = Lcg(22);
        for day in (0..21).filter(|d| d % 7 < 5) {
            for (i, mut event) in workday(day, &mut rng).into_iter().enumerate() {
                if i % 3 != 0 {
                    event.on_behalf_of = Some(ANN.into());
                }
                profile.observe(&event.observation(), &fleet, &settings);
            }
        }
        for person in [None, Some(ANN)] {
            let assessment = assess(&mut profile.clone(), &fleet, &read(TUESDAY_1030, person));
            assert_eq!(assessment.bits[8], 0.0, "{person:?}");
        }
    }
}

mod probation {
    use super::*;

    #[test]
    fn probation_needs_both_the_time_and_the_events() {
        let settings = Settings {
            probation_days: 14,
            probation_events: 200,
            alert_bits: 10.0,
        };
        let fleet = Fleet::new();
        let mut rng = Lcg(3);
        // Many events, but not yet 14 days: still in probation.
        let mut busy = Profile::new(ts(MONDAY_MS), Some("production"));
        for i in 0..1000 {
            let assessment = busy.observe(
                &normal(MONDAY_MS + i * MINUTE_MS, &mut rng).observation(),
                &fleet,
                &settings,
            );
            assert!(assessment.in_probation);
        }
        assert!(busy.in_probation(ts(MONDAY_MS + 13 * DAY_MS), &settings));
        assert!(!busy.in_probation(ts(MONDAY_MS + 14 * DAY_MS), &settings));
        // Weeks, but too few events: still in probation until the 200th.
        let mut quiet = Profile::new(ts(MONDAY_MS), Some("production"));
        for i in 0..199 {
            quiet.observe(
                &normal(MONDAY_MS + i * 3 * HOUR_MS, &mut rng).observation(),
                &fleet,
                &settings,
            );
        }
        let later = ts(MONDAY_MS + 40 * DAY_MS);
        assert!(quiet.in_probation(later, &settings));
        assert_eq!(quiet.summary(later, &settings).events_needed, 1);
        let mut event = normal(MONDAY_MS + 40 * DAY_MS, &mut rng);
        event.service = "iam".into();
        let assessment = quiet.observe(&event.observation(), &fleet, &settings);
        // In probation when scored (the 200th event), so recorded but not enforced.
        assert!(assessment.in_probation);
        assert!(!quiet.in_probation(later, &settings));
        assert_eq!(quiet.summary(later, &settings).status, "learnt");
    }

    #[test]
    fn a_departure_in_probation_is_learnt() {
        let fleet = Fleet::new();
        let settings = Settings::default();
        let mut profile = Profile::new(ts(MONDAY_MS), Some("production"));
        let mut rng = Lcg(5);
        for event in workday(0, &mut rng) {
            profile.observe(&event.observation(), &fleet, &settings);
        }
        let event = Event::action(MONDAY_MS + DAY_MS + 10 * HOUR_MS, "iam", "ListUsers", "u/1");
        let first = profile.observe(&event.observation(), &fleet, &settings);
        assert!(first.in_probation);
        let mut again = event.clone();
        again.at += 1000;
        assert_eq!(
            profile
                .observe(&again.observation(), &fleet, &settings)
                .bits[0],
            0.0
        );
    }
}

mod encoding {
    use custos_core::baseline::ProfileError;
    use proptest::prelude::*;

    use super::*;

    fn event() -> impl Strategy<Value = Event> {
        let service = prop_oneof![
            Just("crm"),
            Just("s3"),
            Just("tickets"),
            Just("mail"),
            Just("iam")
        ];
        let operation = prop_oneof![Just("read"), Just("write"), Just("list"), Just("delete")];
        let outcome = prop_oneof![
            8 => Just(Outcome::Allowed),
            1 => Just(Outcome::Denied),
            1 => Just(Outcome::Refused),
            1 => Just(Outcome::Misattributed),
        ];
        let agent = prop_oneof![
            Just(None),
            Just(Some("custos-agent-sdk/1.0 python/3.11")),
            Just(Some("curl/8.0.1")),
            Just(Some("aws-sdk-go/1.44.1 (go1.20; linux)")),
        ];
        let environment = prop_oneof![Just(None), Just(Some("production")), Just(Some("staging"))];
        let person = prop_oneof![Just(None), Just(Some("ann@example.com")), Just(Some("bo"))];
        (
            0i64..6 * HOUR_MS,
            any::<bool>(),
            service,
            operation,
            "[a-z]{1,3}(/[0-9]{1,3})?",
            outcome,
            proptest::option::of(any::<[u8; 4]>()),
            agent,
            environment,
            person,
        )
            .prop_map(
                |(
                    gap,
                    delegation,
                    service,
                    operation,
                    resource,
                    outcome,
                    source,
                    agent,
                    env,
                    person,
                )| {
                    Event {
                        at: gap,
                        kind: if delegation {
                            ObservationKind::Delegation
                        } else {
                            ObservationKind::Action
                        },
                        service: service.into(),
                        operation: operation.into(),
                        resource,
                        outcome,
                        source: source.map(|o| IpAddr::V4(Ipv4Addr::from(o))),
                        user_agent: agent.map(str::to_owned),
                        environment: env.map(str::to_owned),
                        on_behalf_of: person.map(str::to_owned),
                    }
                },
            )
    }

    /// A profile that saw `events`, spaced by their gaps, with a short probation so that some
    /// events are departures.
    fn profile_of(events: &[Event]) -> Profile {
        let settings = Settings {
            probation_days: 1,
            probation_events: 20,
            alert_bits: 10.0,
        };
        let fleet = Fleet::new();
        let mut profile = Profile::new(ts(MONDAY_MS), Some("production"));
        let mut at = MONDAY_MS;
        for event in events {
            at += event.at;
            let event = Event {
                at,
                ..event.clone()
            };
            profile.observe(&event.observation(), &fleet, &settings);
        }
        profile
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn a_profile_round_trips(events in proptest::collection::vec(event(), 0..400)) {
            let profile = profile_of(&events);
            let bytes = profile.encode();
            prop_assert!(bytes.len() <= Profile::MAX_BYTES);
            let back = Profile::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &profile);
            prop_assert_eq!(back.encode(), bytes);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000)
        ) {
            if let Ok(profile) = Profile::decode(&bytes) {
                prop_assert_eq!(profile.encode(), bytes);
            }
        }

        /// Bytes of a real profile with a few changed: decoding returns, and what it accepts
        /// encodes back to the same bytes.
        #[test]
        fn decoding_corrupted_profiles_never_panics(
            events in proptest::collection::vec(event(), 0..100),
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = profile_of(&events).encode();
            for (index, value) in flips {
                let i = index.index(bytes.len());
                bytes[i] = value;
            }
            if let Ok(profile) = Profile::decode(&bytes) {
                prop_assert_eq!(profile.encode(), bytes);
            }
        }
    }

    #[test]
    fn truncated_or_extended_encodings_are_refused() {
        let mut rng = Lcg(11);
        let events: Vec<Event> = (0..300)
            .map(|i| Event {
                at: 120_000,
                ..normal(i, &mut rng)
            })
            .collect();
        let bytes = profile_of(&events).encode();
        for len in 0..bytes.len() {
            let error = Profile::decode(&bytes[..len]).unwrap_err();
            assert!(
                matches!(error, ProfileError::Truncated | ProfileError::Version(_)),
                "{len}: {error:?}"
            );
        }
        for extra in [&[0u8][..], &[1, 2, 3]] {
            let mut longer = bytes.clone();
            longer.extend_from_slice(extra);
            assert_eq!(
                Profile::decode(&longer),
                Err(ProfileError::TrailingBytes(extra.len()))
            );
        }
        let mut other_version = bytes.clone();
        other_version[0] = 4;
        assert_eq!(
            Profile::decode(&other_version),
            Err(ProfileError::Version(4))
        );
    }

    /// Version 1 had no people, version 2 no peer group: a profile stored by either reads back
    /// as one that never acted for anyone, or in no group, and what it learnt is kept.
    #[test]
    fn older_versions_read_back_without_what_they_lacked() {
        let mut rng = Lcg(12);
        let events: Vec<Event> = (0..300).map(|i| normal(i * 60_000, &mut rng)).collect();
        let mut profile = profile_of(&events);
        profile.set_peer_group("team-a/app");
        let new = profile.encode();
        assert_eq!(new[0], 3);
        // Version 3 appended the peer group (4 bytes); version 2 the people, two rates
        // (16 bytes) and a count (2 bytes).
        for (version, lacked) in [(2u8, 4), (1, 22)] {
            let mut bytes = new[..new.len() - lacked].to_vec();
            bytes[0] = version;
            let old = Profile::decode(&bytes).unwrap();
            assert!(!old.has_peer_group());
            // All it learnt is kept; what it lacked starts empty.
            let old = old.encode();
            assert_eq!(old[1..old.len() - lacked], new[1..new.len() - lacked]);
            assert!(old[old.len() - lacked..].iter().all(|b| *b == 0));
            // Short of the bytes the current version needs, a current profile is refused.
            bytes[0] = 3;
            assert_eq!(Profile::decode(&bytes), Err(ProfileError::Truncated));
        }
    }

    #[test]
    fn a_profile_takes_at_most_2_kib() {
        assert!(std::mem::size_of::<Profile>() <= Profile::MAX_BYTES);
        const { assert!(Profile::MAX_BYTES <= 2048) };
        // A full profile: every operation slot taken, long names, every class seen.
        let fleet = Fleet::new();
        let settings = Settings::default();
        let mut profile = Profile::new(ts(MONDAY_MS), Some("production"));
        for i in 0..5_000i64 {
            let mut event = Event::action(
                MONDAY_MS + i * 7 * MINUTE_MS,
                &format!("service-with-a-long-name-{}", i % 40),
                &format!("operation-with-a-long-name-{}", i % 23),
                &format!("prefix-{}/{}", i % 300, i),
            );
            event.source = Some(IpAddr::V4(Ipv4Addr::new(
                10,
                (i % 7) as u8,
                (i % 11) as u8,
                1,
            )));
            profile.observe(&event.observation(), &fleet, &settings);
        }
        let bytes = profile.encode();
        assert!(bytes.len() <= Profile::MAX_BYTES, "{} bytes", bytes.len());
        assert_eq!(profile.summary(ts(MONDAY_MS), &settings).bytes, bytes.len());
        // Fixed layout: an empty profile encodes to as many bytes.
        assert_eq!(
            Profile::new(ts(MONDAY_MS), None).encode().len(),
            bytes.len()
        );
    }
}

mod simulation {
    use custos_core::baseline::Settings;
    use custos_core::baseline::simulate::{
        AttackKind, MAX_FALSE_ALERTS_PER_1000_NHI_DAYS, MIN_RECALL, SimulationConfig, events, run,
    };

    fn config_from_env(default: SimulationConfig) -> SimulationConfig {
        let get = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok());
        SimulationConfig {
            nhis: get("CUSTOS_SIM_NHIS").map_or(default.nhis, |v| v as usize),
            days: get("CUSTOS_SIM_DAYS").map_or(default.days, |v| v as u32),
            attack_share: get("CUSTOS_SIM_ATTACK_SHARE").unwrap_or(default.attack_share),
            seed: get("CUSTOS_SIM_SEED").map_or(default.seed, |v| v as u64),
            ..default
        }
    }

    fn print_details(report: &custos_core::baseline::simulate::SimulationReport) {
        if std::env::var("CUSTOS_SIM_VERBOSE").is_ok() {
            println!("{}", serde_json::to_string_pretty(&report.misses).unwrap());
            println!(
                "{}",
                serde_json::to_string_pretty(&report.false_alert_samples).unwrap()
            );
            for attack in &report.attacks {
                println!("SCORES {} {:?}", attack.kind, attack.scores);
            }
            for (finding, score) in &report.false_alert_scores {
                println!("FASCORE {finding} {score}");
            }
        }
    }

    /// The same seed gives the same events; another seed, others.
    #[test]
    fn the_event_stream_is_deterministic_and_in_time_order() {
        let config = SimulationConfig {
            nhis: 20,
            days: 2,
            warmup_days: 1,
            attack_share: 0.5,
            seed: 9,
        };
        let a: Vec<_> = events(&config)
            .map(|e| (e.nhi, e.at, e.operation, e.resource.text(), e.attack))
            .collect();
        let b: Vec<_> = events(&config)
            .map(|e| (e.nhi, e.at, e.operation, e.resource.text(), e.attack))
            .collect();
        assert!(a.len() > 1000);
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| w[0].1 <= w[1].1));
        let other: Vec<_> = events(&SimulationConfig { seed: 10, ..config })
            .map(|e| (e.nhi, e.at, e.operation, e.resource.text(), e.attack))
            .collect();
        assert_ne!(a, other);
        assert!(a.iter().any(|e| e.4.is_some()));
    }

    /// The harness at a small size: 150 NHIs, 14 days evaluated after 14 of warm-up, three
    /// in ten attacked (six or seven of each type). About 2 million events: some 17 s in a
    /// debug build. The bars hold: every attack type's recall at least 0.95, at most
    /// one false alert per 1,000 NHI-days (here 1 in 2,100 NHI-days: 0.48).
    #[test]
    fn a_small_fleet() {
        let config = config_from_env(SimulationConfig {
            nhis: 150,
            days: 14,
            warmup_days: 14,
            attack_share: 0.3,
            seed: 1,
        });
        let started = std::time::Instant::now();
        let report = run(&config, &Settings::default());
        println!("{}", report.to_table());
        println!("took {:?}", started.elapsed());
        print_details(&report);
        assert_eq!(report.attacks.len(), AttackKind::ALL.len());
        for attack in &report.attacks {
            assert!(attack.injected >= 5, "{attack:?}");
            assert!(attack.recall >= MIN_RECALL, "{attack:?}");
        }
        assert!(report.precision >= 0.95, "precision {}", report.precision);
        assert!(
            report.false_alerts_per_1000_nhi_days <= MAX_FALSE_ALERTS_PER_1000_NHI_DAYS,
            "{} false alerts per 1,000 NHI-days",
            report.false_alerts_per_1000_nhi_days
        );
        assert_eq!(report.meets_bars(), Ok(()));
    }

    /// The full-size run of the issue (1,000 NHIs x 14 days); slow in a debug build, so run it
    /// in release: `cargo test -p custos-core --release --test it full_size -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "a minute or more in a debug build; run in release"]
    fn full_size() {
        let config = config_from_env(SimulationConfig::default());
        let started = std::time::Instant::now();
        let report = run(&config, &Settings::default());
        println!("{}", report.to_table());
        println!("took {:?}", started.elapsed());
        print_details(&report);
        report.meets_bars().unwrap();
    }
}
