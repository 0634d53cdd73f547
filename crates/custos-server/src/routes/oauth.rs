//! The OAuth 2.0 endpoints. Requests are form-encoded (RFC 6749 §3.2) and errors follow
//! RFC 6749 §5.2, not the problem documents of `/v1`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::{OAuthErrorBody, OAuthForm, TokenResponse};
use crate::oauth::{self, no_store};
use crate::service::AppState;

/// Authorization server metadata (RFC 8414).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    security(()), responses((status = 200, body = Object)))]
pub async fn metadata(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(oauth::metadata(&state))
}

/// The token-signing keys (RFC 7517): every key a live token may name.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "oauth", security(()),
    responses((status = 200, body = Object)))]
pub async fn jwks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(oauth::jwks(&state))
}

/// The token endpoint (RFC 6749 §3.2): `client_credentials`.
#[utoipa::path(post, path = "/oauth2/token", tag = "oauth", security(()),
    request_body(content = OAuthForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenResponse),
              (status = 400, body = OAuthErrorBody), (status = 401, body = OAuthErrorBody),
              (status = 503, body = OAuthErrorBody)))]
pub async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match oauth::token(&state, &headers, &body).await {
        Ok(answer) => no_store(Json(answer).into_response()),
        Err(e) => e.into_response(),
    }
}

/// Token introspection (RFC 7662); the caller authenticates as a client.
#[utoipa::path(post, path = "/oauth2/introspect", tag = "oauth", security(()),
    request_body(content = OAuthForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = Object),
              (status = 400, body = OAuthErrorBody), (status = 401, body = OAuthErrorBody),
              (status = 503, body = OAuthErrorBody)))]
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match oauth::introspect(&state, &headers, &body).await {
        Ok(answer) => no_store(Json(answer).into_response()),
        Err(e) => e.into_response(),
    }
}

/// Token revocation (RFC 7009): a client revokes its own tokens, and with them every token
/// delegated from them.
#[utoipa::path(post, path = "/oauth2/revoke", tag = "oauth", security(()),
    request_body(content = OAuthForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "revoked, or not a token of the caller"),
              (status = 400, body = OAuthErrorBody), (status = 401, body = OAuthErrorBody),
              (status = 503, body = OAuthErrorBody)))]
pub async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match oauth::revoke(&state, &headers, &body).await {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => e.into_response(),
    }
}
