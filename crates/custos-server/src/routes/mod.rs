//! HTTP handlers: parse the request, call one use case, shape the response. Nothing else.

mod access;
mod audit;
mod behaviour;
mod discovery;
mod inventory;
mod lifecycle;
mod notifications;
mod oauth;
mod people;
mod plumbing;
mod policies;
mod reports;
mod scan;
mod tasks;

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::service::AppState;

/// The whole application: every route, documented as it is registered.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let limits = state.limits.clone();
    let state_for_ui = state.clone();
    let (api, openapi) = OpenApiRouter::with_openapi(crate::openapi::base())
        .routes(routes!(plumbing::healthz))
        .routes(routes!(plumbing::readyz))
        .routes(routes!(plumbing::metrics))
        .routes(routes!(people::whoami))
        .routes(routes!(people::create_team, people::list_teams))
        .routes(routes!(people::get_team))
        .routes(routes!(people::update_team))
        .routes(routes!(people::create_operator, people::list_operators))
        .routes(routes!(people::get_operator))
        .routes(routes!(people::revoke_operator))
        .routes(routes!(inventory::create_nhi, inventory::list_nhis))
        .routes(routes!(inventory::get_nhi, inventory::update_nhi))
        .routes(routes!(inventory::suspend_nhi))
        .routes(routes!(inventory::resume_nhi))
        .routes(routes!(lifecycle::decommission_nhi))
        .routes(routes!(lifecycle::list_decommissions))
        .routes(routes!(lifecycle::get_decommission))
        .routes(routes!(lifecycle::cancel_decommission))
        .routes(routes!(
            lifecycle::create_deployment_hook,
            lifecycle::list_deployment_hooks
        ))
        .routes(routes!(lifecycle::disable_deployment_hook))
        .routes(routes!(lifecycle::deployment_hook_event))
        .routes(routes!(lifecycle::upcoming))
        .routes(routes!(lifecycle::run_lifecycle))
        .routes(routes!(inventory::transfer_nhi))
        .routes(routes!(inventory::collect_rotated_key))
        .routes(routes!(inventory::issue_static_key))
        .routes(routes!(inventory::list_credentials))
        .routes(routes!(inventory::revoke_credential))
        .routes(routes!(inventory::rotate_credential))
        .routes(routes!(inventory::register_client_key))
        .routes(routes!(inventory::list_signing_keys))
        .routes(routes!(inventory::rotate_signing_key))
        .routes(routes!(inventory::list_events))
        .routes(routes!(audit::checkpoint))
        .routes(routes!(audit::inclusion))
        .routes(routes!(audit::consistency))
        .routes(routes!(audit::export))
        .routes(routes!(audit::hash))
        .routes(routes!(tasks::create_task))
        .routes(routes!(tasks::get_task))
        .routes(routes!(tasks::end_task))
        .routes(routes!(tasks::list_approvals))
        .routes(routes!(tasks::get_approval))
        .routes(routes!(tasks::approve))
        .routes(routes!(tasks::deny))
        .routes(routes!(tasks::decide_batch))
        .routes(routes!(tasks::create_rule, tasks::list_rules))
        .routes(routes!(tasks::revoke_rule))
        .routes(routes!(behaviour::baseline))
        .routes(routes!(behaviour::list_findings))
        .routes(routes!(behaviour::get_finding))
        .routes(routes!(behaviour::acknowledge_finding))
        .routes(routes!(behaviour::dismiss_finding))
        .routes(routes!(behaviour::accept_finding))
        .routes(routes!(
            behaviour::create_response_policy,
            behaviour::list_response_policies
        ))
        .routes(routes!(behaviour::revoke_response_policy))
        .routes(routes!(behaviour::observe))
        .routes(routes!(discovery::import))
        .routes(routes!(discovery::list_identities))
        .routes(routes!(discovery::adopt))
        .routes(routes!(
            discovery::create_logical_agent,
            discovery::list_logical_agents
        ))
        .routes(routes!(discovery::suggestions))
        .routes(routes!(discovery::get_logical_agent))
        .routes(routes!(discovery::link_member, discovery::unlink_member))
        .routes(routes!(oauth::metadata))
        .routes(routes!(oauth::jwks))
        .routes(routes!(oauth::token))
        .routes(routes!(oauth::introspect))
        .routes(routes!(oauth::revoke))
        .routes(routes!(policies::get_policies, policies::put_policies))
        .routes(routes!(policies::get_schema))
        .routes(routes!(access::configuration))
        .routes(routes!(access::evaluation))
        .routes(routes!(access::evaluations))
        .routes(routes!(
            notifications::create_channel,
            notifications::list_channels
        ))
        .routes(routes!(notifications::disable_channel))
        .routes(routes!(notifications::test_channel))
        .routes(routes!(notifications::list_deliveries))
        .routes(routes!(scan::check_secrets))
        .routes(routes!(scan::report_secrets))
        .routes(routes!(reports::risk_report))
        .routes(routes!(reports::nhi_risk))
        .routes(routes!(reports::blast_radius))
        .routes(routes!(reports::posture))
        .with_state(state)
        .split_for_parts();
    let openapi = crate::openapi::finish(openapi, &limits);
    let document = serde_json::to_vec(&openapi).unwrap_or_default();
    let app = api
        .route(
            "/openapi.json",
            axum::routing::get(move || async move {
                ([("content-type", "application/json")], document.clone())
            }),
        )
        .merge(crate::ui::router(state_for_ui))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(refuse_nul_in_uri))
        .layer(axum::middleware::from_fn(crate::metrics::track_requests));
    (app, openapi)
}

/// No path or query may carry a NUL character (`%00`): nothing Custos stores can hold one
/// (PostgreSQL refuses it in text), so such a request names nothing and is refused before any
/// route reads it, the same way on every store.
async fn refuse_nul_in_uri(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let uri = request.uri();
    if uri.path().contains("%00") {
        return ApiError::not_found("resource").into_response();
    }
    if uri.query().is_some_and(|query| query.contains("%00")) {
        return ApiError::bad_request(
            "invalid_parameter",
            "query parameters may not contain the NUL character (%00)",
        )
        .into_response();
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

async fn method_not_allowed(method: Method) -> impl IntoResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("method {method} is not allowed here"),
    )
}
