//! `aws-iam-credential-report`: the CSV that `aws iam get-credential-report` returns (base64
//! decoded), one IAM user per row.
//!
//! A user with a console password is a person, and so is the root account; a user with
//! active access keys or signing certificates and no password is a machine. A user with
//! neither is still reported as a machine: it is a credential-less identity nobody signs in
//! with, which is what an orphaned service user looks like.

use std::collections::BTreeMap;

use crate::Timestamp;
use crate::discovery::{IdentityClass, Record, Sighting};

use super::table::Table;

/// The columns every row is read through; the report has more, which are ignored.
const USER: usize = 0;
const ARN: usize = 1;
const CREATED: usize = 2;
const PASSWORD_ENABLED: usize = 3;
const PASSWORD_LAST_USED: usize = 4;
const MFA_ACTIVE: usize = 5;
const COLUMNS: [&str; 6] = [
    "user",
    "arn",
    "user_creation_time",
    "password_enabled",
    "password_last_used",
    "mfa_active",
];

/// The columns of each access key (1 and 2), after `access_key_N_`.
const KEY_COLUMNS: [&str; 5] = [
    "active",
    "last_rotated",
    "last_used_date",
    "last_used_region",
    "last_used_service",
];
/// The columns of each signing certificate (1 and 2), after `cert_N_`.
const CERT_COLUMNS: [&str; 2] = ["active", "last_rotated"];

pub(super) struct CredentialReport;

/// Where the report's columns are: the user's own, then each key's and certificate's
/// (`None` for a column the file lacks; only `user` and `arn` are required).
pub(super) struct Layout {
    user: [Option<usize>; COLUMNS.len()],
    keys: [[Option<usize>; KEY_COLUMNS.len()]; 2],
    certs: [[Option<usize>; CERT_COLUMNS.len()]; 2],
}

impl Table for CredentialReport {
    type Layout = Layout;

    fn layout(header: &[&str]) -> Result<Layout, String> {
        let find = |name: &str| header.iter().position(|column| *column == name);
        let layout = Layout {
            user: COLUMNS.map(find),
            keys: [1, 2].map(|n| KEY_COLUMNS.map(|c| find(&format!("access_key_{n}_{c}")))),
            certs: [1, 2].map(|n| CERT_COLUMNS.map(|c| find(&format!("cert_{n}_{c}")))),
        };
        for required in [USER, ARN] {
            if layout.user[required].is_none() {
                return Err(format!(
                    "missing column {:?}: not an iam credential report",
                    COLUMNS[required]
                ));
            }
        }
        Ok(layout)
    }

    fn row(layout: &Layout, fields: &[&str]) -> Result<Record, String> {
        let field = |at: Option<usize>| at.map_or("", |at| fields[at].trim());
        let user = field(layout.user[USER]);
        let arn = field(layout.user[ARN]);
        if user.is_empty() || arn.is_empty() {
            return Err("missing user or arn".to_owned());
        }
        let mut facts = BTreeMap::new();
        let mut fact = |name: String, value: &str| {
            if known(value).is_some() {
                facts.insert(name, value.to_owned());
            }
        };
        fact("user_creation_time".to_owned(), field(layout.user[CREATED]));
        fact("mfa_active".to_owned(), field(layout.user[MFA_ACTIVE]));
        let password = field(layout.user[PASSWORD_ENABLED]) == "true";
        let mut latest = time("password_last_used", field(layout.user[PASSWORD_LAST_USED]))?;
        let mut active = false;
        for (n, key) in layout.keys.iter().enumerate() {
            if field(key[0]) != "true" {
                continue;
            }
            active = true;
            for (name, at) in KEY_COLUMNS.iter().zip(key).skip(1) {
                fact(format!("access_key_{}_{name}", n + 1), field(*at));
            }
            let column = format!("access_key_{}_last_used_date", n + 1);
            latest = latest.max(time(&column, field(key[2]))?);
        }
        for (n, cert) in layout.certs.iter().enumerate() {
            if field(cert[0]) == "true" {
                active = true;
                fact(format!("cert_{}_last_rotated", n + 1), field(cert[1]));
            }
        }
        let (class, class_reason) = if user == "<root_account>" {
            (IdentityClass::Human, "the root account")
        } else if password {
            (IdentityClass::Human, "console password enabled")
        } else if active {
            (
                IdentityClass::NonHuman,
                "active keys or certificates and no password",
            )
        } else {
            (
                IdentityClass::NonHuman,
                "no password and no active credentials",
            )
        };
        Ok(Record::Sighting(Box::new(Sighting {
            platform: "aws",
            principal: arn.to_owned(),
            display_name: user.to_owned(),
            class,
            class_reason,
            at: latest,
            activity: None,
            facts,
        })))
    }
}

/// The report writes `N/A`, `no_information` or `not_supported` where there is no value.
fn known(value: &str) -> Option<&str> {
    match value {
        "" | "N/A" | "no_information" | "not_supported" => None,
        value => Some(value),
    }
}

fn time(column: &str, value: &str) -> Result<Option<Timestamp>, String> {
    known(value)
        .map(|text| {
            Timestamp::parse_rfc3339(text).map_err(|_| format!("{column}: not a time: {text:?}"))
        })
        .transpose()
}
