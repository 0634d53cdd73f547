//! Inventory at scale, the Foundation bar: "1M NHIs in one store; start-up ≤ 60 s; a filtered
//! inventory page ≤ 50 ms" (DESIGN.md §5).
//!
//! For each backend this fills a fresh store with realistic NHIs through `Store::create_nhis`,
//! exactly as the server writes them (each with its `nhi.registered` event, in the same
//! transaction), then starts the real `custos` binary on that store and measures:
//!
//! - the bulk insert rate (1,000 NHIs per `create_nhis` call, one transaction each) and the
//!   single-NHI rate (one NHI per call, one durable transaction each);
//! - start-up: from spawning `custos serve` to the first 200 on `/readyz`;
//! - `GET /v1/nhis` pages (`limit=50`) for a dozen realistic filters over one keep-alive HTTP
//!   connection: latency of the first request, then median and p99 of the timed requests;
//! - the server's resident memory (VmRSS, VmHWM) after those requests;
//! - the posture report (`GET /v1/reports/posture`, JSON) over the whole inventory, after
//!   giving every `CUSTOS_BENCH_KEY_EVERY`th NHI a static key (ages spread over 120 days, so
//!   some are past the rotation age), and the risk report's top 20 (`GET /v1/reports/risk`).
//!
//! It prints one markdown table per backend, ready for `docs/benchmarks.md`.
//!
//! The server runs as a separate process, so build it first:
//!
//! ```text
//! export CARGO_TARGET_DIR=/var/tmp/custos-target
//! cargo build --release -p custos-server --bin custos
//! cargo bench -p custos-server --bench inventory_scale
//! CUSTOS_BENCH_NHIS=2000 cargo bench -p custos-server --bench inventory_scale   # a smoke run
//! ```
//!
//! Environment:
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `CUSTOS_BENCH_NHIS` | `1_000_000` | NHIs in the store (`_` separators allowed) |
//! | `CUSTOS_BENCH_BACKENDS` | `sqlite,postgres` | which stores to measure, in order |
//! | `CUSTOS_TEST_DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/test` | PostgreSQL server; each run gets a fresh schema, dropped at the end |
//! | `CUSTOS_BIN` | `release/custos` in this bench's target directory | the server binary |
//! | `CUSTOS_BENCH_REQUESTS` | `200` | timed requests per filter |
//! | `CUSTOS_BENCH_BUDGET_SECS` | `60` | time limit per filter; fewer requests are timed if it runs out |
//! | `CUSTOS_BENCH_SINGLE` | `2000` | single-NHI `create_nhis` calls |
//! | `CUSTOS_BENCH_DIR` | the system temp dir | where the SQLite data directory is made |
//! | `CUSTOS_BENCH_KEY_EVERY` | `50` | one NHI in this many gets a static key before the reports |
//! | `CUSTOS_BENCH_KEEP` | unset | `1` keeps the filled SQLite file and PostgreSQL schema (for EXPLAIN) |
//! | `CUSTOS_ADMIN_TOKEN` | a fresh token | the admin token the server is bootstrapped with |
//!
//! `cargo test --benches` runs bench targets without `--bench`; this one then does nothing.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use custos_core::token::SecretKind;
use custos_core::{
    Actor, Credential, CredentialKind, DomainEvent, EventKind, Nhi, NhiKind, NhiStatus, Owner,
    Scope, Team, Timestamp,
};
use custos_server::secrets::{self, Keys};
use custos_server::service::{Clock, SystemClock, encode_cursor, new_id};
use custos_store::{PostgresStore, SqliteStore, Store};
use indicatif::{ProgressBar, ProgressStyle};

mod common;
use common::*;

const TEAMS: usize = 200;
const BATCH: usize = 1_000;
const PAGE_LIMIT: &str = "50";
const BAR_MS: f64 = 50.0;
const WARMUP_REQUESTS: usize = 2;
const DAY_MS: i64 = 24 * 3600 * 1000;

fn main() -> ExitCode {
    bench_main("inventory_scale", "starts servers and fills stores", run)
}

// ---- configuration ----

struct Config {
    nhis: usize,
    backends: Vec<Backend>,
    pg_url: String,
    bin: PathBuf,
    requests: usize,
    budget: Duration,
    single: usize,
    key_every: usize,
    dir: PathBuf,
    keep: bool,
    admin_token: String,
}

impl Config {
    fn from_env() -> Result<Self> {
        let backends = std::env::var("CUSTOS_BENCH_BACKENDS")
            .unwrap_or_else(|_| "sqlite,postgres".to_owned())
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s {
                "sqlite" => Ok(Backend::Sqlite),
                "postgres" | "postgresql" => Ok(Backend::Postgres),
                other => {
                    bail!("CUSTOS_BENCH_BACKENDS: unknown backend {other:?} (sqlite, postgres)")
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let nhis = env_number("CUSTOS_BENCH_NHIS", 1_000_000)?;
        if nhis < BATCH {
            bail!("CUSTOS_BENCH_NHIS must be at least {BATCH}");
        }
        let non_empty = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Ok(Self {
            nhis,
            backends,
            pg_url: non_empty("CUSTOS_TEST_DATABASE_URL").unwrap_or_else(|| DEFAULT_PG_URL.into()),
            bin: non_empty("CUSTOS_BIN").map_or_else(default_bin, PathBuf::from),
            requests: env_number("CUSTOS_BENCH_REQUESTS", 200)?.max(1),
            budget: Duration::from_secs(env_number("CUSTOS_BENCH_BUDGET_SECS", 60)? as u64),
            single: env_number("CUSTOS_BENCH_SINGLE", 2_000)?,
            key_every: env_number("CUSTOS_BENCH_KEY_EVERY", 50)?.max(1),
            dir: non_empty("CUSTOS_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from),
            keep: non_empty("CUSTOS_BENCH_KEEP").is_some_and(|v| v != "0"),
            admin_token: non_empty("CUSTOS_ADMIN_TOKEN")
                .unwrap_or_else(|| secrets::mint(SecretKind::Operator)),
        })
    }
}

// ---- the run ----

async fn run() -> Result<()> {
    let cfg = Config::from_env()?;
    if !cfg.bin.is_file() {
        bail!(
            "no server binary at {} — build it first with \
             `cargo build --release -p custos-server --bin custos` (same CARGO_TARGET_DIR), \
             or point CUSTOS_BIN at one",
            cfg.bin.display()
        );
    }
    let built = std::fs::metadata(&cfg.bin)?
        .modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or_else(String::new, |age| {
            format!(" (built {} min ago)", age.as_secs() / 60)
        });
    eprintln!(
        "inventory_scale: {} NHIs on {:?}, server {}{built}",
        thousands(cfg.nhis as u64),
        cfg.backends,
        cfg.bin.display()
    );
    println!("Machine: {}", machine());
    println!(
        "Command: `CUSTOS_BENCH_NHIS={} CUSTOS_BENCH_BACKENDS={} cargo bench -p custos-server --bench inventory_scale`\n",
        cfg.nhis,
        cfg.backends
            .iter()
            .map(|b| match b {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgres",
            })
            .collect::<Vec<_>>()
            .join(",")
    );
    for backend in cfg.backends.clone() {
        let report = bench_backend(&cfg, backend)
            .await
            .with_context(|| format!("{} run failed", backend.title()))?;
        println!("{}", report.markdown(&cfg));
    }
    Ok(())
}

async fn bench_backend(cfg: &Config, backend: Backend) -> Result<Report> {
    std::fs::create_dir_all(&cfg.dir)?;
    let work = tempfile::Builder::new()
        .prefix("custos-bench-")
        .tempdir_in(&cfg.dir)
        .with_context(|| format!("cannot make a directory in {}", cfg.dir.display()))?;
    let schema = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(PgSchema::create(&cfg.pg_url).await?),
    };
    let result = measure(cfg, backend, work.path(), schema.as_ref()).await;
    if cfg.keep {
        let path = work.keep();
        eprintln!("kept the data directory {}", path.display());
        if let Some(schema) = &schema {
            eprintln!("kept the PostgreSQL schema {}", schema.name);
        }
    } else if let Some(schema) = schema
        && let Err(e) = schema.drop().await
    {
        eprintln!("could not drop the benchmark schema: {e:#}");
    }
    result
}

async fn measure(
    cfg: &Config,
    backend: Backend,
    work: &Path,
    schema: Option<&PgSchema>,
) -> Result<Report> {
    let data_dir = work.join("data");
    let database_url = schema.map(PgSchema::server_url);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .pool_max_idle_per_host(1)
        .build()?;

    // 1. The server makes the store: migrations, the master-key check, the first admin.
    eprintln!("[{}] creating the store with custos serve", backend.title());
    let first = Server::start(
        &cfg.bin,
        &cfg.admin_token,
        work,
        &data_dir,
        database_url.as_deref(),
        &http,
    )
    .await?;
    let first_start = first.startup;
    first.stop().await?;

    // 2. Open the same store in process and fill it.
    let store: Arc<dyn Store> = match schema {
        None => Arc::new(SqliteStore::open(&data_dir.join("custos.db")).await?),
        Some(schema) => Arc::new(PostgresStore::connect_with(schema.options()?).await?),
    };
    let keys = Keys::from_master(
        &hex::decode(MASTER_KEY_HEX)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("the master key is not 32 bytes"))?,
    );
    let stored_check = store.meta_get("master_key_check").await?;
    if stored_check.as_deref() != Some(keys.check_value()) {
        bail!("the store's master_key_check does not match the benchmark's master key");
    }
    let (admin, _) = store
        .find_operator_by_token(&keys.secret_hash(&cfg.admin_token))
        .await?
        .context("the server did not bootstrap the admin with CUSTOS_ADMIN_TOKEN")?;

    let mut generator = Generator::new(admin.id.clone(), cfg.nhis);
    for team in generator.make_teams() {
        let event = DomainEvent::new(
            new_id(),
            EventKind::TeamCreated,
            Actor::Operator(admin.id.clone()),
            format!("team:{}", team.id),
            team.created_at,
        )
        .with("name", &team.name);
        store.create_team(&team, &event).await?;
    }

    let fill = fill(cfg, backend, store.as_ref(), &mut generator).await?;
    let single = single_inserts(cfg, backend, store.as_ref(), &mut generator).await?;
    let keys = static_keys(backend, store.as_ref(), &mut generator, &fill.keyed).await?;
    drop(store);

    let mut maintenance = None;
    if let Some(schema) = schema {
        // Autovacuum would have vacuumed and analysed these insert-only tables by now; doing it
        // here makes the plans (and so the figures) independent of its timing.
        let started = Instant::now();
        schema.vacuum_analyze().await?;
        maintenance = Some(started.elapsed());
    }
    let store_bytes = match schema {
        None => sqlite_size(&data_dir),
        Some(schema) => schema.size().await.ok(),
    };
    let version = match schema {
        None => sqlite_version().await?,
        Some(schema) => schema.version().await?,
    };
    // Let the in-process pools finish closing before the server opens the store.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 3. Start-up on the full store, then the pages, then memory.
    eprintln!(
        "[{}] starting custos serve on the full store",
        backend.title()
    );
    let server = Server::start(
        &cfg.bin,
        &cfg.admin_token,
        work,
        &data_dir,
        database_url.as_deref(),
        &http,
    )
    .await?;
    let base = format!("http://{}", server.addr);
    let load_before = loadavg();
    let mut probes = Vec::new();
    for probe in generator.probes(cfg.nhis) {
        let result = run_probe(cfg, &http, &base, &probe).await?;
        eprintln!(
            "[{}] {:<44} rows {:>3}{}  first {:>8.2} ms  median {:>8.2} ms  p99 {:>8.2} ms  (n={})",
            backend.title(),
            probe.label,
            result.rows,
            if result.more { "+" } else { " " },
            result.first_ms,
            result.median_ms,
            result.p99_ms,
            result.n
        );
        probes.push(result);
    }
    let load = format!("{load_before} → {}", loadavg());
    let memory = server.memory()?;
    let mut posture = reports(cfg, backend, &base, keys).await?;
    posture.memory_after = Some(server.memory()?);
    let startup = server.startup;
    server.stop().await?;

    Ok(Report {
        backend,
        version,
        nhis: cfg.nhis,
        fill,
        single,
        maintenance,
        first_start,
        startup,
        memory,
        store_bytes,
        load,
        probes,
        posture,
    })
}

// ---- filling ----

struct FillResult {
    elapsed: Duration,
    /// The NHIs that get a static key before the reports.
    keyed: Vec<Nhi>,
}

async fn fill(
    cfg: &Config,
    backend: Backend,
    store: &dyn Store,
    generator: &mut Generator,
) -> Result<FillResult> {
    let total = cfg.nhis as u64;
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total);
        bar.set_style(ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} {per_sec} eta {eta}",
        )?);
        bar.set_prefix(format!("filling {}", backend.title()));
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut next_report = cfg.nhis / 10;
    let mut serial = 0;
    let mut keyed = Vec::new();
    while serial < cfg.nhis {
        let end = (serial + BATCH).min(cfg.nhis);
        let batch: Vec<_> = (serial..end).map(|i| generator.nhi(i)).collect();
        keyed.extend(
            batch
                .iter()
                .enumerate()
                .filter(|(i, (nhi, _))| {
                    (serial + i).is_multiple_of(cfg.key_every) && nhi.status == NhiStatus::Active
                })
                .map(|(_, (nhi, _))| nhi.clone()),
        );
        store
            .create_nhis(&batch)
            .await
            .with_context(|| format!("create_nhis of NHIs {serial}..{end}"))?;
        bar.inc((end - serial) as u64);
        serial = end;
        if bar.is_hidden() && serial >= next_report {
            eprintln!(
                "[{}] filled {} of {} NHIs in {:.1} s",
                backend.title(),
                thousands(serial as u64),
                thousands(total),
                started.elapsed().as_secs_f64()
            );
            next_report += cfg.nhis / 10;
        }
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    eprintln!(
        "[{}] bulk insert: {} NHIs in {:.1} s = {} NHIs/s",
        backend.title(),
        thousands(total),
        elapsed.as_secs_f64(),
        thousands(rate(cfg.nhis, elapsed))
    );
    Ok(FillResult { elapsed, keyed })
}

/// A static key for each of `nhis`, one durable `create_credential` each (as the API issues
/// them), made between 0 and 120 days ago and living 90 days: with the default rotation age
/// of 60 days, about a third are overdue and the rest long-lived (NHI7), and every one is a
/// static secret (NHI4, and NHI6 in production). Returns how many were made.
async fn static_keys(
    backend: Backend,
    store: &dyn Store,
    generator: &mut Generator,
    nhis: &[Nhi],
) -> Result<usize> {
    let started = Instant::now();
    let now = SystemClock.now();
    for nhi in nhis {
        let made = now.plus_seconds(-(generator.rng.below(120 * 86_400) as i64));
        let hash = generator.hex(64);
        let credential = Credential {
            id: new_id(),
            nhi_id: nhi.id.clone(),
            kind: CredentialKind::StaticKey,
            secret_hash: hex::decode(&hash)?,
            fingerprint: hash[..16].to_owned(),
            created_at: made,
            expires_at: Some(made.plus_seconds(90 * 86_400)),
            revoked_at: None,
            created_by: format!("operator:{}", generator.admin),
            scope: None,
            task_id: None,
            parent_id: None,
            depth: 0,
            public_jwk: None,
            last_used_at: None,
        };
        let event = DomainEvent::new(
            new_id(),
            EventKind::CredentialIssued,
            Actor::System,
            format!("credential:{}", credential.id),
            now,
        );
        store.create_credential(&credential, &event).await?;
    }
    eprintln!(
        "[{}] static keys: {} in {:.1} s",
        backend.title(),
        thousands(nhis.len() as u64),
        started.elapsed().as_secs_f64()
    );
    Ok(nhis.len())
}

struct PostureResult {
    keys: usize,
    elapsed: Duration,
    bytes: usize,
    nhis: u64,
    affected: u64,
    counts: Vec<(String, String, u64)>,
    risk_elapsed: Duration,
    csv_elapsed: Duration,
    csv_bytes: u64,
    csv_rows: u64,
    /// The server's memory after the reports: its peak shows what the CSV's streaming held.
    memory_after: Option<Memory>,
}

/// The posture report over the whole inventory, once, then the risk report's top 20.
async fn reports(cfg: &Config, backend: Backend, base: &str, keys: usize) -> Result<PostureResult> {
    let slow = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()?;
    let url = reqwest::Url::parse(&format!("{base}/v1/reports/posture"))?;
    let (elapsed, body) = get_page(&slow, &url, &cfg.admin_token).await?;
    let report: serde_json::Value = serde_json::from_slice(&body)?;
    let counts = report["categories"]
        .as_array()
        .context("the posture report has no categories")?
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or_default().to_owned(),
                c["title"].as_str().unwrap_or_default().to_owned(),
                c["count"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let url = reqwest::Url::parse(&format!("{base}/v1/reports/risk?limit=20"))?;
    let (risk_elapsed, _) = get_page(&slow, &url, &cfg.admin_token).await?;
    // The CSV lists every hit: read as it streams, counted, never held.
    let started = Instant::now();
    let mut response = slow
        .get(format!("{base}/v1/reports/posture?format=csv"))
        .bearer_auth(&cfg.admin_token)
        .send()
        .await?
        .error_for_status()?;
    let (mut csv_bytes, mut csv_rows) = (0u64, 0u64);
    while let Some(chunk) = response.chunk().await? {
        csv_bytes += chunk.len() as u64;
        csv_rows += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    let csv_elapsed = started.elapsed();
    eprintln!(
        "[{}] posture report: {:.1} s ({} bytes); risk top 20: {:.1} s; csv: {:.1} s ({} rows, {} bytes)",
        backend.title(),
        elapsed.as_secs_f64(),
        body.len(),
        risk_elapsed.as_secs_f64(),
        csv_elapsed.as_secs_f64(),
        csv_rows,
        csv_bytes
    );
    Ok(PostureResult {
        keys,
        elapsed,
        bytes: body.len(),
        nhis: report["nhis"].as_u64().unwrap_or_default(),
        affected: report["affected"].as_u64().unwrap_or_default(),
        counts,
        risk_elapsed,
        csv_elapsed,
        csv_bytes,
        csv_rows: csv_rows.saturating_sub(1),
        memory_after: None,
    })
}

struct SingleResult {
    calls: usize,
    elapsed: Duration,
    median_ms: f64,
    p99_ms: f64,
}

/// The path of `POST /v1/nhis`: one NHI, one transaction, committed durably before returning.
async fn single_inserts(
    cfg: &Config,
    backend: Backend,
    store: &dyn Store,
    generator: &mut Generator,
) -> Result<SingleResult> {
    let mut latencies = Vec::with_capacity(cfg.single);
    let started = Instant::now();
    for i in 0..cfg.single {
        let one = [generator.nhi(cfg.nhis + i)];
        let t = Instant::now();
        store.create_nhis(&one).await?;
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    let (median_ms, p99_ms) = percentiles(&mut latencies);
    eprintln!(
        "[{}] single insert: {} calls in {:.2} s = {} NHIs/s (median {median_ms:.2} ms, p99 {p99_ms:.2} ms)",
        backend.title(),
        cfg.single,
        elapsed.as_secs_f64(),
        thousands(rate(cfg.single, elapsed))
    );
    Ok(SingleResult {
        calls: cfg.single,
        elapsed,
        median_ms,
        p99_ms,
    })
}

// ---- realistic data ----

/// splitmix64: a fixed seed gives the same inventory on every run and backend.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn weighted<T: Copy>(&mut self, items: &[(T, f64)]) -> T {
        let total: f64 = items.iter().map(|(_, w)| w).sum();
        let mut x = self.unit() * total;
        for (item, weight) in items {
            if x < *weight {
                return *item;
            }
            x -= weight;
        }
        items[items.len() - 1].0
    }

    /// Earlier entries are more common: weight 1/(1+i).
    fn skewed<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let weighted: Vec<_> = items
            .iter()
            .enumerate()
            .map(|(i, s)| (*s, 1.0 / (1.0 + i as f64)))
            .collect();
        self.weighted(&weighted)
    }
}

const DEPARTMENTS: [&str; 20] = [
    "payments",
    "billing",
    "identity",
    "platform",
    "data",
    "ml",
    "search",
    "growth",
    "mobile",
    "web",
    "security",
    "infra",
    "sre",
    "finance",
    "people",
    "sales",
    "support",
    "marketing",
    "logistics",
    "analytics",
];
const SQUADS: [&str; 10] = [
    "core",
    "api",
    "ops",
    "ingest",
    "edge",
    "tools",
    "risk",
    "reporting",
    "automation",
    "integrations",
];
const APPS: [&str; 60] = [
    "ledger",
    "invoice",
    "checkout",
    "refund",
    "payroll",
    "crm",
    "catalog",
    "inventory",
    "shipping",
    "recommender",
    "chatbot",
    "fraud",
    "kyc",
    "onboarding",
    "notifier",
    "scheduler",
    "etl",
    "warehouse",
    "reporting",
    "backup",
    "deploy",
    "monitor",
    "gateway",
    "auth",
    "sso",
    "search",
    "indexer",
    "crawler",
    "summarizer",
    "translator",
    "triage",
    "helpdesk",
    "forecast",
    "pricing",
    "quote",
    "contract",
    "audit",
    "compliance",
    "vault",
    "rotation",
    "scanner",
    "builder",
    "release",
    "metrics",
    "logging",
    "tracing",
    "billing",
    "subscription",
    "usage",
    "quota",
    "cdn",
    "dns",
    "mailer",
    "sms",
    "webhook",
    "sync",
    "importer",
    "exporter",
    "archive",
    "cleanup",
];

struct KindSpec {
    kind: NhiKind,
    weight: f64,
    /// The middle word of the name: `billing-agent-123456`.
    word: &'static str,
    platforms: &'static [&'static str],
    /// Share with an expiry date.
    expiring: f64,
    does: &'static str,
}

const KINDS: [KindSpec; 6] = [
    KindSpec {
        kind: NhiKind::ServiceAccount,
        weight: 0.35,
        word: "sa",
        platforms: &[
            "aws",
            "gcp",
            "azure",
            "kubernetes",
            "snowflake",
            "salesforce",
        ],
        expiring: 0.15,
        does: "Reads and writes",
    },
    KindSpec {
        kind: NhiKind::Workload,
        weight: 0.22,
        word: "svc",
        platforms: &["kubernetes", "aws", "gcp", "azure", "nomad"],
        expiring: 0.10,
        does: "Serves",
    },
    KindSpec {
        kind: NhiKind::ApiKey,
        weight: 0.15,
        word: "key",
        platforms: &[
            "stripe", "github", "datadog", "twilio", "openai", "sendgrid",
        ],
        expiring: 0.60,
        does: "Calls a vendor API for",
    },
    KindSpec {
        kind: NhiKind::AiAgent,
        weight: 0.12,
        word: "agent",
        platforms: &[
            "openai",
            "anthropic",
            "bedrock",
            "vertex",
            "azure-openai",
            "langgraph",
        ],
        expiring: 0.40,
        does: "Answers questions about",
    },
    KindSpec {
        kind: NhiKind::Automation,
        weight: 0.10,
        word: "bot",
        platforms: &["github", "gitlab", "jenkins", "airflow", "zapier"],
        expiring: 0.20,
        does: "Automates",
    },
    KindSpec {
        kind: NhiKind::OauthApp,
        weight: 0.06,
        word: "app",
        platforms: &["okta", "entra", "google-workspace", "slack", "salesforce"],
        expiring: 0.50,
        does: "Integrates",
    },
];

struct TeamInfo {
    id: String,
    name: String,
    apps: [&'static str; 3],
}

struct Generator {
    rng: Rng,
    admin: String,
    teams: Vec<TeamInfo>,
    /// Cumulative team weights: team `i` has weight 1/(1 + i/20), so sizes differ ~11×.
    team_cdf: Vec<f64>,
    now: Timestamp,
    /// The NHI in the middle of the id range: the deep page starts after it.
    middle_serial: usize,
    middle_id: Option<String>,
}

impl Generator {
    fn new(admin: String, nhis: usize) -> Self {
        Self {
            rng: Rng(0x00C0_5705_BE4C_0001),
            admin,
            teams: Vec::new(),
            team_cdf: Vec::new(),
            now: SystemClock.now(),
            middle_serial: nhis / 2,
            middle_id: None,
        }
    }

    fn make_teams(&mut self) -> Vec<Team> {
        let now = SystemClock.now();
        let mut total = 0.0;
        let mut teams = Vec::with_capacity(TEAMS);
        for i in 0..TEAMS {
            let name = format!("{}-{}", DEPARTMENTS[i % 20], SQUADS[i / 20]);
            let apps = [
                APPS[self.rng.below(APPS.len())],
                APPS[self.rng.below(APPS.len())],
                APPS[self.rng.below(APPS.len())],
            ];
            let team = Team::new(new_id(), name.clone(), format!("{name}@example.com"), now)
                .expect("generated team names are valid");
            total += 1.0 / (1.0 + i as f64 / 20.0);
            self.team_cdf.push(total);
            self.teams.push(TeamInfo {
                id: team.id.clone(),
                name,
                apps,
            });
            teams.push(team);
        }
        teams
    }

    fn pick_team(&mut self) -> usize {
        let x = self.rng.unit() * self.team_cdf[self.team_cdf.len() - 1];
        self.team_cdf.partition_point(|c| *c <= x).min(TEAMS - 1)
    }

    fn hex(&mut self, digits: usize) -> String {
        let mut text = String::with_capacity(digits);
        while text.len() < digits {
            text.push_str(&format!("{:016x}", self.rng.next()));
        }
        text.truncate(digits);
        text
    }

    /// NHI number `serial`, with the event the server would write for it.
    fn nhi(&mut self, serial: usize) -> (Nhi, DomainEvent) {
        if serial.is_multiple_of(BATCH) {
            self.now = SystemClock.now();
        }
        let now = self.now;
        let team_index = self.pick_team();
        let app = self.teams[team_index].apps[self.rng.below(3)];
        let team_id = self.teams[team_index].id.clone();
        let team_name = self.teams[team_index].name.clone();
        let spec = &KINDS[self.rng.weighted(&[
            (0usize, KINDS[0].weight),
            (1, KINDS[1].weight),
            (2, KINDS[2].weight),
            (3, KINDS[3].weight),
            (4, KINDS[4].weight),
            (5, KINDS[5].weight),
        ])];
        let platform = self.rng.skewed(spec.platforms).to_owned();
        let environment = self.rng.weighted(&[
            ("production", 0.40),
            ("staging", 0.25),
            ("development", 0.25),
            ("sandbox", 0.10),
        ]);
        let status = self.rng.weighted(&[
            (NhiStatus::Active, 0.90),
            (NhiStatus::Suspended, 0.07),
            (NhiStatus::Decommissioned, 0.03),
        ]);
        let name = format!("{app}-{}-{serial:06}", spec.word);

        let mut tags = BTreeMap::new();
        if let Some(tier) = self.rng.weighted(&[
            (Some("gold"), 0.20),
            (Some("silver"), 0.35),
            (Some("bronze"), 0.30),
            (None, 0.15),
        ]) {
            tags.insert("tier".to_owned(), tier.to_owned());
        }
        if self.rng.chance(0.60) {
            let center = 1000 + self.rng.below(100);
            tags.insert("cost-center".to_owned(), format!("cc-{center}"));
        }
        if self.rng.chance(0.70) {
            let tool = self.rng.skewed(&["terraform", "helm", "manual", "pulumi"]);
            tags.insert("managed-by".to_owned(), tool.to_owned());
        }
        if self.rng.chance(0.50) {
            let class = self
                .rng
                .skewed(&["internal", "confidential", "public", "restricted"]);
            tags.insert("data-class".to_owned(), class.to_owned());
        }
        if self.rng.chance(0.03) {
            let regime = self.rng.skewed(&["sox", "pci", "hipaa"]);
            tags.insert("compliance".to_owned(), regime.to_owned());
        }

        let mut external_ids = BTreeMap::new();
        match platform.as_str() {
            "aws" | "bedrock" => {
                let account = 100_000_000_000u64 + team_index as u64 * 7_919;
                external_ids.insert(
                    "aws_role_arn".to_owned(),
                    format!("arn:aws:iam::{account:012}:role/{name}"),
                );
            }
            "gcp" | "vertex" => {
                external_ids.insert(
                    "gcp_service_account".to_owned(),
                    format!("{name}@{team_name}-prod.iam.gserviceaccount.com"),
                );
            }
            "kubernetes" => {
                external_ids.insert(
                    "k8s_service_account".to_owned(),
                    format!("system:serviceaccount:{team_name}:{name}"),
                );
            }
            "azure" | "entra" | "azure-openai" => {
                let id = self.hex(32);
                external_ids.insert(
                    "azure_object_id".to_owned(),
                    format!(
                        "{}-{}-{}-{}-{}",
                        &id[..8],
                        &id[8..12],
                        &id[12..16],
                        &id[16..20],
                        &id[20..]
                    ),
                );
            }
            "github" | "gitlab" => {
                let app_id = 100_000 + self.rng.below(900_000);
                external_ids.insert("app_id".to_owned(), app_id.to_string());
            }
            _ => {
                let id = self.hex(20);
                external_ids.insert("vendor_id".to_owned(), id);
            }
        }

        let mut grants = vec![format!("{app}:read")];
        if self.rng.chance(0.5) {
            grants.push(format!("{app}:write:{environment}/*"));
        }
        if spec.kind == NhiKind::AiAgent {
            grants.push("mail:send".to_owned());
            grants.push(format!("crm:read:customers/{team_name}/*"));
        }
        let scope_ceiling = Scope::parse(&grants).expect("generated grants are valid");

        let expires_at = self
            .rng
            .chance(spec.expiring)
            .then(|| now.plus_seconds(86_400 + self.rng.below(729 * 86_400) as i64));
        let last_used_at = if self.rng.chance(0.75) {
            let ago = self.rng.below(180 * DAY_MS as usize) as i64;
            Timestamp::from_unix_millis(now.unix_millis() - ago)
        } else {
            None
        };

        let nhi = Nhi {
            id: new_id(),
            name,
            kind: spec.kind,
            platform,
            environment: environment.to_owned(),
            status,
            owner: Owner {
                team_id,
                application: Some(app.to_owned()),
                contact: self
                    .rng
                    .chance(0.5)
                    .then(|| format!("{app}-oncall@example.com")),
            },
            purpose: format!(
                "{} {app} data for the {team_name} team ({environment})",
                spec.does
            ),
            scope_ceiling,
            tags,
            external_ids,
            created_at: now,
            updated_at: now,
            expires_at,
            last_used_at,
            version: if status == NhiStatus::Active { 1 } else { 2 },
        };
        if serial == self.middle_serial {
            self.middle_id = Some(nhi.id.clone());
        }
        let event = DomainEvent::new(
            new_id(),
            EventKind::NhiRegistered,
            Actor::Operator(self.admin.clone()),
            format!("nhi:{}", nhi.id),
            now,
        )
        .with("name", &nhi.name)
        .with("kind", nhi.kind.as_str())
        .with("platform", &nhi.platform)
        .with("owner_team", &nhi.owner.team_id)
        .with("scope_ceiling", nhi.scope_ceiling.to_strings().join(" "));
        (nhi, event)
    }
}

// ---- the pages ----

struct Probe {
    label: &'static str,
    params: Vec<(&'static str, String)>,
}

impl Generator {
    /// The filters an operator uses, with values that exist in the generated inventory.
    fn probes(&self, nhis: usize) -> Vec<Probe> {
        let now = SystemClock.now();
        let team = &self.teams[10];
        let rare_name = format!("{:06}", nhis * 37 / 100 + 123);
        let probe = |label, params: &[(&'static str, &str)]| Probe {
            label,
            params: params.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        };
        let middle = encode_cursor(self.middle_id.as_deref().unwrap_or(""));
        let soon = now.plus_seconds(30 * 86_400).to_rfc3339();
        let idle = now.plus_seconds(-90 * 86_400).to_rfc3339();
        vec![
            probe("unfiltered, first page", &[]),
            probe(
                "unfiltered, deep page (cursor mid-way)",
                &[("cursor", &middle)],
            ),
            probe("team (one of the larger teams)", &[("team", &team.name)]),
            probe("status=suspended", &[("status", "suspended")]),
            probe(
                "kind + environment",
                &[("kind", "ai_agent"), ("environment", "production")],
            ),
            probe("tag key:value, common (20 %)", &[("tag", "tier:gold")]),
            probe(
                "tag key:value, rare (0.6 %)",
                &[("tag", "cost-center:cc-1042")],
            ),
            probe(
                "expires_before (next 30 days)",
                &[("expires_before", &soon)],
            ),
            probe("unused_since (90 days ago)", &[("unused_since", &idle)]),
            probe("q, common term (12 %)", &[("q", "agent")]),
            probe("q, rare term (one NHI)", &[("q", &rare_name)]),
            // The team owns the app named in `q`, so the two filters are correlated, as they
            // are in a real inventory (a reviewer searching for one of their team's apps).
            probe("team + q", &[("team", &team.name), ("q", team.apps[0])]),
            probe(
                "team + kind + q",
                &[
                    ("team", &team.name),
                    ("kind", "service_account"),
                    ("q", team.apps[0]),
                ],
            ),
        ]
    }
}

struct ProbeResult {
    label: &'static str,
    query: String,
    rows: usize,
    more: bool,
    first_ms: f64,
    median_ms: f64,
    p99_ms: f64,
    n: usize,
}

async fn get_page(
    http: &reqwest::Client,
    url: &reqwest::Url,
    token: &str,
) -> Result<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let response = http.get(url.clone()).bearer_auth(token).send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    let elapsed = started.elapsed();
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok((elapsed, body.to_vec()))
}

async fn run_probe(
    cfg: &Config,
    http: &reqwest::Client,
    base: &str,
    probe: &Probe,
) -> Result<ProbeResult> {
    let mut pairs: Vec<(&str, &str)> = probe.params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pairs.push(("limit", PAGE_LIMIT));
    let url = reqwest::Url::parse_with_params(&format!("{base}/v1/nhis"), &pairs)?;
    let (first, body) = get_page(http, &url, &cfg.admin_token).await?;
    let page: serde_json::Value = serde_json::from_slice(&body)?;
    let rows = page["items"].as_array().map_or(0, Vec::len);
    let more = !page["next_cursor"].is_null();
    for _ in 0..WARMUP_REQUESTS {
        get_page(http, &url, &cfg.admin_token).await?;
    }
    let mut samples = Vec::with_capacity(cfg.requests);
    let started = Instant::now();
    while samples.len() < cfg.requests && (samples.is_empty() || started.elapsed() < cfg.budget) {
        samples.push(get_page(http, &url, &cfg.admin_token).await?.0);
    }
    let (median_ms, p99_ms) = percentiles(&mut samples);
    Ok(ProbeResult {
        label: probe.label,
        query: pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&"),
        rows,
        more,
        first_ms: millis(first),
        median_ms,
        p99_ms,
        n: samples.len(),
    })
}

// ---- the server process ----

// ---- PostgreSQL schema ----

// ---- the report ----

struct Report {
    backend: Backend,
    version: String,
    nhis: usize,
    fill: FillResult,
    single: SingleResult,
    maintenance: Option<Duration>,
    first_start: Duration,
    startup: Duration,
    memory: Memory,
    store_bytes: Option<u64>,
    /// The machine's load average before and after the pages (other work on the box).
    load: String,
    probes: Vec<ProbeResult>,
    posture: PostureResult,
}

impl Report {
    fn markdown(&self, cfg: &Config) -> String {
        let mut out = vec![
            format!(
                "#### {} {}, {} NHIs in {TEAMS} teams",
                self.backend.title(),
                self.version,
                thousands(self.nhis as u64)
            ),
            String::new(),
            "| measure | result |".to_owned(),
            "| --- | --- |".to_owned(),
            format!(
                "| bulk insert: `create_nhis`, {} NHIs + events per transaction | **{} NHIs/s** ({} NHIs in {:.1} s) |",
                thousands(BATCH as u64),
                thousands(rate(self.nhis, self.fill.elapsed)),
                thousands(self.nhis as u64),
                self.fill.elapsed.as_secs_f64()
            ),
            format!(
                "| single insert: `create_nhis`, 1 NHI + event per durable transaction | **{} NHIs/s** ({} calls in {:.2} s; per call median {:.2} ms, p99 {:.2} ms) |",
                thousands(rate(self.single.calls, self.single.elapsed)),
                thousands(self.single.calls as u64),
                self.single.elapsed.as_secs_f64(),
                self.single.median_ms,
                self.single.p99_ms
            ),
        ];
        if let Some(maintenance) = self.maintenance {
            out.push(format!(
                "| `VACUUM (ANALYZE)` after the fill (what autovacuum does in the background) | {:.1} s |",
                maintenance.as_secs_f64()
            ));
        }
        out.push(format!(
            "| start-up on the full store: spawn → first 200 on `/readyz` | **{:.3} s** (on the empty store: {:.3} s) |",
            self.startup.as_secs_f64(),
            self.first_start.as_secs_f64()
        ));
        out.push(format!(
            "| server resident memory after the pages below | **VmRSS {:.1} MiB** (peak VmHWM {:.1} MiB) |",
            self.memory.rss_kib as f64 / 1024.0,
            self.memory.hwm_kib as f64 / 1024.0
        ));
        if let Some(bytes) = self.store_bytes {
            out.push(format!(
                "| store size | {:.2} GiB |",
                bytes as f64 / (1024.0 * 1024.0 * 1024.0)
            ));
        }
        out.push(format!(
            "| load average (1, 5, 15 min) before → after the pages | {} |",
            self.load
        ));
        out.push(String::new());
        out.push(format!(
            "| page: `GET /v1/nhis?…&limit={PAGE_LIMIT}` | query | rows | first ms | median ms | p99 ms | n | p99 ≤ {BAR_MS} ms |"
        ));
        out.push("| --- | --- | ---: | ---: | ---: | ---: | ---: | :---: |".to_owned());
        for p in &self.probes {
            let query = if p.query.len() > 90 {
                format!("{}…", &p.query[..p.query.floor_char_boundary(90)])
            } else {
                p.query.clone()
            };
            out.push(format!(
                "| {} | `{}` | {}{} | {:.2} | {:.2} | {:.2} | {} | {} |",
                p.label,
                query,
                p.rows,
                if p.more { "+" } else { "" },
                p.first_ms,
                p.median_ms,
                p.p99_ms,
                p.n,
                if p.p99_ms <= BAR_MS { "yes" } else { "**no**" }
            ));
        }
        out.push(String::new());
        let missed: Vec<_> = self
            .probes
            .iter()
            .filter(|p| p.p99_ms > BAR_MS)
            .map(|p| {
                format!(
                    "{} (median {:.1} ms, p99 {:.1} ms)",
                    p.label, p.median_ms, p.p99_ms
                )
            })
            .collect();
        out.push(if missed.is_empty() {
            format!(
                "Bar, a filtered page ≤ {BAR_MS} ms: **met** by all {} pages at p99.",
                self.probes.len()
            )
        } else {
            format!(
                "Bar, a filtered page ≤ {BAR_MS} ms: **missed** by {} of {} pages at p99: {}.",
                missed.len(),
                self.probes.len(),
                missed.join("; ")
            )
        });
        out.push(format!(
            "(`rows` is the size of the first page, `+` when there is a next page; `first` is the first request of that query after start-up; then {WARMUP_REQUESTS} untimed requests and up to {} timed ones, `n`, within {} s.)\n",
            cfg.requests,
            cfg.budget.as_secs()
        ));
        let p = &self.posture;
        out.push(format!(
            "Posture report, `GET /v1/reports/posture` (JSON, at most 100 NHIs listed per category) over {} NHIs, {} of them with a static key: **{:.1} s** ({} NHIs/s, {} bytes); {} NHIs in at least one category. Risk report, top 20 (`GET /v1/reports/risk?limit=20`): **{:.1} s**.\n",
            thousands(p.nhis),
            thousands(p.keys as u64),
            p.elapsed.as_secs_f64(),
            thousands(rate(p.nhis as usize, p.elapsed)),
            thousands(p.bytes as u64),
            thousands(p.affected),
            p.risk_elapsed.as_secs_f64()
        ));
        out.push(format!(
            "Posture CSV, every hit (`?format=csv`, streamed): **{:.1} s**, {} rows, {} bytes.{}\n",
            p.csv_elapsed.as_secs_f64(),
            thousands(p.csv_rows),
            thousands(p.csv_bytes),
            p.memory_after.as_ref().map_or(String::new(), |m| format!(
                " Server memory after the reports: VmRSS {:.1} MiB, peak VmHWM {:.1} MiB.",
                m.rss_kib as f64 / 1024.0,
                m.hwm_kib as f64 / 1024.0
            ))
        ));
        out.push("| category | title | affected NHIs |".to_owned());
        out.push("| --- | --- | ---: |".to_owned());
        for (id, title, count) in &p.counts {
            out.push(format!("| {id} | {title} | {} |", thousands(*count)));
        }
        out.push(String::new());
        out.join("\n")
    }
}

// ---- helpers ----
