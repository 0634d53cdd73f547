//! From a reviewer's approval to the agent holding its credential (bar: p99 ≤ 1 s).
//!
//! For each store this starts the real `custos` binary (release build) with a preset admin
//! token, registers one agent with a static key and a reviewer of its owner team, and measures
//! over HTTP on loopback, one sample at a time:
//!
//! 1. the agent asks `POST /v1/tasks` for more than its ceiling allows → `202` with an
//!    `approval_id` (a medium-risk request: one reviewer decides);
//! 2. the agent long-polls `GET /v1/tasks/{id}?wait=30` on a connection of its own. The poll is
//!    *confirmed in flight* before anything is approved: the request has been acknowledged by
//!    the server's TCP stack and read out of the server's socket by the server (both read from
//!    `/proc/net/tcp`), and it has been open at least 50 ms;
//! 3. the reviewer calls `POST /v1/approvals/{id}/approve` with a scope narrower than asked;
//! 4. **measured**: from the moment the approve request is sent to the moment the long-poll's
//!    response has been received in full and parsed, and holds the credential.
//!
//! `CUSTOS_BENCH_WAITERS` agents' polls wait at once: the approvals are issued one after
//! another, oldest poll first, while the others keep waiting (each approval wakes every
//! waiter, which then reads its task again). A poll that answers before its approval, without
//! a credential, or with a credential whose JWT `scope` claim is not exactly the narrowed scope
//! of its own approval (each sample narrows to a different resource) fails the bench, so it
//! cannot pass by measuring the wrong thing. A few samples warm up first and are not counted.
//!
//! ```text
//! export CARGO_TARGET_DIR=/var/tmp/custos-target
//! cargo build --release -p custos-server --bin custos
//! cargo bench -p custos-server --bench approval_latency                 # SQLite
//! CUSTOS_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p custos-server --bench approval_latency             # and PostgreSQL
//! ```
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `CUSTOS_BENCH_APPROVALS` | `500` | measured samples per store |
//! | `CUSTOS_BENCH_WAITERS` | `20` | long-polls waiting at once |
//! | `CUSTOS_BENCH_DATABASE_URL` | unset | PostgreSQL as well (a fresh schema per run, dropped after) |
//! | `CUSTOS_BENCH_BACKENDS` | `sqlite`, plus `postgres` if the URL is set | which stores, in order |
//! | `CUSTOS_BIN` | `release/custos` beside this bench | the server binary |
//!
//! Without `CUSTOS_BENCH_DATABASE_URL`, `CUSTOS_BENCH_BACKENDS=postgres` uses
//! `CUSTOS_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`), like the
//! other benches. Linux only (`/proc/net/tcp`).

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

mod common;
use common::*;

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
/// The bar: p99 from the approval to the credential held, in milliseconds.
const BAR_P99_MS: f64 = 1000.0;
/// Samples before the measured ones: connections, caches, the first WAL pages.
const WARMUP: usize = 10;
/// The least time a poll has been open when its approval is sent.
const SETTLE: Duration = Duration::from_millis(50);
/// How long the agent's poll may wait; far beyond any sample.
const WAIT_SECONDS: u32 = 30;
const CEILING: &[&str] = &["crm:read:customers/*"];

fn main() -> ExitCode {
    bench_main("approval_latency", "starts servers", run)
}

struct Settings {
    backends: Vec<Backend>,
    approvals: usize,
    waiters: usize,
    pg_url: String,
    bin: std::path::PathBuf,
}

fn settings() -> Result<Settings> {
    let non_empty = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let bench_url = non_empty("CUSTOS_BENCH_DATABASE_URL");
    let default_backends = if bench_url.is_some() {
        "sqlite,postgres"
    } else {
        "sqlite"
    };
    let backends = backends_from_env(default_backends)?;
    Ok(Settings {
        backends,
        approvals: env_number("CUSTOS_BENCH_APPROVALS", 500)?.max(1),
        waiters: env_number("CUSTOS_BENCH_WAITERS", 20)?.max(1),
        pg_url: bench_url
            .or_else(|| non_empty("CUSTOS_TEST_DATABASE_URL"))
            .unwrap_or_else(|| DEFAULT_PG_URL.into()),
        bin: non_empty("CUSTOS_BIN").map_or_else(default_bin, Into::into),
    })
}

async fn run() -> Result<()> {
    let settings = settings()?;
    println!("## From approval to the agent holding its credential\n");
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

/// The grants of sample `n`: what the agent asks (beyond its ceiling: writing and exporting
/// one customer) and what the reviewer grants (writing that customer only).
fn scopes(n: usize) -> (Vec<String>, Vec<String>) {
    let read = CEILING[0].to_owned();
    let write = format!("crm:write:customers/{n}");
    let export = format!("crm:export:customers/{n}");
    (vec![read.clone(), write.clone(), export], vec![read, write])
}

/// What a long-poll brought back: when its response had been read and parsed, and the body.
struct Answer {
    at: Instant,
    status: u16,
    body: Value,
}

/// One agent's pending task, its poll waiting.
struct Waiter {
    sample: usize,
    approval_id: String,
    narrowed: Vec<String>,
    opened: Instant,
    poll: JoinHandle<Result<Answer>>,
}

struct Bench<'a> {
    api: &'a Api,
    addr: String,
    agent: &'a Agent,
    reviewer: String,
}

impl Bench<'_> {
    /// Files sample `n`'s task (a `202`) and opens its poll, confirmed in flight.
    async fn file(&self, n: usize) -> Result<Waiter> {
        let (asked, narrowed) = scopes(n);
        let (status, task) = self
            .api
            .send(
                reqwest::Method::POST,
                "/v1/tasks",
                &self.agent.secret,
                Some(json!({"purpose": format!("bench sample {n}"), "scope": asked, "ttl_seconds": 300})),
            )
            .await?;
        ensure!(
            status == 202 && task["state"] == "pending_approval",
            "POST /v1/tasks beyond the ceiling: {status} {task}"
        );
        let task_id = task["id"].as_str().context("task id")?;
        let approval_id = task["approval_id"]
            .as_str()
            .context("approval_id")?
            .to_owned();
        let path = format!("/v1/tasks/{task_id}?wait={WAIT_SECONDS}");
        let (stream, local_port) = send_get(&self.addr, &path, &self.agent.secret).await?;
        let opened = Instant::now();
        let poll = tokio::spawn(read_answer(stream));
        confirm_read_by_server(&self.addr, local_port, &poll).await?;
        Ok(Waiter {
            sample: n,
            approval_id,
            narrowed,
            opened,
            poll,
        })
    }

    /// Approves the waiter's request, narrower; the time from sending the approval to the
    /// credential held, and the approval's own round trip.
    async fn approve(&self, waiter: Waiter) -> Result<(Duration, Duration)> {
        let settled = waiter.opened + SETTLE;
        tokio::time::sleep_until(settled.into()).await;
        if waiter.poll.is_finished() {
            let early = waiter.poll.await?.map(|a| (a.status, a.body));
            bail!(
                "sample {}: the poll answered before its approval: {early:?}",
                waiter.sample
            );
        }
        let sent = Instant::now();
        let (status, approval) = self
            .api
            .send(
                reqwest::Method::POST,
                &format!("/v1/approvals/{}/approve", waiter.approval_id),
                &self.reviewer,
                Some(json!({"reason": "bench: narrower", "scope": waiter.narrowed})),
            )
            .await?;
        let approved = Instant::now();
        ensure!(
            status == 200 && approval["state"] == "approved",
            "approve {}: {status} {approval}",
            waiter.approval_id
        );
        let answer = tokio::time::timeout(
            Duration::from_secs(u64::from(WAIT_SECONDS) + 10),
            waiter.poll,
        )
        .await
        .context("the poll never answered")???;
        ensure!(
            answer.status == 200 && answer.body["state"] == "active",
            "sample {}: the poll answered {} {}",
            waiter.sample,
            answer.status,
            answer.body
        );
        let token = answer.body["credential"]["access_token"]
            .as_str()
            .with_context(|| {
                format!("sample {}: no access_token: {}", waiter.sample, answer.body)
            })?;
        let mut held = scope_claim(token)?;
        let mut expected = waiter.narrowed.clone();
        held.sort();
        expected.sort();
        ensure!(
            held == expected,
            "sample {}: the credential's scope is {held:?}, the approval narrowed to {expected:?}",
            waiter.sample
        );
        Ok((answer.at.saturating_duration_since(sent), approved - sent))
    }
}

/// The grants of a JWT's `scope` claim (read without any check: the bench only asks which
/// credential it holds).
fn scope_claim(token: &str) -> Result<Vec<String>> {
    let payload = token.split('.').nth(1).context("not a compact JWS")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .context("the JWT payload is not base64url")?;
    let claims: Value = serde_json::from_slice(&bytes).context("the JWT payload is not JSON")?;
    Ok(claims["scope"]
        .as_str()
        .context("no scope claim")?
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

/// Opens a connection of its own and writes a `GET` on it; the stream and its local port.
async fn send_get(addr: &str, path: &str, bearer: &str) -> Result<(TcpStream, u16)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {bearer}\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let port = stream.local_addr()?.port();
    Ok((stream, port))
}

/// Reads one HTTP/1.1 response (its `Content-Length`, or up to the close) and parses its body.
async fn read_answer(mut stream: TcpStream) -> Result<Answer> {
    let mut buffer = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let mut head: Option<(usize, u16, Option<usize>)> = None;
    loop {
        let n = stream.read(&mut chunk).await?;
        buffer.extend_from_slice(&chunk[..n]);
        if head.is_none()
            && let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let text = std::str::from_utf8(&buffer[..end]).context("response head")?;
            let status = text
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .context("status line")?;
            let length = text.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            });
            head = Some((end + 4, status, length));
        }
        let complete = match head {
            Some((start, _, Some(length))) => buffer.len() >= start + length,
            _ => false,
        };
        if complete || n == 0 {
            break;
        }
    }
    let (start, status, length) = head.context("the connection closed before a response")?;
    let end = length.map_or(buffer.len(), |l| start + l);
    let body: Value = serde_json::from_slice(buffer.get(start..end).context("short body")?)
        .context("the response is not JSON")?;
    Ok(Answer {
        at: Instant::now(),
        status,
        body,
    })
}

/// One connection's queues from `/proc/net/tcp`: `(tx_queue, rx_queue)` of the socket whose
/// local port is `local` and remote port `remote`.
fn tcp_queues(table: &str, local: u16, remote: u16) -> Option<(u64, u64)> {
    let port = |address: &str| u16::from_str_radix(address.rsplit_once(':')?.1, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || port(fields[1])? != local || port(fields[2])? != remote {
            return None;
        }
        let (tx, rx) = fields[4].split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}

/// Waits until the server has the request: first acknowledged to our socket (nothing left
/// unacknowledged), then read out of the server's socket by the server process (nothing left
/// in its receive queue). The poll must not have answered meanwhile.
async fn confirm_read_by_server(
    addr: &str,
    local_port: u16,
    poll: &JoinHandle<Result<Answer>>,
) -> Result<()> {
    let server_port: u16 = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .context("server port")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut acknowledged = false;
    loop {
        ensure!(
            !poll.is_finished(),
            "the poll answered at once (the server refused it?)"
        );
        let table = std::fs::read_to_string("/proc/net/tcp")
            .context("/proc/net/tcp (the bench confirms polls in flight from it)")?;
        if !acknowledged {
            acknowledged = tcp_queues(&table, local_port, server_port).is_some_and(|q| q.0 == 0);
        } else if tcp_queues(&table, server_port, local_port).is_some_and(|q| q.1 == 0) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the server did not read the poll's request within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

struct Measured {
    latencies: Vec<Duration>,
    approve_round_trips: Vec<Duration>,
    elapsed: Duration,
}

async fn measure(bench: &Bench<'_>, settings: &Settings) -> Result<Measured> {
    let total = WARMUP + settings.approvals;
    let mut waiting = VecDeque::new();
    let mut next = 0;
    let mut latencies = Vec::with_capacity(settings.approvals);
    let mut approve_round_trips = Vec::with_capacity(settings.approvals);
    let mut started = Instant::now();
    for done in 0..total {
        while waiting.len() < settings.waiters && next < total {
            waiting.push_back(bench.file(next).await?);
            next += 1;
        }
        if done == WARMUP {
            started = Instant::now();
        }
        let waiter = waiting.pop_front().context("a waiter")?;
        let (latency, round_trip) = bench.approve(waiter).await?;
        if done >= WARMUP {
            latencies.push(latency);
            approve_round_trips.push(round_trip);
        }
    }
    Ok(Measured {
        latencies,
        approve_round_trips,
        elapsed: started.elapsed(),
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
    let store = match &schema {
        Some(schema) => format!("PostgreSQL {}", schema.version().await?),
        None => format!("SQLite {}", sqlite_version().await?),
    };
    let http = reqwest::Client::builder().build()?;
    let server = Server::start(
        &settings.bin,
        ADMIN_TOKEN,
        work.path(),
        &data_dir,
        database_url.as_deref(),
        &http,
    )
    .await?;
    let api = Api {
        http,
        base: format!("http://{}", server.addr),
        admin_token: ADMIN_TOKEN.to_owned(),
    };
    api.admin(
        "/v1/teams",
        json!({"name": "bench", "contact": "bench@example.com"}),
    )
    .await?;
    let agent = register(&api, "waiting-agent", CEILING).await?;
    let reviewer = api
        .admin(
            "/v1/operators",
            json!({"name": "bench-reviewer", "roles": ["reviewer"], "teams": ["bench"]}),
        )
        .await?["token"]
        .as_str()
        .context("reviewer token")?
        .to_owned();
    let bench = Bench {
        api: &api,
        addr: server.addr.clone(),
        agent: &agent,
        reviewer,
    };
    let load_before = loadavg();
    let measured = measure(&bench, settings).await;
    let load_after = loadavg();
    server.stop().await?;
    if let Some(schema) = schema {
        schema.drop().await?;
    }
    let mut measured = measured?;

    let samples = measured.latencies.len();
    measured.latencies.sort_unstable();
    measured.approve_round_trips.sort_unstable();
    let at = |q| quantile(&measured.latencies, q);
    let (median, p90, p99, max) = (at(0.5), at(0.9), at(0.99), at(1.0));
    let met = p99 <= BAR_P99_MS;
    println!("### {}\n", backend.title());
    println!(
        "{store}. {samples} approvals one after another ({WARMUP} more to warm up), each while \
         {} polls wait (`GET /v1/tasks/{{id}}?wait={WAIT_SECONDS}`), in {:.1} s.\n",
        settings.waiters,
        measured.elapsed.as_secs_f64()
    );
    println!(
        "| from `POST /v1/approvals/{{id}}/approve` sent to the credential held | median | p90 | p99 | max | bar |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    println!(
        "| {samples} samples, {} waiting | {median:.2} ms | {p90:.2} ms | **{p99:.2} ms** | {max:.2} ms | p99 ≤ {BAR_P99_MS:.0} ms: **{}** |",
        settings.waiters,
        if met { "met" } else { "missed" }
    );
    println!(
        "\nThe approve call's own round trip: median {:.2} ms, p99 {:.2} ms. Every credential's \
         `scope` claim was exactly its approval's narrowed scope.",
        quantile(&measured.approve_round_trips, 0.5),
        quantile(&measured.approve_round_trips, 0.99),
    );
    println!("\nLoad average before → after: {load_before} → {load_after}.\n");
    Ok(())
}
