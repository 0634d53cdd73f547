//! Behaviour baselines, findings, anomaly response policies and observed events over HTTP.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use custos_core::finding::{Finding, FindingState, ResponsePolicy};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use super::inventory::{invalid, page};
use crate::api::*;
use crate::auth::Principal;
use crate::behaviour::{self, FindingQuery};
use crate::error::ApiResult;
use crate::extract::{IdPath, JsonBody, OptionalJsonBody, QueryPairs};
use crate::service::AppState;

/// What an NHI's behaviour profile has learnt: probation status (`probation` until both 14
/// days and 200 events have passed, by default; then `learnt`), the distinct services,
/// operations, resource prefixes, networks and clients it knows, its active hours of the
/// week, its busiest operations with their hourly rates, its refusal rate, and the profile's
/// size in bytes.
#[utoipa::path(get, path = "/v1/nhis/{id}/baseline", tag = "behaviour",
    params(("id" = String, Path)),
    responses((status = 200, body = Object),
              (status = 404, description = "no such nhi, or not visible to the caller", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn baseline(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<Value>> {
    Ok(Json(behaviour::baseline(&state, &who, &id).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct FindingListParams {
    /// `anomaly`, `credential_stuffing`, `environment_crossing`, `interactive_use`,
    /// `delegation_fan_out`, …
    #[param(pattern = "^[a-z_]{1,64}$")]
    kind: Option<String>,
    nhi_id: Option<String>,
    /// `open`, `acknowledged`, `dismissed`, `accepted`, or `unresolved` (open or
    /// acknowledged).
    #[param(pattern = "^(open|acknowledged|dismissed|accepted|unresolved)$")]
    state: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    #[param(schema_with = cursor_schema)]
    cursor: Option<String>,
}

/// Findings, newest first: all for admins and auditors, their teams' NHIs' for reviewers.
#[utoipa::path(get, path = "/v1/findings", tag = "behaviour", params(FindingListParams),
    responses((status = 200, body = FindingList),
              (status = 400, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn list_findings(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<FindingList>> {
    query.only(&["kind", "nhi_id", "state", "limit", "cursor"])?;
    let kind = query.one("kind")?;
    if let Some(kind) = kind
        && (kind.is_empty()
            || kind.len() > 64
            || !kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    {
        return Err(invalid("kind", "must be lowercase letters and underscores"));
    }
    let (finding_state, unresolved) = match query.one("state")? {
        None => (None, false),
        Some("unresolved") => (None, true),
        Some(text) => (
            Some(FindingState::parse(text).ok_or_else(|| {
                invalid(
                    "state",
                    "must be open, acknowledged, dismissed, accepted or unresolved",
                )
            })?),
            false,
        ),
    };
    let filter = FindingQuery {
        kind: kind.map(str::to_owned),
        nhi_id: query.one("nhi_id")?.map(str::to_owned),
        state: finding_state,
        unresolved,
    };
    let page = page(&query)?;
    Ok(Json(
        behaviour::list_findings(&state, &who, filter, page).await?,
    ))
}

/// One finding with its evidence.
#[utoipa::path(get, path = "/v1/findings/{id}", tag = "behaviour",
    params(("id" = String, Path)),
    responses((status = 200, body = Object),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn get_finding(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<Finding>> {
    Ok(Json(behaviour::get_finding(&state, &who, &id).await?))
}

/// Acknowledges a finding (admin, or a reviewer of the NHI's owner team): someone is on it.
#[utoipa::path(post, path = "/v1/findings/{id}/acknowledge", tag = "behaviour",
    params(("id" = String, Path)),
    request_body(content = Option<ResolveFinding>, content_type = "application/json"),
    responses((status = 200, body = Object),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, description = "the finding is not open", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn acknowledge_finding(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    OptionalJsonBody(input): OptionalJsonBody<ResolveFinding>,
) -> ApiResult<Json<Finding>> {
    Ok(Json(
        behaviour::resolve_finding(&state, &who, &id, FindingState::Acknowledged, input).await?,
    ))
}

/// Dismisses a finding, with the reason: not a problem, and not the new normal either.
#[utoipa::path(post, path = "/v1/findings/{id}/dismiss", tag = "behaviour",
    params(("id" = String, Path)),
    request_body(content = ResolveFinding, content_type = "application/json"),
    responses((status = 200, body = Object),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, description = "the finding is already resolved", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn dismiss_finding(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    JsonBody(input): JsonBody<ResolveFinding>,
) -> ApiResult<Json<Finding>> {
    Ok(Json(
        behaviour::resolve_finding(&state, &who, &id, FindingState::Dismissed, input).await?,
    ))
}

/// "This is the new normal": resolves the finding and folds the events it holds into the
/// NHI's baseline, so that the same behaviour no longer departs from it.
#[utoipa::path(post, path = "/v1/findings/{id}/accept", tag = "behaviour",
    params(("id" = String, Path)),
    request_body(content = Option<ResolveFinding>, content_type = "application/json"),
    responses((status = 200, body = Object),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, description = "the finding is already resolved", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn accept_finding(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    OptionalJsonBody(input): OptionalJsonBody<ResolveFinding>,
) -> ApiResult<Json<Finding>> {
    Ok(Json(
        behaviour::resolve_finding(&state, &who, &id, FindingState::Accepted, input).await?,
    ))
}

/// Sets a response policy (admin): what a departure after probation brings for an NHI,
/// a team's NHIs, a kind of NHI, or by default.
#[utoipa::path(post, path = "/v1/response-policies", tag = "behaviour",
    request_body(content = NewResponsePolicy, content_type = "application/json"),
    responses((status = 201, body = Object),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create_response_policy(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(input): JsonBody<NewResponsePolicy>,
) -> ApiResult<(StatusCode, Json<ResponsePolicy>)> {
    Ok((
        StatusCode::CREATED,
        Json(behaviour::create_response_policy(&state, &who, input).await?),
    ))
}

/// The response policies (admin, auditor), revoked ones included.
#[utoipa::path(get, path = "/v1/response-policies", tag = "behaviour",
    responses((status = 200, body = ResponsePolicyList)))]
pub async fn list_response_policies(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<ResponsePolicyList>> {
    query.only(&[])?;
    Ok(Json(behaviour::list_response_policies(&state, &who).await?))
}

/// Revokes a response policy (admin); revoking it again changes nothing.
#[utoipa::path(post, path = "/v1/response-policies/{id}/revoke", tag = "behaviour",
    params(("id" = String, Path)),
    responses((status = 200, body = Object),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn revoke_response_policy(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<ResponsePolicy>> {
    Ok(Json(
        behaviour::revoke_response_policy(&state, &who, &id).await?,
    ))
}

/// Feeds events seen in a platform's own logs to registered NHIs' baselines (admin), in
/// order. Departures become findings, recorded and alerted but never enforced: the events
/// happened elsewhere already.
#[utoipa::path(post, path = "/v1/observations", tag = "behaviour",
    request_body(content = ObservationBatch, content_type = "application/json"),
    responses((status = 200, body = ObservationsAccepted),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn observe(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(input): JsonBody<ObservationBatch>,
) -> ApiResult<Json<ObservationsAccepted>> {
    Ok(Json(
        behaviour::observe_imported(&state, &who, input).await?,
    ))
}
