//! What the benchmarks share: running the real `custos` binary, a JSON client of its API, a
//! throwaway PostgreSQL schema, and the statistics and machine facts every report prints.

#![allow(dead_code)] // each bench uses its own part of this module

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A bench's `main`: runs `run` on a multi-threaded runtime when cargo passes `--bench`, and
/// skips otherwise (`cargo test --benches` runs bench targets without it).
pub fn bench_main<F: std::future::Future<Output = Result<()>>>(
    name: &str,
    what: &str,
    run: impl FnOnce() -> F,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("{name}: skipped (run it with `cargo bench`; it {what})");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// A fixed master key: the server writes its check value into `meta` on the first start, and
/// every later start must present the same key.
pub const MASTER_KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn title(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// The stores `CUSTOS_BENCH_BACKENDS` names (comma-separated `sqlite`, `postgres`), or
/// `default` when it is unset or empty.
pub fn backends_from_env(default: &str) -> Result<Vec<Backend>> {
    let named = std::env::var("CUSTOS_BENCH_BACKENDS")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned());
    named
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            other => bail!("CUSTOS_BENCH_BACKENDS: unknown backend {other:?} (sqlite, postgres)"),
        })
        .collect()
}

pub fn env_number(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .replace('_', "")
            .parse()
            .with_context(|| format!("{name}={text:?} is not a whole number")),
        _ => Ok(default),
    }
}

/// `release/custos` beside this bench: cargo puts bench executables in `TARGET/release/deps`.
pub fn default_bin() -> PathBuf {
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        let release = exe.parent()?.parent()?;
        Some(release.join("custos"))
    });
    from_exe.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
        Path::new(&target).join("release").join("custos")
    })
}

pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub struct Server {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub addr: String,
    /// From spawn to the first 200 on /readyz.
    pub startup: Duration,
}

pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Server {
    pub async fn start(
        bin: &Path,
        admin_token: &str,
        work: &Path,
        data_dir: &Path,
        database_url: Option<&str>,
        http: &reqwest::Client,
    ) -> Result<Self> {
        let log_path = work.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut command = tokio::process::Command::new(bin);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn"])
            .arg("--data-dir")
            .arg(data_dir);
        if let Some(url) = database_url {
            command.arg("--database-url").arg(url);
        }
        for inherited in [
            "CUSTOS_LISTEN",
            "CUSTOS_DATA_DIR",
            "CUSTOS_DATABASE_URL",
            "CUSTOS_CONFIG",
            "CUSTOS_LOG_FORMAT",
            "CUSTOS_LOG_LEVEL",
        ] {
            command.env_remove(inherited);
        }
        command
            .env("CUSTOS_MASTER_KEY", MASTER_KEY_HEX)
            .env("CUSTOS_ADMIN_TOKEN", admin_token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let pid = child.id().context("custos serve has no pid")?;
        let stdout = child.stdout.take().context("custos serve has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
                .await
                .context("custos serve did not start listening within 10 minutes")??;
            let Some(line) = line else {
                let status = child.wait().await?;
                bail!(
                    "custos serve exited ({status}) before listening; its log:\n{}",
                    log_tail(&log_path)
                );
            };
            if let Some(addr) = line.strip_prefix("custos: listening on http://") {
                break addr.trim().to_owned();
            }
        };
        // Keep draining stdout so that the server can never block on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let ready = format!("http://{addr}/readyz");
        loop {
            if let Ok(response) = http.get(&ready).send().await
                && response.status().is_success()
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(600) {
                bail!("custos serve was not ready within 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let startup = started.elapsed();
        Ok(Self {
            child,
            pid,
            addr,
            startup,
        })
    }

    pub fn memory(&self) -> Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .with_context(|| format!("no {name} in /proc/{}/status", self.pid))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }

    /// SIGTERM, as an operator would stop it, then wait for the drain.
    pub async fn stop(mut self) -> Result<()> {
        let signalled = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()?;
        if !signalled.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("custos serve exited with {status}");
                }
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("custos serve did not stop within 60 s of SIGTERM")
            }
        }
    }
}

/// A JSON client of one server's API: keep-alive connections, the bench's preset admin token.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub admin_token: String,
}

impl Api {
    /// One call with a bearer token: the status and the body (`null` if it is not JSON).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(bearer);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A `POST` as the admin that must succeed.
    pub async fn admin(&self, path: &str, body: Value) -> Result<Value> {
        let (status, value) = self
            .send(reqwest::Method::POST, path, &self.admin_token, Some(body))
            .await?;
        ensure!((200..300).contains(&status), "{path}: {status} {value}");
        Ok(value)
    }

    /// A form `POST` to an OAuth endpoint with `client`'s HTTP Basic credentials; must be a 200.
    pub async fn form(&self, path: &str, client: &Agent, params: &[(&str, &str)]) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .basic_auth(&client.id, Some(&client.secret))
            .form(params)
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        ensure!(status == 200, "{path}: {status} {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// An NHI and its static key.
pub struct Agent {
    pub id: String,
    pub secret: String,
}

/// Registers an AI agent of the team `bench` (which must exist) in production with `ceiling`,
/// and issues it a static key.
pub async fn register(api: &Api, name: &str, ceiling: &[&str]) -> Result<Agent> {
    let nhi = api
        .admin(
            "/v1/nhis",
            json!({
                "name": name, "kind": "ai_agent", "platform": "bench", "environment": "production",
                "owner": {"team": "bench"}, "purpose": "benchmark agent", "scope_ceiling": ceiling,
            }),
        )
        .await?;
    let id = nhi["id"].as_str().context("nhi id")?.to_owned();
    let key = api
        .admin(&format!("/v1/nhis/{id}/credentials"), json!({}))
        .await?;
    Ok(Agent {
        id,
        secret: key["secret"].as_str().context("static key")?.to_owned(),
    })
}

pub struct PgSchema {
    pub url: String,
    pub name: String,
}

impl PgSchema {
    pub async fn create(url: &str) -> Result<Self> {
        let name = format!("bench_{}", uuid::Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(url).await.with_context(|| {
            format!(
                "PostgreSQL at {} is unreachable (set CUSTOS_TEST_DATABASE_URL or \
                 CUSTOS_BENCH_BACKENDS=sqlite)",
                custos_store::redact_url(url)
            )
        })?;
        // pg_trgm is database-wide: create it under the lock the store tests use.
        sqlx::query("SELECT pg_advisory_lock(727)")
            .execute(&mut admin)
            .await?;
        let extension = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public")
            .execute(&mut admin)
            .await;
        sqlx::query("SELECT pg_advisory_unlock(727)")
            .execute(&mut admin)
            .await?;
        extension?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut admin)
            .await?;
        Ok(Self {
            url: url.to_owned(),
            name,
        })
    }

    pub fn options(&self) -> Result<PgConnectOptions> {
        Ok(PgConnectOptions::from_str(&self.url)?.options([("search_path", &self.name)]))
    }

    /// The URL for `custos serve --database-url`: the schema in libpq's `options` parameter.
    pub fn server_url(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-c%20search_path%3D{}",
            self.url, self.name
        )
    }

    pub async fn connect(&self) -> Result<PgConnection> {
        Ok(PgConnection::connect_with(&self.options()?).await?)
    }

    pub async fn vacuum_analyze(&self) -> Result<()> {
        let mut conn = self.connect().await?;
        sqlx::query("VACUUM (ANALYZE) nhis, nhi_tags, events, teams, operators")
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    pub async fn size(&self) -> Result<u64> {
        let mut conn = self.connect().await?;
        let bytes: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind = 'r'",
        )
        .bind(&self.name)
        .fetch_one(&mut conn)
        .await?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    pub async fn version(&self) -> Result<String> {
        let mut conn = self.connect().await?;
        Ok(sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut conn)
            .await?)
    }

    pub async fn drop(self) -> Result<()> {
        let mut conn = PgConnection::connect(&self.url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.name
        )))
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}

pub async fn sqlite_version() -> Result<String> {
    let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:").await?;
    Ok(sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&mut conn)
        .await?)
}

pub fn sqlite_size(data_dir: &Path) -> Option<u64> {
    let db = data_dir.join("custos.db");
    let wal = data_dir.join("custos.db-wal");
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    Some(size(&db) + size(&wal)).filter(|n| *n > 0)
}

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank median and p99 in milliseconds: exact, from every sample (a few thousand at
/// most, so a histogram would only add rounding).
pub fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort_unstable();
    (quantile(samples, 0.50), quantile(samples, 0.99))
}

/// The nearest-rank `q` quantile of samples sorted in ascending order, in milliseconds (0 for
/// none); `q = 1.0` is the maximum.
pub fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    millis(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn rate(count: usize, elapsed: Duration) -> u64 {
    (count as f64 / elapsed.as_secs_f64().max(1e-9)).round() as u64
}

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, v)| v.trim())
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    format!(
        "{cores} cores ({cpu}), {:.1} GiB memory",
        mem_kib as f64 / (1024.0 * 1024.0)
    )
}

/// The resource catalogue the decision benches' guardrails are written against.
pub fn guardrail_catalogue() -> serde_json::Value {
    serde_json::json!({"services": [
        {"name": "crm", "operations": ["read", "write", "delete", "export"],
         "resources": [{"pattern": "customers/*", "sensitivity": ["pii"]}, {"pattern": "*", "sensitivity": []}]},
        {"name": "mail", "operations": ["send"]},
        {"name": "s3", "operations": ["get", "put"],
         "resources": [{"pattern": "secrets/*", "sensitivity": ["secret"]}]}
    ]})
}

/// `count` guardrail policies as an admin writes them: four in five pin one agent
/// (`principal ==`) and an action; the others pin a service's action group with a condition on
/// the resource's sensitivity and the agent's environment; two apply to every request.
pub fn guardrail_policies(count: usize, agents: &[String]) -> String {
    let mut text = String::new();
    if count == 0 {
        return text;
    }
    text.push_str("@id(\"no-suspended\")\nforbid(principal, action, resource) when { principal.status != \"active\" };\n");
    text.push_str("@id(\"no-deep-delegation\")\nforbid(principal, action, resource) when { context.depth > 3 };\n");
    for i in 2..count {
        if i % 5 == 0 {
            let (group, tag) = if i % 2 == 0 {
                ("s3:*", "secret")
            } else {
                ("crm:*", "pii")
            };
            text.push_str(&format!(
                "@id(\"g{i}\")\nforbid(principal, action in Custos::Action::\"{group}\", resource) \
                 when {{ resource.sensitivity.contains(\"{tag}\") && principal.environment == \"staging-{i}\" }};\n"
            ));
        } else {
            let agent = &agents[i % agents.len()];
            let action = ["crm:delete", "crm:export", "s3:put", "mail:send"][i % 4];
            text.push_str(&format!(
                "@id(\"a{i}\")\nforbid(principal == Custos::Nhi::\"{agent}\", action == Custos::Action::\"{action}\", resource);\n"
            ));
        }
    }
    text
}
