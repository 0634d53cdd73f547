//! Risk and posture reports, and an NHI's blast radius, over HTTP.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use utoipa::IntoParams;

use super::inventory::invalid;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{IdPath, QueryPairs};
use crate::reports::{self, BlastRadius, NhiRisk, RiskReport};
use crate::service::AppState;

const DEFAULT_RISK_LIMIT: u32 = 20;

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RiskParams {
    /// How many NHIs to list, highest score first (default 20).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The riskiest NHIs, each with its score (0-100), level and the factors that make it, each
/// with its points and reason: scope breadth, static secrets, credential age and lifetime,
/// sensitivity, production, owner validity, unused days, past expiry, unresolved findings and
/// delegation fan-out. Admins and auditors rank every NHI, reviewers their teams'.
#[utoipa::path(get, path = "/v1/reports/risk", tag = "reports", params(RiskParams),
    responses((status = 200, body = Object),
              (status = 400, description = "an unknown parameter, or a limit out of range", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn risk_report(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<RiskReport>> {
    query.only(&["limit"])?;
    let limit = match query.one("limit")? {
        None => DEFAULT_RISK_LIMIT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=reports::MAX_RISK_LIMIT).contains(n))
            .ok_or_else(|| {
                invalid(
                    "limit",
                    format!(
                        "must be a whole number from 1 to {}",
                        reports::MAX_RISK_LIMIT
                    ),
                )
            })?,
    };
    Ok(Json(reports::risk_report(&state, &who, limit).await?))
}

/// One NHI's risk score, level and factors.
#[utoipa::path(get, path = "/v1/nhis/{id}/risk", tag = "reports",
    params(("id" = String, Path)),
    responses((status = 200, body = Object),
              (status = 404, description = "no such nhi, or not visible to the caller", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn nhi_risk(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<NhiRisk>> {
    Ok(Json(reports::risk_of(&state, &who, &id).await?))
}

/// What an NHI could reach and who depends on it: its live credentials with their scopes (a
/// key's scope is its NHI's ceiling), the live credentials delegated from them at any depth
/// with their holders, the union of all of it as maximal grants, the NHIs holding those
/// delegated credentials, its active tasks, and the NHIs that delegated to it.
#[utoipa::path(get, path = "/v1/nhis/{id}/blast-radius", tag = "reports",
    params(("id" = String, Path)),
    responses((status = 200, body = Object),
              (status = 404, description = "no such nhi, or not visible to the caller", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn blast_radius(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<BlastRadius>> {
    Ok(Json(reports::blast_radius(&state, &who, &id).await?))
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PostureParams {
    /// `json` (default; at most 100 NHIs listed per category, with complete counts), `csv`
    /// (every `category,nhi_id,name,evidence` row) or `html` (a standalone page with a chart).
    #[param(pattern = "^(json|csv|html)$")]
    format: Option<String>,
}

/// The posture report: the OWASP Non-Human Identities Top 10 (2025), NHI1 to NHI10, each with
/// the count of affected NHIs, the affected NHIs and the evidence; and the unmanaged
/// identities (unresolved `shadow_nhi` findings). Admins and auditors see every NHI,
/// reviewers their teams'.
#[utoipa::path(get, path = "/v1/reports/posture", tag = "reports", params(PostureParams),
    responses((status = 200, description = "the report: JSON, or CSV or HTML as `format` asks",
                  content((Object = "application/json"), (String = "text/csv"), (String = "text/html"))),
              (status = 400, description = "an unknown parameter or format", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn posture(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Response> {
    query.only(&["format"])?;
    match query.one("format")?.unwrap_or("json") {
        "json" => Ok(
            Json(reports::posture(&state, &who, reports::POSTURE_LIST_CAP).await?).into_response(),
        ),
        "csv" => {
            let rows = reports::posture_csv(&state, &who).await?.map(|chunk| {
                chunk.map_err(|e| {
                    // The status line has gone: all that is left is to end the body short,
                    // which the client sees as a broken transfer, and to say why here.
                    tracing::error!(error = %e.detail, "the posture csv stopped part way");
                    std::io::Error::other(e.detail)
                })
            });
            Ok((
                [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                axum::body::Body::from_stream(rows),
            )
                .into_response())
        }
        "html" => {
            let report = reports::posture(&state, &who, reports::POSTURE_LIST_CAP).await?;
            Ok((
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; style-src 'unsafe-inline'",
                    ),
                ],
                reports::posture_html(&report)?,
            )
                .into_response())
        }
        _ => Err(invalid("format", "must be json, csv or html")),
    }
}
