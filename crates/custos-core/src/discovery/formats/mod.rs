//! One streaming reader per [`Format`].
//!
//! The JSON formats share [`json`], which finds the container shape (a `{"Records": [...]}`
//! or `{"items": [...]}` wrapper, a bare array, JSON lines or one object) and hands each
//! element to the format's reader as a `serde_json::Value`, one at a time. The CSV formats
//! share [`table`], which checks the header once and hands each row over as text fields.

use std::io::BufRead;

use serde_json::{Map, Value};

use super::{Format, ReadError, Sink};
use crate::Timestamp;

mod aws_credential_report;
mod cloudtrail;
mod github_audit;
mod inventory_csv;
mod inventory_json;
mod json;
mod k8s_audit;
mod k8s_serviceaccounts;
mod okta_system_log;
mod table;

/// Reads `input` as `format` to its end, handing each record (or each malformed one) to
/// `sink` as it goes. Memory stays bounded by one record, whatever the size of the input.
pub fn read(format: Format, input: impl BufRead, sink: &mut dyn Sink) -> Result<(), ReadError> {
    match format {
        Format::InventoryCsv => table::read::<inventory_csv::Inventory>(input, sink),
        Format::AwsIamCredentialReport => {
            table::read::<aws_credential_report::CredentialReport>(input, sink)
        }
        Format::InventoryJson => json::read(input, &[], inventory_json::record, sink),
        Format::KubernetesServiceAccounts => {
            json::read(input, &["items"], k8s_serviceaccounts::record, sink)
        }
        Format::CloudTrail => json::read(input, &["Records"], cloudtrail::record, sink),
        Format::KubernetesAudit => json::read(input, &["items"], k8s_audit::record, sink),
        Format::GithubAudit => json::read(input, &[], github_audit::record, sink),
        Format::OktaSystemLog => json::read(input, &[], okta_system_log::record, sink),
    }
}

/// The string at `path` in `object`, when every step is an object and the last is a string.
fn text<'v>(object: &'v Map<String, Value>, path: &[&str]) -> Option<&'v str> {
    let (last, steps) = path.split_last()?;
    let mut at = object;
    for step in steps {
        at = at.get(*step)?.as_object()?;
    }
    at.get(*last)?.as_str()
}

/// The RFC 3339 time at `path`, which must be there.
fn time_at(object: &Map<String, Value>, path: &[&str]) -> Result<Timestamp, String> {
    let name = path.join(".");
    let text = text(object, path).ok_or_else(|| format!("missing {name}"))?;
    Timestamp::parse_rfc3339(text).map_err(|_| format!("{name}: not an rfc 3339 time: {text:?}"))
}
