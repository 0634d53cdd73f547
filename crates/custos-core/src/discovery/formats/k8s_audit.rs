//! `k8s-audit`: `audit.k8s.io/v1` Events, one per line as the API server's log backend writes
//! them (also an array, or an `EventList` with `items`).
//!
//! A request can be logged at up to four stages; only `ResponseComplete` and `Panic` are read,
//! so each request counts once (the others still count as records found, but yield nothing).
//!
//! Users: `system:serviceaccount:*` are machines; nodes, the control plane's own components
//! (`system:kube-*`, `system:apiserver`, any other `system:` user) and EKS's `eks:*` are the
//! platform. Anyone else is a person unless the name says it is a machine: a GCP service
//! account's email (`*.gserviceaccount.com`), an IAM role mapped in by EKS
//! (`arn:aws:…:role/…`, `…:assumed-role/…`), or membership of `system:serviceaccounts`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{text, time_at};
use crate::baseline::Outcome;
use crate::discovery::{Activity, IdentityClass, Record, Sighting};

pub(super) fn record(event: Map<String, Value>) -> Result<Option<Record>, String> {
    let field = |path: &[&str]| text(&event, path).filter(|value| !value.is_empty());
    match field(&["stage"]) {
        Some("ResponseComplete" | "Panic") => {}
        Some(_) => return Ok(None),
        None => return Err("missing stage".to_owned()),
    }
    let at = time_at(&event, &["stageTimestamp"])
        .or_else(|_| time_at(&event, &["requestReceivedTimestamp"]))?;
    let user = field(&["user", "username"]).ok_or("missing user.username")?;
    let mut facts = BTreeMap::new();
    let (principal, groups) = match field(&["impersonatedUser", "username"]) {
        Some(impersonated) => {
            facts.insert("impersonated_by".to_owned(), user.to_owned());
            (
                impersonated,
                event.get("impersonatedUser").and_then(|u| u.get("groups")),
            )
        }
        None => (user, event.get("user").and_then(|u| u.get("groups"))),
    };
    let in_group = |name: &str| {
        groups
            .and_then(Value::as_array)
            .is_some_and(|groups| groups.iter().any(|group| group.as_str() == Some(name)))
    };
    let (class, class_reason) = if principal.starts_with("system:serviceaccount:") {
        (IdentityClass::NonHuman, "a service account")
    } else if principal.starts_with("system:node:") || in_group("system:nodes") {
        (IdentityClass::Platform, "a node")
    } else if principal.starts_with("system:") || principal.starts_with("eks:") {
        (IdentityClass::Platform, "a control-plane user")
    } else if in_group("system:serviceaccounts") {
        (IdentityClass::NonHuman, "in group system:serviceaccounts")
    } else if principal.ends_with(".gserviceaccount.com") {
        (IdentityClass::NonHuman, "a gcp service account")
    } else if principal.starts_with("arn:aws:")
        && (principal.contains(":role/") || principal.contains(":assumed-role/"))
    {
        (IdentityClass::NonHuman, "an iam role")
    } else {
        (IdentityClass::Human, "a user")
    };

    let object = |name: &str| field(&["objectRef", name]);
    let (service, resource) = if event.get("objectRef").is_some_and(Value::is_object) {
        let service = format!(
            "{}/{}",
            object("apiGroup").unwrap_or("core"),
            object("resource").unwrap_or("")
        );
        let resource = [object("namespace"), object("name"), object("subresource")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("/");
        (service, resource)
    } else {
        // A non-resource request (`/healthz`, `/version`, `/metrics`).
        (
            "nonresource".to_owned(),
            field(&["requestURI"]).unwrap_or("").to_owned(),
        )
    };
    let activity = Activity {
        service,
        operation: field(&["verb"]).ok_or("missing verb")?.to_owned(),
        resource,
        outcome: match event
            .get("responseStatus")
            .and_then(|s| s.get("code"))
            .and_then(Value::as_u64)
        {
            Some(401) => Outcome::Refused,
            Some(403) => Outcome::Denied,
            _ => Outcome::Allowed,
        },
        source: event
            .get("sourceIPs")
            .and_then(|ips| ips.get(0))
            .and_then(Value::as_str)
            .and_then(|ip| ip.parse().ok()),
        user_agent: field(&["userAgent"]).map(str::to_owned),
        on_behalf_of: None,
    };
    let display_name = principal
        .strip_prefix("system:serviceaccount:")
        .map_or_else(|| principal.to_owned(), |rest| rest.replacen(':', "/", 1));
    Ok(Some(Record::Sighting(Box::new(Sighting {
        platform: "kubernetes",
        principal: principal.to_owned(),
        display_name,
        class,
        class_reason,
        at: Some(at),
        activity: Some(activity),
        facts,
    }))))
}
