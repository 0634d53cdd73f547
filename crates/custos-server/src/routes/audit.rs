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
