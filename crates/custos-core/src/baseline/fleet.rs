//! How many NHIs of the fleet know a service or an operation, and how many took it up lately,
//! in the whole fleet and in each peer group (NHIs of one owner team and application): a new
//! service that the NHI's peers are taking up at the same time (a rollout) says less than one
//! nobody else took up, and one that many NHIs have long used says a little less. NHIs of other
//! groups taking it up lately weigh little: one attacker trying the same service with several
//! stolen credentials is not a rollout.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::profile::fold32;

const WIDTH: usize = 1 << 15;
const DEPTH: usize = 2;
/// Recent take-ups of a value count half after this many hours.
const RECENT_HALF_LIFE_HOURS: f32 = 24.0;
/// The weight of a new value's surprisal as peers take it up at the same time: 1 when none
/// does, then `RECENT_FLOOR + (1 - RECENT_FLOOR) / (1 + recent / RECENT_SCALE)`: one peer of
/// its group makes it 0.4. Take-ups anywhere in the fleet count as `FLEET_RECENT_SCALE` does
/// instead: two make it 0.74, twenty 0.28, so that a rollout to the whole fleet still counts.
const RECENT_FLOOR: f32 = 0.1;
const RECENT_SCALE: f32 = 0.5;
const FLEET_RECENT_SCALE: f32 = 5.0;
/// ... and as peers have long known it: `KNOWN_FLOOR + (1 - KNOWN_FLOOR) / (1 + known /
/// KNOWN_SCALE)`. Never 0: a service every agent uses is still worth noticing in one that
/// never did.
const KNOWN_FLOOR: f32 = 0.75;
const KNOWN_SCALE: f32 = 30.0;

/// Count-min sketches of the number of profiles that have taken up each value, ever and
/// lately (decaying with time), and lately in each peer group. Shared by every profile and
/// updated through `&self`, so the decision point's threads need no lock; counts are estimates
/// that may only err upwards, by collisions.
pub struct Fleet {
    counts: Vec<AtomicU32>,
    recent: Recent,
    /// Keyed by the value and the peer group together.
    recent_in_group: Recent,
}

/// A count-min sketch of decaying counts: per cell, a count (f32 bits, low half) as of an hour
/// since the epoch (high half).
struct Recent(Vec<AtomicU64>);

impl Recent {
    fn new() -> Self {
        Self((0..WIDTH * DEPTH).map(|_| AtomicU64::new(0)).collect())
    }

    fn note(&self, key: u32, hour: u32) {
        for cell in Fleet::cells(key) {
            let slot = &self.0[cell];
            let mut current = slot.load(Ordering::Relaxed);
            loop {
                let (count, at) = unpack(current);
                let updated = pack(decayed(count, at, hour) + 1.0, at.max(hour));
                match slot.compare_exchange_weak(
                    current,
                    updated,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(actual) => current = actual,
                }
            }
        }
    }

    /// The count as of `hour`, at most.
    fn get(&self, key: u32, hour: u32) -> f32 {
        Fleet::cells(key)
            .iter()
            .map(|&cell| {
                let (count, at) = unpack(self.0[cell].load(Ordering::Relaxed));
                decayed(count, at, hour)
            })
            .fold(f32::INFINITY, f32::min)
    }
}

impl Default for Fleet {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").finish_non_exhaustive()
    }
}

impl Fleet {
    pub fn new() -> Self {
        Self {
            counts: (0..WIDTH * DEPTH).map(|_| AtomicU32::new(0)).collect(),
            recent: Recent::new(),
            recent_in_group: Recent::new(),
        }
    }

    fn cells(key: u32) -> [usize; DEPTH] {
        let mixed = u64::from(key).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        [
            (key as usize) % WIDTH,
            WIDTH + ((mixed >> 40) as usize) % WIDTH,
        ]
    }

    /// A profile of peer group `group` (0 for none) took up the value with this hash in
    /// `hour` (since the epoch).
    pub(super) fn note(&self, hash: u64, hour: u32, group: u32) {
        let key = fold32(hash);
        self.note_folded(key);
        self.recent.note(key, hour);
        if group != 0 {
            self.recent_in_group.note(in_group(hash, group), hour);
        }
    }

    /// A profile knows the value (read back from the store): counted as known, not as taken up
    /// lately.
    pub(super) fn note_folded(&self, key: u32) {
        for cell in Self::cells(key) {
            self.counts[cell].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many profiles took the value up lately, as of `hour`, at most.
    pub fn recent(&self, hash: u64, hour: u32) -> f32 {
        self.recent.get(fold32(hash), hour)
    }

    /// How many profiles know the value, at most.
    pub fn count(&self, hash: u64) -> u32 {
        Self::cells(fold32(hash))
            .iter()
            .map(|&cell| self.counts[cell].load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// The weight of a new value's surprisal at `hour` for a profile of peer group `group`
    /// (0 for none), by its rarity: 1 when no other profile knows it, falling fast as peers of
    /// the group take it up at the same time, slowly as the rest of the fleet does, and slowly
    /// as more have long known it. `counted` says the asking profile has told the fleet of the
    /// value itself (it tried it), which is then not counted as a peer.
    pub fn rarity(&self, hash: u64, hour: u32, counted: bool, group: u32) -> f32 {
        let own = if counted { 1.0 } else { 0.0 };
        let by_recent = |recent: f32, scale: f32| {
            RECENT_FLOOR + (1.0 - RECENT_FLOOR) / (1.0 + (recent - own).max(0.0) / scale)
        };
        let in_fleet = by_recent(self.recent(hash, hour), FLEET_RECENT_SCALE);
        let in_group = if group == 0 {
            1.0
        } else {
            by_recent(
                self.recent_in_group.get(in_group(hash, group), hour),
                RECENT_SCALE,
            )
        };
        let known = (self.count(hash) as f32 - own).max(0.0);
        let by_known = KNOWN_FLOOR + (1.0 - KNOWN_FLOOR) / (1.0 + known / KNOWN_SCALE);
        in_fleet.min(in_group).min(by_known)
    }
}

/// The sketch key of a value within a peer group.
fn in_group(hash: u64, group: u32) -> u32 {
    fold32(hash ^ u64::from(group).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn pack(count: f32, hour: u32) -> u64 {
    (u64::from(hour) << 32) | u64::from(count.to_bits())
}

fn unpack(packed: u64) -> (f32, u32) {
    (f32::from_bits(packed as u32), (packed >> 32) as u32)
}

/// `count` as of `at`, decayed to `hour` (never grown: an hour before `at` reads as `at`).
fn decayed(count: f32, at: u32, hour: u32) -> f32 {
    if count <= 0.0 {
        return 0.0;
    }
    let hours = hour.saturating_sub(at) as f32;
    count * 0.5f32.powf(hours / RECENT_HALF_LIFE_HOURS)
}
