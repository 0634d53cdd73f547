//! `github-audit`: a GitHub organisation or enterprise audit log, as the JSON export (an
//! array) or the stream (one event per line).
//!
//! Who acted is read from how they authenticated. Bots (`actor_is_bot`, a login ending in
//! `[bot]`), GitHub App installation tokens and deploy keys are machines. A personal access
//! token or an OAuth or GitHub App token acting for a user is a machine too, even though a
//! person owns it: it is a long-lived credential that automation uses in that person's name
//! (OWASP NHI10, human use of machine identities, seen the other way round). It is keyed as
//! its own identity, `<login>/token:<token id>` (or `/oauth:<app>`), with the person in the
//! `human_owner` fact, so that each token is reviewed on its own. A login with none of these
//! (a web session, the person's own SSH key) is a person.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::text;
use crate::Timestamp;
use crate::baseline::Outcome;
use crate::discovery::{Activity, IdentityClass, Record, Sighting};

pub(super) fn record(event: Map<String, Value>) -> Result<Option<Record>, String> {
    let field = |name: &str| text(&event, &[name]).filter(|value| !value.is_empty());
    let action = field("action").ok_or("missing action")?;
    let at = time(&event)?;
    let actor = field("actor");
    let access = field("programmatic_access_type").map(str::to_ascii_lowercase);
    let access = access.as_deref().unwrap_or("");
    // A token is named by its id where the log gives one, else by its hash.
    let token = event
        .get("token_id")
        .and_then(|id| {
            id.as_u64()
                .map(|id| id.to_string())
                .or_else(|| id.as_str().map(str::to_owned))
        })
        .or_else(|| field("hashed_token").map(str::to_owned));
    let app = field("oauth_application_name")
        .or_else(|| field("integration"))
        .map(str::to_owned)
        .or_else(|| {
            event
                .get("oauth_application_id")
                .and_then(Value::as_u64)
                .map(|id| id.to_string())
        });
    let bot = event.get("actor_is_bot").and_then(Value::as_bool) == Some(true)
        || actor.is_some_and(|actor| actor.ends_with("[bot]"));

    let mut facts = BTreeMap::new();
    let (principal, class, class_reason) = if access.contains("deploy key") {
        let repo = field("repo").unwrap_or("");
        let key = token.clone().unwrap_or_default();
        (
            format!("{repo}/deploy_key:{key}"),
            IdentityClass::NonHuman,
            "a deploy key",
        )
    } else if bot {
        let actor = actor.ok_or("a bot event without an actor")?;
        (actor.to_owned(), IdentityClass::NonHuman, "a bot account")
    } else if access.contains("server-to-server") {
        let app = field("integration")
            .or(actor)
            .ok_or("an app token without an app")?;
        (
            app.to_owned(),
            IdentityClass::NonHuman,
            "a github app installation token",
        )
    } else if let Some(actor) = actor.filter(|_| access.contains("personal access token")) {
        facts.insert("human_owner".to_owned(), actor.to_owned());
        let token = token
            .clone()
            .ok_or("a personal access token without token_id or hashed_token")?;
        (
            format!("{actor}/token:{token}"),
            IdentityClass::NonHuman,
            "a personal access token",
        )
    } else if let Some(actor) =
        actor.filter(|_| access.contains("oauth") || access.contains("user-to-server"))
    {
        facts.insert("human_owner".to_owned(), actor.to_owned());
        let app = app
            .clone()
            .ok_or("an oauth token without its application")?;
        (
            format!("{actor}/oauth:{app}"),
            IdentityClass::NonHuman,
            "an app acting for a user",
        )
    } else if let Some(actor) = actor {
        (
            actor.to_owned(),
            IdentityClass::Human,
            "a user without a token",
        )
    } else {
        (
            "github".to_owned(),
            IdentityClass::Platform,
            "no actor: github itself",
        )
    };
    for (name, value) in [
        (
            "programmatic_access_type",
            field("programmatic_access_type"),
        ),
        ("hashed_token", field("hashed_token")),
        ("oauth_application", app.as_deref()),
        ("org", field("org")),
        ("business", field("business")),
    ] {
        if let Some(value) = value {
            facts.insert(name.to_owned(), value.to_owned());
        }
    }
    if let Some(id) = event.get("actor_id").and_then(Value::as_u64) {
        facts.insert("actor_id".to_owned(), id.to_string());
    }
    let activity = Activity {
        service: action.split('.').next().unwrap_or(action).to_owned(),
        operation: action.to_owned(),
        resource: field("repo")
            .or_else(|| field("org"))
            .unwrap_or("")
            .to_owned(),
        outcome: Outcome::Allowed,
        source: field("actor_ip").and_then(|ip| ip.parse().ok()),
        user_agent: field("user_agent").map(str::to_owned),
        on_behalf_of: None,
    };
    Ok(Some(Record::Sighting(Box::new(Sighting {
        platform: "github",
        display_name: actor.unwrap_or(&principal).to_owned(),
        principal,
        class,
        class_reason,
        at: Some(at),
        activity: Some(activity),
        facts,
    }))))
}

/// `@timestamp` (milliseconds since the epoch), else `created_at` (milliseconds, or RFC 3339
/// in some exports).
fn time(event: &Map<String, Value>) -> Result<Timestamp, String> {
    for name in ["@timestamp", "created_at"] {
        match event.get(name) {
            Some(Value::Number(millis)) => {
                return millis
                    .as_i64()
                    .and_then(Timestamp::from_unix_millis)
                    .ok_or_else(|| format!("{name}: not a time: {millis}"));
            }
            Some(Value::String(text)) => {
                return Timestamp::parse_rfc3339(text)
                    .map_err(|_| format!("{name}: not a time: {text:?}"));
            }
            _ => {}
        }
    }
    Err("missing @timestamp and created_at".to_owned())
}
