//! Tasks and approvals over HTTP.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use custos_core::issuance::{ApprovalKind, ApprovalState, RiskLevel};
use custos_store::ApprovalFilter;
use serde::Deserialize;
use utoipa::IntoParams;

use super::inventory::{invalid, page};
use crate::api::*;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{IdPath, JsonBody, QueryPairs};
use crate::service::AppState;
use crate::tasks;

type NoStore = [(header::HeaderName, HeaderValue); 1];
const NO_STORE: NoStore = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];

/// Asks for a credential for one task. Within the NHI's scope ceiling: `201` with the task and
/// its credential. Beyond it, or asked by an operator: `202` and an approval request.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks",
    request_body(content = CreateTask, content_type = "application/json"),
    responses((status = 201, body = TaskView, description = "active, with its credential"),
              (status = 202, body = TaskView, description = "waiting for approval"),
              (status = 404, description = "an operator named an nhi it cannot see", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create_task(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(input): JsonBody<CreateTask>,
) -> ApiResult<(StatusCode, NoStore, Json<TaskView>)> {
    let (issued, task) = tasks::create_task(&state, &who, input).await?;
    let status = if issued {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, NO_STORE, Json(task)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TaskParams {
    /// Seconds to wait for a pending task to be decided (long-poll), at most 60.
    #[param(minimum = 0, maximum = 60)]
    wait: Option<u64>,
}

/// A task. The NHI collects an approved task's credential here, once.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path), TaskParams),
    responses((status = 200, body = TaskView)))]
pub async fn get_task(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    query: QueryPairs,
) -> ApiResult<(NoStore, Json<TaskView>)> {
    query.only(&["wait"])?;
    let wait = match query.one("wait")? {
        None => 0,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|w| *w <= tasks::MAX_WAIT_SECONDS)
            .ok_or_else(|| {
                invalid(
                    "wait",
                    format!("must be 0 to {} seconds", tasks::MAX_WAIT_SECONDS),
                )
            })?,
    };
    Ok((
        NO_STORE,
        Json(tasks::get_task(&state, &who, &id, wait).await?),
    ))
}

/// Ends a task: its credentials, and every credential delegated from them, are revoked.
#[utoipa::path(post, path = "/v1/tasks/{id}/end", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, body = TaskView)))]
pub async fn end_task(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<TaskView>> {
    Ok(Json(tasks::end_task(&state, &who, &id).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ApprovalListParams {
    /// `pending`, `approved`, `denied` or `expired`.
    #[param(pattern = "^(pending|approved|denied|expired)$")]
    state: Option<String>,
    nhi_id: Option<String>,
    /// `scope_escalation` or `policy_approval`.
    #[param(pattern = "^(scope_escalation|policy_approval|anomaly|resume)$")]
    kind: Option<String>,
    /// `low`, `medium` or `high`.
    #[param(pattern = "^(low|medium|high)$")]
    risk: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    #[param(schema_with = cursor_schema)]
    cursor: Option<String>,
}

/// Approval requests: all for admins and auditors, their teams' for reviewers.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ApprovalListParams),
    responses((status = 200, body = ApprovalList)))]
pub async fn list_approvals(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<ApprovalList>> {
    query.only(&["state", "nhi_id", "kind", "risk", "limit", "cursor"])?;
    let filter = ApprovalFilter {
        state: query
            .one("state")?
            .map(|s| {
                ApprovalState::parse(s)
                    .ok_or_else(|| invalid("state", "must be pending, approved, denied or expired"))
            })
            .transpose()?,
        nhi_id: query.one("nhi_id")?.map(str::to_owned),
        kind: query
            .one("kind")?
            .map(|s| {
                ApprovalKind::parse(s).ok_or_else(|| {
                    invalid(
                        "kind",
                        "must be scope_escalation, policy_approval, anomaly or resume",
                    )
                })
            })
            .transpose()?,
        risk: query
            .one("risk")?
            .map(|s| {
                RiskLevel::parse(s).ok_or_else(|| invalid("risk", "must be low, medium or high"))
            })
            .transpose()?,
        ..Default::default()
    };
    let page = page(&query)?;
    Ok(Json(
        tasks::list_approvals(&state, &who, filter, page).await?,
    ))
}

#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals", params(("id" = String, Path)),
    responses((status = 200, body = ApprovalView)))]
pub async fn get_approval(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<ApprovalView>> {
    Ok(Json(tasks::get_approval(&state, &who, &id).await?))
}

/// Approves (admin, or a reviewer of the NHI's owner team; never the requester), optionally
/// narrower in scope or shorter in lifetime.
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals",
    params(("id" = String, Path)),
    request_body(content = ApproveRequest, content_type = "application/json"),
    responses((status = 200, body = ApprovalView),
              (status = 409, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn approve(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    JsonBody(input): JsonBody<ApproveRequest>,
) -> ApiResult<Json<ApprovalView>> {
    let decision = tasks::approve_decision(input)?;
    Ok(Json(tasks::decide(&state, &who, &id, decision).await?))
}

/// Denies, with a reason.
#[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "approvals",
    params(("id" = String, Path)),
    request_body(content = DenyRequest, content_type = "application/json"),
    responses((status = 200, body = ApprovalView),
              (status = 409, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn deny(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    JsonBody(input): JsonBody<DenyRequest>,
) -> ApiResult<Json<ApprovalView>> {
    let decision = tasks::deny_decision(input)?;
    Ok(Json(tasks::decide(&state, &who, &id, decision).await?))
}

/// Decides several low- or medium-risk requests alike (each as asked, or denied), each on its
/// own rights, quorum and deadline; the answer says how each went. High-risk requests are
/// refused in a batch (`high_risk_not_batched`).
#[utoipa::path(post, path = "/v1/approvals/batch", tag = "approvals",
    request_body(content = BatchDecision, content_type = "application/json"),
    responses((status = 200, body = BatchResult),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn decide_batch(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(input): JsonBody<BatchDecision>,
) -> ApiResult<Json<BatchResult>> {
    Ok(Json(tasks::decide_batch(&state, &who, input).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RuleListParams {
    nhi_id: Option<String>,
}

/// Sets a standing rule (admin): the NHI's requests for grants within `scope` are approved
/// without a reviewer until it expires (default 7 days, at most 90) or is revoked; high-risk
/// requests still wait for a reviewer.
#[utoipa::path(post, path = "/v1/approvals/rules", tag = "approvals",
    request_body(content = CreateRule, content_type = "application/json"),
    responses((status = 201, body = RuleView),
              (status = 404, description = "no such nhi, or not visible to the caller", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create_rule(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(input): JsonBody<CreateRule>,
) -> ApiResult<(StatusCode, Json<RuleView>)> {
    Ok((
        StatusCode::CREATED,
        Json(tasks::create_rule(&state, &who, input).await?),
    ))
}

/// The standing rules (admin, auditor), newest first, revoked and expired ones included.
#[utoipa::path(get, path = "/v1/approvals/rules", tag = "approvals", params(RuleListParams),
    responses((status = 200, body = RuleList)))]
pub async fn list_rules(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<RuleList>> {
    query.only(&["nhi_id"])?;
    Ok(Json(
        tasks::list_rules(&state, &who, query.one("nhi_id")?).await?,
    ))
}

/// Revokes a standing rule (admin): from now on its requests wait for a reviewer again.
#[utoipa::path(post, path = "/v1/approvals/rules/{id}/revoke", tag = "approvals",
    params(("id" = String, Path)),
    responses((status = 200, body = RuleView)))]
pub async fn revoke_rule(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<RuleView>> {
    Ok(Json(tasks::revoke_rule(&state, &who, &id).await?))
}
