//! The audit log's checkpoint and proofs.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use super::inventory::invalid;
use crate::api::{CheckpointView, ConsistencyProofView, InclusionProofView};
use crate::audit::api;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::QueryPairs;
use crate::service::AppState;

fn number(query: &QueryPairs, name: &str) -> ApiResult<u64> {
    query
        .one(name)?
        .ok_or_else(|| invalid(name, "is required"))?
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= i64::MAX as u64)
        .ok_or_else(|| invalid(name, "must be a whole number"))
}

/// The latest signed checkpoint (C2SP tlog-checkpoint, Ed25519 signed note), covering every
/// event committed before the request (admin, auditor).
#[utoipa::path(get, path = "/v1/audit/checkpoint", tag = "audit",
    responses((status = 200, body = CheckpointView)))]
pub async fn checkpoint(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<CheckpointView>> {
    Ok(Json(api::checkpoint(&state, &who).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct InclusionParams {
    /// The leaf (0-based position in the log).
    #[param(minimum = 0)]
    index: u64,
    /// The tree size the proof is for: a checkpoint's size.
    #[param(minimum = 1)]
    size: u64,
}

/// An RFC 9162 inclusion proof of one event in the tree of `size` events (admin, auditor).
#[utoipa::path(get, path = "/v1/audit/proof/inclusion", tag = "audit", params(InclusionParams),
    responses((status = 200, body = InclusionProofView)))]
pub async fn inclusion(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<InclusionProofView>> {
    query.only(&["index", "size"])?;
    let (index, size) = (number(&query, "index")?, number(&query, "size")?);
    Ok(Json(api::inclusion(&state, &who, index, size).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ConsistencyParams {
    /// The older tree size.
    #[param(minimum = 0)]
    from: u64,
    /// The newer tree size.
    #[param(minimum = 0)]
    to: u64,
}

/// An RFC 9162 consistency proof that the tree of `to` events extends the tree of `from`
/// (admin, auditor).
#[utoipa::path(get, path = "/v1/audit/proof/consistency", tag = "audit", params(ConsistencyParams),
    responses((status = 200, body = ConsistencyProofView)))]
pub async fn consistency(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<ConsistencyProofView>> {
    query.only(&["from", "to"])?;
    let (from, to) = (number(&query, "from")?, number(&query, "to")?);
    Ok(Json(api::consistency(&state, &who, from, to).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ExportParams {
    /// First leaf of a slice (default 0).
    #[param(minimum = 0)]
    from: Option<u64>,
    /// End of a slice, exclusive (default: the log's size; at most 10,000 events per export).
    #[param(minimum = 1)]
    to: Option<u64>,
    /// Instead of a slice: one NHI's events, each with its inclusion proof.
    nhi: Option<String>,
}

/// A self-contained export of the log, or of one NHI's events, against a fresh signed
/// checkpoint: `custos audit verify FILE` checks it with no server (admin, auditor).
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", params(ExportParams),
    responses((status = 200, body = crate::verify::AuditExport)))]
pub async fn export(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<crate::verify::AuditExport>> {
    query.only(&["from", "to", "nhi"])?;
    let optional = |name: &str| -> ApiResult<Option<u64>> {
        match query.one(name)? {
            None => Ok(None),
            Some(_) => number(&query, name).map(Some),
        }
    };
    let of = match query.one("nhi")? {
        Some(nhi) => {
            if query.one("from")?.is_some() || query.one("to")?.is_some() {
                return Err(invalid(
                    "nhi",
                    "export an NHI's events or a slice, not both",
                ));
            }
            api::ExportOf::Nhi {
                id: nhi.to_owned(),
                from: 0,
            }
        }
        None => api::ExportOf::Range {
            from: optional("from")?.unwrap_or(0),
            to: optional("to")?,
        },
    };
    Ok(Json(api::export(&state, &who, of).await?))
}

/// Turns a secret the caller holds (a static key, an access token) into its fingerprint, the
/// name it has in the trail, so its events can be found (`GET /v1/audit/events?fingerprint=`).
/// Admins and auditors; the secret is not kept.
#[utoipa::path(post, path = "/v1/audit/hash", tag = "audit",
    request_body(content = crate::api::HashRequest, content_type = "application/json"),
    responses((status = 200, body = crate::api::HashResponse)))]
pub async fn hash(
    State(state): State<AppState>,
    who: Principal,
    crate::extract::JsonBody(input): crate::extract::JsonBody<crate::api::HashRequest>,
) -> ApiResult<Json<crate::api::HashResponse>> {
    who.require(&[custos_core::Role::Admin, custos_core::Role::Auditor])?;
    if input.secret.is_empty() || input.secret.len() > 16_384 {
        return Err(invalid("secret", "must be 1 to 16384 bytes"));
    }
    Ok(Json(crate::api::HashResponse {
        fingerprint: state.keys.fingerprint(&input.secret),
    }))
}
