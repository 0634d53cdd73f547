//! Discovery over HTTP: imports, observed identities, adopting shadow NHIs, logical agents.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use custos_core::Page;
use custos_core::discovery::IdentityClass;
use custos_core::discovery::logical::{LogicalAgent, Suggestion};
use custos_core::discovery::observed::ObservedFilter;
use serde::Deserialize;
use utoipa::IntoParams;

use super::inventory::{invalid, limit, page};
use crate::auth::Principal;
use crate::discovery::{
    self, AdoptShadow, Adopted, CreateLogicalAgent, ImportReport, LogicalAgentList, ObservedList,
};
use crate::error::{ApiError, ApiResult};
use crate::extract::{IdPath, JsonBody, QueryPairs};
use crate::service::AppState;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ImportParams {
    /// `inventory-csv`, `inventory-json`, `aws-iam-credential-report`, `k8s-serviceaccounts`,
    /// `cloudtrail`, `k8s-audit`, `github-audit`, `okta-system-log`.
    #[param(
        pattern = "^(inventory-csv|inventory-json|aws-iam-credential-report|k8s-serviceaccounts|cloudtrail|k8s-audit|github-audit|okta-system-log)$"
    )]
    format: String,
    /// The name to record the file under (its file name, say); the format's name if absent.
    #[param(min_length = 1, max_length = 256)]
    source: Option<String>,
}

/// Imports one file of a named format (admin), streamed: the raw file is the body, gzip or
/// not. Inventory rows are registered by the rules of `POST /v1/nhis` (rows naming an
/// existing NHI are counted and left alone); identities seen in listings and logs are kept
/// and matched with NHIs by their `external_ids`; unmatched non-human ones become
/// `shadow_nhi` findings; matched ones' activity moves their last-used time and feeds their
/// baselines. Malformed records are reported with their position and skipped. A file that
/// stops being its format part-way is imported up to that point (`complete: false`).
#[utoipa::path(post, path = "/v1/discovery/imports", tag = "discovery", params(ImportParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "the file, as it is (gzip accepted)"),
    responses((status = 200, body = ImportReport),
              (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 413, description = "larger than import_max_bytes", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, description = "unknown format, or nothing in the file is that format", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn import(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
    body: Body,
) -> ApiResult<Json<ImportReport>> {
    query.only(&["format", "source"])?;
    let format = query
        .one("format")?
        .ok_or_else(|| invalid("format", "is required"))?
        .to_owned();
    let source = query.one("source")?.map(str::to_owned);
    Ok(Json(
        discovery::import(&state, &who, &format, source, body).await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct IdentityListParams {
    #[param(pattern = "^[a-z0-9._-]{1,64}$")]
    platform: Option<String>,
    /// `human`, `non_human` or `platform`.
    #[param(pattern = "^(human|non_human|platform)$")]
    class: Option<String>,
    /// `true`: only shadow NHIs (non-human, matched with no NHI).
    #[param(pattern = "^(true|false)$")]
    shadow: Option<String>,
    nhi_id: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Identities the imports have seen (admin, auditor), in platform and principal order.
#[utoipa::path(get, path = "/v1/discovery/identities", tag = "discovery", params(IdentityListParams),
    responses((status = 200, body = ObservedList),
              (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn list_identities(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<ObservedList>> {
    query.only(&["platform", "class", "shadow", "nhi_id", "limit", "cursor"])?;
    let platform = query.one("platform")?.map(str::to_owned);
    if let Some(platform) = &platform
        && (platform.is_empty()
            || platform.len() > 64
            || !platform
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)))
    {
        return Err(invalid("platform", "must be a platform name such as aws"));
    }
    let class = query
        .one("class")?
        .map(|text| {
            IdentityClass::parse(text)
                .ok_or_else(|| invalid("class", "must be human, non_human or platform"))
        })
        .transpose()?;
    let shadow_only = match query.one("shadow")? {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(invalid("shadow", "must be true or false")),
    };
    let filter = ObservedFilter {
        platform,
        class,
        shadow_only,
        nhi_id: query.one("nhi_id")?.map(str::to_owned),
    };
    let page = identity_page(&query)?;
    Ok(Json(
        discovery::list_observed(&state, &who, filter, page).await?,
    ))
}

/// The identity list's page: its cursor is `platform:principal`, and a principal (a session
/// ARN, say) can be longer than the ids other cursors hold.
fn identity_page(query: &QueryPairs) -> ApiResult<Page> {
    let cursor = query.one("cursor")?.map(|text| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|c| c.contains(':') && c.len() <= 4096)
            .ok_or_else(|| invalid("cursor", "is not a cursor this list gave"))
    });
    Ok(Page {
        after: cursor.transpose()?,
        limit: limit(query)?,
    })
}

/// Adopts the shadow NHI a `shadow_nhi` finding is about (admin): registers it suspended
/// under the given owner, matched with its platform identity, and asks the owner team in
/// their inbox (an `adoption` review). Approving activates it and accepts the finding;
/// denying decommissions the registration.
#[utoipa::path(post, path = "/v1/findings/{id}/adopt", tag = "discovery",
    params(("id" = String, Path)),
    request_body(content = AdoptShadow, content_type = "application/json"),
    responses((status = 202, body = Adopted),
              (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, description = "not a shadow nhi, resolved already, or registered already", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn adopt(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    JsonBody(input): JsonBody<AdoptShadow>,
) -> ApiResult<(StatusCode, Json<Adopted>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(discovery::adopt(&state, &who, &id, input).await?),
    ))
}

/// Links NHIs on several platforms into one logical agent (admin).
#[utoipa::path(post, path = "/v1/logical-agents", tag = "discovery",
    request_body(content = CreateLogicalAgent, content_type = "application/json"),
    responses((status = 201, body = Object),
              (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, description = "the name is taken, or an nhi is in another logical agent", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create_logical_agent(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(input): JsonBody<CreateLogicalAgent>,
) -> ApiResult<(StatusCode, Json<LogicalAgent>)> {
    Ok((
        StatusCode::CREATED,
        Json(discovery::create_logical_agent(&state, &who, input).await?),
    ))
}

/// Logical agents with their members: all for admins and auditors, their teams' for reviewers.
#[utoipa::path(get, path = "/v1/logical-agents", tag = "discovery",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 500), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = LogicalAgentList),
              (status = 400, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn list_logical_agents(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<LogicalAgentList>> {
    query.only(&["limit", "cursor"])?;
    let page = page(&query)?;
    Ok(Json(
        discovery::list_logical_agents(&state, &who, page).await?,
    ))
}

/// Suggested logical agents among the NHIs in none yet (admin, auditor): a workload's
/// annotation naming another identity, one team's names that differ only by platform words,
/// or one team's identical purposes, each across at least two platforms, strongest first.
#[utoipa::path(get, path = "/v1/logical-agents/suggestions", tag = "discovery",
    responses((status = 200, body = Vec<Object>),
              (status = 403, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn suggestions(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<Vec<Suggestion>>> {
    query.only(&[])?;
    Ok(Json(discovery::suggestions(&state, &who).await?))
}

#[utoipa::path(get, path = "/v1/logical-agents/{id}", tag = "discovery",
    params(("id" = String, Path)),
    responses((status = 200, body = Object),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn get_logical_agent(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<LogicalAgent>> {
    Ok(Json(discovery::get_logical_agent(&state, &who, &id).await?))
}

/// Adds an NHI to a logical agent (admin); adding a member again changes nothing.
#[utoipa::path(put, path = "/v1/logical-agents/{id}/members/{nhi_id}", tag = "discovery",
    params(("id" = String, Path), ("nhi_id" = String, Path)),
    responses((status = 200, body = Object),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, description = "the nhi is in another logical agent", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 422, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn link_member(
    State(state): State<AppState>,
    who: Principal,
    Path((id, nhi_id)): Path<(String, String)>,
) -> ApiResult<Json<LogicalAgent>> {
    check_ids(&id, &nhi_id)?;
    Ok(Json(discovery::link(&state, &who, &id, &nhi_id).await?))
}

/// Takes an NHI out of a logical agent (admin).
#[utoipa::path(delete, path = "/v1/logical-agents/{id}/members/{nhi_id}", tag = "discovery",
    params(("id" = String, Path), ("nhi_id" = String, Path)),
    responses((status = 200, body = Object),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn unlink_member(
    State(state): State<AppState>,
    who: Principal,
    Path((id, nhi_id)): Path<(String, String)>,
) -> ApiResult<Json<LogicalAgent>> {
    check_ids(&id, &nhi_id)?;
    Ok(Json(discovery::unlink(&state, &who, &id, &nhi_id).await?))
}

fn check_ids(id: &str, nhi_id: &str) -> ApiResult<()> {
    for (name, value) in [("id", id), ("nhi_id", nhi_id)] {
        if value.is_empty() || value.len() > 128 {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("{name}: must be 1 to 128 bytes"),
            ));
        }
    }
    Ok(())
}
