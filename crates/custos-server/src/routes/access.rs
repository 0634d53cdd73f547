//! The OpenID AuthZEN Authorization API 1.0 (final): access evaluation, batch evaluations and
//! the PDP metadata. The caller is an enforcement point, authenticated by its own credential
//! holding `custos:evaluate`; the agent's credential travels as `subject.properties.token`,
//! the operation as `action.name`, the service as `resource.type` and the resource as
//! `resource.id`. The decision rests on Custos's own live state, not on what the caller
//! asserts: `action.properties` is accepted and not read, and of the request `context` only
//! `source_ip`, `user_agent` and `environment` are read, as facts about the call that the
//! NHI's behaviour baseline learns from and scores.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, State};
use axum::http::request::Parts;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::access::{self, Answer, Question};
use crate::behaviour::CallContext;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::service::AppState;

/// A JSON body as the other routes take it, but malformed ones answer 400, as AuthZEN asks,
/// rather than 422.
pub struct AuthzenJson<T>(T);

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for AuthzenJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &AppState) -> Result<Self, ApiError> {
        match JsonBody::<T>::from_request(req, state).await {
            Ok(JsonBody(body)) => Ok(AuthzenJson(body)),
            Err(mut error) => {
                if error.status == axum::http::StatusCode::UNPROCESSABLE_ENTITY {
                    error.status = axum::http::StatusCode::BAD_REQUEST;
                }
                Err(error)
            }
        }
    }
}

/// The enforcement point calling: the id of its NHI.
pub struct Pep(String);

impl FromRequestParts<AppState> for Pep {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = crate::auth::bearer(parts)?;
        access::authenticate_pep(state, secret).await.map(Pep)
    }
}

/// An AuthZEN subject or resource: `type`, `id` and free `properties`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct Entity {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default)]
    pub properties: Option<Map<String, Value>>,
}

/// An AuthZEN action: its `name` is the operation.
#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct ActionEntity {
    pub name: String,
}

/// One access evaluation request (AuthZEN §6.1).
#[derive(Debug, Deserialize, ToSchema)]
pub struct EvaluationRequest {
    pub subject: Entity,
    pub action: ActionEntity,
    pub resource: Entity,
    /// The call's circumstances: `source_ip`, `user_agent`, `environment` and `on_behalf_of`
    /// (the person the agent acts for, authenticated by the enforcement point) are read, each
    /// a string of 1 to 512 bytes; anything else is ignored.
    pub context: Option<Map<String, Value>>,
}

/// One item of a batch; what it leaves out comes from the request's defaults (AuthZEN §7.1.1).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct EvaluationItem {
    pub subject: Option<Entity>,
    pub action: Option<ActionEntity>,
    pub resource: Option<Entity>,
    pub context: Option<Map<String, Value>>,
}

/// How a batch is worked through (AuthZEN §7.1.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvaluationsSemantic {
    #[default]
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct EvaluationsOptions {
    #[serde(default)]
    pub evaluations_semantic: EvaluationsSemantic,
}

/// A batch of access evaluations (AuthZEN §7.1): defaults at the top, items in `evaluations`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EvaluationsRequest {
    pub subject: Option<Entity>,
    pub action: Option<ActionEntity>,
    pub resource: Option<Entity>,
    /// The default circumstances, read as in a single evaluation's `context`.
    pub context: Option<Map<String, Value>>,
    #[serde(default)]
    pub evaluations: Option<Vec<EvaluationItem>>,
    #[serde(default)]
    pub options: Option<EvaluationsOptions>,
}

/// Why one evaluation cannot be asked: a message for the caller.
struct Malformed(String);

/// The question an evaluation asks, checked for what Custos needs.
fn question<'a>(
    subject: &'a Entity,
    action: &'a ActionEntity,
    resource: &'a Entity,
    context: Option<&'a Map<String, Value>>,
) -> Result<Question<'a>, Malformed> {
    let token = subject
        .properties
        .as_ref()
        .and_then(|p| p.get("token"))
        .ok_or_else(|| {
            Malformed("subject.properties.token must carry the agent's credential".into())
        })?
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Malformed("subject.properties.token must be a non-empty string".into()))?;
    if action.name.is_empty() {
        return Err(Malformed("action.name must name the operation".into()));
    }
    if resource.kind.is_empty() {
        return Err(Malformed("resource.type must name the service".into()));
    }
    Ok(Question {
        secret: token,
        subject_id: (!subject.id.is_empty()).then_some(subject.id.as_str()),
        service: &resource.kind,
        operation: &action.name,
        resource: &resource.id,
        context: call_context(context)?,
    })
}

/// The facts about the call that the request `context` may carry, each optional but checked
/// when present.
fn call_context(context: Option<&Map<String, Value>>) -> Result<CallContext<'_>, Malformed> {
    let Some(context) = context else {
        return Ok(CallContext::default());
    };
    let text = |name: &str| -> Result<Option<&str>, Malformed> {
        match context.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 512 => Ok(Some(s.as_str())),
            Some(_) => Err(Malformed(format!(
                "context.{name} must be a string of 1 to 512 bytes"
            ))),
        }
    };
    let source =
        match text("source_ip")? {
            None => None,
            Some(ip) => Some(ip.parse().map_err(|_| {
                Malformed("context.source_ip must be an IPv4 or IPv6 address".into())
            })?),
        };
    Ok(CallContext {
        source,
        user_agent: text("user_agent")?,
        environment: text("environment")?,
        on_behalf_of: text("on_behalf_of")?,
    })
}

/// The AuthZEN response for one decision: `decision` and our reason in `context`.
fn answer_json(answer: &Answer) -> Value {
    let decision = &answer.decision;
    let mut context = Map::new();
    context.insert("reason".into(), json!(decision.reason.code()));
    context.insert("id".into(), json!(answer.event_id));
    if let Some(nhi) = &decision.nhi_id {
        context.insert("nhi".into(), json!(nhi));
    }
    if let Some(nhi) = &decision.refused_nhi {
        context.insert("refused_nhi".into(), json!(nhi));
    }
    if !decision.policies.is_empty() {
        context.insert("policies".into(), json!(decision.policies));
    }
    if let Some(approval) = &answer.approval_id {
        context.insert("approval_id".into(), json!(approval));
    }
    if let Some(finding) = &answer.finding_id {
        context.insert("finding_id".into(), json!(finding));
    }
    json!({ "decision": answer.allowed(), "context": context })
}

/// An evaluation that could not be asked (AuthZEN §7.2.1): a deny carrying the error.
fn error_json(message: &str) -> Value {
    json!({
        "decision": false,
        "context": { "reason": "invalid_request", "error": { "status": 400, "message": message } }
    })
}

/// Access evaluation (AuthZEN §6): may the agent whose credential is
/// `subject.properties.token` perform `action.name` on `resource.type` / `resource.id`?
#[utoipa::path(post, path = "/access/v1/evaluation", tag = "access",
    request_body(content = EvaluationRequest, content_type = "application/json"),
    responses((status = 200, body = Object, description = "`decision` and `context.reason`"),
              (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn evaluation(
    State(state): State<AppState>,
    Pep(pep): Pep,
    AuthzenJson(request): AuthzenJson<EvaluationRequest>,
) -> ApiResult<Json<Value>> {
    let question = question(
        &request.subject,
        &request.action,
        &request.resource,
        request.context.as_ref(),
    )
    .map_err(|Malformed(m)| ApiError::bad_request("invalid_request", m))?;
    let answer = access::check(&state, &pep, &question).await?;
    Ok(Json(answer_json(&answer)))
}

/// Access evaluations (AuthZEN §7): several questions in one call, each item completed from
/// the request's defaults, worked through as `options.evaluations_semantic` says. Without
/// `evaluations` it is one evaluation and answers like `/access/v1/evaluation`.
#[utoipa::path(post, path = "/access/v1/evaluations", tag = "access",
    request_body(content = EvaluationsRequest, content_type = "application/json"),
    responses((status = 200, body = Object, description = "`evaluations`: one decision per item"),
              (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn evaluations(
    State(state): State<AppState>,
    Pep(pep): Pep,
    AuthzenJson(request): AuthzenJson<EvaluationsRequest>,
) -> ApiResult<Json<Value>> {
    let items = match &request.evaluations {
        Some(items) if !items.is_empty() => items,
        _ => {
            let (Some(subject), Some(action), Some(resource)) =
                (&request.subject, &request.action, &request.resource)
            else {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "without evaluations, subject, action and resource are all required",
                ));
            };
            let question = question(subject, action, resource, request.context.as_ref())
                .map_err(|Malformed(m)| ApiError::bad_request("invalid_request", m))?;
            let answer = access::check(&state, &pep, &question).await?;
            return Ok(Json(answer_json(&answer)));
        }
    };
    if items.len() > MAX_EVALUATIONS {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("at most {MAX_EVALUATIONS} evaluations per request"),
        ));
    }
    let semantic = request
        .options
        .as_ref()
        .map(|o| o.evaluations_semantic)
        .unwrap_or_default();
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let subject = item.subject.as_ref().or(request.subject.as_ref());
        let action = item.action.as_ref().or(request.action.as_ref());
        let resource = item.resource.as_ref().or(request.resource.as_ref());
        let context = item.context.as_ref().or(request.context.as_ref());
        let allowed = match (subject, action, resource) {
            (Some(subject), Some(action), Some(resource)) => {
                match question(subject, action, resource, context) {
                    Ok(question) => {
                        let answer = access::check(&state, &pep, &question).await?;
                        results.push(answer_json(&answer));
                        answer.allowed()
                    }
                    Err(Malformed(message)) => {
                        results.push(error_json(&message));
                        false
                    }
                }
            }
            _ => {
                results.push(error_json(
                    "subject, action and resource must each be given in the item or as a default",
                ));
                false
            }
        };
        match semantic {
            EvaluationsSemantic::DenyOnFirstDeny if !allowed => break,
            EvaluationsSemantic::PermitOnFirstPermit if allowed => break,
            _ => {}
        }
    }
    Ok(Json(json!({ "evaluations": results })))
}

/// The most items one batch may hold.
pub const MAX_EVALUATIONS: usize = 1_000;

/// PDP metadata (AuthZEN §9).
#[utoipa::path(get, path = "/.well-known/authzen-configuration", tag = "access", security(()),
    responses((status = 200, body = Object)))]
pub async fn configuration(State(state): State<AppState>) -> Json<Value> {
    let base = &state.issuer;
    Json(json!({
        "policy_decision_point": base,
        "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
    }))
}
