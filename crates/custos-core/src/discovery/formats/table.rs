//! The CSV formats: a header row, then one record per row.
//!
//! Rows are read into one reused `ByteRecord`, so memory stays that of the longest row. The
//! reader is flexible about row lengths so that a row with too few or too many fields is
//! reported as malformed and skipped, instead of ending the file as a strict reader would.

use std::io::BufRead;

use crate::discovery::{Malformed, Position, ReadError, Record};

use super::Sink;

/// What a CSV format knows: which header it accepts, and what a row of it means.
pub(super) trait Table {
    /// Where each column the format reads sits in the file, found from its header.
    type Layout;

    /// Checks the header (names trimmed): why it is not this format's, if it is not.
    fn layout(header: &[&str]) -> Result<Self::Layout, String>;

    /// One row's fields, as many as the header has: its record, or why it is malformed.
    fn row(layout: &Self::Layout, fields: &[&str]) -> Result<Record, String>;
}

/// Reads the header, then every row, as format `T`.
pub(super) fn read<T: Table>(input: impl BufRead, sink: &mut dyn Sink) -> Result<(), ReadError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let mut row = csv::ByteRecord::new();
    let header_position = Position {
        record: 0,
        line: Some(1),
    };
    let unreadable = |position, reason: &str| ReadError::Unreadable {
        position,
        reason: reason.to_owned(),
    };
    if !reader
        .read_byte_record(&mut row)
        .map_err(|error| csv_error(error, header_position))?
    {
        return Err(unreadable(
            header_position,
            "the input is empty: expected a header row",
        ));
    }
    let header: Vec<String> = row
        .iter()
        .enumerate()
        .map(|(at, name)| {
            // A spreadsheet's UTF-8 export often starts with a byte order mark.
            let name = if at == 0 {
                name.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(name)
            } else {
                name
            };
            std::str::from_utf8(name).map(|name| name.trim().to_owned())
        })
        .collect::<Result<_, _>>()
        .map_err(|_| unreadable(header_position, "the header row is not utf-8"))?;
    let names: Vec<&str> = header.iter().map(String::as_str).collect();
    let layout = T::layout(&names).map_err(|reason| unreadable(header_position, &reason))?;
    let columns = header.len();

    let mut records = 0;
    loop {
        let position = Position {
            record: records + 1,
            line: None,
        };
        if !reader
            .read_byte_record(&mut row)
            .map_err(|error| csv_error(error, position))?
        {
            return Ok(());
        }
        records += 1;
        let position = Position {
            record: records,
            line: row.position().map(csv::Position::line),
        };
        let fields: Result<Vec<&str>, usize> = row
            .iter()
            .enumerate()
            .map(|(at, field)| std::str::from_utf8(field).map_err(|_| at))
            .collect();
        let outcome = match fields {
            _ if row.len() != columns => Err(format!(
                "the row has {} fields where the header has {columns}",
                row.len()
            )),
            Err(at) => Err(format!("field {} ({}) is not utf-8", at + 1, header[at])),
            Ok(fields) => T::row(&layout, &fields),
        };
        match outcome {
            Ok(record) => sink.record(position, record),
            Err(reason) => sink.malformed(Malformed { position, reason }),
        }
    }
}

/// The csv crate fails only on I/O (rows are bytes, lengths are flexible), but its error type
/// has other kinds; those end the file where they happen.
fn csv_error(error: csv::Error, position: Position) -> ReadError {
    if error.is_io_error() {
        return ReadError::Io(error.into());
    }
    let line = error.position().map(csv::Position::line);
    ReadError::Unreadable {
        position: Position {
            line: line.or(position.line),
            ..position
        },
        reason: format!("unreadable csv: {error}"),
    }
}

/// Splits `k=v;k=v` into pairs; an entry without `=` or with an empty key is an error.
pub(super) fn pairs(
    column: &str,
    text: &str,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    text.split(';')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err(format!("{column}: expected key=value, found {entry:?}")),
        })
        .collect()
}
