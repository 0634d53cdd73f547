//! The tower layer: every request is mapped to the action it performs, and Custos is asked
//! whether the caller's bearer credential may perform it before the inner service sees it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tower::{Layer, Service};

use crate::client::{Client, Decision, Question};

/// What a request does, in the terms of a grant `service:operation[:resource]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// The service (AuthZEN `resource.type`).
    pub service: String,
    /// The operation (AuthZEN `action.name`).
    pub operation: String,
    /// The resource id; empty when the operation is on no particular resource.
    pub resource: String,
}

impl Action {
    /// An operation of a service on no particular resource.
    pub fn new(service: impl Into<String>, operation: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            operation: operation.into(),
            resource: String::new(),
        }
    }

    /// The same operation on one resource.
    pub fn on(mut self, resource: impl Into<String>) -> Self {
        self.resource = resource.into();
        self
    }
}

/// What the mapper says a request is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// An action that Custos must allow before the request goes through.
    Governed(Action),
    /// A route that anyone may call (health checks, metadata): passed through without a token
    /// and without asking Custos.
    Public,
    /// A request the mapper does not know. It is refused with 403 `action_unmapped`, so a route
    /// added later without a mapping is closed rather than open.
    Unmapped,
}

impl From<Action> for Route {
    fn from(action: Action) -> Self {
        Route::Governed(action)
    }
}

impl From<Option<Action>> for Route {
    fn from(action: Option<Action>) -> Self {
        action.map_or(Route::Unmapped, Route::Governed)
    }
}

/// The reason codes with which this layer refuses on its own, before or without a decision.
pub mod reason {
    /// The request carries no bearer credential.
    pub const MISSING_TOKEN: &str = "missing_token";
    /// The `Authorization: Bearer` header is not a well-formed bearer credential.
    pub const MALFORMED_TOKEN: &str = "malformed_token";
    /// The mapper does not know what the request does.
    pub const ACTION_UNMAPPED: &str = "action_unmapped";
}

struct Shared<M> {
    client: Client,
    mapper: M,
}

/// A tower [`Layer`] that puts [`Enforce`] in front of a service.
///
/// The mapper is called with the request's head and says what the request does; see [`Route`].
/// It runs before the inner service, so with axum's `Router::layer` it sees the request before
/// routing (match on method and path); with `Router::route_layer` it runs after routing and
/// can read `axum::extract::MatchedPath` from `parts.extensions`.
pub struct EnforceLayer<M> {
    shared: Arc<Shared<M>>,
}

impl<M> EnforceLayer<M>
where
    M: Fn(&Parts) -> Route,
{
    /// A layer asking Custos through `client`, with `mapper` saying what each request does.
    pub fn new(client: Client, mapper: M) -> Self {
        Self {
            shared: Arc::new(Shared { client, mapper }),
        }
    }
}

// Written out rather than derived: a derive would require `M: Clone`, and the mapper is shared
// behind an `Arc`, so closures that capture non-`Clone` state work too.
impl<M> Clone for EnforceLayer<M> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M> fmt::Debug for EnforceLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnforceLayer")
            .field("client", &self.shared.client)
            .finish_non_exhaustive()
    }
}

impl<S, M> Layer<S> for EnforceLayer<M> {
    type Service = Enforce<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Enforce {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// A service that lets a request through to `S` only when Custos allows the action the
/// request performs to the credential it carries.
///
/// - A [`Route::Public`] request goes through untouched.
/// - A [`Route::Unmapped`] request is refused: 403 `{"error": "access_denied", "reason":
///   "action_unmapped"}`.
/// - A governed request without a bearer credential, or with a malformed one, is refused: 401
///   with `WWW-Authenticate: Bearer` (RFC 6750 §3) and `{"error": "invalid_token", "reason":
///   "missing_token" | "malformed_token"}`.
/// - Allowed: the request goes through, unchanged but for the [`Decision`] added to its
///   extensions.
/// - Refused because of the credential itself (see [`Decision::refuses_credential`]): 401 with
///   `WWW-Authenticate: Bearer error="invalid_token"` and `{"error": "invalid_token", "reason"}`.
/// - Refused otherwise: 403 `{"error": "access_denied", "reason", "approval_id"?}`;
///   `out_of_scope` also carries `WWW-Authenticate: Bearer error="insufficient_scope"`.
/// - No decision (Custos unreachable or slow, its answer unreadable, this enforcement point
///   refused by it): 503 `{"error": "decision_unavailable"}`, and a warning is logged with the
///   cause. The request is refused: without a decision nothing goes through.
///
/// Every refusal is `application/json`, and the inner service is not called.
pub struct Enforce<S, M> {
    inner: S,
    shared: Arc<Shared<M>>,
}

impl<S, M> Enforce<S, M>
where
    M: Fn(&Parts) -> Route,
{
    /// The service without a layer: `inner` guarded through `client` and `mapper`.
    pub fn new(inner: S, client: Client, mapper: M) -> Self {
        EnforceLayer::new(client, mapper).layer(inner)
    }
}

impl<S, M> Enforce<S, M> {
    /// The guarded service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, M> Clone for Enforce<S, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, M> fmt::Debug for Enforce<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enforce")
            .field("inner", &self.inner)
            .field("client", &self.shared.client)
            .finish_non_exhaustive()
    }
}

/// The future of [`Enforce`]: the decision, then the inner service's response or a refusal.
pub type ResponseFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

impl<S, M, ReqBody, ResBody> Service<Request<ReqBody>> for Enforce<S, M>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    M: Fn(&Parts) -> Route + Send + Sync + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready goes with this request, and a fresh clone stays
        // behind for the next `poll_ready`: calling the clone instead would use a service
        // that was never polled ready.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        Box::pin(enforce(shared, inner, request))
    }
}

async fn enforce<S, M, ReqBody, ResBody>(
    shared: Arc<Shared<M>>,
    mut inner: S,
    request: Request<ReqBody>,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    M: Fn(&Parts) -> Route,
    ResBody: From<String>,
{
    let (parts, body) = request.into_parts();
    let action = match (shared.mapper)(&parts) {
        Route::Governed(action) => action,
        Route::Public => return inner.call(Request::from_parts(parts, body)).await,
        Route::Unmapped => {
            return Ok(denied(reason::ACTION_UNMAPPED, None, None));
        }
    };
    let token = match bearer(&parts.headers) {
        Ok(token) => token.to_owned(),
        Err(BearerError::Missing) => {
            return Ok(invalid_token(reason::MISSING_TOKEN, "Bearer"));
        }
        Err(BearerError::Malformed) => {
            return Ok(invalid_token(
                reason::MALFORMED_TOKEN,
                "Bearer error=\"invalid_token\", error_description=\"malformed bearer token\"",
            ));
        }
    };
    let question = Question {
        token,
        service: action.service,
        operation: action.operation,
        resource: action.resource,
        subject: None,
        context: serde_json::Map::new(),
    };
    match shared.client.evaluate(&question).await {
        Ok(decision) if decision.allowed => {
            let mut request = Request::from_parts(parts, body);
            request.extensions_mut().insert(decision);
            inner.call(request).await
        }
        Ok(decision) => Ok(refusal(&decision)),
        Err(error) => {
            tracing::warn!(
                code = error.code(),
                service = %question.service,
                operation = %question.operation,
                "request refused without a decision: {error}"
            );
            Ok(json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": "decision_unavailable"}),
                None,
            ))
        }
    }
}

enum BearerError {
    Missing,
    Malformed,
}

/// The bearer credential of a request (RFC 6750 §2.1).
///
/// A request without `Authorization`, or with another scheme, presents no bearer credential;
/// a `Bearer` credential that is empty or not `b64token` syntax, or more than one
/// `Authorization` header, is malformed.
fn bearer(headers: &HeaderMap) -> Result<&str, BearerError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(BearerError::Missing);
    };
    if values.next().is_some() {
        return Err(BearerError::Malformed);
    }
    let value = value.to_str().map_err(|_| BearerError::Malformed)?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(BearerError::Missing);
    }
    let token = token.trim_matches(' ');
    if is_b64token(token) {
        Ok(token)
    } else {
        Err(BearerError::Malformed)
    }
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="` (RFC 6750 §2.1).
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// The refusal for a decision that did not allow.
fn refusal<B: From<String>>(decision: &Decision) -> Response<B> {
    if decision.refuses_credential() {
        // The reason is one of a fixed set of codes, all of them valid in a quoted string.
        let challenge = format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\"",
            decision.reason
        );
        return invalid_token(&decision.reason, &challenge);
    }
    let challenge =
        (decision.reason == "out_of_scope").then_some("Bearer error=\"insufficient_scope\"");
    denied(&decision.reason, decision.approval_id.as_deref(), challenge)
}

/// 401: the credential is missing or not acceptable.
fn invalid_token<B: From<String>>(reason: &str, challenge: &str) -> Response<B> {
    json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "invalid_token", "reason": reason}),
        Some(challenge),
    )
}

/// 403: the credential is good but may not do this.
fn denied<B: From<String>>(
    reason: &str,
    approval_id: Option<&str>,
    challenge: Option<&str>,
) -> Response<B> {
    let mut body = json!({"error": "access_denied", "reason": reason});
    if let Some(approval_id) = approval_id {
        body["approval_id"] = Value::from(approval_id);
    }
    json_response(StatusCode::FORBIDDEN, &body, challenge)
}

fn json_response<B: From<String>>(
    status: StatusCode,
    body: &Value,
    challenge: Option<&str>,
) -> Response<B> {
    let mut response = Response::new(B::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // A challenge that cannot be a header value is left out rather than failing the refusal;
    // the status and the body still say what happened.
    if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert(WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn bearer_credentials_follow_rfc_6750() {
        assert!(matches!(bearer(&headers(&[])), Err(BearerError::Missing)));
        assert!(matches!(
            bearer(&headers(&["Basic dXNlcjpwYXNz"])),
            Err(BearerError::Missing)
        ));
        for malformed in [
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer a,b",
            "Bearer ===",
        ] {
            assert!(
                matches!(bearer(&headers(&[malformed])), Err(BearerError::Malformed)),
                "{malformed}"
            );
        }
        assert!(matches!(
            bearer(&headers(&["Bearer a", "Bearer b"])),
            Err(BearerError::Malformed)
        ));
        assert_eq!(
            bearer(&headers(&["bearer custos_sk_abc"])).ok(),
            Some("custos_sk_abc")
        );
        assert_eq!(
            bearer(&headers(&["Bearer eyJ.a-b_c.d+/=="])).ok(),
            Some("eyJ.a-b_c.d+/==")
        );
    }
}
