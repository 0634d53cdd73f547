//! Guardrail policies over HTTP: Cedar text, versioned, validated before they are kept.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::inventory::{etag, if_match};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{MAX_BODY_BYTES, is_json, media_type, parse_json};
use crate::policies::{self, PoliciesView, PutPolicies};
use crate::service::AppState;

fn respond(view: PoliciesView, as_text: bool) -> Response {
    let tag = etag(view.version);
    if as_text {
        (
            StatusCode::OK,
            [
                (header::ETAG, tag),
                (
                    header::CONTENT_TYPE,
                    "text/plain; charset=utf-8"
                        .parse()
                        .unwrap_or(header::HeaderValue::from_static("text/plain")),
                ),
            ],
            view.policies,
        )
            .into_response()
    } else {
        (StatusCode::OK, [(header::ETAG, tag)], Json(view)).into_response()
    }
}

/// The guardrail policies in force (admin, auditor): JSON with the text, the catalogue and the
/// policy names, or with `Accept: text/plain` the Cedar text alone.
#[utoipa::path(get, path = "/v1/policies", tag = "policies",
    responses((status = 200, body = PoliciesView, headers(("etag" = String)))))]
pub async fn get_policies(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let view = policies::get(&state, &who).await?;
    Ok(respond(
        view,
        media_type(&headers, header::ACCEPT) == "text/plain",
    ))
}

/// Keeps a new version of the guardrail policies (admin): JSON `{"policies", "catalogue"?,
/// "links"?}`, or the Cedar text alone as `text/plain`; what is left out (the catalogue, the
/// template links) stays as it is. Validated against the schema first: a policy that
/// does not parse, names what the catalogue does not have, or permits is refused with 422 and
/// nothing is kept. With `If-Match`, a stale write gets 412.
#[utoipa::path(put, path = "/v1/policies", tag = "policies",
    params(("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|"[0-9]+")$"#,
            description = "the version the change applies to, as its ETag")),
    request_body(content = PutPolicies, content_type = "application/json"),
    responses((status = 200, body = PoliciesView, headers(("etag" = String))),
              (status = 412, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn put_policies(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body must be at most {MAX_BODY_BYTES} bytes"),
        ));
    }
    let expected = if_match(&headers)?;
    let content_type = media_type(&headers, header::CONTENT_TYPE);
    let input = if content_type == "text/plain" {
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad_request("invalid_body", "the policy text must be UTF-8"))?;
        PutPolicies {
            policies: text,
            catalogue: None,
            links: None,
        }
    } else if is_json(&content_type) {
        parse_json(&body)?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json or the Cedar text as text/plain",
        ));
    };
    let view = policies::put(&state, &who, input, expected).await?;
    Ok(respond(view, false))
}

/// The Cedar schema the policies are validated against (admin, auditor), for the catalogue in
/// force.
#[utoipa::path(get, path = "/v1/policies/schema", tag = "policies",
    responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn get_schema(State(state): State<AppState>, who: Principal) -> ApiResult<Response> {
    let text = policies::schema(&state, &who).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}
