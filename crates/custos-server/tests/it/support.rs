use custos_server::config::Config;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use custos_core::Timestamp;
use custos_server::service::Clock;
use custos_server::{RunningServer, start, start_with_clock};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

pub fn postgres_base_url() -> String {
    std::env::var("CUSTOS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh schema in the test database, as a URL whose connections use it.
pub async fn postgres_schema_url() -> String {
    let base = postgres_base_url();
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {base} is unreachable ({e}); the PostgreSQL tests need it")
        });
    sqlx::query("SELECT pg_advisory_lock(727)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_unlock(727)")
        .execute(&mut conn)
        .await
        .unwrap();
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub base: String,
    pub http: reqwest::Client,
    /// Kept alive for the server's lifetime.
    pub _data_dir: tempfile::TempDir,
    /// The PostgreSQL URL (with its schema) the server runs on, if not SQLite.
    pub database_url: Option<String>,
}

/// The configuration every in-process test server runs with: a preset admin token, a fresh
/// port, a one-second static key grace period (so tests can wait it out).
pub fn test_config(data_dir: &std::path::Path, database_url: Option<String>) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url,
        log_level: "warn".into(),
        admin_token: Some(ADMIN_TOKEN.into()),
        static_key_rotation_grace_seconds: 1,
        // Test NHIs run in production and often ask for a whole service, which is high risk;
        // one reviewer decides unless a test asks for a quorum.
        high_risk_quorum: 1,
        ..Config::defaults(data_dir.to_path_buf())
    }
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// A server whose test configuration `adjust` changes first.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_clocked(backend, None, adjust).await
    }

    /// A server that reads the time from `clock` (the real clock if `None`).
    pub async fn start_clocked(
        backend: Backend,
        clock: Option<Arc<TestClock>>,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let database_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(postgres_schema_url().await),
        };
        let mut config = test_config(data_dir.path(), database_url.clone());
        adjust(&mut config);
        let server = match clock {
            Some(clock) => start_with_clock(config, clock).await.unwrap(),
            None => start(config).await.unwrap(),
        };
        let base = format!("http://{}", server.addr);
        Self {
            server: Some(server),
            base,
            http: reqwest::Client::new(),
            _data_dir: data_dir,
            database_url,
        }
    }

    /// Posts a form to an OAuth endpoint, with HTTP Basic client credentials if given.
    /// Errors must be RFC 6749 §5.2 documents and every answer uncacheable.
    pub async fn form(
        &self,
        path: &str,
        basic: Option<(&str, &str)>,
        params: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(params);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        let response = req.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        assert!(!status.is_server_error(), "{path} -> {status} {value}");
        if status.is_client_error() {
            assert!(value["error"].is_string(), "an oauth error: {value}");
        }
        assert_eq!(
            headers.get("cache-control").and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{path} answers must not be cached"
        );
        (status, headers, value)
    }

    /// Sends a request; `token` None means no Authorization header.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, value) = self.call_full(method, path, token, body, &[]).await;
        (status, value)
    }

    pub async fn call_full(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_client_error() || status.is_server_error() {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            assert_eq!(
                content_type, "application/problem+json",
                "errors are problem documents: {value}"
            );
            assert!(
                value["code"].is_string(),
                "every problem has a code: {value}"
            );
        }
        assert!(
            !status.is_server_error(),
            "no input may yield a 5xx: {path} -> {status} {value}"
        );
        (status, headers, value)
    }

    /// Uploads `body` as it is (no JSON) to `path`, as `custos import` does.
    pub async fn upload(&self, path: &str, token: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Calls as the admin and insists on `expected`.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        expected: StatusCode,
    ) -> Value {
        let (status, value) = self.call(method, path, Some(ADMIN_TOKEN), body).await;
        assert_eq!(status, expected, "{path}: {value}");
        value
    }

    pub async fn team(&self, name: &str) -> Value {
        self.admin(
            Method::POST,
            "/v1/teams",
            Some(json!({"name": name, "contact": format!("{name}@example.com")})),
            StatusCode::CREATED,
        )
        .await
    }

    pub async fn nhi(&self, name: &str, team: &str) -> Value {
        self.admin(
            Method::POST,
            "/v1/nhis",
            Some(nhi_body(name, team)),
            StatusCode::CREATED,
        )
        .await
    }

    pub async fn operator(&self, name: &str, roles: &[&str], teams: &[&str]) -> (String, String) {
        let created = self
            .admin(
                Method::POST,
                "/v1/operators",
                Some(json!({"name": name, "roles": roles, "teams": teams})),
                StatusCode::CREATED,
            )
            .await;
        (
            created["id"].as_str().unwrap().to_owned(),
            created["token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn static_key(&self, nhi_id: &str) -> Value {
        self.admin(
            Method::POST,
            &format!("/v1/nhis/{nhi_id}/credentials"),
            Some(json!({})),
            StatusCode::CREATED,
        )
        .await
    }

    /// Stops the server (as at a shutdown: everything pending is written) and starts another
    /// on the same store and data directory, with the configuration `adjust` makes.
    pub async fn restart_with(&mut self, adjust: impl FnOnce(&mut Config)) {
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap();
        }
        let mut config = test_config(self._data_dir.path(), self.database_url.clone());
        adjust(&mut config);
        let server = start(config).await.unwrap();
        self.base = format!("http://{}", server.addr);
        self.server = Some(server);
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap();
        }
    }
}

pub fn nhi_body(name: &str, team: &str) -> Value {
    json!({
        "name": name,
        "kind": "ai_agent",
        "platform": "openai",
        "environment": "production",
        "owner": {"team": team, "application": "billing", "contact": "ops@example.com"},
        "purpose": "reconciles invoices",
        "scope_ceiling": ["erp:read:invoices/*", "mail:send"],
        "tags": {"tier": "gold"}
    })
}

/// Runs an async test body against both backends.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $name() { super::$name($crate::support::Backend::Sqlite).await })+
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $name() { super::$name($crate::support::Backend::Postgres).await })+
        }
    };
}

/// An NHI with `ceiling` and one static key: (nhi id, secret).
pub async fn client(server: &TestServer, name: &str, ceiling: &[&str]) -> (String, String) {
    let (status, _) = server
        .call(
            Method::GET,
            "/v1/teams/owners-oauth",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    if status == StatusCode::NOT_FOUND {
        server.team("owners-oauth").await;
    }
    let nhi = server
        .admin(
            Method::POST,
            "/v1/nhis",
            Some(json!({
                "name": name, "kind": "ai_agent", "platform": "custom",
                "environment": "production",
                "owner": {"team": "owners-oauth"}, "purpose": "test client",
                "scope_ceiling": ceiling,
            })),
            StatusCode::CREATED,
        )
        .await;
    let id = nhi["id"].as_str().unwrap().to_owned();
    let key = server.static_key(&id).await;
    (id, key["secret"].as_str().unwrap().to_owned())
}

impl TestServer {
    /// The running server's state: its store, keys and signing keyring.
    pub fn state(&self) -> &custos_server::service::AppState {
        &self
            .server
            .as_ref()
            .expect("the server is still running")
            .state
    }

    /// Polls until the NHI's decommission is done (at most 30 s) and returns the workflow.
    pub async fn decommissioned(&self, nhi_id: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let list = self
                .admin(
                    Method::GET,
                    &format!("/v1/decommissions?nhi_id={nhi_id}&state=done"),
                    None,
                    StatusCode::OK,
                )
                .await;
            if let Some(workflow) = list["items"].as_array().unwrap().first() {
                return workflow.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{nhi_id} was never decommissioned"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The server's data directory (SQLite files, `master.key`).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data_dir.path()
    }
}

/// The claims of a compact JWS, read without any check.
pub fn jwt_claims(token: &str) -> serde_json::Map<String, Value> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a compact jws");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("a JSON object")
}

// ---- the admin CLI, as a user runs it ----

/// Runs `custos ARGS` against `server` as the admin (without blocking the server's runtime).
pub async fn custos(server: &TestServer, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(args)
        .env("CUSTOS_URL", &server.base)
        .env("CUSTOS_TOKEN", ADMIN_TOKEN)
        .env_remove("CUSTOS_SMTP_PASSWORD")
        .output()
        .await
        .unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command that must succeed; its stdout.
pub async fn ok(server: &TestServer, args: &[&str]) -> String {
    let out = custos(server, args).await;
    assert!(
        out.status.success(),
        "custos {args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs a command with `--output json` that must succeed; its parsed stdout.
pub async fn json_of(server: &TestServer, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["--output", "json"]);
    let stdout = ok(server, &args).await;
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("custos {args:?}: {e}: {stdout}"))
}

/// Runs a command that must fail with exit code `code` and say `expected` on stderr, and
/// nothing on stdout.
pub async fn fails(server: &TestServer, args: &[&str], code: i32, expected: &str) {
    let out = custos(server, args).await;
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "custos {args:?}: {}{stderr}",
        text(&out.stdout)
    );
    assert!(
        stderr.contains(expected),
        "custos {args:?} should say {expected:?}: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "custos {args:?}: {}",
        text(&out.stdout)
    );
}

/// A clock a test moves: it starts at the real time and stands still until moved, so a test
/// walks through 90 days in a moment.
pub struct TestClock(AtomicI64);

impl TestClock {
    pub fn new() -> Arc<Self> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        Arc::new(Self(AtomicI64::new(i64::try_from(now).unwrap())))
    }

    pub fn advance_days(&self, days: i64) {
        self.0.fetch_add(days * 86_400_000, Ordering::SeqCst);
    }

    pub fn advance_seconds(&self, seconds: i64) {
        self.0.fetch_add(seconds * 1000, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.0.load(Ordering::SeqCst)).unwrap()
    }
}

/// The real `custos` binary serving on SQLite with its logs at debug, for the searches that no
/// secret reaches them. The output is read on threads, so the server never blocks on a pipe.
pub struct DebugBinary {
    pub server: TestServer,
    child: std::process::Child,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
}

impl DebugBinary {
    pub async fn start() -> Self {
        use std::process::{Command, Stdio};
        let data_dir = tempfile::tempdir().unwrap();
        let port = crate::process::free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_custos"));
        for (name, _) in std::env::vars() {
            if name.starts_with("CUSTOS_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        let mut child = command
            .env("CUSTOS_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("CUSTOS_LOG_LEVEL", "debug")
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data_dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                pipe.read_to_end(&mut out).unwrap();
                out
            })
        };
        let stdout = drain(Box::new(child.stdout.take().unwrap()));
        let stderr = drain(Box::new(child.stderr.take().unwrap()));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{base}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server never became ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let server = TestServer {
            server: None,
            base,
            http,
            _data_dir: data_dir,
            database_url: None,
        };
        DebugBinary {
            server,
            child,
            stdout,
            stderr,
        }
    }

    /// SIGTERM, a clean exit, and everything the binary wrote to stdout and stderr.
    pub async fn stop(mut self) -> (TestServer, Vec<u8>) {
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no exit within 10 s of SIGTERM"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert!(status.success(), "{status:?}");
        let logs = [self.stdout.join().unwrap(), self.stderr.join().unwrap()].concat();
        (self.server, logs)
    }
}
