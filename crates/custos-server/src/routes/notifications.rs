//! Notification channels and their deliveries over HTTP.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use custos_store::{DeliveryFilter, DeliveryState};
use serde::Deserialize;
use utoipa::IntoParams;

use super::inventory::{invalid, page};
use crate::api::cursor_schema;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{IdPath, JsonBody, QueryPairs};
use crate::notify::{
    self, ChannelCreated, ChannelList, ChannelView, CreateChannel, DeliveryList, DeliveryView,
};
use crate::service::AppState;

/// Adds a channel (admin). A webhook's signing secret is in the answer, once.
#[utoipa::path(post, path = "/v1/notifications/channels", tag = "notifications",
    request_body(content = CreateChannel, content_type = "application/json"),
    responses((status = 201, body = ChannelCreated),
              (status = 409, description = "a channel with this name exists", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create_channel(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(input): JsonBody<CreateChannel>,
) -> ApiResult<(StatusCode, Json<ChannelCreated>)> {
    Ok((
        StatusCode::CREATED,
        Json(notify::create_channel(&state, &who, input).await?),
    ))
}

/// Every channel, disabled ones too (admin, auditor). Secrets are never shown.
#[utoipa::path(get, path = "/v1/notifications/channels", tag = "notifications",
    responses((status = 200, body = ChannelList)))]
pub async fn list_channels(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<ChannelList>> {
    Ok(Json(notify::list_channels(&state, &who).await?))
}

/// Disables a channel (admin); what it had pending is given up.
#[utoipa::path(delete, path = "/v1/notifications/channels/{id}", tag = "notifications",
    params(("id" = String, Path)),
    responses((status = 200, body = ChannelView)))]
pub async fn disable_channel(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<ChannelView>> {
    Ok(Json(notify::disable_channel(&state, &who, &id).await?))
}

/// Queues a test notification to a channel (admin), sent and retried like any other.
#[utoipa::path(post, path = "/v1/notifications/channels/{id}/test", tag = "notifications",
    params(("id" = String, Path)),
    responses((status = 202, body = DeliveryView),
              (status = 409, description = "the channel is disabled", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn test_channel(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<(StatusCode, Json<DeliveryView>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(notify::test_channel(&state, &who, &id).await?),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct DeliveryListParams {
    /// `pending`, `delivered` or `failed`.
    #[param(pattern = "^(pending|delivered|failed)$")]
    state: Option<String>,
    /// A channel's id.
    channel: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    #[param(schema_with = cursor_schema)]
    cursor: Option<String>,
}

/// Deliveries, oldest first, with their attempts and last error (admin, auditor).
#[utoipa::path(get, path = "/v1/notifications/deliveries", tag = "notifications",
    params(DeliveryListParams),
    responses((status = 200, body = DeliveryList)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    who: Principal,
    query: QueryPairs,
) -> ApiResult<Json<DeliveryList>> {
    query.only(&["state", "channel", "limit", "cursor"])?;
    let delivery_state = query
        .one("state")?
        .map(|s| {
            DeliveryState::parse(s)
                .ok_or_else(|| invalid("state", "must be pending, delivered or failed"))
        })
        .transpose()?;
    let filter = DeliveryFilter {
        state: delivery_state,
        channel_id: query.one("channel")?.map(str::to_owned),
    };
    let page = page(&query)?;
    Ok(Json(
        notify::list_deliveries(&state, &who, filter, page).await?,
    ))
}
