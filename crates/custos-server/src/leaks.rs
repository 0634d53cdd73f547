//! The server's side of `custos scan`: saying whether Custos secrets found in files are live,
//! and turning a scan's report into findings (a secret reused across services, OWASP NHI9; a
//! live Custos key left in a file, NHI2).
//!
//! Checking needs the secrets themselves: a credential's `fingerprint` is a prefix of the keyed
//! hash it is stored under, which only the server can compute (the key never leaves it), and
//! the store looks credentials up by that hash (`credentials.secret_hash` is unique, so
//! indexed). So the client sends the secrets it found over the authenticated channel; the
//! server hashes them exactly as it does a presented one, answers by index and forgets them:
//! nothing is stored, logged or echoed back. A report carries no secret at all: only the
//! unkeyed digests the scanner computed (`secret_sha256`), the locations, and the credential
//! ids the check answered.

use std::collections::BTreeSet;

use custos_core::discovery::secrets::SecretType;
use custos_core::finding::{Finding, Noticed, ResponseAction, Severity};
use custos_core::token::{self, SecretKind};
use custos_core::validate::ValidationErrors;
use custos_core::{EventKind, Role, Timestamp};
use custos_store::FindingOpened;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::service::{AppState, new_id};

/// The most secrets one check may ask about.
pub const MAX_CHECK: usize = 100;
/// The most distinct secrets one report may carry, and locations per secret.
pub const MAX_REPORTED: usize = 100;
pub const MAX_LOCATIONS: usize = 20;

/// The finding kind of one secret found under several services or NHIs (OWASP NHI9).
pub const REUSED_SECRET: &str = "reused_secret";
/// The finding kind of a live Custos secret found in a file (OWASP NHI2).
pub const LEAKED_SECRET: &str = "leaked_secret";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Custos secrets (`custos_sk_…`, `custos_op_…`) as found, at most 100. Hashed and
    /// forgotten: never stored, logged or returned.
    #[schema(max_items = 100)]
    pub secrets: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResponse {
    /// One answer per secret asked about, in the order asked.
    pub results: Vec<CheckResult>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResult {
    /// `custos_static_key` or `custos_operator_token`.
    pub kind: String,
    /// `live`, `revoked`, `expired`, or `unknown` (no such credential or operator here).
    pub state: String,
    /// The credential's public fingerprint (`fp_…`), the name it has in the trail.
    pub fingerprint: String,
    /// The static key's credential id and its NHI.
    pub credential_id: Option<String>,
    pub nhi_id: Option<String>,
    pub nhi_name: Option<String>,
    /// The operator an operator token belongs to.
    pub operator_id: Option<String>,
    #[schema(schema_with = crate::api::nullable_timestamp_schema)]
    pub expires_at: Option<Timestamp>,
    #[schema(schema_with = crate::api::nullable_timestamp_schema)]
    pub revoked_at: Option<Timestamp>,
}

/// Says, for each Custos secret, whether it is live and whose it is (admin).
pub async fn check(
    state: &AppState,
    who: &Principal,
    request: CheckRequest,
) -> ApiResult<CheckResponse> {
    who.require(&[Role::Admin])?;
    if request.secrets.is_empty() || request.secrets.len() > MAX_CHECK {
        return Err(ApiError::validation(ValidationErrors::single(
            "secrets",
            format!("must hold 1 to {MAX_CHECK} secrets"),
        )));
    }
    let mut errors = ValidationErrors::default();
    let kinds: Vec<Option<SecretKind>> = request
        .secrets
        .iter()
        .enumerate()
        .map(|(i, secret)| {
            let kind = token::classify(secret).ok();
            if kind.is_none() {
                // Never the secret itself in the error: it may be one, mistyped.
                errors.push(
                    format!("secrets[{i}]"),
                    "must be a custos secret with a valid checksum",
                );
            }
            kind
        })
        .collect();
    errors.into_result().map_err(ApiError::validation)?;
    let now = state.now();
    let mut results = Vec::with_capacity(request.secrets.len());
    for (secret, kind) in request.secrets.iter().zip(kinds) {
        let hash = state.keys.secret_hash(secret);
        let fingerprint = crate::secrets::fingerprint_of_hash(&hash);
        let mut result = CheckResult {
            kind: String::new(),
            state: "unknown".to_owned(),
            fingerprint,
            credential_id: None,
            nhi_id: None,
            nhi_name: None,
            operator_id: None,
            expires_at: None,
            revoked_at: None,
        };
        match kind {
            Some(SecretKind::StaticKey) => {
                result.kind = SecretType::CustosStaticKey.as_str().to_owned();
                if let Some(credential) = state.store.find_credential_by_hash(&hash).await? {
                    result.state =
                        credential_state(credential.revoked_at, credential.expires_at, now)
                            .to_owned();
                    result.nhi_name = state
                        .store
                        .get_nhi(&credential.nhi_id)
                        .await?
                        .map(|nhi| nhi.name);
                    result.credential_id = Some(credential.id);
                    result.nhi_id = Some(credential.nhi_id);
                    result.expires_at = credential.expires_at;
                    result.revoked_at = credential.revoked_at;
                }
            }
            Some(SecretKind::Operator) | None => {
                result.kind = SecretType::CustosOperatorToken.as_str().to_owned();
                if let Some((operator, _)) = state.store.find_operator_by_token(&hash).await? {
                    result.state = credential_state(operator.revoked_at, None, now).to_owned();
                    result.operator_id = Some(operator.id);
                    result.revoked_at = operator.revoked_at;
                }
            }
        }
        results.push(result);
    }
    Ok(CheckResponse { results })
}

fn credential_state(
    revoked_at: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> &'static str {
    if revoked_at.is_some() {
        "revoked"
    } else if expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else {
        "live"
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// Each distinct secret the scan found, with where it was found; at most 100. Small
    /// enough that a list one too long still fits the body limit and is refused as such (422).
    #[schema(max_items = 100)]
    pub secrets: Vec<ReportedSecret>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportedSecret {
    /// `custos_static_key`, `aws_access_key_id`, … (as `custos scan` names them).
    #[schema(value_type = String)]
    pub kind: SecretType,
    /// The first 16 bytes of SHA-256 of the secret, 32 lowercase hex digits. Not the secret.
    #[schema(pattern = "^[0-9a-f]{32}$")]
    pub secret_sha256: String,
    /// For a Custos static key: the credential id the check answered.
    pub credential_id: Option<String>,
    /// Where it was found, at most 20 places (the first ones the scan met).
    #[schema(max_items = 20)]
    pub locations: Vec<ReportedLocation>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportedLocation {
    /// The file, as the scanner names it.
    #[schema(max_length = 1024)]
    pub path: String,
    #[schema(minimum = 1)]
    pub line: u64,
    /// The service (project directory) the file belongs to.
    #[schema(max_length = 256)]
    pub service: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReportResponse {
    /// The findings the report opened or folded into, one per reused or leaked secret.
    pub findings: Vec<ReportedFinding>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReportedFinding {
    pub id: String,
    /// `reused_secret` or `leaked_secret`.
    pub kind: String,
    pub dedupe_key: String,
    pub nhi_id: Option<String>,
    /// How many times it has been reported: 1 when this report opened it.
    pub occurrences: i64,
}

fn validate_report(request: &ReportRequest) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if request.secrets.is_empty() || request.secrets.len() > MAX_REPORTED {
        errors.push("secrets", format!("must hold 1 to {MAX_REPORTED} secrets"));
    }
    for (i, secret) in request.secrets.iter().enumerate() {
        let field = |name: &str| format!("secrets[{i}].{name}");
        let digest = &secret.secret_sha256;
        if digest.len() != 32
            || !digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            errors.push(field("secret_sha256"), "must be 32 lowercase hex digits");
        }
        if secret.credential_id.is_some() && secret.kind != SecretType::CustosStaticKey {
            errors.push(field("credential_id"), "is only for a custos_static_key");
        }
        if secret
            .credential_id
            .as_ref()
            .is_some_and(|id| id.is_empty() || id.len() > 64)
        {
            errors.push(field("credential_id"), "must be 1 to 64 characters");
        }
        if secret.locations.is_empty() || secret.locations.len() > MAX_LOCATIONS {
            errors.push(
                field("locations"),
                format!("must hold 1 to {MAX_LOCATIONS} locations"),
            );
        }
        for (j, location) in secret.locations.iter().enumerate() {
            let at = |name: &str| format!("secrets[{i}].locations[{j}].{name}");
            custos_core::validate::text(&mut errors, &at("path"), &location.path, 1024);
            custos_core::validate::text(&mut errors, &at("service"), &location.service, 256);
            if location.line == 0 || location.line > u64::from(u32::MAX) {
                errors.push(at("line"), "must be a line number from 1");
            }
        }
    }
    errors.into_result()
}

/// Records what a scan found (admin): a `reused_secret` finding for each secret found under
/// more than one service, and a `leaked_secret` finding for each live static key; each about
/// the key's NHI when it is a Custos key. A finding folds into the unresolved one with the
/// same key (`<kind>:<secret_sha256>`), so scanning again adds occurrences, not findings.
pub async fn report(
    state: &AppState,
    who: &Principal,
    request: ReportRequest,
) -> ApiResult<ReportResponse> {
    who.require(&[Role::Admin])?;
    validate_report(&request).map_err(ApiError::validation)?;
    let now = state.now();
    let mut findings = Vec::new();
    for secret in &request.secrets {
        let credential = match &secret.credential_id {
            Some(id) => Some(
                state
                    .store
                    .get_credential(id)
                    .await?
                    .ok_or_else(|| ApiError::not_found("credential"))?,
            ),
            None => None,
        };
        let nhi = match &credential {
            Some(credential) => state.store.get_nhi(&credential.nhi_id).await?,
            None => None,
        };
        let services: BTreeSet<&str> = secret
            .locations
            .iter()
            .map(|l| l.service.as_str())
            .collect();
        let short = &secret.secret_sha256[..8];
        let kind = secret.kind.as_str();
        let mut evidence = json!({
            "secret_sha256": secret.secret_sha256,
            "secret_kind": kind,
            "services": services,
            "locations": secret.locations,
        });
        if let Some(credential) = &credential {
            evidence["credential_id"] = json!(credential.id);
            evidence["fingerprint"] = json!(credential.fingerprint);
        }
        let live = credential
            .as_ref()
            .is_some_and(|c| credential_state(c.revoked_at, c.expires_at, now) == "live");
        let mut noticed = Vec::new();
        if services.len() > 1 {
            noticed.push(Noticed {
                kind: REUSED_SECRET.to_owned(),
                nhi_id: nhi.as_ref().map(|n| n.id.clone()),
                dedupe_key: format!("{REUSED_SECRET}:{}", secret.secret_sha256),
                severity: Severity::Medium,
                score: services.len() as f64,
                summary: format!(
                    "{kind} {short}… is used by {} services: {}",
                    services.len(),
                    services.iter().copied().collect::<Vec<_>>().join(", ")
                ),
                evidence: evidence.clone(),
                action: ResponseAction::Alert,
            });
        }
        if live {
            noticed.push(Noticed {
                kind: LEAKED_SECRET.to_owned(),
                nhi_id: nhi.as_ref().map(|n| n.id.clone()),
                dedupe_key: format!("{LEAKED_SECRET}:{}", secret.secret_sha256),
                severity: Severity::High,
                score: secret.locations.len() as f64,
                summary: format!(
                    "a live {kind} {short}… is in {} file(s), first {}",
                    secret.locations.len(),
                    secret.locations[0].path
                ),
                evidence: evidence.clone(),
                action: ResponseAction::Alert,
            });
        }
        for noticed in noticed {
            let finding = Finding::opened(new_id(), noticed, now);
            let mut event = state
                .event(
                    EventKind::FindingOpened,
                    who.actor(),
                    format!("finding:{}", finding.id),
                )
                .with("kind", &finding.kind)
                .with("severity", finding.severity.as_str())
                .with("action", finding.action.as_str())
                .with("summary", &finding.summary);
            if let Some(nhi) = &nhi {
                event = event.with("nhi", &nhi.id);
            }
            // A finding about an NHI is announced to its owner team's channels; one about
            // no known NHI has no owner to tell and waits in the findings list.
            let deliveries = match &nhi {
                Some(nhi) => crate::notify::announce_finding(state, &finding, nhi).await,
                None => Vec::new(),
            };
            let (id, occurrences) = match state
                .store
                .open_finding(&finding, &event, &deliveries)
                .await?
            {
                FindingOpened::New => (finding.id.clone(), 1),
                FindingOpened::Folded { id, occurrences } => (id, occurrences),
            };
            findings.push(ReportedFinding {
                id,
                kind: finding.kind,
                dedupe_key: finding.dedupe_key,
                nhi_id: finding.nhi_id,
                occurrences,
            });
        }
    }
    Ok(ReportResponse { findings })
}
