//! What every `discovery_*` target checks: reading arbitrary bytes as one format never
//! panics, and whatever is delivered is numbered in file order, each number once.

use custos_core::discovery::formats::read;
use custos_core::discovery::{Format, Malformed, Position, Record, Sink};

/// Checks the numbering as records arrive.
struct Ordered {
    last: u64,
}

impl Ordered {
    fn next(&mut self, position: Position) {
        assert!(position.record > self.last, "record {} after {}", position.record, self.last);
        self.last = position.record;
    }
}

impl Sink for Ordered {
    fn record(&mut self, position: Position, _: Record) {
        self.next(position);
    }

    fn malformed(&mut self, malformed: Malformed) {
        self.next(malformed.position);
    }
}

pub fn check(format: Format, data: &[u8]) {
    let _ = read(format, data, &mut Ordered { last: 0 });
}
