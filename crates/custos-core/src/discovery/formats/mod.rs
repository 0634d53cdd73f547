//! One streaming reader per [`Format`].

use std::io::BufRead;

use super::{Format, Position, ReadError, Sink};

/// Reads `input` as `format` to its end, handing each record (or each malformed one) to
/// `sink` as it goes. Memory stays bounded by one record, whatever the size of the input.
pub fn read(format: Format, input: impl BufRead, sink: &mut dyn Sink) -> Result<(), ReadError> {
    let _ = (input, sink);
    Err(ReadError::Unreadable {
        position: Position {
            record: 0,
            line: None,
        },
        reason: format!("the {} reader is not written yet", format.as_str()),
    })
}
