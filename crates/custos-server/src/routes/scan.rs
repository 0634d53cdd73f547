//! What `custos scan` asks the server: whether the Custos secrets it found are live, and
//! recording what it found as findings. The use cases are in `leaks.rs`.

use axum::Json;
use axum::extract::State;

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::JsonBody;
use crate::leaks::{self, CheckRequest, CheckResponse, ReportRequest, ReportResponse};
use crate::service::AppState;

/// Says, for each Custos secret found in a file (at most 100 a call), whether it is `live`,
/// `revoked`, `expired` or `unknown`, and whose it is (admin). The secrets are hashed as the
/// server stores them and forgotten; they are never stored, logged or returned.
#[utoipa::path(post, path = "/v1/discovery/secrets/check", tag = "discovery",
    request_body(content = CheckRequest, content_type = "application/json"),
    responses((status = 200, body = CheckResponse),
              (status = 422, description = "not custos secrets, or too many", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn check_secrets(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(input): JsonBody<CheckRequest>,
) -> ApiResult<Json<CheckResponse>> {
    Ok(Json(leaks::check(&state, &who, input).await?))
}

/// Records a scan's findings (admin): digests and locations of the secrets it found, never the
/// secrets. A secret under several services is a `reused_secret` finding, a live static key in
/// a file a `leaked_secret` finding; a repeat folds into the unresolved finding of that secret.
#[utoipa::path(post, path = "/v1/discovery/secrets/report", tag = "discovery",
    request_body(content = ReportRequest, content_type = "application/json"),
    responses((status = 200, body = ReportResponse),
              (status = 404, description = "no such credential", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, description = "a malformed report", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn report_secrets(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(input): JsonBody<ReportRequest>,
) -> ApiResult<Json<ReportResponse>> {
    Ok(Json(leaks::report(&state, &who, input).await?))
}
