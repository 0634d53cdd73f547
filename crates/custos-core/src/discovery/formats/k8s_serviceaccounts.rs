//! `k8s-serviceaccounts`: `kubectl get serviceaccounts -A -o json` (a `List` whose `items` are
//! ServiceAccounts), or one ServiceAccount object.
//!
//! Every service account is a machine identity; those of the control plane's own namespaces
//! (the controllers' accounts in `kube-system`, and `kube-public`, `kube-node-lease`) belong to
//! the platform, not to a team, so they are never shadow NHIs.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::text;
use crate::discovery::{IdentityClass, Record, Sighting};

/// Annotations that bind a service account to a cloud identity (EKS IRSA, GKE Workload
/// Identity, Azure Workload Identity): the links a shadow NHI's blast radius follows.
const CLOUD_LINKS: [&str; 3] = [
    "eks.amazonaws.com/role-arn",
    "iam.gke.io/gcp-service-account",
    "azure.workload.identity/client-id",
];

const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

pub(super) fn record(object: Map<String, Value>) -> Result<Option<Record>, String> {
    match text(&object, &["kind"]) {
        None | Some("ServiceAccount") => {}
        Some(kind) => return Err(format!("expected kind ServiceAccount, found {kind:?}")),
    }
    let field = |path: &[&str]| text(&object, path).filter(|value| !value.is_empty());
    let name = field(&["metadata", "name"]).ok_or("missing metadata.name")?;
    let namespace = field(&["metadata", "namespace"]).ok_or("missing metadata.namespace")?;
    let mut facts = BTreeMap::new();
    if let Some(created) = field(&["metadata", "creationTimestamp"]) {
        facts.insert("created".to_owned(), created.to_owned());
    }
    for annotation in CLOUD_LINKS {
        if let Some(value) = field(&["metadata", "annotations", annotation]) {
            facts.insert(annotation.to_owned(), value.to_owned());
        }
    }
    if let Some(secrets) = object.get("secrets").and_then(Value::as_array) {
        // Secrets listed on the account are legacy long-lived token secrets (before 1.24).
        facts.insert("secrets".to_owned(), secrets.len().to_string());
    }
    if let Some(automount) = object
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
    {
        facts.insert("automount_token".to_owned(), automount.to_string());
    }
    let (class, class_reason) = if SYSTEM_NAMESPACES.contains(&namespace) {
        (
            IdentityClass::Platform,
            "a control-plane namespace's service account",
        )
    } else {
        (IdentityClass::NonHuman, "a service account")
    };
    Ok(Some(Record::Sighting(Box::new(Sighting {
        platform: "kubernetes",
        principal: format!("system:serviceaccount:{namespace}:{name}"),
        display_name: format!("{namespace}/{name}"),
        class,
        class_reason,
        at: None,
        activity: None,
        facts,
    }))))
}
