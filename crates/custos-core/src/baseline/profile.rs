//! One NHI's learnt profile and the scoring of an event against it.

use serde::Serialize;

use super::{
    Assessment, ClientClass, Detection, Detections, Fleet, Observation, ObservationKind, Outcome,
    Settings, hours, resource_prefix, source_network, stable_hash,
};
use crate::Timestamp;

pub(super) const BLOOM_WORDS: usize = 48;
const BLOOM_BITS: u64 = (BLOOM_WORDS * 64) as u64;
pub(super) const TRACKED_OPERATIONS: usize = 16;
pub(super) const NAME_BYTES: usize = 24;
/// Service, operation, resource prefix, source network, user agent, hour of week.
pub(super) const NOVELTY_CLASSES: usize = 6;
/// How fast the novelty and refusal rates forget: about the last 2,000 events count.
const RATE_DECAY: f32 = 1.0 - 1.0 / 2048.0;
/// An hourly rate's weight for the newest hour, once it has seen ten: before that, the rate
/// is the mean of the hours seen.
const EWMA_WEIGHT: f32 = 0.1;
/// The busiest hour's count halves in this many weeks: a monthly or weekly job's bursts are
/// still remembered at its next run.
const PEAK_HALF_LIFE_WEEKS: f32 = 8.0;
/// A class of values most of which are new (flat resource ids, say) stops filling the Bloom
/// filter once this many of its values were seen: new values of it say nothing, and they would
/// saturate the filter for every other class.
const HIGH_CARDINALITY_AFTER: f32 = 50.0;
const HIGH_CARDINALITY_SHARE: f32 = 0.5;
/// A new hour of the week at an hour of the day the NHI is active on other days (a Saturday
/// at its usual hours) counts this much of a new hour of the day.
const KNOWN_HOUR_OF_DAY: f32 = 0.5;
/// A new hour of the week counts this much when the NHI acts for a person it has acted for
/// before: the enforcement point authenticated that person, and people keep irregular hours.
/// A stolen credential used at night carries nobody's session.
const PERSON_PRESENT_HOURS: f32 = 0.25;
/// Acting for a person, or on its own, is scored only when it happens in fewer than this
/// share of the NHI's events: an NHI that does both often says nothing by doing either.
const UNUSUAL_PRESENCE: f32 = 0.05;
/// Refusals in a window are a burst when their Poisson tail, given the NHI's usual refusal
/// rate and the window's events, is at least this many bits.
const STUFFING_BITS: f32 = 16.0;
/// Class tag (in the Bloom filter) of a value the NHI tried without it being learnt: the
/// fleet is told of it once.
const TRIED: u64 = 0x7472_6965_6400_0000;
/// Class tag (in the Bloom filter) of a service a person granted the NHI lately; the week of
/// the grant is mixed in (see [`granted_key`]), so that the filter needs no clock to forget it.
const GRANTED: u64 = 0x6772_616e_7465_6400;
/// A grant is expected to be used within the week it was made and this many after it: two to
/// three weeks.
const GRANTED_WEEKS: u64 = 2;
/// A new service that a person granted the NHI lately counts this much of a new service. The
/// person said it was coming (a rollout's ceiling change, or an approved task that needs it);
/// a service held for long and never used has no such word behind it, and that is the one a
/// stolen credential or a led-astray agent reaches for. Not nothing: a credential stolen just
/// after a grant may try the new service first.
const GRANTED_SERVICE: f32 = 0.2;
/// Refusals are counted in windows of this many minutes.
const REFUSAL_WINDOW_MINUTES: i64 = 10;
/// The slot of `refused_services` that counts the window's events; the others hold the
/// services refused in it.
const WINDOW_EVENTS: usize = 3;

/// How much each feature's surprisal counts, indexed as [`Feature::ALL`]. A new service (which
/// carries the novelty of its operation and prefix with it) or source means more than a new
/// operation of a known service or a new resource prefix, which busy agents find every day; a
/// new hour of the day about as much as a new source. A rate is scored only past a burst (see
/// [`BURST_FACTOR`]), and then in full. Tuned on the simulated fleet (see `simulate`), whose
/// attacks each depart in one way only: each weight lets one such departure reach the alert
/// threshold of an NHI with a few weeks' history. Acting without its person counts in full:
/// an assistant that has only ever acted in people's sessions, called with none, is its
/// credential in someone else's hands.
const WEIGHTS: [f32; 9] = [2.1, 0.5, 0.3, 1.5, 0.5, 1.3, 1.0, 0.4, 1.0];
/// An hour is a burst only with more than this many times the expected count, and
/// the expected count is at least half the busiest hour: a burst more than doubles the
/// busiest hour of the last weeks. Machine traffic is heavy-tailed: a new record hour up to
/// about twice the old one is common.
const BURST_FACTOR: f32 = 4.0;
/// ... plus this many: a handful of calls more than usual is no burst, however quiet the
/// operation.
const BURST_MARGIN: f32 = 3.0;
/// An operation's hour is judged against at least this share of the busiest hour of the NHI's
/// other operations.
const NHI_BURST_SHARE: f32 = 0.5;
/// A rate's surprisal is capped: a burst is one strong signal, not an infinite one.
const MAX_RATE_BITS: f32 = 24.0;

/// A rate of "new" among the events of one class, decaying with age.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Rate {
    pub(super) hits: f32,
    pub(super) total: f32,
}

impl Rate {
    fn note(&mut self, hit: bool) {
        self.hits = self.hits * RATE_DECAY + if hit { 1.0 } else { 0.0 };
        self.total = self.total * RATE_DECAY + 1.0;
    }

    /// The probability of a hit, smoothed so that it is never 0 or 1.
    fn probability(self) -> f32 {
        (self.hits + 0.5) / (self.total + 1.0)
    }

    fn surprisal(self) -> f32 {
        -self.probability().log2()
    }

    /// The surprisal of a miss.
    fn miss_surprisal(self) -> f32 {
        -(1.0 - self.probability()).log2()
    }
}

/// The rate state of one (service, operation).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct OperationRate {
    /// Hash of (service, operation); 0 marks an empty slot.
    pub(super) key: u32,
    pub(super) service: u32,
    /// The hour (since the epoch) that `count` counts.
    pub(super) hour: u32,
    pub(super) count: u32,
    /// Events per active hour, exponentially weighted.
    pub(super) hourly: f32,
    /// The busiest hour's count, halving every week.
    pub(super) peak: f32,
    pub(super) events: u32,
    pub(super) name_len: u8,
    pub(super) name: [u8; NAME_BYTES],
}

impl OperationRate {
    fn name(&self) -> String {
        String::from_utf8_lossy(&self.name[..usize::from(self.name_len)]).into_owned()
    }

    /// Closes the hour `count` was counting if `hour` is a later one.
    fn roll(&mut self, hour: u32) {
        if hour <= self.hour {
            return;
        }
        if self.count > 0 {
            let count = self.count as f32;
            self.hourly = if self.events == self.count {
                count
            } else {
                // The active hours seen before this one, estimated from the events and rate.
                let hours = (self.events - self.count) as f32 / self.hourly.max(0.01);
                let weight = (1.0 / (hours + 1.0)).clamp(EWMA_WEIGHT, 1.0);
                self.hourly * (1.0 - weight) + count * weight
            };
        }
        let half_lives = (hour - self.hour) as f32 / (168.0 * PEAK_HALF_LIFE_WEEKS);
        self.peak = (self.peak * 0.5f32.powf(half_lives)).max(self.count as f32);
        self.hour = hour;
        self.count = 0;
    }

    /// The rate this hour's count is judged against.
    fn expected(&self) -> f32 {
        self.hourly.max(self.peak * 0.5).max(1.0)
    }
}

/// A learnt profile of normal behaviour for one NHI. A fixed-size value: see
/// [`Profile::MAX_BYTES`].
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub(super) started_at: Timestamp,
    pub(super) last_at: Timestamp,
    pub(super) events: u64,
    /// Events found out of baseline after probation (and so not learnt).
    pub(super) departures: u64,
    /// The first-seen sets of every class, as one Bloom filter of hashed (class, value).
    pub(super) seen: [u64; BLOOM_WORDS],
    pub(super) novelty: [Rate; NOVELTY_CLASSES],
    /// Values learnt per class (services, operations, prefixes, networks, agents, hours).
    pub(super) distinct: [u16; NOVELTY_CLASSES],
    /// Events per hour of the week, halved together when one fills.
    pub(super) hours: [u8; 168],
    pub(super) operations: [OperationRate; TRACKED_OPERATIONS],
    pub(super) refusals: Rate,
    /// The ten-minute window `window_refusals` counts; the services refused in it (three),
    /// and, last, the events in it (see [`WINDOW_EVENTS`]).
    pub(super) refusal_window: u32,
    pub(super) window_refusals: u16,
    pub(super) refused_services: [u32; 4],
    /// Hash of the environment the NHI belongs to; 0 until known.
    pub(super) home_environment: u32,
    /// The [`ClientClass`]es seen, as bits.
    pub(super) client_classes: u8,
    /// The hour `delegatees` counts, 32-bit linear-counting sketches of the distinct NHIs
    /// delegated to in the hour before it (high half) and in it (low half), and the most
    /// distinct delegatees seen in an hour before those, halving every week.
    pub(super) delegation_hour: u32,
    pub(super) delegatees: u64,
    pub(super) delegation_peak: f32,
    /// The share of events done for a person (see [`Observation::on_behalf_of`]), the rate
    /// of new people among those, and how many people it has acted for.
    pub(super) for_person: Rate,
    pub(super) people: Rate,
    pub(super) distinct_people: u16,
    /// Hash of the NHI's peer group (its owner team and application), whose members take up
    /// new services together; 0 for none. See [`Fleet::rarity`].
    pub(super) peer_group: u32,
}

impl Profile {
    /// The most a profile takes, in memory and encoded. The bar is 2 KiB.
    pub const MAX_BYTES: usize = 2048;

    /// A new profile, learning from `started_at`. `environment` is the one the NHI is
    /// registered in, if any: use from another is an environment crossing from the start.
    pub fn new(started_at: Timestamp, environment: Option<&str>) -> Self {
        Self {
            started_at,
            last_at: started_at,
            events: 0,
            departures: 0,
            seen: [0; BLOOM_WORDS],
            novelty: [Rate::default(); NOVELTY_CLASSES],
            distinct: [0; NOVELTY_CLASSES],
            hours: [0; 168],
            operations: [OperationRate::default(); TRACKED_OPERATIONS],
            refusals: Rate::default(),
            refusal_window: 0,
            window_refusals: 0,
            refused_services: [0; 4],
            home_environment: environment.map_or(0, environment_hash),
            client_classes: 0,
            delegation_hour: 0,
            delegatees: 0,
            delegation_peak: 0.0,
            for_person: Rate::default(),
            people: Rate::default(),
            distinct_people: 0,
            peer_group: 0,
        }
    }

    /// Whether the profile knows its NHI's peer group: one stored before profiles kept it
    /// does not.
    pub fn has_peer_group(&self) -> bool {
        self.peer_group != 0
    }

    /// Puts the NHI in peer group `group` (say, its owner team and application): the NHIs
    /// that take up new services together, as a rollout does.
    pub fn set_peer_group(&mut self, group: &str) {
        self.peer_group = fold32(stable_hash(9, &[group.as_bytes()]));
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// Whether the profile is still learning at `now`: until both the time and the volume
    /// of probation have passed.
    pub fn in_probation(&self, now: Timestamp, settings: &Settings) -> bool {
        self.events < settings.probation_events || now < self.probation_ends_at(settings)
    }

    fn probation_ends_at(&self, settings: &Settings) -> Timestamp {
        self.started_at
            .plus_seconds(i64::from(settings.probation_days) * 86_400)
    }

    /// Scores one event against the profile, then learns from it unless it is out of
    /// baseline after probation: a departure is kept out of the baseline until a person
    /// says it is the new normal ([`Profile::fold_in`]).
    pub fn observe(
        &mut self,
        event: &Observation<'_>,
        fleet: &Fleet,
        settings: &Settings,
    ) -> Assessment {
        let in_probation = self.in_probation(event.at, settings);
        let mut bits = [0.0f32; 9];
        let mut detections = Detections::default();
        let (hour, hour_of_week) = hours(event.at);
        let values = Values::of(event);

        // First-seen sets. A new service brings a new operation and resource prefix with it
        // (both are of the service): their novelty is implied, and scored once, as the
        // service's.
        let mut new = [false; NOVELTY_CLASSES];
        for (class, value) in values.hashes.iter().enumerate() {
            if let Some(hash) = value
                && !self.has_seen(*hash)
            {
                new[class] = true;
                if (class == 1 || class == 2) && new[0] {
                    continue;
                }
                let mut part = WEIGHTS[class] * self.novelty[class].surprisal();
                if class <= 1 {
                    // Its own earlier try, if any, is not a peer's.
                    part *=
                        fleet.rarity(*hash, hour, self.has_seen(*hash ^ TRIED), self.peer_group);
                }
                if class == 0 && self.was_granted(*hash, event.at) {
                    part *= GRANTED_SERVICE;
                }
                bits[class] = part;
            }
        }
        // The person acted for: being with or without one against habit, or a new one.
        let new_person = values.person.is_some_and(|hash| !self.has_seen(hash));
        bits[8] = WEIGHTS[8] * self.person_surprisal(values.person.is_some(), new_person);
        // Hours: the novelty rate is of new hours of the day; a new hour of the week at an
        // hour of the day known on other days (a Saturday at the usual hours) counts less, and
        // so does one at which a person it works for is there.
        if !self.hour_is_known(hour_of_week) {
            new[5] = !self.hour_of_day_is_known(hour_of_week);
            let of_day = if new[5] { 1.0 } else { KNOWN_HOUR_OF_DAY };
            let present = if values.person.is_some() && !new_person {
                PERSON_PRESENT_HOURS
            } else {
                1.0
            };
            bits[5] = WEIGHTS[5] * self.novelty[5].surprisal() * of_day * present;
        }

        // Rates.
        if event.kind == ObservationKind::Action
            && let Some(operation) = values.operation
        {
            let index = self.operation_slot(operation, values.service_hash(), event);
            let slot = &mut self.operations[index];
            slot.roll(hour);
            slot.count = slot.count.saturating_add(1);
            slot.events = slot.events.saturating_add(1);
            let (count, learnt) = (slot.count as f32, slot.events > slot.count);
            let expected = slot.expected();
            let burst = |expected: f32| count > BURST_FACTOR * expected + BURST_MARGIN;
            if learnt && burst(expected) {
                // A rare operation has had few hours to show how bursty the NHI's work is:
                // it is judged against the NHI's busiest operation too.
                let busiest = self
                    .operations
                    .iter()
                    .enumerate()
                    .filter(|(other, _)| *other != index)
                    .map(|(_, slot)| slot.peak)
                    .fold(0.0, f32::max);
                let expected = expected.max(NHI_BURST_SHARE * busiest);
                if burst(expected) {
                    bits[6] = (WEIGHTS[6] * tail_bits(count, expected)).min(MAX_RATE_BITS);
                }
            }
        }

        // Refusals.
        self.count_in_window(event);
        if event.outcome.is_refusal() {
            bits[7] = WEIGHTS[7] * self.refusals.surprisal();
            if self.note_refusal(event, values.service_hash().unwrap_or(0)) {
                detections.insert(Detection::CredentialStuffing);
            }
        }
        self.refusals.note(event.outcome.is_refusal());

        // Named detections.
        if let Some(environment) = event.environment {
            let hash = environment_hash(environment);
            if self.home_environment == 0 {
                self.home_environment = hash;
            } else if hash != self.home_environment {
                detections.insert(Detection::EnvironmentCrossing);
            }
        }
        if let Some(agent) = event.user_agent {
            let class = ClientClass::of(agent);
            if class.is_human() {
                detections.insert(Detection::InteractiveUse);
            }
            self.client_classes |= 1 << (class as u8);
        }
        if event.kind == ObservationKind::Delegation && self.note_delegation(event, hour) {
            detections.insert(Detection::DelegationFanOut);
        }

        let score: f32 = bits.iter().sum();
        let out_of_baseline = score >= settings.alert_bits || !detections.is_empty();
        self.events += 1;
        self.last_at = self.last_at.max(event.at);
        if in_probation || !out_of_baseline {
            self.learn(&values, &new, hour, hour_of_week, fleet);
        } else {
            self.departures += 1;
            // The fleet counts the NHIs that use a service or operation, learnt or not: a
            // rollout's first callers are departures, and the later ones should see that
            // their peers call it too.
            for (value, new) in values.hashes.iter().zip(new).take(2) {
                if let Some(hash) = *value
                    && new
                    && !self.has_seen(hash ^ TRIED)
                {
                    self.insert_seen(hash ^ TRIED);
                    fleet.note(hash, hour, self.peer_group);
                }
            }
        }
        Assessment {
            score,
            bits,
            detections,
            in_probation,
            out_of_baseline,
        }
    }

    /// A person granted the NHI `service` at `at`: its scope ceiling gained the service, or a
    /// reviewer approved a task that uses it. Its first calls in the weeks after (see
    /// [`GRANTED_WEEKS`]) are expected, and count little (see [`GRANTED_SERVICE`]).
    pub fn expect_service(&mut self, service: &str, at: Timestamp) {
        let hash = stable_hash(0, &[service.as_bytes()]);
        self.insert_seen(granted_key(hash, week_of(at)));
    }

    fn was_granted(&self, service: u64, at: Timestamp) -> bool {
        let week = week_of(at);
        (0..=GRANTED_WEEKS.min(week)).any(|back| self.has_seen(granted_key(service, week - back)))
    }

    /// Folds an event into the baseline whatever its score: "this is the new normal".
    pub fn fold_in(&mut self, event: &Observation<'_>, fleet: &Fleet) {
        let values = Values::of(event);
        let mut new = [false; NOVELTY_CLASSES];
        for (class, value) in values.hashes.iter().enumerate() {
            new[class] = value.is_some_and(|hash| !self.has_seen(hash));
        }
        let (hour, hour_of_week) = hours(event.at);
        new[5] = !self.hour_of_day_is_known(hour_of_week);
        self.learn(&values, &new, hour, hour_of_week, fleet);
        if let Some(environment) = event.environment {
            self.home_environment = environment_hash(environment);
        }
    }

    fn learn(
        &mut self,
        values: &Values,
        new: &[bool; NOVELTY_CLASSES],
        hour: u32,
        hour_of_week: usize,
        fleet: &Fleet,
    ) {
        for (class, value) in values.hashes.iter().enumerate() {
            let Some(hash) = value else { continue };
            self.novelty[class].note(new[class]);
            if new[class] {
                let rate = self.novelty[class];
                if rate.total < HIGH_CARDINALITY_AFTER
                    || rate.probability() < HIGH_CARDINALITY_SHARE
                {
                    self.insert_seen(*hash);
                }
                self.distinct[class] = self.distinct[class].saturating_add(1);
                if class <= 1 && !self.has_seen(*hash ^ TRIED) {
                    fleet.note(*hash, hour, self.peer_group);
                }
            }
        }
        self.for_person.note(values.person.is_some());
        if let Some(person) = values.person {
            let new = !self.has_seen(person);
            self.people.note(new);
            if new {
                // An assistant of the whole company meets new people all the time: like any
                // such class, they stop filling the filter the other classes share.
                if self.people.total < HIGH_CARDINALITY_AFTER
                    || self.people.probability() < HIGH_CARDINALITY_SHARE
                {
                    self.insert_seen(person);
                }
                self.distinct_people = self.distinct_people.saturating_add(1);
            }
        }
        self.novelty[5].note(new[5]);
        if self.hours[hour_of_week] == 0 {
            self.distinct[5] = self.distinct[5].saturating_add(1);
        }
        if self.hours[hour_of_week] == u8::MAX {
            // Halved together, rounding up: an hour once seen stays known.
            for count in &mut self.hours {
                *count = count.div_ceil(2);
            }
        }
        self.hours[hour_of_week] += 1;
    }

    /// How surprising it is that an event was done for a person (or not), and, for a person
    /// it never acted for, that the person is new.
    fn person_surprisal(&self, for_person: bool, new_person: bool) -> f32 {
        let state = if for_person {
            self.for_person.probability()
        } else {
            1.0 - self.for_person.probability()
        };
        let mut bits = if state < UNUSUAL_PRESENCE {
            if for_person {
                self.for_person.surprisal()
            } else {
                self.for_person.miss_surprisal()
            }
        } else {
            0.0
        };
        // A new person is news only where people have been met before.
        if new_person && self.distinct_people > 0 {
            bits += self.people.surprisal();
        }
        bits
    }

    /// An hour of the week is known if the profile has seen it or an hour beside it:
    /// schedules drift by a few minutes across an hour's edge.
    fn hour_is_known(&self, hour_of_week: usize) -> bool {
        let before = (hour_of_week + 167) % 168;
        let after = (hour_of_week + 1) % 168;
        self.hours[before] > 0 || self.hours[hour_of_week] > 0 || self.hours[after] > 0
    }

    /// Whether the hour of the day is known on any day of the week.
    fn hour_of_day_is_known(&self, hour_of_week: usize) -> bool {
        let hour_of_day = hour_of_week % 24;
        (0..7).any(|day| self.hour_is_known(day * 24 + hour_of_day))
    }

    fn bloom_bits(hash: u64) -> [u64; 3] {
        // Three probes from two halves of one hash (Kirsch–Mitzenmacher).
        let (a, b) = (hash & 0xffff_ffff, hash >> 32);
        [
            a % BLOOM_BITS,
            (a + b) % BLOOM_BITS,
            (a + 2 * b) % BLOOM_BITS,
        ]
    }

    fn has_seen(&self, hash: u64) -> bool {
        Self::bloom_bits(hash)
            .iter()
            .all(|&bit| self.seen[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    fn insert_seen(&mut self, hash: u64) {
        for bit in Self::bloom_bits(hash) {
            self.seen[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// The rate slot (index) of an operation: its own, else an empty one, else the quietest one's
    /// (whose membership stays in the Bloom filter; only its rate is forgotten).
    fn operation_slot(
        &mut self,
        operation: u64,
        service: Option<u64>,
        event: &Observation<'_>,
    ) -> usize {
        let key = fold32(operation);
        match self.operations.iter().position(|slot| slot.key == key) {
            Some(index) => index,
            None => {
                let index = self
                    .operations
                    .iter()
                    .enumerate()
                    .min_by(|a, b| {
                        let weight = |slot: &OperationRate| {
                            if slot.key == 0 {
                                f32::MIN
                            } else {
                                slot.hourly + slot.peak
                            }
                        };
                        weight(a.1).total_cmp(&weight(b.1))
                    })
                    .map_or(0, |(index, _)| index);
                let mut slot = OperationRate {
                    key,
                    service: service.map_or(0, fold32),
                    hour: hours(event.at).0,
                    ..OperationRate::default()
                };
                let name = format_operation(event.service, event.operation);
                let len = name.len().min(NAME_BYTES);
                slot.name[..len].copy_from_slice(&name.as_bytes()[..len]);
                slot.name_len = len as u8;
                self.operations[index] = slot;
                index
            }
        }
    }

    /// Counts an event in its ten-minute window (starting a new window if it is in a later
    /// one). `refused_services[WINDOW_EVENTS]` holds the window's events.
    fn count_in_window(&mut self, event: &Observation<'_>) {
        let window = u32::try_from(
            event
                .at
                .unix_millis()
                .div_euclid(REFUSAL_WINDOW_MINUTES * 60_000),
        )
        .unwrap_or(u32::MAX);
        if window != self.refusal_window {
            self.refusal_window = window;
            self.window_refusals = 0;
            self.refused_services = [0; 4];
        }
        let events = &mut self.refused_services[WINDOW_EVENTS];
        *events = events.saturating_add(1);
    }

    /// Counts a refusal in its ten-minute window; `true` when the window looks like
    /// credential stuffing: refusals across three or more services, or a burst of thirty, far
    /// more than the NHI's usual refusal rate explains for the window's events; or a secret
    /// presented in another NHI's name.
    fn note_refusal(&mut self, event: &Observation<'_>, service: u64) -> bool {
        self.window_refusals = self.window_refusals.saturating_add(1);
        let service = fold32(service).max(1);
        let tracked = &mut self.refused_services[..WINDOW_EVENTS];
        if !tracked.contains(&service)
            && let Some(free) = tracked.iter_mut().find(|s| **s == 0)
        {
            *free = service;
        }
        let services = tracked.iter().filter(|s| **s != 0).count();
        let refusals = f32::from(self.window_refusals);
        let usual = self.refusals.probability();
        let expected = usual * self.refused_services[WINDOW_EVENTS] as f32;
        event.outcome == Outcome::Misattributed
            || (usual < 0.2
                && ((services >= 3 && self.window_refusals >= 5) || self.window_refusals >= 30)
                && poisson_tail_bits(refusals, expected) >= STUFFING_BITS)
    }

    /// Counts a delegation in its hour; `true` when the NHIs delegated to in this hour and the
    /// last are many more than in its busiest hour so far.
    ///
    /// The distinct NHIs are counted over this hour and the one before it, so that a fan-out
    /// across an hour's edge is counted whole: `delegatees` holds two 32-bit linear-counting
    /// maps, the previous hour's in the high half and this hour's in the low half.
    fn note_delegation(&mut self, event: &Observation<'_>, hour: u32) -> bool {
        if hour != self.delegation_hour {
            // The peak learns an hour once it has left the two hours judged: a fan-out across
            // an hour's edge is judged whole before its first half is learnt.
            let (previous, current) = ((self.delegatees >> 32) as u32, self.delegatees as u32);
            let consecutive = hour == self.delegation_hour.wrapping_add(1);
            let leaving = if consecutive {
                distinct_estimate(previous)
            } else {
                distinct_estimate(previous).max(distinct_estimate(current))
            };
            let weeks = hour.saturating_sub(self.delegation_hour) as f32 / 168.0;
            self.delegation_peak = (self.delegation_peak * 0.5f32.powf(weeks)).max(leaving);
            self.delegatees = if consecutive {
                u64::from(current) << 32
            } else {
                0
            };
            self.delegation_hour = hour;
        }
        let delegatee = stable_hash(7, &[event.resource.as_bytes()]);
        self.delegatees |= 1 << (delegatee % 32);
        let distinct = distinct_estimate(two_hours(self.delegatees));
        distinct >= (2.0 * self.delegation_peak + 3.0).max(5.0)
    }

    /// What the profile knows, for `GET /v1/nhis/{id}/baseline`.
    pub fn summary(&self, now: Timestamp, settings: &Settings) -> BaselineSummary {
        let mut operations: Vec<OperationSummary> = self
            .operations
            .iter()
            .filter(|slot| slot.key != 0)
            .map(|slot| OperationSummary {
                operation: slot.name(),
                events: slot.events,
                hourly_rate: round2(slot.hourly),
                busiest_hour: round2(slot.peak.max(slot.count as f32)),
            })
            .collect();
        operations.sort_by(|a, b| b.events.cmp(&a.events).then(a.operation.cmp(&b.operation)));
        let in_probation = self.in_probation(now, settings);
        BaselineSummary {
            status: if in_probation { "probation" } else { "learnt" },
            started_at: self.started_at,
            probation_ends_at: self.probation_ends_at(settings),
            events: self.events,
            events_needed: settings.probation_events.saturating_sub(self.events),
            departures: self.departures,
            last_event_at: (self.events > 0).then_some(self.last_at),
            services: self.distinct[0],
            operations_known: self.distinct[1],
            resource_prefixes: self.distinct[2],
            source_networks: self.distinct[3],
            user_agents: self.distinct[4],
            people: self.distinct_people,
            for_person_share: if self.for_person.total > 0.0 {
                round2(self.for_person.hits / self.for_person.total)
            } else {
                0.0
            },
            active_hours_of_week: self
                .hours
                .iter()
                .enumerate()
                .filter(|(_, count)| **count > 0)
                .map(|(hour, _)| hour as u16)
                .collect(),
            refusal_rate: round2(self.refusals.probability()),
            client_classes: [
                ClientClass::Browser,
                ClientClass::Console,
                ClientClass::InteractiveTool,
                ClientClass::Program,
            ]
            .into_iter()
            .filter(|class| self.client_classes & (1 << (*class as u8)) != 0)
            .map(|class| match class {
                ClientClass::Browser => "browser",
                ClientClass::Console => "console",
                ClientClass::InteractiveTool => "interactive_tool",
                ClientClass::Program => "program",
            })
            .collect(),
            operations,
            bytes: self.encode().len(),
        }
    }

    /// Adds this profile's services and operations to the fleet's counts: for a profile
    /// read back from the store, whose values the fleet has not been told of since start.
    pub fn tell_fleet(&self, fleet: &Fleet) {
        let mut services: Vec<u32> = Vec::with_capacity(TRACKED_OPERATIONS);
        for slot in self.operations.iter().filter(|slot| slot.key != 0) {
            fleet.note_folded(slot.key);
            if slot.service != 0 && !services.contains(&slot.service) {
                services.push(slot.service);
                fleet.note_folded(slot.service);
            }
        }
    }
}

/// What a profile knows, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BaselineSummary {
    /// `probation` while learning (findings are recorded, never enforced), then `learnt`.
    pub status: &'static str,
    pub started_at: Timestamp,
    pub probation_ends_at: Timestamp,
    pub events: u64,
    /// Events still needed before probation can end.
    pub events_needed: u64,
    /// Events found out of baseline after probation.
    pub departures: u64,
    pub last_event_at: Option<Timestamp>,
    pub services: u16,
    pub operations_known: u16,
    pub resource_prefixes: u16,
    pub source_networks: u16,
    pub user_agents: u16,
    /// The people it has acted for (see `on_behalf_of`), and the share of its events done
    /// for one.
    pub people: u16,
    pub for_person_share: f32,
    /// Hours of the week (0 = Monday 00:00 UTC) in which it has been active.
    pub active_hours_of_week: Vec<u16>,
    pub refusal_rate: f32,
    pub client_classes: Vec<&'static str>,
    /// The busiest operations with their learnt rates.
    pub operations: Vec<OperationSummary>,
    /// The profile's encoded size.
    pub bytes: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OperationSummary {
    /// `service:operation`, cut to 24 bytes.
    pub operation: String,
    pub events: u32,
    /// Events per active hour, exponentially weighted.
    pub hourly_rate: f32,
    pub busiest_hour: f32,
}

/// The hashes of an event's values of the first-seen classes but the hour, indexed as
/// [`Feature::ALL`](super::Feature::ALL).
pub(super) fn first_seen_values(event: &Observation<'_>) -> [Option<u64>; NOVELTY_CLASSES - 1] {
    Values::of(event).hashes
}

/// The hashed values of one event's first-seen classes (`None`: the event has no value of
/// that class), hour of week excluded.
struct Values {
    hashes: [Option<u64>; NOVELTY_CLASSES - 1],
    operation: Option<u64>,
    /// The person acted for, in the Bloom filter as its own class.
    person: Option<u64>,
}

impl Values {
    fn of(event: &Observation<'_>) -> Self {
        let action = event.kind == ObservationKind::Action;
        let service = event.service.as_bytes();
        let operation = action.then(|| stable_hash(1, &[service, event.operation.as_bytes()]));
        let prefix = resource_prefix(event.resource);
        Values {
            hashes: [
                action.then(|| stable_hash(0, &[service])),
                operation,
                (action && !prefix.is_empty())
                    .then(|| stable_hash(2, &[service, prefix.as_bytes()])),
                event
                    .source
                    .map(|address| stable_hash(3, &[&source_network(address)])),
                event.user_agent.map(agent_hash),
            ],
            operation,
            person: event
                .on_behalf_of
                .map(|person| stable_hash(8, &[person.as_bytes()])),
        }
    }

    fn service_hash(&self) -> Option<u64> {
        self.hashes[0]
    }
}

/// A user agent without its version numbers: `aws-sdk-go/1.44.1 (go1.20; linux)` →
/// `aws-sdk-go (go linux)`: each word up to its first `/` or digit. An upgrade is not a new
/// client.
fn product_names(agent: &str) -> impl Iterator<Item = &str> {
    agent.split_whitespace().map(|token| {
        let end = token
            .find(|c: char| c == '/' || c.is_ascii_digit())
            .unwrap_or(token.len());
        &token[..end]
    })
}

/// The hash of a user agent's product names (see [`product_names`]), without allocating.
fn agent_hash(agent: &str) -> u64 {
    let mut buffer = [0u8; 256];
    let mut len = 0;
    for (index, name) in product_names(agent).enumerate() {
        let bytes = name.as_bytes();
        if index > 0 && len < buffer.len() {
            buffer[len] = b' ';
            len += 1;
        }
        let take = bytes.len().min(buffer.len() - len);
        buffer[len..len + take].copy_from_slice(&bytes[..take]);
        len += take;
    }
    stable_hash(4, &[&buffer[..len]])
}

fn format_operation(service: &str, operation: &str) -> String {
    let mut name = String::with_capacity(service.len() + operation.len() + 1);
    name.push_str(service);
    name.push(':');
    name.push_str(operation);
    // Cut on a character boundary.
    let mut end = name.len().min(NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}

/// Environments go by several names; `prod` and `production` are one.
fn environment_hash(environment: &str) -> u32 {
    let lower = environment.trim().to_ascii_lowercase();
    let canonical = match lower.as_str() {
        "prod" | "prd" | "production" | "live" => "production",
        "stage" | "stg" | "staging" | "preprod" | "pre-production" => "staging",
        "dev" | "development" => "development",
        "test" | "testing" | "qa" => "test",
        other => other,
    };
    fold32(stable_hash(5, &[canonical.as_bytes()])).max(1)
}

/// The Bloom filter's key of a grant of the service with hash `service` in `week`.
fn granted_key(service: u64, week: u64) -> u64 {
    (service ^ GRANTED).wrapping_add(week.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Weeks since the epoch (Thursday to Thursday; only their succession matters).
fn week_of(at: Timestamp) -> u64 {
    u64::try_from(at.unix_millis().div_euclid(7 * 86_400_000)).unwrap_or(0)
}

/// A 64-bit hash folded to 32 bits, never 0 (0 marks an empty slot).
pub(super) fn fold32(hash: u64) -> u32 {
    ((hash ^ (hash >> 32)) as u32).max(1)
}

/// The surprisal in bits of at least `count` events where `expected` were expected, from a
/// Poisson tail (Chernoff bound) scaled for over-dispersion as a negative binomial would be:
/// machine traffic is burstier than Poisson, more so the busier it is.
fn tail_bits(count: f32, expected: f32) -> f32 {
    let dispersion = 1.0 + expected / 5.0;
    let (k, mean) = (count / dispersion, expected / dispersion);
    if k <= mean {
        return 0.0;
    }
    (mean - k + k * (k / mean).ln()) / std::f32::consts::LN_2
}

/// The surprisal in bits of at least `count` events where `expected` were expected, from a
/// Poisson tail (Chernoff bound), without over-dispersion.
fn poisson_tail_bits(count: f32, expected: f32) -> f32 {
    let expected = expected.max(0.01);
    if count <= expected {
        return 0.0;
    }
    (expected - count + count * (count / expected).ln()) / std::f32::consts::LN_2
}

/// Linear counting over a 32-bit map: the number of distinct values hashed into it.
fn distinct_estimate(map: u32) -> f32 {
    let zeros = map.count_zeros() as f32;
    if zeros == 0.0 {
        return 32.0 * (32.0f32).ln();
    }
    -32.0 * (zeros / 32.0).ln()
}

/// The union of the two hours' maps in `delegatees`.
fn two_hours(delegatees: u64) -> u32 {
    (delegatees as u32) | ((delegatees >> 32) as u32)
}

fn round2(value: f32) -> f32 {
    (value * 100.0).round() / 100.0
}
