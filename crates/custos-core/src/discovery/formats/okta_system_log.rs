//! `okta-system-log`: Okta System Log events (`GET /api/v1/logs` returns an array; exports
//! and streams hold one per line).
//!
//! Okta records a call made with an API token (an `SSWS` token, which acts with its creating
//! admin's rights) as that user's event with `transaction.detail.requestApiTokenId`. Such an
//! event is the token's, a machine credential, keyed `<user id>/token:<token id>` with the
//! person in the `human_owner` fact. Otherwise `actor.type` decides: `User` is a person;
//! `PublicClientApp`, `Client`, `AppInstance` and other app types are OAuth clients and
//! applications, machines; `SystemPrincipal` is Okta acting for itself, the platform.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{text, time_at};
use crate::baseline::Outcome;
use crate::discovery::{Activity, IdentityClass, Record, Sighting};

pub(super) fn record(event: Map<String, Value>) -> Result<Option<Record>, String> {
    let field = |path: &[&str]| text(&event, path).filter(|value| !value.is_empty());
    let at = time_at(&event, &["published"])?;
    let event_type = field(&["eventType"]).ok_or("missing eventType")?;
    let actor = field(&["actor", "id"]).ok_or("missing actor.id")?;
    let actor_type = field(&["actor", "type"]).unwrap_or("");
    let readable = field(&["actor", "displayName"]).or_else(|| field(&["actor", "alternateId"]));
    let mut facts = BTreeMap::new();
    if let Some(kind) = field(&["transaction", "type"]) {
        facts.insert("transaction_type".to_owned(), kind.to_owned());
    }
    let (principal, class, class_reason) =
        match field(&["transaction", "detail", "requestApiTokenId"]) {
            Some(token) => {
                let owner = field(&["actor", "alternateId"]).unwrap_or(actor);
                facts.insert("human_owner".to_owned(), owner.to_owned());
                (
                    format!("{actor}/token:{token}"),
                    IdentityClass::NonHuman,
                    "an api token",
                )
            }
            None => {
                let (class, reason) = match actor_type {
                    "User" => (IdentityClass::Human, "actor.type User"),
                    "SystemPrincipal" => (IdentityClass::Platform, "okta acting for itself"),
                    _ => (IdentityClass::NonHuman, "an application or oauth client"),
                };
                (actor.to_owned(), class, reason)
            }
        };
    if !actor_type.is_empty() {
        facts.insert("actor_type".to_owned(), actor_type.to_owned());
    }
    let activity = Activity {
        service: event_type
            .split('.')
            .next()
            .unwrap_or(event_type)
            .to_owned(),
        operation: event_type.to_owned(),
        resource: event
            .get("target")
            .and_then(Value::as_array)
            .and_then(|targets| targets.iter().find_map(|t| t.get("alternateId")?.as_str()))
            .unwrap_or("")
            .to_owned(),
        outcome: match field(&["outcome", "result"]) {
            Some("FAILURE" | "DENY") => Outcome::Denied,
            _ => Outcome::Allowed,
        },
        source: field(&["client", "ipAddress"]).and_then(|ip| ip.parse().ok()),
        user_agent: field(&["client", "userAgent", "rawUserAgent"]).map(str::to_owned),
        on_behalf_of: None,
    };
    Ok(Some(Record::Sighting(Box::new(Sighting {
        platform: "okta",
        display_name: readable.unwrap_or(actor).to_owned(),
        principal,
        class,
        class_reason,
        at: Some(at),
        activity: Some(activity),
        facts,
    }))))
}
