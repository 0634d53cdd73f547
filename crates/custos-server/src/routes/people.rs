use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::api::*;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{IdPath, JsonBody};
use crate::service::{self, AppState};

/// Who the bearer token belongs to.
#[utoipa::path(get, path = "/v1/whoami", tag = "operators", responses((status = 200, body = WhoAmI)))]
pub async fn whoami(who: Principal) -> Json<WhoAmI> {
    Json(service::whoami(&who))
}

/// Creates a team (admin), optionally with a fallback team its approval requests escalate to.
#[utoipa::path(post, path = "/v1/teams", tag = "teams", request_body = CreateTeam,
    responses((status = 201, body = TeamView),
              (status = 422, description = "invalid fields, or no such fallback team", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, description = "a team with this name exists", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create_team(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(input): JsonBody<CreateTeam>,
) -> ApiResult<(StatusCode, Json<TeamView>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::create_team(&state, &who, input).await?),
    ))
}

/// Lists teams (any operator).
#[utoipa::path(get, path = "/v1/teams", tag = "teams", responses((status = 200, body = TeamList)))]
pub async fn list_teams(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<TeamList>> {
    Ok(Json(service::list_teams(&state, &who).await?))
}

/// A team by id or name, with its members.
#[utoipa::path(get, path = "/v1/teams/{id}", tag = "teams", params(("id" = String, Path, description = "team id or name")),
    responses((status = 200, body = TeamView)))]
pub async fn get_team(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<TeamView>> {
    Ok(Json(service::get_team(&state, &who, &id).await?))
}

/// Sets or clears a team's fallback team and escalation wait (admin), as a JSON merge patch:
/// a pending request of the team's NHIs that waited `escalate_after_seconds` (or the
/// configured default) unanswered goes to the fallback team's reviewers too.
#[utoipa::path(patch, path = "/v1/teams/{id}", tag = "teams",
    params(("id" = String, Path, description = "team id or name")),
    request_body(content = UpdateTeam, content_type = "application/merge-patch+json"),
    responses((status = 200, body = TeamView),
              (status = 422, description = "no such fallback team, the team itself, or a wait out of range", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn update_team(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
    JsonBody(input): JsonBody<UpdateTeam>,
) -> ApiResult<Json<TeamView>> {
    Ok(Json(service::update_team(&state, &who, &id, input).await?))
}

/// Creates an operator and returns its token, once (admin).
#[utoipa::path(post, path = "/v1/operators", tag = "operators", request_body = CreateOperator,
    responses((status = 201, body = OperatorCreated)))]
pub async fn create_operator(
    State(state): State<AppState>,
    who: Principal,
    JsonBody(input): JsonBody<CreateOperator>,
) -> ApiResult<(StatusCode, Json<OperatorCreated>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::create_operator(&state, &who, input).await?),
    ))
}

/// Lists operators (admin).
#[utoipa::path(get, path = "/v1/operators", tag = "operators", responses((status = 200, body = OperatorList)))]
pub async fn list_operators(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<OperatorList>> {
    Ok(Json(service::list_operators(&state, &who).await?))
}

/// One operator (admin).
#[utoipa::path(get, path = "/v1/operators/{id}", tag = "operators", params(("id" = String, Path)),
    responses((status = 200, body = OperatorView)))]
pub async fn get_operator(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<OperatorView>> {
    Ok(Json(service::get_operator(&state, &who, &id).await?))
}

/// Revokes an operator's token at once (admin). The last active admin cannot be revoked.
#[utoipa::path(post, path = "/v1/operators/{id}/revoke", tag = "operators", params(("id" = String, Path)),
    responses((status = 200, body = OperatorView),
              (status = 409, description = "the last admin", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn revoke_operator(
    State(state): State<AppState>,
    who: Principal,
    IdPath(id): IdPath,
) -> ApiResult<Json<OperatorView>> {
    Ok(Json(service::revoke_operator(&state, &who, &id).await?))
}
