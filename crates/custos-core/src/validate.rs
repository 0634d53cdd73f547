//! Field validation shared by every use case, with messages that say how to fix the input.

use std::collections::BTreeMap;

use serde::Serialize;

/// One refused field. `field` is a JSON pointer-like path such as `owner.team` or `tags.env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every problem found in one input, reported together so a user fixes them in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.summary())]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = Self::default();
        errors.push(field, message);
        errors
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), Self> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    fn summary(&self) -> String {
        self.0
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Human-facing text (names, purposes): trimmed length within bounds, no control characters.
pub fn text(errors: &mut ValidationErrors, field: &str, value: &str, max: usize) {
    if value.trim().is_empty() {
        errors.push(field, "must not be empty");
    } else if value.chars().count() > max {
        errors.push(field, format!("must be at most {max} characters"));
    } else if value.chars().any(char::is_control) {
        errors.push(field, "must not contain control characters");
    } else if value.trim() != value {
        errors.push(field, "must not start or end with whitespace");
    }
}

/// Machine names (platform, environment, tag keys): lowercase slug, 1-64 characters.
pub fn slug(errors: &mut ValidationErrors, field: &str, value: &str) {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !ok {
        errors.push(
            field,
            "must be 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
        );
    }
}

pub const MAX_TAGS: usize = 50;

/// Tags and external ids: at most 50 entries, slug keys, non-empty values up to 256 characters.
pub fn labels(errors: &mut ValidationErrors, field: &str, labels: &BTreeMap<String, String>) {
    if labels.len() > MAX_TAGS {
        errors.push(field, format!("at most {MAX_TAGS} entries"));
        return;
    }
    for (key, value) in labels {
        let path = format!("{field}.{key}");
        slug(errors, &path, key);
        if value.chars().count() > 256 || value.chars().any(char::is_control) {
            errors.push(
                path,
                "value must be at most 256 characters without control characters",
            );
        }
    }
}
