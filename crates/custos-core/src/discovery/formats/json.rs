//! The container shapes of the JSON formats, read one element at a time.
//!
//! The first byte that is not white space decides the shape. `[` is a bare array, read with a
//! sequence visitor that parses one element, hands it on and drops it before the next, so an
//! array of a million records never lives in memory at once. `{` is either a wrapper whose
//! container key (`Records`, `items`) holds such an array, or a record itself: the first
//! object's keys are read one by one, the container array is streamed if it comes, and
//! otherwise the object is the first record of a JSON-lines file (or the only record), and the
//! rest of the input is read a line at a time so that a bad line is reported and skipped.

use std::fmt;
use std::io::{self, BufRead, Read};

use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::discovery::{Malformed, Position, ReadError, Record, Sink};

/// What a format makes of one element: a record, nothing (an element the format skips on
/// purpose, such as a Kubernetes audit event of an intermediate stage), or why it is malformed.
pub(super) type Interpret = fn(Map<String, Value>) -> Result<Option<Record>, String>;

/// Reads `input` in whichever container shape it has; `containers` are the keys of a wrapper
/// object whose array holds the records.
pub(super) fn read(
    input: impl BufRead,
    containers: &[&str],
    interpret: Interpret,
    sink: &mut dyn Sink,
) -> Result<(), ReadError> {
    let mut input = Lines {
        inner: input,
        newlines: 0,
    };
    let mut state = State {
        sink,
        interpret,
        records: 0,
    };
    match input.first_byte()? {
        None => Ok(()),
        Some(b'[') => {
            let mut deserializer = serde_json::Deserializer::from_reader(&mut input);
            deserializer
                .deserialize_seq(Elements { state: &mut state })
                .and_then(|()| deserializer.end())
                .map_err(|error| state.unreadable(error))
        }
        Some(b'{') => {
            let line = input.newlines + 1;
            let mut deserializer = serde_json::Deserializer::from_reader(&mut input);
            let first = deserializer
                .deserialize_map(First {
                    state: &mut state,
                    containers,
                })
                .map_err(|error| state.unreadable(error))?;
            match first {
                // A wrapper: nothing but white space may follow it.
                None => deserializer.end().map_err(|error| state.unreadable(error)),
                Some(object) => {
                    state.deliver(
                        Position {
                            record: 1,
                            line: Some(line),
                        },
                        object,
                    );
                    state.records = 1;
                    read_lines(&mut input, &mut state)
                }
            }
        }
        Some(_) => Err(ReadError::Unreadable {
            position: Position {
                record: 1,
                line: Some(input.newlines + 1),
            },
            reason: "not json: expected an array, an object or one object per line".to_owned(),
        }),
    }
}

/// The rest of a JSON-lines file after its first object: each line is one record, and a line
/// that is not a JSON object is malformed without ending the file.
fn read_lines<R: BufRead>(input: &mut Lines<R>, state: &mut State<'_>) -> Result<(), ReadError> {
    let mut line = Vec::new();
    loop {
        line.clear();
        // The first call reads what is left of the line the first object ended on.
        let number = input.newlines + 1;
        if !input.read_line(&mut line)? {
            return Ok(());
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        state.records += 1;
        let position = Position {
            record: state.records,
            line: Some(number),
        };
        match serde_json::from_slice::<Value>(text) {
            Ok(Value::Object(object)) => state.deliver(position, object),
            Ok(_) => state.malformed(position, "expected a json object".to_owned()),
            Err(error) => state.malformed(
                position,
                format!(
                    "invalid json at column {}: {}",
                    error.column(),
                    message(&error)
                ),
            ),
        }
    }
}

/// serde_json's message without the "at line … column …" it appends.
fn message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

/// The reader, counting the newlines it has handed on so that JSON lines have line numbers.
struct Lines<R> {
    inner: R,
    newlines: u64,
}

impl<R: BufRead> Lines<R> {
    /// Skips white space (and a UTF-8 byte order mark) and peeks at the first byte after it.
    fn first_byte(&mut self) -> io::Result<Option<u8>> {
        let mut start = true;
        loop {
            let buffer = self.inner.fill_buf()?;
            if buffer.is_empty() {
                return Ok(None);
            }
            if start && buffer.starts_with(b"\xEF\xBB\xBF") {
                self.inner.consume(3);
                start = false;
                continue;
            }
            start = false;
            let blank = buffer
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            let newlines = buffer[..blank].iter().filter(|&&b| b == b'\n').count();
            let first = buffer.get(blank).copied();
            self.newlines += newlines as u64;
            self.inner.consume(blank);
            if first.is_some() {
                return Ok(first);
            }
        }
    }

    /// Reads one line, with its newline, into `line`; false at the end of the input.
    fn read_line(&mut self, line: &mut Vec<u8>) -> io::Result<bool> {
        let read = self.inner.read_until(b'\n', line)?;
        if line.last() == Some(&b'\n') {
            self.newlines += 1;
        }
        Ok(read > 0)
    }
}

impl<R: BufRead> Read for Lines<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.newlines += buffer[..read].iter().filter(|&&b| b == b'\n').count() as u64;
        Ok(read)
    }
}

/// What the element visitors share: where records go and how many were found so far.
struct State<'s> {
    sink: &'s mut dyn Sink,
    interpret: Interpret,
    records: u64,
}

impl State<'_> {
    fn deliver(&mut self, position: Position, object: Map<String, Value>) {
        match (self.interpret)(object) {
            Ok(Some(record)) => self.sink.record(position, record),
            Ok(None) => {}
            Err(reason) => self.malformed(position, reason),
        }
    }

    fn element(&mut self, element: Value) {
        self.records += 1;
        let position = Position {
            record: self.records,
            line: None,
        };
        match element {
            Value::Object(object) => self.deliver(position, object),
            _ => self.malformed(position, "expected a json object".to_owned()),
        }
    }

    fn malformed(&mut self, position: Position, reason: String) {
        self.sink.malformed(Malformed { position, reason });
    }

    /// The input stopped being JSON inside the record after the last one found.
    fn unreadable(&self, error: serde_json::Error) -> ReadError {
        if error.is_io() {
            return ReadError::Io(error.into());
        }
        let reason = if error.is_eof() {
            format!("the json ends in the middle of record {}", self.records + 1)
        } else {
            format!(
                "invalid json at column {}: {}",
                error.column(),
                message(&error)
            )
        };
        ReadError::Unreadable {
            position: Position {
                record: self.records + 1,
                line: Some(error.line() as u64),
            },
            reason,
        }
    }
}

/// An array of records, each handed on as soon as it is parsed.
struct Elements<'a, 's> {
    state: &'a mut State<'s>,
}

impl<'de> Visitor<'de> for Elements<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(element) = seq.next_element::<Value>()? {
            self.state.element(element);
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Elements<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

/// The first object of the input: a wrapper, whose container array is streamed (`None`), or a
/// record, returned whole.
struct First<'a, 's, 'c> {
    state: &'a mut State<'s>,
    containers: &'c [&'c str],
}

impl<'de> Visitor<'de> for First<'_, '_, '_> {
    type Value = Option<Map<String, Value>>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = Map::new();
        let mut wrapper = false;
        while let Some(key) = map.next_key::<String>()? {
            if !wrapper && self.containers.contains(&key.as_str()) {
                map.next_value_seed(Elements {
                    state: &mut *self.state,
                })?;
                wrapper = true;
            } else if wrapper {
                // The wrapper's other members (`kind`, `metadata`) say nothing about records.
                map.next_value::<de::IgnoredAny>()?;
            } else {
                let value = map.next_value::<Value>()?;
                object.insert(key, value);
            }
        }
        Ok((!wrapper).then_some(object))
    }
}
