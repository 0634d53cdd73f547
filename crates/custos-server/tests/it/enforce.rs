//! The enforcement library (`custos-enforce`) in front of an axum service on a real socket,
//! asking a real Custos: what reaches the handler, what is refused and how, and that without a
//! decision nothing gets through.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use custos_enforce::{Action, Client, Decision, EnforceLayer, Route};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestServer, client};

both_backends!(
    allowed_requests_reach_the_handler_with_the_decision,
    refused_requests_never_reach_the_handler,
    a_revoked_credential_is_refused_on_its_next_request,
    a_held_back_action_names_its_approval_request,
    without_a_decision_nothing_gets_through,
);

/// What each request of the guarded service does: customers are the service `crm`, the health
/// check is public, and `/reports` is deliberately left unmapped.
fn route(parts: &Parts) -> Route {
    let path = parts.uri.path();
    if path == "/healthz" {
        return Route::Public;
    }
    let Some(rest) = path.strip_prefix("/customers/") else {
        return Route::Unmapped;
    };
    let (id, export) = match rest.strip_suffix("/export") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    let operation = match (&parts.method, export) {
        (&Method::GET, false) => "read",
        (&Method::DELETE, false) => "delete",
        (&Method::POST, true) => "export",
        _ => return Route::Unmapped,
    };
    Action::new("crm", operation)
        .on(format!("customers/{id}"))
        .into()
}

/// A handler of a governed route: what it was given, so the test can see what got through.
async fn customer(
    State(calls): State<Arc<AtomicUsize>>,
    Path(id): Path<String>,
    Extension(decision): Extension<Decision>,
    headers: HeaderMap,
) -> Json<Value> {
    calls.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "customer": id,
        "nhi": decision.nhi,
        "reason": decision.reason,
        "authorization": headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
    }))
}

async fn counted(State(calls): State<Arc<AtomicUsize>>) -> &'static str {
    calls.fetch_add(1, Ordering::SeqCst);
    "ok"
}

/// The guarded service, listening on a port of its own.
struct Guarded {
    base: String,
    calls: Arc<AtomicUsize>,
    http: reqwest::Client,
    serving: tokio::task::JoinHandle<()>,
}

impl Guarded {
    async fn start(client: Client) -> Self {
        let calls = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route("/customers/{id}", get(customer).delete(customer))
            .route("/customers/{id}/export", post(customer))
            .route("/healthz", get(counted))
            .route("/reports", get(counted))
            .layer(EnforceLayer::new(client, route))
            .with_state(Arc::clone(&calls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let serving = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base,
            calls,
            http: reqwest::Client::new(),
            serving,
        }
    }

    /// A guarded service asking `server` as the enforcement point holding `pep`.
    async fn in_front_of(server: &TestServer, pep: &str) -> Self {
        Self::start(Client::new(&server.base, pep).unwrap()).await
    }

    /// Sends a request with `token` as its bearer credential, if any: the status, the
    /// `WWW-Authenticate` challenge and the JSON body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, Option<String>, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        if !status.is_success() {
            assert_eq!(
                response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
                Some("application/json"),
                "refusals are JSON"
            );
        }
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, challenge, body)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// The id of the only credential of an NHI.
async fn credential_of(server: &TestServer, nhi_id: &str) -> String {
    let (status, creds) = server
        .call(
            Method::GET,
            &format!("/v1/credentials?nhi_id={nhi_id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{creds}");
    creds["items"][0]["id"].as_str().unwrap().to_owned()
}

async fn allowed_requests_reach_the_handler_with_the_decision(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let (agent_id, key) = client(&server, "crm-agent", &["crm:read:customers/*"]).await;
    let guarded = Guarded::in_front_of(&server, &pep).await;

    let (status, _, body) = guarded.send(Method::GET, "/customers/7", Some(&key)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["customer"], "7");
    assert_eq!(
        body["nhi"],
        agent_id.as_str(),
        "the handler knows whom it serves"
    );
    assert_eq!(body["reason"], "allowed");
    // The layer takes nothing away: the handler still sees the caller's credential.
    assert_eq!(body["authorization"], format!("Bearer {key}"));
    assert_eq!(guarded.calls(), 1);

    // A task's access token (a JWT) is a bearer credential like a static key.
    let (status, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&key),
            Some(json!({"purpose": "one lookup", "scope": ["crm:read:customers/8"], "ttl_seconds": 60})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let token = task["credential"]["access_token"].as_str().unwrap();
    let (status, _, body) = guarded.send(Method::GET, "/customers/8", Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["nhi"], agent_id.as_str());
    assert_eq!(guarded.calls(), 2);
    server.stop().await;
}

async fn refused_requests_never_reach_the_handler(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let (_, key) = client(&server, "crm-agent", &["crm:read:customers/*"]).await;
    let guarded = Guarded::in_front_of(&server, &pep).await;

    // Beyond the agent's scope: 403 with the reason, and insufficient_scope per RFC 6750.
    let (status, challenge, body) = guarded
        .send(Method::DELETE, "/customers/7", Some(&key))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body,
        json!({"error": "access_denied", "reason": "out_of_scope"})
    );
    assert_eq!(
        challenge.as_deref(),
        Some("Bearer error=\"insufficient_scope\"")
    );

    // No credential: 401 with a bare challenge (RFC 6750 §3.1).
    let (status, challenge, body) = guarded.send(Method::GET, "/customers/7", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["reason"], "missing_token");

    // A malformed credential is refused without asking.
    let response = guarded
        .http
        .get(format!("{}/customers/7", guarded.base))
        .header(header::AUTHORIZATION, "Bearer two words")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "malformed_token");

    // A credential Custos does not know: 401 invalid_token with the reason.
    let (status, challenge, body) = guarded
        .send(Method::GET, "/customers/7", Some("not-a-custos-credential"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        challenge
            .as_deref()
            .is_some_and(|c| c.starts_with("Bearer error=\"invalid_token\"")),
        "{challenge:?}"
    );
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["reason"], "invalid_token");

    // A route the mapper does not know is closed, even to a good credential.
    let (status, _, body) = guarded.send(Method::GET, "/reports", Some(&key)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body,
        json!({"error": "access_denied", "reason": "action_unmapped"})
    );
    assert_eq!(guarded.calls(), 0, "no refused request reached a handler");

    // A public route needs no credential.
    let (status, _, body) = guarded.send(Method::GET, "/healthz", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!("ok")));
    assert_eq!(guarded.calls(), 1);
    server.stop().await;
}

async fn a_revoked_credential_is_refused_on_its_next_request(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let (agent_id, key) = client(&server, "crm-agent", &["crm:read:customers/*"]).await;
    let guarded = Guarded::in_front_of(&server, &pep).await;
    let (status, _, _) = guarded.send(Method::GET, "/customers/1", Some(&key)).await;
    assert_eq!(status, StatusCode::OK);

    let credential = credential_of(&server, &agent_id).await;
    server
        .admin(
            Method::POST,
            &format!("/v1/credentials/{credential}/revoke"),
            None,
            StatusCode::OK,
        )
        .await;
    let (status, challenge, body) = guarded.send(Method::GET, "/customers/1", Some(&key)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        challenge.as_deref(),
        Some("Bearer error=\"invalid_token\", error_description=\"revoked\"")
    );
    assert_eq!(body, json!({"error": "invalid_token", "reason": "revoked"}));
    assert_eq!(guarded.calls(), 1, "only the request before the revocation");
    server.stop().await;
}

async fn a_held_back_action_names_its_approval_request(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let (_, key) = client(&server, "crm-agent", &["crm:*:customers/*"]).await;
    server
        .admin(
            Method::PUT,
            "/v1/policies",
            Some(json!({
                "policies": "@approval_required(\"bulk export\")\nforbid(principal, action == Custos::Action::\"crm:export\", resource);",
                "catalogue": {"services": [{"name": "crm", "operations": ["read", "delete", "export"]}]},
            })),
            StatusCode::OK,
        )
        .await;
    let guarded = Guarded::in_front_of(&server, &pep).await;
    let (status, _, body) = guarded
        .send(Method::POST, "/customers/all/export", Some(&key))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "access_denied");
    assert_eq!(body["reason"], "approval_required");
    let approval = body["approval_id"].as_str().expect("the approval request");
    let (status, request) = server
        .call(
            Method::GET,
            &format!("/v1/approvals/{approval}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{request}");
    assert_eq!(request["state"], "pending");
    assert_eq!(guarded.calls(), 0);
    server.stop().await;
}

/// Custos refusing the enforcement point, not answering in time, or gone: 503, and the
/// handler is never called.
async fn without_a_decision_nothing_gets_through(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, key) = client(&server, "crm-agent", &["crm:read:customers/*"]).await;
    let unavailable = json!({"error": "decision_unavailable"});

    // An enforcement point whose credential lacks custos:evaluate gets no decisions.
    let (_, not_a_pep) = client(&server, "impostor", &["crm:read"]).await;
    let guarded = Guarded::in_front_of(&server, &not_a_pep).await;
    let (status, _, body) = guarded.send(Method::GET, "/customers/1", Some(&key)).await;
    assert_eq!(
        (status, body),
        (StatusCode::SERVICE_UNAVAILABLE, unavailable.clone())
    );
    assert_eq!(guarded.calls(), 0);

    // A decision point that accepts the connection and never answers: refused once the
    // client's timeout has passed.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_base = format!("http://{}", silent.local_addr().unwrap());
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let slow = Client::builder(&silent_base, &pep)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let guarded = Guarded::start(slow).await;
    let started = Instant::now();
    let (status, _, body) = guarded.send(Method::GET, "/customers/1", Some(&key)).await;
    assert_eq!(
        (status, body),
        (StatusCode::SERVICE_UNAVAILABLE, unavailable.clone())
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout bounds the wait: {:?}",
        started.elapsed()
    );
    assert_eq!(guarded.calls(), 0);
    holding.abort();

    // Custos stopped: the enforcement point that was allowed a moment ago now refuses.
    let guarded = Guarded::in_front_of(&server, &pep).await;
    let (status, _, _) = guarded.send(Method::GET, "/customers/1", Some(&key)).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
    let (status, _, body) = guarded.send(Method::GET, "/customers/1", Some(&key)).await;
    assert_eq!(
        (status, body),
        (StatusCode::SERVICE_UNAVAILABLE, unavailable.clone())
    );
    assert_eq!(guarded.calls(), 1, "only the request Custos allowed");
    // Public routes do not depend on Custos.
    let (status, _, _) = guarded.send(Method::GET, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);

    // A client pointed at a closed port from the start.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let guarded = Guarded::start(Client::new(format!("http://{closed}"), &pep).unwrap()).await;
    let (status, _, body) = guarded.send(Method::GET, "/customers/1", Some(&key)).await;
    assert_eq!(
        (status, body),
        (StatusCode::SERVICE_UNAVAILABLE, unavailable)
    );
    assert_eq!(guarded.calls(), 0);
}

/// The library's client on its own: errors carry stable codes, and a refusal of the
/// enforcement point is told apart from a refusal of the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_tells_refusals_from_errors() {
    use custos_enforce::Question;

    let server = TestServer::start(Backend::Sqlite).await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let (agent_id, key) = client(&server, "crm-agent", &["crm:read:customers/*"]).await;
    let custos = Client::new(&server.base, &pep).unwrap();

    let decision = custos
        .evaluate(&Question::new(&key, "crm", "read").with_resource("customers/1"))
        .await
        .unwrap();
    assert!(decision.allowed);
    assert_eq!(decision.nhi.as_deref(), Some(agent_id.as_str()));
    assert!(
        decision.context["id"].is_string(),
        "the decision's event id"
    );

    let decision = custos
        .evaluate(&Question::new(&key, "crm", "read").with_subject("someone-else"))
        .await
        .unwrap();
    assert_eq!(
        (decision.allowed, decision.reason.as_str()),
        (false, "subject_mismatch")
    );

    let error = Client::new(&server.base, &key)
        .unwrap()
        .evaluate(&Question::new(&key, "crm", "read"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "pep_refused");
    assert!(
        error.to_string().contains("evaluate_not_allowed"),
        "{error}"
    );

    let error = custos
        .evaluate(&Question::new(&key, "", "read"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "invalid_question");

    let base = server.base.clone();
    server.stop().await;
    let error = Client::new(&base, &pep)
        .unwrap()
        .evaluate(&Question::new(&key, "crm", "read"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "decision_unavailable");
    assert!(
        error.to_string().starts_with("no decision: cannot reach"),
        "{error}"
    );
}
