use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custos_core::{NhiFilter, NhiKind, NhiStatus, Page, Timestamp};
use custos_store::EventQuery;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::api::*;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{IdPath, JsonBody, OptionalJsonBody, QueryPairs};
use crate::service::{self, AppState, decode_cursor};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

pub(super) fn invalid(name: &str, detail: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_parameter", format!("{name}: {}", detail.into()))
}

pub(super) fn page(query: &QueryPairs) -> ApiResult<Page> {
    let limit = limit(query)?;
    let after = query.one("cursor")?.map(decode_cursor).transpose()?;
    Ok(Page { after, limit })
}

/// A list's `limit` parameter: the default when absent.
pub(super) fn limit(query: &QueryPairs) -> ApiResult<u32> {
    Ok(match query.one("limit")? {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                invalid(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_LIMIT}"),
                )
            })?,
    })
}

fn timestamp(query: &QueryPairs, name: &str) -> ApiResult<Option<Timestamp>> {
    query
        .one(name)?
        .map(|t| Timestamp::parse_rfc3339(t).map_err(|e| invalid(name, e.to_string())))
        .transpose()
}

fn slug(query: &QueryPairs, name: &str) -> ApiResult<Option<String>> {
    let Some(value) = query.one(name)? else {
        return Ok(None);
    };
    let mut errors = custos_core::validate::ValidationErrors::default();
    custos_core::validate::slug(&mut errors, name, value);
    if errors.is_empty() {
        Ok(Some(value.to_owned()))
    } else {
        Err(invalid(name, errors.0[0].message.clone()))
    }
}

pub(super) fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn with_etag(status: StatusCode, view: NhiView) -> Response {
    let tag = etag(view.version);
    (status, [(header::ETAG, tag)], Json(view)).into_response()
}

/// `If-Match: "N"` pins the version a write applies to; `*` or no header means any.
pub(super) fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        // A tag too large for any version is well-formed but matches none: 412, not 400.
        .map(|t| Some(t.parse::<i64>().unwrap_or(-1)))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_if_match",
                "If-Match must be an ETag this server sent, like \"3\"",
            )
        })
}

/// Registers an NHI (admin). Owner team and purpose are required.
#[utoipa::path(post, path = "/v1/nhis", tag = "nhis", request_body = CreateNhi,
    responses((status = 201, body = NhiView, headers(("etag" = String), ("location" = String, description = "the new NHI's path, /v1/nhis/{id}"))),
              (status = 409, description = "name taken on this platform", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create_nhi(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(input): JsonBody<CreateNhi>,
) -> ApiResult<Response> {
    let view = service::create_nhi(&state, &who, input).await?;
    let location = HeaderValue::from_str(&format!("/v1/nhis/{}", view.id)).ok();
    let mut response = with_etag(StatusCode::CREATED, view);
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Query parameters of the inventory listing (all optional, combined with AND).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct NhiListParams {
    #[param(schema_with = status_schema)]
    status: Option<String>,
    #[param(schema_with = kind_schema)]
    kind: Option<String>,
    #[param(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    platform: Option<String>,
    #[param(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    environment: Option<String>,
    /// Owner team name or id.
    team: Option<String>,
    #[param(schema_with = tag_filter_schema)]
    tag: Option<Vec<String>>,
    #[param(schema_with = timestamp_schema)]
    expires_before: Option<String>,
    /// Never used, or last used before this time.
    #[param(schema_with = timestamp_schema)]
    unused_since: Option<String>,
    /// Case-insensitive substring of the name.
    #[param(max_length = 200)]
    q: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    #[param(schema_with = cursor_schema)]
    cursor: Option<String>,
}

const NHI_LIST_PARAMS: &[&str] = &[
    "status",
    "kind",
    "platform",
    "environment",
    "team",
    "tag",
    "expires_before",
    "unused_since",
    "q",
    "limit",
    "cursor",
];

/// Lists NHIs with filters and cursor pagination. Reviewers see their teams' NHIs only.
#[utoipa::path(get, path = "/v1/nhis", tag = "nhis", params(NhiListParams),
    responses((status = 200, body = NhiList)))]
pub async fn list_nhis(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<NhiList>> {
    query.only(NHI_LIST_PARAMS)?;
    let mut filter = NhiFilter {
        status: query
            .one("status")?
            .map(|s| {
                NhiStatus::parse(s)
                    .ok_or_else(|| invalid("status", "must be active, suspended or decommissioned"))
            })
            .transpose()?,
        kind: query
            .one("kind")?
            .map(|k| NhiKind::parse(k).ok_or_else(|| invalid("kind", "unknown kind")))
            .transpose()?,
        platform: slug(&query, "platform")?,
        environment: slug(&query, "environment")?,
        expires_before: timestamp(&query, "expires_before")?,
        unused_since: timestamp(&query, "unused_since")?,
        name_contains: query.one("q")?.filter(|q| !q.is_empty()).map(str::to_owned),
        ..Default::default()
    };
    if filter
        .name_contains
        .as_ref()
        .is_some_and(|q| q.chars().count() > 200)
    {
        return Err(invalid("q", "must be at most 200 characters"));
    }
    for tag in query.all("tag") {
        let (key, value) = match tag.split_once(':') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (tag, None),
        };
        if key.is_empty() {
            return Err(invalid("tag", "expected key or key:value"));
        }
        filter.tags.push((key.to_owned(), value));
    }
    if let Some(team) = query.one("team")? {
        filter.owner_teams = Some(service::team_filter(&state, team).await?);
    }
    Ok(Json(
        service::list_nhis(&state, &who, filter, page(&query)?).await?,
    ))
}

/// One NHI, with its version as the ETag.
#[utoipa::path(get, path = "/v1/nhis/{id}", tag = "nhis", params(("id" = String, Path)),
    responses((status = 200, body = NhiView, headers(("etag" = String)))))]
pub async fn get_nhi(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Response> {
    Ok(with_etag(
        StatusCode::OK,
        service::get_nhi(&state, &who, &id).await?,
    ))
}

/// Changes an NHI (admin): a JSON merge patch. With `If-Match`, a stale write gets 412.
/// A scope ceiling widened to a service the NHI could not reach tells its behaviour baseline
/// to expect that service's first calls for the next two to three weeks; a new owner team or
/// application moves it to that peer group.
#[utoipa::path(patch, path = "/v1/nhis/{id}", tag = "nhis",
    params(("id" = String, Path),
           ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|"[0-9]+")$"#,
            description = "the ETag read earlier, or `*` for any version")),
    request_body(content = UpdateNhi, content_type = "application/merge-patch+json"),
    responses((status = 200, body = NhiView, headers(("etag" = String))),
              (status = 409, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 412, description = "the NHI changed since it was read", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn update_nhi(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    headers: HeaderMap,
    JsonBody(input): JsonBody<UpdateNhi>,
) -> ApiResult<Response> {
    let expected = if_match(&headers)?;
    Ok(with_etag(
        StatusCode::OK,
        service::update_nhi(&state, &who, &id, expected, input).await?,
    ))
}

/// An optional reason for a status change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    #[schema(max_length = 500)]
    pub(super) reason: Option<String>,
}

/// The reason, if any, of a status change, checked.
pub(super) fn reason(change: StatusChange) -> ApiResult<Option<String>> {
    if change
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 500)
    {
        return Err(ApiError::validation(
            custos_core::validate::ValidationErrors::single(
                "reason",
                "must be at most 500 characters",
            ),
        ));
    }
    Ok(change.reason)
}

/// Suspends an NHI (admin, or a reviewer of its owner team). Idempotent.
#[utoipa::path(post, path = "/v1/nhis/{id}/suspend", tag = "nhis", params(("id" = String, Path)),
    request_body(content = Option<StatusChange>, content_type = "application/json"),
    responses((status = 200, body = NhiView, headers(("etag" = String))),
              (status = 409, description = "not possible from the current status", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn suspend_nhi(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    OptionalJsonBody(change): OptionalJsonBody<StatusChange>,
) -> ApiResult<Response> {
    let reason = reason(change)?;
    Ok(with_etag(
        StatusCode::OK,
        service::suspend_nhi(&state, &who, &id, reason).await?,
    ))
}

/// Resumes a suspended NHI (admin). Idempotent.
#[utoipa::path(post, path = "/v1/nhis/{id}/resume", tag = "nhis", params(("id" = String, Path)),
    request_body(content = Option<StatusChange>, content_type = "application/json"),
    responses((status = 200, body = NhiView, headers(("etag" = String))),
              (status = 409, description = "not possible from the current status", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn resume_nhi(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    OptionalJsonBody(change): OptionalJsonBody<StatusChange>,
) -> ApiResult<Response> {
    let reason = reason(change)?;
    Ok(with_etag(
        StatusCode::OK,
        service::resume_nhi(&state, &who, &id, reason).await?,
    ))
}

/// Issues a static key for an NHI (admin). The secret is in this response only.
#[utoipa::path(post, path = "/v1/nhis/{id}/credentials", tag = "credentials", params(("id" = String, Path)),
    request_body(content = Option<IssueStaticKey>, content_type = "application/json"),
    responses((status = 201, body = StaticKeyIssued, headers(("cache-control" = String, description = "`no-store`: the secret must not be kept in any cache"))),
              (status = 409, description = "the NHI is not active", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn issue_static_key(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    OptionalJsonBody(input): OptionalJsonBody<IssueStaticKey>,
) -> ApiResult<(
    StatusCode,
    [(header::HeaderName, HeaderValue); 1],
    Json<StaticKeyIssued>,
)> {
    let issued = service::issue_static_key(&state, &who, &id, input).await?;
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(issued),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct CredentialListParams {
    nhi_id: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    #[param(schema_with = cursor_schema)]
    cursor: Option<String>,
}

/// Lists credentials by fingerprint (admin, auditor). Secrets are never shown.
#[utoipa::path(get, path = "/v1/credentials", tag = "credentials", params(CredentialListParams),
    responses((status = 200, body = CredentialList)))]
pub async fn list_credentials(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<CredentialList>> {
    query.only(&["nhi_id", "limit", "cursor"])?;
    let page = page(&query)?;
    Ok(Json(
        service::list_credentials(&state, &who, query.one("nhi_id")?, page).await?,
    ))
}

/// Revokes a credential at once (admin, or a reviewer of the owner team), with an optional
/// reason kept in the `credential.revoked` event. Idempotent.
#[utoipa::path(post, path = "/v1/credentials/{id}/revoke", tag = "credentials", params(("id" = String, Path)),
    request_body(content = Option<StatusChange>, content_type = "application/json"),
    responses((status = 200, body = CredentialView)))]
pub async fn revoke_credential(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    OptionalJsonBody(change): OptionalJsonBody<StatusChange>,
) -> ApiResult<Json<CredentialView>> {
    let reason = reason(change)?;
    Ok(Json(
        service::revoke_credential(&state, &who, &id, reason).await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct EventListParams {
    /// What changed, e.g. `nhi:<id>`.
    subject: Option<String>,
    /// The event type, e.g. `nhi.registered`.
    kind: Option<String>,
    /// `operator:<id>`, `nhi:<id>` or `system`.
    actor: Option<String>,
    /// Events about this NHI: its own, and those (tasks, approvals) that name it.
    nhi: Option<String>,
    /// Events naming the credential with this fingerprint (see `POST /v1/audit/hash`).
    #[param(pattern = "^(fp|jwk)_[0-9A-Za-z_-]{1,64}$")]
    fingerprint: Option<String>,
    /// Occurred at or after (RFC 3339).
    #[param(schema_with = timestamp_schema)]
    since: Option<String>,
    /// Occurred before (RFC 3339).
    #[param(schema_with = timestamp_schema)]
    until: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    #[param(schema_with = cursor_schema)]
    cursor: Option<String>,
}

/// The trail of domain events, oldest first (admin, auditor).
#[utoipa::path(get, path = "/v1/audit/events", tag = "audit", params(EventListParams),
    responses((status = 200, body = EventList)))]
pub async fn list_events(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<EventList>> {
    query.only(&[
        "subject",
        "kind",
        "actor",
        "nhi",
        "fingerprint",
        "since",
        "until",
        "limit",
        "cursor",
    ])?;
    let fingerprint = query.one("fingerprint")?;
    if let Some(fp) = fingerprint {
        let valid = (fp.starts_with("fp_") || fp.starts_with("jwk_"))
            && fp.len() <= 70
            && fp
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(invalid(
                "fingerprint",
                "must be a credential fingerprint (fp_…)",
            ));
        }
    }
    let page = page(&query)?;
    let after_seq = match page.after {
        Some(text) => text.parse::<i64>().map_err(|_| {
            ApiError::bad_request("invalid_cursor", "the cursor is not one this server issued")
        })?,
        None => 0,
    };
    let query = EventQuery {
        after_seq,
        limit: page.limit,
        subject: query.one("subject")?.map(str::to_owned),
        kind: query.one("kind")?.map(str::to_owned),
        kinds: Vec::new(),
        actor: query.one("actor")?.map(str::to_owned),
        nhi: query.one("nhi")?.map(str::to_owned),
        fingerprint: fingerprint.map(str::to_owned),
        since: timestamp(&query, "since")?,
        until: timestamp(&query, "until")?,
        newest_first: false,
    };
    Ok(Json(service::list_events(&state, &who, query).await?))
}

/// Rotates a static key (admin): a new key now, the old one valid for the configured grace
/// period, then dead.
#[utoipa::path(post, path = "/v1/credentials/{id}/rotate", tag = "credentials", params(("id" = String, Path)),
    responses((status = 201, body = StaticKeyRotated, headers(("cache-control" = String, description = "`no-store`"))),
              (status = 409, description = "not a live static key, or the NHI is not active", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn rotate_credential(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<(
    StatusCode,
    [(header::HeaderName, HeaderValue); 1],
    Json<StaticKeyRotated>,
)> {
    let rotated = service::rotate_static_key(&state, &who, &id).await?;
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(rotated),
    ))
}

/// Collects the key that replaced an aging static key (the NHI, presenting the old key): the
/// scheduler rotates a key past `static_key_rotate_after_days` with nobody there to be shown
/// the new secret, so it waits, sealed, to be handed out here once. The old key keeps working
/// until `previous_expires_at`.
#[utoipa::path(post, path = "/v1/credentials/rotated", tag = "credentials",
    responses((status = 200, body = StaticKeyRotated, headers(("cache-control" = String, description = "`no-store`"))),
              (status = 403, description = "not an nhi presenting a static key", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 404, description = "no replacement waits for this key (`nothing_to_collect`)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn collect_rotated_key(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<(
    StatusCode,
    [(header::HeaderName, HeaderValue); 1],
    Json<StaticKeyRotated>,
)> {
    let rotated = service::collect_rotated_key(&state, &who).await?;
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(rotated),
    ))
}

/// Gives the NHI to another owner team, with a reason kept in the trail (admin, or a reviewer
/// of the team that owns it now).
#[utoipa::path(post, path = "/v1/nhis/{id}/transfer", tag = "nhis", params(("id" = String, Path)),
    request_body(content = TransferNhi, content_type = "application/json"),
    responses((status = 200, body = NhiView),
              (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn transfer_nhi(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    JsonBody(input): JsonBody<TransferNhi>,
) -> ApiResult<Json<NhiView>> {
    Ok(Json(service::transfer_nhi(&state, &who, &id, input).await?))
}

/// Registers a public key the NHI authenticates with by `private_key_jwt` (admin).
#[utoipa::path(post, path = "/v1/nhis/{id}/client-keys", tag = "credentials", params(("id" = String, Path)),
    request_body(content = RegisterClientKey, content_type = "application/json"),
    responses((status = 201, body = CredentialView),
              (status = 409, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn register_client_key(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    JsonBody(input): JsonBody<RegisterClientKey>,
) -> ApiResult<(StatusCode, Json<CredentialView>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::register_client_key(&state, &who, &id, input).await?),
    ))
}

/// The token-signing keys and their state (admin, auditor).
#[utoipa::path(get, path = "/v1/keys", tag = "keys", responses((status = 200, body = SigningKeyList)))]
pub async fn list_signing_keys(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<SigningKeyList>> {
    Ok(Json(service::list_signing_keys(&state, &who).await?))
}

/// Rotates the token-signing key (admin). The old key stays published until the last token it
/// may have signed has expired.
#[utoipa::path(post, path = "/v1/keys/rotate", tag = "keys",
    request_body(content = Option<RotateSigningKey>, content_type = "application/json"),
    responses((status = 200, body = SigningKeyList)))]
pub async fn rotate_signing_key(
    State(state): State<AppState>,
    who: Principal,
    OptionalJsonBody(input): OptionalJsonBody<RotateSigningKey>,
) -> ApiResult<Json<SigningKeyList>> {
    Ok(Json(
        service::rotate_signing_key(&state, &who, input).await?,
    ))
}
