//! Discovery: what third-party inventories and logs say exists, in one normalised shape.
//!
//! Each supported format has a streaming reader in [`formats`] that turns a file into
//! [`Record`]s: rows of an inventory to register, or [`Sighting`]s of an identity (a platform's
//! listing of it, or a log record of something it did). A reader is handed any `BufRead` by
//! its caller (the server reads files and request bodies; tests read byte slices), so the core
//! still opens nothing itself. A record that cannot be read is reported as [`Malformed`] with
//! its position and skipped; only a reader that cannot go on at all (the bytes stop being the
//! format) ends the file early, and says where.
//!
//! Sightings are keyed by `(platform, principal)`, the same pair an NHI names in its
//! `external_ids` (`{"aws": "arn:aws:iam::…:user/ci"}`), which is how an observed identity is
//! matched with a registered one.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::baseline::Outcome;

pub mod formats;
pub mod logical;
pub mod observed;
pub mod posture;
pub mod risk;
pub mod secrets;

/// The formats `custos import` and `POST /v1/discovery/imports` read. The wire name is what
/// users type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Format {
    /// A generic inventory, CSV with a header row; columns named like `POST /v1/nhis` fields.
    #[serde(rename = "inventory-csv")]
    InventoryCsv,
    /// A generic inventory, JSON: an array of `POST /v1/nhis` bodies, or one per line.
    #[serde(rename = "inventory-json")]
    InventoryJson,
    /// The AWS IAM credential report (`aws iam get-credential-report`, decoded CSV).
    #[serde(rename = "aws-iam-credential-report")]
    AwsIamCredentialReport,
    /// `kubectl get serviceaccounts -A -o json`.
    #[serde(rename = "k8s-serviceaccounts")]
    KubernetesServiceAccounts,
    /// AWS CloudTrail log files (`{"Records": [...]}`), bare arrays or JSON lines of records.
    #[serde(rename = "cloudtrail")]
    CloudTrail,
    /// Kubernetes audit log: `audit.k8s.io/v1` `Event`s, one JSON object per line.
    #[serde(rename = "k8s-audit")]
    KubernetesAudit,
    /// GitHub organisation or enterprise audit log, JSON (array or lines).
    #[serde(rename = "github-audit")]
    GithubAudit,
    /// Okta System Log events, JSON (array or lines).
    #[serde(rename = "okta-system-log")]
    OktaSystemLog,
}

impl Format {
    pub const ALL: [Format; 8] = [
        Format::InventoryCsv,
        Format::InventoryJson,
        Format::AwsIamCredentialReport,
        Format::KubernetesServiceAccounts,
        Format::CloudTrail,
        Format::KubernetesAudit,
        Format::GithubAudit,
        Format::OktaSystemLog,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::InventoryCsv => "inventory-csv",
            Format::InventoryJson => "inventory-json",
            Format::AwsIamCredentialReport => "aws-iam-credential-report",
            Format::KubernetesServiceAccounts => "k8s-serviceaccounts",
            Format::CloudTrail => "cloudtrail",
            Format::KubernetesAudit => "k8s-audit",
            Format::GithubAudit => "github-audit",
            Format::OktaSystemLog => "okta-system-log",
        }
    }

    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL
            .into_iter()
            .find(|format| format.as_str() == name)
    }

    /// Whether the format lists NHIs to register rather than identities that were seen.
    pub fn is_inventory(self) -> bool {
        matches!(self, Format::InventoryCsv | Format::InventoryJson)
    }
}

/// Whether an observed identity is a person, a machine, or the platform itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityClass {
    /// A person: a console or web sign-in, an SSO session, a root user. Never reported as an NHI.
    Human,
    /// A service account, access key, bot, app or workload: a candidate NHI.
    NonHuman,
    /// The platform acting for itself (an AWS service, a Kubernetes control-plane component):
    /// not the customer's identity, so never a shadow NHI.
    Platform,
}

impl IdentityClass {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityClass::Human => "human",
            IdentityClass::NonHuman => "non_human",
            IdentityClass::Platform => "platform",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            IdentityClass::Human,
            IdentityClass::NonHuman,
            IdentityClass::Platform,
        ]
        .into_iter()
        .find(|class| class.as_str() == text)
    }
}

/// One identity, as one record of a platform listing or a log shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sighting {
    /// `aws`, `kubernetes`, `github` or `okta`: the key an NHI's `external_ids` uses.
    pub platform: &'static str,
    /// The identity's stable id on that platform: an IAM ARN, `system:serviceaccount:ns:name`,
    /// a GitHub login or app slug, an Okta actor id.
    pub principal: String,
    /// A readable name (the IAM user name, `ns/name`, the Okta display name).
    pub display_name: String,
    pub class: IdentityClass,
    /// Why the reader put it in that class, for the evidence (`"console sign-in"`,
    /// `"userIdentity.type AWSService"`, `"access keys and no password"`).
    pub class_reason: &'static str,
    /// When the record says it happened (a log event) or was last used (a listing).
    pub at: Option<Timestamp>,
    /// What it did, when the record is a log event.
    pub activity: Option<Activity>,
    /// Facts a listing states about the identity (creation time, key ages and last use,
    /// annotations), as strings; kept in the evidence as they are.
    pub facts: BTreeMap<String, String>,
}

impl Sighting {
    /// Replaces NUL characters, which a JSON log may carry (`\u0000`) but no store keeps as
    /// text (PostgreSQL refuses them), with U+FFFD, in every string the server stores.
    pub fn scrub(&mut self) {
        fn clean(text: &mut String) {
            if text.contains('\0') {
                *text = text.replace('\0', "\u{FFFD}");
            }
        }
        clean(&mut self.principal);
        clean(&mut self.display_name);
        if let Some(activity) = &mut self.activity {
            clean(&mut activity.service);
            clean(&mut activity.operation);
            clean(&mut activity.resource);
            if let Some(agent) = &mut activity.user_agent {
                clean(agent);
            }
        }
        if self
            .facts
            .iter()
            .any(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            self.facts = std::mem::take(&mut self.facts)
                .into_iter()
                .map(|(mut k, mut v)| {
                    clean(&mut k);
                    clean(&mut v);
                    (k, v)
                })
                .collect();
        }
    }
}

/// What an identity did in one log event, in the baselining engine's terms.
#[derive(Clone, Debug, PartialEq)]
pub struct Activity {
    /// `s3`, `iam`, `core/secrets`, `repo`, `user.session`…: the service or resource group.
    pub service: String,
    /// `GetObject`, `get`, `repo.create`…
    pub operation: String,
    /// The resource it acted on, or empty.
    pub resource: String,
    pub outcome: Outcome,
    pub source: Option<IpAddr>,
    pub user_agent: Option<String>,
    /// The person the identity acted for, where the log says (CloudTrail's `onBehalfOf` or
    /// STS source identity).
    pub on_behalf_of: Option<String>,
}

/// One row of a generic inventory: the fields of `POST /v1/nhis`, as text, checked by the
/// server's registration rules (not here), so an import and the API refuse the same things.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryRow {
    pub name: String,
    pub kind: String,
    pub platform: String,
    #[serde(default)]
    pub environment: String,
    pub owner: InventoryOwner,
    pub purpose: String,
    #[serde(default)]
    pub scope_ceiling: Vec<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub external_ids: BTreeMap<String, String>,
    /// RFC 3339.
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryOwner {
    pub team: String,
    #[serde(default)]
    pub application: String,
    #[serde(default)]
    pub contact: String,
}

/// What a reader yields for each record of a file.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Inventory(Box<InventoryRow>),
    Sighting(Box<Sighting>),
}

/// Where in a file a record is: its ordinal (1-based, counting every record the reader found,
/// good or bad) and, when the format has lines, its line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub record: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

/// A record that was skipped, and why (lowercase, specific).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Malformed {
    pub position: Position,
    pub reason: String,
}

/// Why a reader stopped before the end of its input.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the input failed: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes stopped being the format (truncated JSON, not JSON at all, a CSV without the
    /// header the format needs); records before this point were delivered.
    #[error("{reason} (at record {}{})", position.record, position.line.map(|line| format!(", line {line}")).unwrap_or_default())]
    Unreadable { position: Position, reason: String },
}

/// Where a reader delivers what it reads, in file order.
pub trait Sink {
    fn record(&mut self, position: Position, record: Record);
    fn malformed(&mut self, malformed: Malformed);
}
