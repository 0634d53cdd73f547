//! Errors as RFC 9457 problem documents, each with a stable `code` that clients can rely on.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custos_core::validate::{FieldError, ValidationErrors};
use custos_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:custos:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The stable machine-readable error code.
    pub code: String,
    /// The fields that were refused, for validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<FieldErrorSchema>)]
    pub errors: Vec<FieldError>,
}

/// One refused field.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FieldErrorSchema {
    field: String,
    message: String,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub www_authenticate: Option<&'static str>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            www_authenticate: None,
        }
    }

    /// Something that cannot happen did (stored data breaking an invariant): a 500 with the
    /// detail, never a panic.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self {
            www_authenticate: Some("Bearer realm=\"custos\""),
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
        }
    }

    pub fn invalid_token(detail: impl Into<String>) -> Self {
        Self {
            www_authenticate: Some("Bearer realm=\"custos\", error=\"invalid_token\""),
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_token", detail)
        }
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    pub fn validation(errors: ValidationErrors) -> Self {
        Self {
            errors: errors.0.clone(),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                errors.to_string(),
            )
        }
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        Self::validation(errors)
    }
}

impl From<custos_core::issuance::IssuanceError> for ApiError {
    fn from(error: custos_core::issuance::IssuanceError) -> Self {
        use custos_core::issuance::IssuanceError as E;
        let status = match error {
            E::NhiNotActive { .. }
            | E::NhiExpired(_)
            | E::NotPending(_)
            | E::ParentNotLive
            | E::AlreadyVoted(_) => StatusCode::CONFLICT,
            E::OwnRequest | E::OwnTeamNhi => StatusCode::FORBIDDEN,
            E::EmptyScope
            | E::TtlOutOfRange
            | E::ScopeTooBroad { .. }
            | E::TooDeep { .. }
            | E::NotNarrower(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, error.code(), error.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::not_found("record"),
            StoreError::Conflict => Self::conflict(
                "conflict",
                "a record with the same unique name already exists",
            ),
            StoreError::VersionMismatch { current } => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                format!("the record changed since it was read; it is now at version {current}"),
            ),
            StoreError::Precondition(reason) => Self::conflict("state_changed", reason),
            StoreError::LastAdmin => {
                Self::conflict("last_admin", "refusing to revoke the last active admin")
            }
            StoreError::MissingReference => {
                Self::unprocessable("unknown_reference", "a referenced record does not exist")
            }
            StoreError::InvalidText => {
                Self::bad_request("invalid_text", "text may not contain the NUL character")
            }
            StoreError::Unavailable(reason) => {
                tracing::error!(%reason, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store is unavailable; try again",
                )
            }
            StoreError::Corrupt(reason) | StoreError::Config(reason) => {
                tracing::error!(%reason, "store error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            type_uri: format!("urn:custos:problem:{}", self.code),
            title: self.title().to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
            errors: self.errors.clone(),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(challenge) = self.www_authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl ApiError {
    /// The same error with a more specific stable code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}
