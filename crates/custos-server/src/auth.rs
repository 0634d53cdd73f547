//! Who is calling: a bearer token resolved to an operator or to an NHI, and the role checks
//! every route makes. Deny by default: a route that does not ask for a role gets nothing.

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use custos_core::token::{self, SecretFormatError, SecretKind};
use custos_core::{Actor, Credential, Nhi, NhiStatus, Operator, Role};

use crate::error::{ApiError, ApiResult};
use crate::secrets::hashes_equal;
use crate::service::AppState;

/// The authenticated caller.
#[derive(Clone, Debug)]
pub enum Principal {
    Operator(Operator),
    /// An NHI presenting one of its static keys or access tokens.
    Nhi {
        nhi: Box<Nhi>,
        credential: Box<Credential>,
    },
}

pub(crate) fn bearer(parts: &Parts) -> ApiResult<&str> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthenticated("an Authorization: Bearer token is required"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::invalid_token("the Authorization header is not ASCII"))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| {
        ApiError::unauthenticated("the Authorization header must be 'Bearer <token>'")
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::unauthenticated(
            "the Authorization header must be 'Bearer <token>'",
        ));
    }
    Ok(token.trim())
}

impl Principal {
    pub async fn authenticate(state: &AppState, secret: &str) -> ApiResult<Self> {
        if crate::access::looks_like_jwt(secret) {
            return match crate::oauth::check_access_token(state, secret).await {
                Ok(live) => Ok(Principal::Nhi {
                    nhi: Box::new(live.nhi),
                    credential: Box::new(live.credential),
                }),
                Err(crate::oauth::TokenRefusal::Store(e)) => Err(e.into()),
                Err(crate::oauth::TokenRefusal::NhiNotActive(id)) => {
                    Err(ApiError::forbidden(format!("nhi {id} is not active"))
                        .with_code("nhi_not_active"))
                }
                Err(refusal) => Err(ApiError::invalid_token(refusal.to_string())),
            };
        }
        let kind = match token::classify(secret) {
            Ok(kind) => kind,
            // A preset admin token (CUSTOS_ADMIN_TOKEN) need not carry our prefix.
            Err(SecretFormatError::UnknownPrefix) => SecretKind::Operator,
            Err(e) => return Err(ApiError::invalid_token(e.to_string())),
        };
        let hash = state.keys.secret_hash(secret);
        match kind {
            SecretKind::Operator => {
                let (operator, stored) = state
                    .store
                    .find_operator_by_token(&hash)
                    .await?
                    .ok_or_else(|| ApiError::invalid_token("unknown token"))?;
                if !hashes_equal(&stored, &hash) {
                    return Err(ApiError::invalid_token("unknown token"));
                }
                if !operator.is_active() {
                    return Err(ApiError::invalid_token("this token has been revoked"));
                }
                Ok(Principal::Operator(operator))
            }
            SecretKind::StaticKey => {
                let credential = state
                    .store
                    .find_credential_by_hash(&hash)
                    .await?
                    .filter(|c| hashes_equal(&c.secret_hash, &hash))
                    .ok_or_else(|| ApiError::invalid_token("unknown key"))?;
                if !credential.is_live(state.now()) {
                    return Err(ApiError::invalid_token(
                        "this key has been revoked or has expired",
                    ));
                }
                let nhi = state
                    .store
                    .get_nhi(&credential.nhi_id)
                    .await?
                    .ok_or_else(|| ApiError::invalid_token("unknown key"))?;
                if nhi.status != NhiStatus::Active {
                    return Err(
                        ApiError::forbidden(format!("nhi {} is {}", nhi.id, nhi.status))
                            .with_code("nhi_not_active"),
                    );
                }
                Ok(Principal::Nhi {
                    nhi: Box::new(nhi),
                    credential: Box::new(credential),
                })
            }
        }
    }

    pub fn actor(&self) -> Actor {
        match self {
            Principal::Operator(op) => Actor::Operator(op.id.clone()),
            Principal::Nhi { nhi, .. } => Actor::Nhi(nhi.id.clone()),
        }
    }

    /// The operator behind the call; NHI credentials never reach operator routes.
    pub fn operator(&self) -> ApiResult<&Operator> {
        match self {
            Principal::Operator(op) => Ok(op),
            Principal::Nhi { .. } => Err(ApiError::forbidden(
                "this route is for operators; nhi credentials cannot use it",
            )
            .with_code("operator_required")),
        }
    }

    /// The operator, if it holds at least one of `roles`.
    pub fn require(&self, roles: &[Role]) -> ApiResult<&Operator> {
        let op = self.operator()?;
        if roles.iter().any(|r| op.has_role(*r)) {
            Ok(op)
        } else {
            let names: Vec<_> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::forbidden(format!(
                "this route needs the role {}",
                names.join(" or ")
            )))
        }
    }

    /// Teams whose NHIs this operator may see: `None` means all (admins and auditors).
    pub fn visible_teams(&self) -> ApiResult<Option<Vec<String>>> {
        let op = self.require(&[Role::Admin, Role::Auditor, Role::Reviewer])?;
        if op.has_role(Role::Admin) || op.has_role(Role::Auditor) {
            Ok(None)
        } else {
            Ok(Some(op.teams.clone()))
        }
    }

    /// An admin, or a reviewer of `team_id`.
    pub fn require_admin_or_reviewer_of(&self, team_id: &str) -> ApiResult<&Operator> {
        let op = self.require(&[Role::Admin, Role::Reviewer])?;
        if op.has_role(Role::Admin) || op.teams.iter().any(|t| t == team_id) {
            Ok(op)
        } else {
            Err(ApiError::forbidden(
                "only an admin or a reviewer of the owner team may do this",
            ))
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let secret = bearer(parts)?;
        Principal::authenticate(state, secret).await
    }
}
