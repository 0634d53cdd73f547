//! The client of Custos's decision endpoint, `POST /access/v1/evaluation` (OpenID AuthZEN
//! Authorization API 1.0): one question in, one [`Decision`] or one [`EnforceError`] out.

use std::fmt;
use std::time::Duration;

use http::StatusCode;
use http::header::{AUTHORIZATION, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// How long [`Client::evaluate`] waits for an answer unless told otherwise. A decision is on
/// the path of every request the enforcement point guards, so an answer that takes longer is
/// treated as no answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The path of the evaluation endpoint below the base URL.
const EVALUATION_PATH: &str = "/access/v1/evaluation";

/// The largest answer read. Custos's answers are a few hundred bytes; a longer one comes from
/// something that is not Custos, and reading it whole would let that thing exhaust memory.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The reasons that are about the agent's credential itself rather than what it asked to do,
/// answered by an enforcement point as RFC 6750 `invalid_token`.
const CREDENTIAL_REASONS: &[&str] = &[
    "invalid_token",
    "unknown_credential",
    "not_yet_valid",
    "expired",
    "revoked",
    "ancestor_revoked",
    "task_ended",
];

/// A client of one Custos server's decision endpoint, authenticated as one enforcement point.
///
/// Cloning is cheap and clones share one connection pool.
#[derive(Clone)]
pub struct Client {
    endpoint: String,
    /// `Bearer <credential>`, marked sensitive so that it never appears in debug output.
    authorization: HeaderValue,
    timeout: Duration,
    http: reqwest::Client,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("credential", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the Custos server at `base_url` (for example `https://custos.internal`),
    /// authenticated by `credential`, the enforcement point's own static key or access token,
    /// which must hold the scope `custos:evaluate`. It waits [`DEFAULT_TIMEOUT`] for an answer.
    pub fn new(
        base_url: impl Into<String>,
        credential: impl Into<String>,
    ) -> Result<Self, EnforceError> {
        Self::builder(base_url, credential).build()
    }

    /// A builder for a client with another timeout or its own `reqwest::Client`.
    pub fn builder(base_url: impl Into<String>, credential: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            credential: credential.into(),
            timeout: DEFAULT_TIMEOUT,
            http: None,
        }
    }

    /// The full URL of the evaluation endpoint this client asks.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// How long one evaluation may take, from connecting to the last byte of the answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Asks Custos whether `question.token` may perform `question.operation` on
    /// `question.resource` of `question.service`, now.
    ///
    /// A refusal is a [`Decision`] with `allowed` false and its reason; an error means that
    /// there is no decision, and an enforcement point must then refuse (fail closed).
    pub async fn evaluate(&self, question: &Question) -> Result<Decision, EnforceError> {
        question.check()?;
        let body = json!({
            "subject": {
                "type": "agent",
                "id": question.subject.as_deref().unwrap_or(""),
                "properties": {"token": question.token},
            },
            "action": {"name": question.operation},
            "resource": {"type": question.service, "id": question.resource},
            "context": question.context,
        });
        let mut response = self
            .http
            .post(&self.endpoint)
            .header(AUTHORIZATION, self.authorization.clone())
            .timeout(self.timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| self.unavailable(&e))?;
        let status = response.status();
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unavailable(&e))? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(EnforceError::BadAnswer {
                    message: format!(
                        "the answer from {} is longer than {MAX_ANSWER_BYTES} bytes",
                        self.endpoint
                    ),
                });
            }
            answer.extend_from_slice(&chunk);
        }
        match status {
            StatusCode::OK => parse_answer(&answer),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let (code, detail) = problem(status, &answer);
                Err(EnforceError::PepRefused {
                    status: status.as_u16(),
                    code,
                    detail,
                })
            }
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                let (code, detail) = problem(status, &answer);
                Err(EnforceError::InvalidQuestion {
                    message: format!("refused by the decision point ({code}): {detail}"),
                })
            }
            // Overload, a timeout on the far side and every server error are the decision
            // point being unable to decide now, not a wrong answer.
            status
                if status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT =>
            {
                let (code, detail) = problem(status, &answer);
                Err(EnforceError::Unavailable {
                    message: format!(
                        "{} answered {} ({code}): {detail}",
                        self.endpoint,
                        status.as_u16()
                    ),
                })
            }
            status => Err(EnforceError::BadAnswer {
                message: format!(
                    "unexpected status {} from {}",
                    status.as_u16(),
                    self.endpoint
                ),
            }),
        }
    }

    fn unavailable(&self, error: &reqwest::Error) -> EnforceError {
        let message = if error.is_timeout() {
            format!(
                "no answer from {} within {} ms",
                self.endpoint,
                self.timeout.as_millis()
            )
        } else {
            format!("cannot reach {}: {}", self.endpoint, chain(error))
        };
        EnforceError::Unavailable { message }
    }
}

/// An error and its causes on one line: reqwest's own message names only the outermost
/// ("error sending request"), and the cause (refused connection, DNS, TLS) is what an
/// operator needs.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The `code` and `detail` of a problem document (RFC 9457, as Custos answers errors), or
/// what can stand in for them when the body is not one.
fn problem(status: StatusCode, body: &[u8]) -> (String, String) {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let code = text("code")
        .or_else(|| text("error"))
        .unwrap_or_else(|| "error".to_owned());
    let detail = text("detail")
        .or_else(|| text("error_description"))
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("no detail")
                .to_lowercase()
        });
    (code, detail)
}

/// The AuthZEN answer, before its context is checked.
#[derive(Deserialize)]
struct Answer {
    decision: bool,
    #[serde(default)]
    context: Map<String, Value>,
}

fn parse_answer(body: &[u8]) -> Result<Decision, EnforceError> {
    let bad = |message: String| EnforceError::BadAnswer { message };
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the answer is not an AuthZEN decision: {e}")))?;
    let context = answer.context;
    let optional_text = |key: &str| -> Result<Option<String>, EnforceError> {
        match context.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(bad(format!("context.{key} is not a string"))),
        }
    };
    let reason = optional_text("reason")?
        .ok_or_else(|| bad("the answer's context has no reason".to_owned()))?;
    // An answer that contradicts itself is not trusted either way.
    if answer.decision != (reason == "allowed") {
        return Err(bad(format!(
            "the decision {} contradicts the reason {reason:?}",
            answer.decision
        )));
    }
    let nhi = optional_text("nhi")?;
    let approval_id = optional_text("approval_id")?;
    let policies = match context.get("policies") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("context.policies is not a list of strings".to_owned()))?,
        Some(_) => return Err(bad("context.policies is not a list".to_owned())),
    };
    Ok(Decision {
        allowed: answer.decision,
        reason,
        nhi,
        policies,
        approval_id,
        context,
    })
}

/// Builds a [`Client`]; see [`Client::builder`].
#[derive(Clone)]
pub struct ClientBuilder {
    base_url: String,
    credential: String,
    timeout: Duration,
    http: Option<reqwest::Client>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("credential", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// How long one evaluation may take, from connecting to the last byte of the answer.
    /// Applied to every request, also when [`http_client`](Self::http_client) is given.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The `reqwest::Client` to send with, for its own TLS roots, proxy or connection pool
    /// settings. Without it, a client with reqwest's defaults and rustls is built.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Checks the settings and builds the client.
    pub fn build(self) -> Result<Client, EnforceError> {
        let config = |message: String| EnforceError::Config { message };
        let base = reqwest::Url::parse(&self.base_url).map_err(|e| {
            config(format!(
                "the base url {:?} is not a url: {e}",
                self.base_url
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https")
            || base.query().is_some()
            || base.fragment().is_some()
        {
            return Err(config(format!(
                "the base url {:?} must be an http or https url without query or fragment",
                self.base_url
            )));
        }
        // The base may carry a path prefix (Custos behind a reverse proxy); the endpoint goes
        // below it.
        let endpoint = format!("{}{EVALUATION_PATH}", base.as_str().trim_end_matches('/'));
        if self.credential.is_empty() {
            return Err(config(
                "the enforcement point's credential is empty".to_owned(),
            ));
        }
        let mut authorization = HeaderValue::try_from(format!("Bearer {}", self.credential))
            .map_err(|_| {
                config("the enforcement point's credential cannot be sent in a header".to_owned())
            })?;
        authorization.set_sensitive(true);
        if self.timeout.is_zero() {
            return Err(config("the timeout must be longer than zero".to_owned()));
        }
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .build()
                .map_err(|e| config(format!("cannot build the http client: {}", chain(&e))))?,
        };
        Ok(Client {
            endpoint,
            authorization,
            timeout: self.timeout,
            http,
        })
    }
}

/// One question to the decision point: may the agent holding `token` perform `operation` on
/// `resource` of `service`, now?
#[derive(Clone, PartialEq)]
pub struct Question {
    /// The agent's credential: its access token or static key.
    pub token: String,
    /// The service (AuthZEN `resource.type`), as in the grant `service:operation:resource`.
    pub service: String,
    /// The operation (AuthZEN `action.name`).
    pub operation: String,
    /// The resource id (AuthZEN `resource.id`); empty when the operation is on none.
    pub resource: String,
    /// The NHI the enforcement point believes it is talking to (id or name), if it knows; the
    /// decision point refuses with `subject_mismatch` if the credential is another's.
    pub subject: Option<String>,
    /// Extra AuthZEN `context`, sent as given; empty sends an empty object. Custos decides on
    /// its own live state and does not read it, but other decision points may.
    pub context: Map<String, Value>,
}

impl fmt::Debug for Question {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Question")
            .field("token", &"<redacted>")
            .field("service", &self.service)
            .field("operation", &self.operation)
            .field("resource", &self.resource)
            .field("subject", &self.subject)
            .field("context", &self.context)
            .finish()
    }
}

impl Question {
    /// A question about an operation on no particular resource, with no subject and no context.
    pub fn new(
        token: impl Into<String>,
        service: impl Into<String>,
        operation: impl Into<String>,
    ) -> Self {
        Self {
            token: token.into(),
            service: service.into(),
            operation: operation.into(),
            resource: String::new(),
            subject: None,
            context: Map::new(),
        }
    }

    /// The same question about one resource.
    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = resource.into();
        self
    }

    /// The same question, naming the NHI expected to hold the credential.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// The same question with extra AuthZEN context.
    pub fn with_context(mut self, context: Map<String, Value>) -> Self {
        self.context = context;
        self
    }

    /// Refuses, without a round trip, a question the decision point would refuse as malformed.
    fn check(&self) -> Result<(), EnforceError> {
        let missing = if self.token.is_empty() {
            "the agent's token"
        } else if self.service.is_empty() {
            "the service"
        } else if self.operation.is_empty() {
            "the operation"
        } else {
            return Ok(());
        };
        Err(EnforceError::InvalidQuestion {
            message: format!("{missing} is empty"),
        })
    }
}

/// The decision point's answer to one [`Question`].
///
/// The enforcement layer puts the allowing decision into the request's extensions, so a
/// handler can read which NHI it serves (`axum::Extension<Decision>`).
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Whether the operation may go ahead.
    pub allowed: bool,
    /// Custos's reason code: `allowed`, or why not (`out_of_scope`, `revoked`, `expired`,
    /// `policy_forbid`, `approval_required`, `nhi_suspended`, …).
    pub reason: String,
    /// The NHI holding the credential, when the credential was recognised.
    pub nhi: Option<String>,
    /// The guardrail policies that refused, if any did.
    pub policies: Vec<String>,
    /// The approval request opened for an operation that needs a human's yes
    /// (`approval_required`).
    pub approval_id: Option<String>,
    /// The answer's whole `context`, including what the fields above do not model (the
    /// decision's event id `id`, `refused_nhi`).
    pub context: Map<String, Value>,
}

impl Decision {
    /// Whether the refusal is about the credential itself (invalid, unknown, not yet valid,
    /// expired, revoked, or revoked through its task or an ancestor) rather than the operation;
    /// such a refusal is answered as RFC 6750 `invalid_token`.
    pub fn refuses_credential(&self) -> bool {
        !self.allowed && CREDENTIAL_REASONS.contains(&self.reason.as_str())
    }
}

/// Why there is no decision. Every variant has a stable [`code`](Self::code); an enforcement
/// point refuses the request whichever it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnforceError {
    /// The client's settings are unusable (bad base URL, empty credential, zero timeout).
    #[error("invalid enforcement client settings: {message}")]
    Config { message: String },
    /// The question is malformed, so it was not asked, or the decision point refused it as
    /// malformed.
    #[error("the question cannot be asked: {message}")]
    InvalidQuestion { message: String },
    /// The decision point could not be reached, did not answer in time, or answered with a
    /// server error or overload.
    #[error("no decision: {message}")]
    Unavailable { message: String },
    /// The decision point refused the enforcement point itself (401 or 403): its credential is
    /// unknown, revoked or expired, or does not hold `custos:evaluate`.
    #[error("the decision point refused this enforcement point ({status} {code}): {detail}")]
    PepRefused {
        status: u16,
        code: String,
        detail: String,
    },
    /// The answer is not a decision this client can read.
    #[error("the decision point's answer cannot be read: {message}")]
    BadAnswer { message: String },
}

impl EnforceError {
    /// The stable, machine-readable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            EnforceError::Config { .. } => "invalid_config",
            EnforceError::InvalidQuestion { .. } => "invalid_question",
            EnforceError::Unavailable { .. } => "decision_unavailable",
            EnforceError::PepRefused { .. } => "pep_refused",
            EnforceError::BadAnswer { .. } => "bad_answer",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<Decision, EnforceError> {
        parse_answer(body.to_string().as_bytes())
    }

    #[test]
    fn an_answer_is_read_with_its_whole_context() {
        let decision = parse(json!({"decision": false, "context": {
            "reason": "approval_required", "id": "ev1", "nhi": "n1",
            "policies": ["p1"], "approval_id": "a1"}}))
        .unwrap();
        assert!(!decision.allowed);
        assert_eq!(decision.reason, "approval_required");
        assert_eq!(decision.nhi.as_deref(), Some("n1"));
        assert_eq!(decision.policies, ["p1"]);
        assert_eq!(decision.approval_id.as_deref(), Some("a1"));
        assert_eq!(decision.context["id"], "ev1");
        assert!(!decision.refuses_credential());
    }

    #[test]
    fn answers_that_are_not_decisions_are_bad_answers() {
        for body in [
            json!({"context": {"reason": "allowed"}}),
            json!({"decision": "yes", "context": {"reason": "allowed"}}),
            json!({"decision": true, "context": {}}),
            json!({"decision": true, "context": {"reason": "revoked"}}),
            json!({"decision": false, "context": {"reason": "allowed"}}),
            json!({"decision": false, "context": {"reason": "revoked", "nhi": 7}}),
            json!({"decision": false, "context": {"reason": "policy_forbid", "policies": [1]}}),
        ] {
            let error = parse(body.clone()).unwrap_err();
            assert_eq!(error.code(), "bad_answer", "{body}");
        }
        assert_eq!(parse_answer(b"<html>").unwrap_err().code(), "bad_answer");
    }

    #[test]
    fn credential_reasons_are_told_apart() {
        let revoked = parse(json!({"decision": false, "context": {"reason": "revoked"}})).unwrap();
        assert!(revoked.refuses_credential());
    }

    #[test]
    fn settings_are_checked_when_built() {
        for (url, credential) in [
            ("not a url", "k"),
            ("ftp://custos", "k"),
            ("http://custos?x=1", "k"),
            ("http://custos", ""),
            ("http://custos", "line\nbreak"),
        ] {
            let error = Client::new(url, credential).unwrap_err();
            assert_eq!(error.code(), "invalid_config", "{url} {credential:?}");
        }
        let zero = Client::builder("http://custos", "k")
            .timeout(Duration::ZERO)
            .build();
        assert_eq!(zero.unwrap_err().code(), "invalid_config");
        let client = Client::new("https://custos.internal/prefix/", "secret").unwrap();
        assert_eq!(
            client.endpoint(),
            "https://custos.internal/prefix/access/v1/evaluation"
        );
        assert!(!format!("{client:?}").contains("secret"));
    }

    #[test]
    fn malformed_questions_are_not_sent() {
        let question = Question::new("", "crm", "read");
        assert_eq!(question.check().unwrap_err().code(), "invalid_question");
        assert!(Question::new("t", "crm", "read").check().is_ok());
        assert!(!format!("{:?}", Question::new("hush", "crm", "read")).contains("hush"));
    }
}
