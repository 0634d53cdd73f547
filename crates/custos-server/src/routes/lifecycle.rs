//! Decommissioning over HTTP: start an NHI's workflow, follow it, read its receipt.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custos_core::lifecycle::Decommission;
use serde::Deserialize;
use utoipa::IntoParams;

use super::inventory::{StatusChange, invalid, page, reason};
use crate::api::*;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{IdPath, JsonBody, OptionalJsonBody, QueryPairs};
use crate::lifecycle;
use crate::service::AppState;

/// Decommissions an NHI (admin, or a reviewer of its owner team): starts the durable
/// workflow that suspends it and revokes every credential (delegated descendants included),
/// makes it a tombstone, archives its trail with proofs, tells its owner team, and signs a
/// teardown receipt. `202` with the workflow when this call started it; `200` with the one
/// the NHI already has (running or done) otherwise. Follow it at `Location`.
#[utoipa::path(post, path = "/v1/nhis/{id}/decommission", tag = "nhis", params(("id" = String, Path)),
    request_body(content = Option<DecommissionRequest>, content_type = "application/json"),
    responses((status = 202, description = "started", body = Object, headers(("location" = String))),
              (status = 200, description = "the NHI's workflow, started before", body = Object, headers(("location" = String))),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn decommission_nhi(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    OptionalJsonBody(request): OptionalJsonBody<DecommissionRequest>,
) -> ApiResult<Response> {
    let staged_days = request.staged_days;
    let reason = reason(StatusChange {
        reason: request.reason,
    })?;
    let (workflow, started) =
        lifecycle::decommission(&state, &who, &id, reason, staged_days).await?;
    let status = if started {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let location = HeaderValue::from_str(&format!("/v1/decommissions/{}", workflow.id))
        .unwrap_or(HeaderValue::from_static("/v1/decommissions"));
    Ok((status, [(header::LOCATION, location)], Json(workflow)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct DecommissionListParams {
    nhi_id: Option<String>,
    /// `running` (not yet done) or `done`.
    #[param(pattern = "^(running|done)$")]
    state: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    #[param(schema_with = cursor_schema)]
    cursor: Option<String>,
}

/// Decommissioning workflows, newest first: all for admins and auditors, their teams' NHIs'
/// for reviewers. A running workflow with `failures` and a `last_error` is stuck on its step.
#[utoipa::path(get, path = "/v1/decommissions", tag = "nhis", params(DecommissionListParams),
    responses((status = 200, body = DecommissionList),
              (status = 400, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn list_decommissions(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<DecommissionList>> {
    query.only(&["nhi_id", "state", "limit", "cursor"])?;
    let finished = match query.one("state")? {
        None => None,
        Some("running") => Some(false),
        Some("done") => Some(true),
        Some(_) => return Err(invalid("state", "must be running or done")),
    };
    let page = page(&query)?;
    Ok(Json(
        lifecycle::list(
            &state,
            &who,
            query.one("nhi_id")?.map(str::to_owned),
            finished,
            page,
        )
        .await?,
    ))
}

/// Why an NHI is decommissioned, and whether in stages.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecommissionRequest {
    #[schema(max_length = 500)]
    reason: Option<String>,
    /// Staged mode: suspend the NHI (keeping its credentials) and watch this many days what it
    /// would have been refused, then revoke and the rest. 1 to 90.
    #[schema(minimum = 1, maximum = 90)]
    staged_days: Option<u32>,
}

/// Stops a staged decommission during its watch (admin, or a reviewer of the owner team): the
/// workflow ends `cancelled` and the NHI is resumed. 409 `decommission_not_watching` after the
/// watch: a revocation is not undone.
#[utoipa::path(post, path = "/v1/decommissions/{id}/cancel", tag = "nhis",
    params(("id" = String, Path)),
    request_body(content = Option<StatusChange>, content_type = "application/json"),
    responses((status = 200, body = Object),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn cancel_decommission(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    OptionalJsonBody(change): OptionalJsonBody<StatusChange>,
) -> ApiResult<Json<Decommission>> {
    let reason = reason(change)?;
    Ok(Json(lifecycle::cancel(&state, &who, &id, reason).await?))
}

/// One workflow, with what its steps did and, once done, its signed teardown receipt (a JWS
/// of type `custos-teardown+jwt`, verifiable with the keys at `/.well-known/jwks.json`).
#[utoipa::path(get, path = "/v1/decommissions/{id}", tag = "nhis",
    params(("id" = String, Path)),
    responses((status = 200, body = Object),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn get_decommission(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<Decommission>> {
    Ok(Json(lifecycle::get(&state, &who, &id).await?))
}

/// Allows a deployment system to report its agents shut down (admin). The response holds
/// the hook's HMAC secret, shown this once, and the URL to post to.
#[utoipa::path(post, path = "/v1/deployment-hooks", tag = "nhis",
    request_body(content = lifecycle::NewDeploymentHook, content_type = "application/json"),
    responses((status = 201, body = lifecycle::DeploymentHookCreated, headers(("cache-control" = String, description = "`no-store`: the secret must not be kept in any cache"))),
              (status = 409, description = "the name is taken", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create_deployment_hook(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(input): JsonBody<lifecycle::NewDeploymentHook>,
) -> ApiResult<Response> {
    let created = lifecycle::create_hook(&state, &who, input).await?;
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(created),
    )
        .into_response())
}

/// Deployment hooks, newest first, the disabled ones too (admin, auditor). Never a secret.
#[utoipa::path(get, path = "/v1/deployment-hooks", tag = "nhis",
    responses((status = 200, body = Vec<lifecycle::DeploymentHookView>)))]
pub async fn list_deployment_hooks(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<Vec<lifecycle::DeploymentHookView>>> {
    Ok(Json(lifecycle::list_hooks(&state, &who).await?))
}

/// Disables a deployment hook (admin): its calls are refused from now on. Idempotent.
#[utoipa::path(post, path = "/v1/deployment-hooks/{id}/disable", tag = "nhis",
    params(("id" = String, Path)),
    responses((status = 200, body = lifecycle::DeploymentHookView),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn disable_deployment_hook(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<lifecycle::DeploymentHookView>> {
    Ok(Json(lifecycle::disable_hook(&state, &who, &id).await?))
}

/// A deployment system says an agent was shut down: `{"event": "agent.shut_down", "nhi_id",
/// "reason"?}`, signed with its hook's secret in `Custos-Signature: t=<unix seconds>,v1=<hex
/// HMAC-SHA256(secret, "<t>.<body>")>` (at most 5 minutes off). The NHI's decommissioning
/// starts (`202`), or its running or finished workflow is returned (`200`). No bearer token:
/// the signature is the credential.
#[utoipa::path(post, path = "/v1/deployment-hooks/{id}/events", tag = "nhis",
    params(("id" = String, Path),
           ("custos-signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256>")),
    request_body(content = lifecycle::HookEvent, content_type = "application/json"),
    security(()),
    responses((status = 202, description = "started", body = Object),
              (status = 200, description = "the NHI's workflow, started before", body = Object),
              (status = 401, description = "not signed by an enabled hook", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn deployment_hook_event(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    if body.len() > lifecycle::MAX_HOOK_BODY {
        return Err(crate::error::ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a hook event is at most {} bytes", lifecycle::MAX_HOOK_BODY),
        ));
    }
    let signature = headers
        .get("custos-signature")
        .and_then(|v| v.to_str().ok());
    let (workflow, started) = lifecycle::hook_event(&state, &id, signature, &body).await?;
    let status = if started {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(workflow)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct UpcomingParams {
    /// NHIs expiring within this many days [default: 30].
    #[param(minimum = 1, maximum = 3650)]
    within_days: Option<u32>,
    /// NHIs unused this many days [default: the server's `lifecycle_idle_days`, 90].
    #[param(minimum = 1, maximum = 3650)]
    idle_days: Option<u32>,
    /// At most this many of each [default: 100].
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// What the lifecycle has coming: NHIs expiring within the window (soonest first, then
/// decommissioned by the scheduler), NHIs unused for `idle_days` (due a decommission review,
/// longest idle first), and the decommissions still running (with `failures` and
/// `last_error` when stuck). Admins and auditors; reviewers see their teams' NHIs.
#[utoipa::path(get, path = "/v1/lifecycle/upcoming", tag = "nhis", params(UpcomingParams),
    responses((status = 200, body = lifecycle::Upcoming),
              (status = 400, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn upcoming(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<lifecycle::Upcoming>> {
    query.only(&["within_days", "idle_days", "limit"])?;
    let number = |name: &str, default: u32, max: u32| -> ApiResult<u32> {
        match query.one(name)? {
            None => Ok(default),
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| invalid(name, format!("must be a whole number from 1 to {max}"))),
        }
    };
    let within_days = number("within_days", 30, 3650)?;
    let idle_days = number("idle_days", state.lifecycle.policy.idle_days, 3650)?;
    let limit = number("limit", 100, 500)?;
    Ok(Json(
        lifecycle::upcoming(&state, &who, within_days, idle_days, limit).await?,
    ))
}

/// Runs the lifecycle jobs now (admin), the inventory scan included: expired NHIs, aging static
/// keys, tasks past their lifetime, idle NHIs' decommission reviews, orphans and owner
/// attestations. Says what the round did. The scheduler runs the same round on its own every
/// `lifecycle_interval_seconds`.
#[utoipa::path(post, path = "/v1/lifecycle/run", tag = "nhis",
    responses((status = 200, body = crate::jobs::RoundReport),
              (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, description = "another node is running the jobs", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn run_lifecycle(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<crate::jobs::RoundReport>> {
    Ok(Json(crate::jobs::run_now(&state, &who).await?))
}
