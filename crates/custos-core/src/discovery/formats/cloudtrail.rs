//! `cloudtrail`: CloudTrail records (a log file's `{"Records": [...]}`, a bare array, or JSON
//! lines as CloudTrail Lake and most log pipelines export them).
//!
//! The principal is `userIdentity.arn`. For an assumed role that is the session's ARN
//! (`arn:aws:sts::…:assumed-role/ROLE/SESSION`), not the role's: people assume roles too (SSO
//! permission sets, console role switching), and a session name is what tells them apart,
//! whereas keying by the role would merge every person and machine that used it into one
//! identity of no single class. The role's ARN (`sessionContext.sessionIssuer.arn`) is kept as
//! the `role_arn` fact, so a consumer that wants one NHI per role folds the sessions of a
//! non-human role together by it. Without an ARN, the principal is the service that acted
//! (`invokedBy`), else the identity's type and name (`IAMUser/alice`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{text, time_at};
use crate::baseline::Outcome;
use crate::discovery::{Activity, IdentityClass, Record, Sighting};

/// Request parameters that name what a call acts on, in order of preference.
const RESOURCE_PARAMETERS: &[&str] = &[
    "bucketName",
    "instanceId",
    "roleName",
    "userName",
    "policyArn",
    "secretId",
    "keyId",
    "functionName",
    "volumeId",
    "snapshotId",
    "groupName",
    "trailName",
    "dBInstanceIdentifier",
    "tableName",
    "queueUrl",
    "topicArn",
    "clusterName",
    "name",
];

/// Error codes that mean the credential itself was refused rather than the action.
const CREDENTIAL_ERRORS: &[&str] = &[
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "AuthFailure",
    "InvalidAccessKeyId",
    "IncompleteSignature",
    "UnrecognizedClientException",
    "MissingAuthenticationToken",
];

pub(super) fn record(record: Map<String, Value>) -> Result<Option<Record>, String> {
    let at = time_at(&record, &["eventTime"])?;
    let field = |path: &[&str]| text(&record, path).filter(|value| !value.is_empty());
    if !record.get("userIdentity").is_some_and(Value::is_object) {
        return Err("missing userIdentity".to_owned());
    }
    let identity = |name: &str| field(&["userIdentity", name]);
    let source = field(&["eventSource"]).ok_or("missing eventSource")?;
    let operation = field(&["eventName"]).ok_or("missing eventName")?;
    let user_agent = field(&["userAgent"]);
    let kind = identity("type");
    let invoked_by = identity("invokedBy");
    let role_arn = field(&["userIdentity", "sessionContext", "sessionIssuer", "arn"]);

    let principal = match (identity("arn"), kind, invoked_by) {
        (Some(arn), _, _) => arn.to_owned(),
        (None, None | Some("AWSService"), Some(service)) => service.to_owned(),
        (None, Some(kind), _) => {
            let name = identity("userName")
                .or_else(|| identity("principalId"))
                .or_else(|| identity("accountId"));
            name.map_or_else(|| kind.to_owned(), |name| format!("{kind}/{name}"))
        }
        (None, None, None) => return Err("userIdentity has no arn, type or invokedBy".to_owned()),
    };
    let console = user_agent.is_some_and(|agent| {
        agent.starts_with("Mozilla/") || agent.to_ascii_lowercase().contains("console")
    });
    let (class, class_reason) =
        if identity("arn").is_none() && matches!(kind, None | Some("AWSService")) {
            (IdentityClass::Platform, "an aws service acting for itself")
        } else if kind == Some("AWSService") {
            (IdentityClass::Platform, "userIdentity.type AWSService")
        } else if role_arn.is_some_and(|arn| arn.contains(":role/aws-service-role/")) {
            (IdentityClass::Platform, "a service-linked role")
        } else if kind == Some("Root") {
            (IdentityClass::Human, "the root user")
        } else if operation == "ConsoleLogin" || source == "signin.amazonaws.com" {
            (IdentityClass::Human, "console sign-in")
        } else if field(&[
            "userIdentity",
            "sessionContext",
            "sessionCredentialFromConsole",
        ]) == Some("true")
        {
            (IdentityClass::Human, "a console session")
        } else if principal.contains(":assumed-role/AWSReservedSSO_") {
            (IdentityClass::Human, "an sso session")
        } else if console {
            (IdentityClass::Human, "a console user agent")
        } else {
            (IdentityClass::NonHuman, "a programmatic call")
        };

    let mut facts = BTreeMap::new();
    for (name, value) in [
        ("user_identity_type", kind),
        ("role_arn", role_arn),
        ("access_key_id", identity("accessKeyId")),
        ("invoked_by", invoked_by),
        (
            "mfa_authenticated",
            field(&[
                "userIdentity",
                "sessionContext",
                "attributes",
                "mfaAuthenticated",
            ]),
        ),
    ] {
        if let Some(value) = value {
            facts.insert(name.to_owned(), value.to_owned());
        }
    }
    let display_name = identity("userName")
        .map(str::to_owned)
        .or_else(|| {
            principal
                .split_once(":assumed-role/")
                .map(|(_, rest)| rest.to_owned())
        })
        .unwrap_or_else(|| principal.clone());

    let activity = Activity {
        service: source.trim_end_matches(".amazonaws.com").to_owned(),
        operation: operation.to_owned(),
        resource: resource(record.get("requestParameters")),
        outcome: match field(&["errorCode"]) {
            None => Outcome::Allowed,
            Some(code) if CREDENTIAL_ERRORS.contains(&code) => Outcome::Refused,
            Some(_) => Outcome::Denied,
        },
        source: field(&["sourceIPAddress"]).and_then(|address| address.parse().ok()),
        user_agent: user_agent.map(str::to_owned),
        // An IAM Identity Center user a service acted for, else the source identity that an
        // assumed role's session carries from the person who started the chain.
        on_behalf_of: field(&["userIdentity", "onBehalfOf", "userId"])
            .or_else(|| field(&["userIdentity", "sessionContext", "sourceIdentity"]))
            .map(str::to_owned),
    };
    Ok(Some(Record::Sighting(Box::new(Sighting {
        platform: "aws",
        principal,
        display_name,
        class,
        class_reason,
        at: Some(at),
        activity: Some(activity),
        facts,
    }))))
}

fn resource(parameters: Option<&Value>) -> String {
    let Some(Value::Object(parameters)) = parameters else {
        return String::new();
    };
    RESOURCE_PARAMETERS
        .iter()
        .find_map(|name| parameters.get(*name).and_then(Value::as_str))
        // EC2 names instances in `instancesSet.items[].instanceId`.
        .or_else(|| {
            parameters
                .get("instancesSet")?
                .get("items")?
                .get(0)?
                .get("instanceId")?
                .as_str()
        })
        .unwrap_or_default()
        .to_owned()
}
