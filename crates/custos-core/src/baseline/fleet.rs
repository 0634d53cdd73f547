//! How many NHIs of the fleet know a service or an operation, and how many took it up lately:
//! a new service that many peers are taking up at the same time (a rollout) says less than one
//! nobody else took up, and one that many peers have long used says a little less.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::profile::fold32;

const WIDTH: usize = 1 << 15;
const DEPTH: usize = 2;
/// Recent take-ups of a value count half after this many hours.
const RECENT_HALF_LIFE_HOURS: f32 = 24.0;
/// The weight of a new value's surprisal as peers take it up at the same time: 1 when none
/// does, then `RECENT_FLOOR + (1 - RECENT_FLOOR) / (1 + recent / RECENT_SCALE)`.
const RECENT_FLOOR: f32 = 0.1;
const RECENT_SCALE: f32 = 0.5;
/// ... and as peers have long known it: `KNOWN_FLOOR + (1 - KNOWN_FLOOR) / (1 + known /
/// KNOWN_SCALE)`. Never 0: a service every agent uses is still worth noticing in one that
/// never did.
const KNOWN_FLOOR: f32 = 0.75;
const KNOWN_SCALE: f32 = 30.0;

/// Count-min sketches of the number of profiles that have taken up each value, ever and
/// lately (decaying with time). Shared by every profile and updated through `&self`, so the
/// decision point's threads need no lock; counts are estimates that may only err upwards, by
/// collisions.
pub struct Fleet {
    counts: Vec<AtomicU32>,
    /// Per cell, a decaying count (f32 bits, low half) as of an hour since the epoch (high half).
    recent: Vec<AtomicU64>,
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
            recent: (0..WIDTH * DEPTH).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn cells(key: u32) -> [usize; DEPTH] {
        let mixed = u64::from(key).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        [
            (key as usize) % WIDTH,
            WIDTH + ((mixed >> 40) as usize) % WIDTH,
        ]
    }

    /// A profile took up the value with this hash in `hour` (since the epoch).
    pub(super) fn note(&self, hash: u64, hour: u32) {
        let key = fold32(hash);
        self.note_folded(key);
        for cell in Self::cells(key) {
            let slot = &self.recent[cell];
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

    /// A profile knows the value (read back from the store): counted as known, not as taken up
    /// lately.
    pub(super) fn note_folded(&self, key: u32) {
        for cell in Self::cells(key) {
            self.counts[cell].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many profiles took the value up lately, as of `hour`, at most.
    pub fn recent(&self, hash: u64, hour: u32) -> f32 {
        Self::cells(fold32(hash))
            .iter()
            .map(|&cell| {
                let (count, at) = unpack(self.recent[cell].load(Ordering::Relaxed));
                decayed(count, at, hour)
            })
            .fold(f32::INFINITY, f32::min)
    }

    /// How many profiles know the value, at most.
    pub fn count(&self, hash: u64) -> u32 {
        Self::cells(fold32(hash))
            .iter()
            .map(|&cell| self.counts[cell].load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// The weight of a new value's surprisal at `hour` by its rarity in the fleet: 1 when no
    /// other profile knows it, falling fast as peers take it up at the same time and slowly as
    /// more have long known it. `counted` says the asking profile has told the fleet of the
    /// value itself (it tried it), which is then not counted as a peer.
    pub fn rarity(&self, hash: u64, hour: u32, counted: bool) -> f32 {
        let own = if counted { 1.0 } else { 0.0 };
        let recent = (self.recent(hash, hour) - own).max(0.0);
        let known = (self.count(hash) as f32 - own).max(0.0);
        let by_recent = RECENT_FLOOR + (1.0 - RECENT_FLOOR) / (1.0 + recent / RECENT_SCALE);
        let by_known = KNOWN_FLOOR + (1.0 - KNOWN_FLOOR) / (1.0 + known / KNOWN_SCALE);
        by_recent.min(by_known)
    }
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
