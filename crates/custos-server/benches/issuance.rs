//! Per-task credentials, the Credentials bar (DESIGN.md §5): "task-credential issuance ≥ 3k/s
//! on SQLite, durable before the response", and revocation: "the next check after `revoke`
//! returns is refused (zero stale allows)".
//!
//! For each store this starts the real `custos` binary (release build), registers agents with
//! static keys and a gateway allowed to introspect, and measures over HTTP on loopback:
//!
//! - **issuance**: `POST /v1/tasks` within each agent's ceiling (`201`, the task and its signed
//!   access token, written durably before the response: on SQLite `synchronous=FULL` with
//!   group commit), from 1 client and from `CUSTOS_BENCH_CLIENTS` concurrent clients side by
//!   side, each for `CUSTOS_BENCH_SECS`: rate, and median and p99 latency;
//! - **revocation to refusal**: a token is issued and seen active by the gateway, its holder
//!   revokes it with `POST /oauth2/revoke`, and the moment that call returns the gateway
//!   introspects it again. Any `active: true` there is a stale allow. Reported: stale allows
//!   and the time from the revocation's response to the refusal (median, p99).
//!
//! ```text
//! export CARGO_TARGET_DIR=/var/tmp/custos-target
//! cargo build --release -p custos-server --bin custos
//! cargo bench -p custos-server --bench issuance
//! ```
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `CUSTOS_BENCH_BACKENDS` | `sqlite,postgres` | which stores, in order |
//! | `CUSTOS_BENCH_SECS` | `10` | seconds of issuance per client count |
//! | `CUSTOS_BENCH_CLIENTS` | `32` | concurrent clients in the second issuance run |
//! | `CUSTOS_BENCH_REVOCATIONS` | `300` | revocation round trips |
//! | `CUSTOS_BIN` | `release/custos` beside this bench | the server binary |
//! | `CUSTOS_TEST_DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/test` | PostgreSQL; a fresh schema per run |

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::json;

mod common;
use common::*;

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
/// Agents share the clients round-robin, so that no single NHI's rows are a hot spot.
const AGENTS: usize = 8;

fn main() -> ExitCode {
    bench_main("issuance", "starts servers", run)
}

struct Settings {
    backends: Vec<Backend>,
    secs: u64,
    clients: usize,
    revocations: usize,
    pg_url: String,
    bin: std::path::PathBuf,
}

fn settings() -> Result<Settings> {
    let non_empty = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let backends = backends_from_env("sqlite,postgres")?;
    Ok(Settings {
        backends,
        secs: env_number("CUSTOS_BENCH_SECS", 10)?.max(1) as u64,
        clients: env_number("CUSTOS_BENCH_CLIENTS", 32)?.max(1),
        revocations: env_number("CUSTOS_BENCH_REVOCATIONS", 300)?.max(1),
        pg_url: non_empty("CUSTOS_TEST_DATABASE_URL").unwrap_or_else(|| DEFAULT_PG_URL.into()),
        bin: non_empty("CUSTOS_BIN").map_or_else(default_bin, Into::into),
    })
}

async fn run() -> Result<()> {
    let settings = settings()?;
    println!("## Task-credential issuance and revocation\n");
    println!(
        "Machine: {}. Load average before: {}.\n",
        machine(),
        loadavg()
    );
    for backend in settings.backends.clone() {
        bench_backend(&settings, backend).await?;
    }
    Ok(())
}

struct Issuance {
    clients: usize,
    issued: usize,
    elapsed: Duration,
    median_ms: f64,
    p99_ms: f64,
}

/// `clients` concurrent loops of `POST /v1/tasks` for `secs` seconds; every answer must be a
/// `201` with a token.
async fn issue(
    api: &Arc<Api>,
    agents: &Arc<Vec<Agent>>,
    clients: usize,
    secs: u64,
) -> Result<Issuance> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut loops = tokio::task::JoinSet::new();
    for client in 0..clients {
        let api = api.clone();
        let agents = agents.clone();
        loops.spawn(async move {
            let agent = &agents[client % agents.len()];
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let (status, task) = api
                    .send(
                        reqwest::Method::POST,
                        "/v1/tasks",
                        &agent.secret,
                        Some(json!({"purpose": "bench", "scope": ["crm:read:customers/42"], "ttl_seconds": 300})),
                    )
                    .await?;
                ensure!(
                    status == 201 && task["credential"]["access_token"].is_string(),
                    "POST /v1/tasks: {status} {task}"
                );
                latencies.push(sent.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(result) = loops.join_next().await {
        latencies.extend(result??);
    }
    let elapsed = started.elapsed();
    let issued = latencies.len();
    let (median_ms, p99_ms) = percentiles(&mut latencies);
    Ok(Issuance {
        clients,
        issued,
        elapsed,
        median_ms,
        p99_ms,
    })
}

struct Revocations {
    rounds: usize,
    stale_allows: usize,
    revoke_median_ms: f64,
    refusal_median_ms: f64,
    refusal_p99_ms: f64,
}

async fn revocations(
    api: &Api,
    agent: &Agent,
    gateway: &Agent,
    rounds: usize,
) -> Result<Revocations> {
    let mut stale_allows = 0;
    let mut revoke_times = Vec::new();
    let mut refusal_times = Vec::new();
    for _ in 0..rounds {
        let token = api
            .form(
                "/oauth2/token",
                agent,
                &[("grant_type", "client_credentials")],
            )
            .await?;
        let token = token["access_token"]
            .as_str()
            .context("access token")?
            .to_owned();
        let seen = api
            .form("/oauth2/introspect", gateway, &[("token", &token)])
            .await?;
        ensure!(
            seen["active"] == true,
            "a fresh token must be active: {seen}"
        );
        let sent = Instant::now();
        api.form("/oauth2/revoke", agent, &[("token", &token)])
            .await?;
        let revoked = Instant::now();
        let seen = api
            .form("/oauth2/introspect", gateway, &[("token", &token)])
            .await?;
        let refused = Instant::now();
        if seen["active"] != false {
            stale_allows += 1;
        }
        revoke_times.push(revoked - sent);
        refusal_times.push(refused - revoked);
    }
    let (revoke_median_ms, _) = percentiles(&mut revoke_times);
    let (refusal_median_ms, refusal_p99_ms) = percentiles(&mut refusal_times);
    Ok(Revocations {
        rounds,
        stale_allows,
        revoke_median_ms,
        refusal_median_ms,
        refusal_p99_ms,
    })
}

async fn bench_backend(settings: &Settings, backend: Backend) -> Result<()> {
    let work = tempfile::tempdir()?;
    let data_dir = work.path().join("data");
    let schema = match backend {
        Backend::Postgres => Some(PgSchema::create(&settings.pg_url).await?),
        Backend::Sqlite => None,
    };
    let database_url = schema.as_ref().map(PgSchema::server_url);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let server = Server::start(
        &settings.bin,
        ADMIN_TOKEN,
        work.path(),
        &data_dir,
        database_url.as_deref(),
        &http,
    )
    .await?;
    let api = Arc::new(Api {
        http,
        base: format!("http://{}", server.addr),
        admin_token: ADMIN_TOKEN.to_owned(),
    });
    api.admin(
        "/v1/teams",
        json!({"name": "bench", "contact": "bench@example.com"}),
    )
    .await?;
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        agents.push(register(&api, &format!("agent-{i}"), &["crm:read:customers/*"]).await?);
    }
    let agents = Arc::new(agents);
    let gateway = register(&api, "gateway", &["custos:introspect"]).await?;
    // A short warm-up: connections, caches, the first WAL pages.
    issue(&api, &agents, 4, 1).await?;
    let load_before = loadavg();
    let single = issue(&api, &agents, 1, settings.secs).await?;
    let many = issue(&api, &agents, settings.clients, settings.secs).await?;
    let revoked = revocations(&api, &agents[0], &gateway, settings.revocations).await?;
    let load_after = loadavg();
    server.stop().await?;
    if let Some(schema) = schema {
        schema.drop().await?;
    }

    println!("### {}\n", backend.title());
    println!(
        "| `POST /v1/tasks` (201, durable before the response) | issued | rate | median | p99 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for run in [&single, &many] {
        println!(
            "| {} client{} for {:.1} s | {} | **{}/s** | {:.2} ms | {:.2} ms |",
            run.clients,
            if run.clients == 1 { "" } else { "s" },
            run.elapsed.as_secs_f64(),
            thousands(run.issued as u64),
            thousands(rate(run.issued, run.elapsed)),
            run.median_ms,
            run.p99_ms,
        );
    }
    println!(
        "\nConcurrency gain (group commit and parallel signing): {:.2}× the single-client rate.",
        rate(many.issued, many.elapsed) as f64 / rate(single.issued, single.elapsed).max(1) as f64
    );
    println!(
        "\nRevocation: {} rounds, **{} stale allows**; `/oauth2/revoke` median {:.2} ms; from its \
         response to the refusal seen by the gateway: median {:.2} ms, p99 {:.2} ms.",
        revoked.rounds,
        revoked.stale_allows,
        revoked.revoke_median_ms,
        revoked.refusal_median_ms,
        revoked.refusal_p99_ms,
    );
    println!("\nLoad average before → after: {load_before} → {load_after}.\n");
    ensure!(
        revoked.stale_allows == 0,
        "a revoked token was still allowed"
    );
    Ok(())
}
