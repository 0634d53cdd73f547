use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::api::Health;
use crate::error::{ApiError, ApiResult};
use crate::service::AppState;

/// Liveness: the process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "plumbing", security(()),
    responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        node: None,
    })
}

/// Readiness: the store answers, the audit trail is being sealed, and in strict mode the node
/// is confirmed current with the other nodes' changes.
#[utoipa::path(get, path = "/readyz", tag = "plumbing", security(()),
    responses((status = 200, body = Health),
              (status = 503, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    state.store.ping().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the store is not reachable: {e}"),
        )
    })?;
    if let Some(reason) = state.audit.failure(std::time::Duration::from_secs(5)) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_log_unavailable",
            format!("the audit trail cannot be sealed: {reason}"),
        ));
    }
    // A node in strict mode that cannot confirm it is current refuses every decision: a load
    // balancer should send the checks to another node meanwhile.
    if state.freshness.refuses() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "state_unconfirmed",
            "strict mode: this node cannot confirm it has heard every other node's changes",
        ));
    }
    Ok(Json(Health {
        status: "ready".into(),
        node: Some(state.freshness.node().to_owned()),
    }))
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "plumbing", security(()),
    responses((status = 200, body = String, content_type = "text/plain; version=0.0.4")))]
pub async fn metrics() -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}
