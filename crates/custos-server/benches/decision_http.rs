//! The decision point over HTTP (DESIGN.md §5): "over HTTP (AuthZEN, keep-alive, load generator
//! on the same box): ≥ 15k decisions/s, p99 ≤ 5 ms at half that load", and side by side, in the
//! same run, the peer a gateway would otherwise ask per call: `oidc-provider` from npm answering
//! RFC 7662 introspection for a `client_credentials` access token.
//!
//! The release `custos` binary serves a fresh SQLite store with 50 guardrail policies
//! (`common::guardrail_policies`); an enforcement point (an NHI holding `custos:evaluate`) asks
//! `POST /access/v1/evaluation` about an agent's `client_credentials` token, `crm:read` on a
//! customer record, allowed. `oidc-provider` (pinned in `benches/peers/oidc-provider`, its
//! default in-memory store, one Node.js process) is asked `POST /token/introspection` about its
//! own `client_credentials` token by another client with HTTP Basic credentials. For each, with
//! the same `oha` settings (`CUSTOS_BENCH_CONNECTIONS` keep-alive connections):
//!
//! 1. **saturated**: as fast as it answers for `CUSTOS_BENCH_SECS` seconds: requests/s, p50, p99;
//! 2. **half load**: `oha -q` at half the saturated rate: p50 and p99.
//!
//! Every answer is checked before the runs (`decision: true`, `active: true`) and `oha` counts
//! non-200 answers, which must be none.
//!
//! ```text
//! cargo install oha --version 1.16.0 --locked     # the load generator
//! (cd crates/custos-server/benches/peers/oidc-provider && npm ci)
//! export CARGO_TARGET_DIR=/var/tmp/custos-target
//! cargo build --release -p custos-server --bin custos
//! cargo bench -p custos-server --bench decision_http
//! ```
//!
//! `CUSTOS_OHA` names the `oha` binary (default: `oha` on the PATH); `CUSTOS_BIN` the custos
//! binary (default: the release build beside this bench).

mod common;

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use common::{
    Server, bench_main, default_bin, env_number, guardrail_catalogue, guardrail_policies, loadavg,
    machine, thousands,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const ADMIN: &str = "custos_bench_admin_token_0123456789abcdef";

fn main() -> ExitCode {
    bench_main(
        "decision_http",
        "runs custos and oidc-provider under oha",
        run,
    )
}

/// What `oha` measured in one run.
struct Load {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    answered: u64,
}

/// One `oha` run against `url`, as JSON; `rate` limits the requests per second.
fn oha(
    url: &str,
    headers: &[(&str, String)],
    body: &Path,
    seconds: usize,
    connections: usize,
    rate: Option<u64>,
) -> Result<Load> {
    let bin = std::env::var("CUSTOS_OHA").unwrap_or_else(|_| "oha".into());
    let mut command = std::process::Command::new(&bin);
    command
        .args(["--no-tui", "--output-format", "json", "-m", "POST"])
        .args(["-z", &format!("{seconds}s"), "-c", &connections.to_string()])
        .arg("-D")
        .arg(body);
    for (name, value) in headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    if let Some(rate) = rate {
        command.args(["-q", &rate.to_string()]);
    }
    let output = command
        .arg(url)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| {
            format!("cannot run {bin} (cargo install oha --version 1.16.0 --locked)")
        })?;
    ensure!(output.status.success(), "{bin} failed: {}", output.status);
    let report: Value = serde_json::from_slice(&output.stdout).context("oha's JSON report")?;
    let codes = &report["statusCodeDistribution"];
    let ok = codes["200"].as_u64().unwrap_or(0);
    let all: u64 = codes
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    ensure!(all == ok && ok > 0, "{url}: answers by status {codes}");
    let seconds_at =
        |p: &str| report["latencyPercentiles"][p].as_f64().unwrap_or(f64::NAN) * 1000.0;
    Ok(Load {
        rate: report["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        p50_ms: seconds_at("p50"),
        p99_ms: seconds_at("p99"),
        answered: ok,
    })
}

/// The peer: `node server.mjs PORT` in `benches/peers/oidc-provider`, until dropped.
struct Peer {
    /// Held so that dropping the peer stops the process (`kill_on_drop`).
    _process: tokio::process::Child,
    base: String,
}

impl Peer {
    async fn start(dir: &Path) -> Result<Self> {
        if !dir.join("node_modules").exists() {
            let installed = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(dir)
                .status()
                .context("cannot run npm")?;
            ensure!(installed.success(), "npm ci failed in {}", dir.display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = tokio::process::Command::new("node")
            .arg("server.mjs")
            .arg(port.to_string())
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot run node")?;
        let stdout = child.stdout.take().context("node has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
                Ok(Ok(Some(line))) if line.trim() == "ready" => break,
                Ok(Ok(Some(_))) => continue,
                _ => bail!("oidc-provider did not start"),
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            _process: child,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    async fn version(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("node_modules/oidc-provider/package.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|v| v["version"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "?".into())
    }
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> Result<Value> {
    let response = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    ensure!(status.is_success(), "{path}: {status} {value}");
    Ok(value)
}

async fn nhi(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    ceiling: &[&str],
) -> Result<(String, String)> {
    let nhi = call(
        http,
        base,
        reqwest::Method::POST,
        "/v1/nhis",
        json!({
            "name": name, "kind": "ai_agent", "platform": "custom", "environment": "production",
            "owner": {"team": "bench"}, "purpose": "benchmark", "scope_ceiling": ceiling,
        }),
    )
    .await?;
    let id = nhi["id"].as_str().context("nhi id")?.to_owned();
    let key = call(
        http,
        base,
        reqwest::Method::POST,
        &format!("/v1/nhis/{id}/credentials"),
        json!({}),
    )
    .await?;
    Ok((id, key["secret"].as_str().context("secret")?.to_owned()))
}

fn row(name: &str, saturated: &Load, half: &Load) -> String {
    format!(
        "| {name} | **{}** | {:.2} ms | {:.2} ms | {} | {:.2} ms | **{:.2} ms** |",
        thousands(saturated.rate.round() as u64),
        saturated.p50_ms,
        saturated.p99_ms,
        thousands(half.rate.round() as u64),
        half.p50_ms,
        half.p99_ms,
    )
}

async fn run() -> Result<()> {
    let seconds = env_number("CUSTOS_BENCH_SECS", 10)?;
    let connections = env_number("CUSTOS_BENCH_CONNECTIONS", 32)?;
    let bin: PathBuf = std::env::var_os("CUSTOS_BIN").map_or_else(default_bin, PathBuf::from);
    let work = tempfile::tempdir()?;
    let data_dir = work.path().join("data");
    let http = reqwest::Client::new();
    let server = Server::start(&bin, ADMIN, work.path(), &data_dir, None, &http).await?;
    let base = format!("http://{}", server.addr);

    call(
        &http,
        &base,
        reqwest::Method::POST,
        "/v1/teams",
        json!({"name": "bench", "contact": "bench@example.com"}),
    )
    .await?;
    let (_, pep) = nhi(&http, &base, "gateway", &["custos:evaluate"]).await?;
    let mut agents = Vec::new();
    let mut agent = None;
    for i in 0..50 {
        let (id, key) = nhi(&http, &base, &format!("agent-{i}"), &["crm:*"]).await?;
        agents.push(id.clone());
        agent.get_or_insert((id, key));
    }
    let (agent_id, agent_key) = agent.context("an agent")?;
    call(
        &http,
        &base,
        reqwest::Method::PUT,
        "/v1/policies",
        json!({
            "policies": guardrail_policies(50, &agents), "catalogue": guardrail_catalogue(),
        }),
    )
    .await?;
    let token: Value = http
        .post(format!("{base}/oauth2/token"))
        .basic_auth(&agent_id, Some(&agent_key))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"]
        .as_str()
        .context("custos token")?
        .to_owned();
    let evaluation = json!({
        "subject": {"type": "agent", "id": agent_id, "properties": {"token": token}},
        "action": {"name": "read"},
        "resource": {"type": "crm", "id": "customers/42"},
    });
    let custos_body = work.path().join("evaluation.json");
    std::fs::write(&custos_body, serde_json::to_vec(&evaluation)?)?;
    let answer: Value = http
        .post(format!("{base}/access/v1/evaluation"))
        .bearer_auth(&pep)
        .json(&evaluation)
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        answer["decision"] == true,
        "custos refused the benchmark's question: {answer}"
    );
    let custos_url = format!("{base}/access/v1/evaluation");
    let custos_headers = [
        ("authorization", format!("Bearer {pep}")),
        ("content-type", "application/json".to_owned()),
    ];

    let peer_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/oidc-provider");
    let peer = Peer::start(&peer_dir).await?;
    let peer_token: Value = http
        .post(format!("{}/token", peer.base))
        .basic_auth("agent", Some("agent-secret-0123456789abcdef"))
        .form(&[("grant_type", "client_credentials"), ("scope", "crm:read")])
        .send()
        .await?
        .json()
        .await?;
    let peer_token = peer_token["access_token"]
        .as_str()
        .context("oidc-provider token")?
        .to_owned();
    let peer_body = work.path().join("introspection.form");
    std::fs::write(&peer_body, format!("token={peer_token}"))?;
    let basic =
        base64::engine::general_purpose::STANDARD.encode("gateway:gateway-secret-0123456789abcdef");
    let peer_url = format!("{}/token/introspection", peer.base);
    let introspected: Value = http
        .post(&peer_url)
        .header("authorization", format!("Basic {basic}"))
        .form(&[("token", peer_token.as_str())])
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        introspected["active"] == true,
        "oidc-provider: {introspected}"
    );
    let peer_headers = [
        ("authorization", format!("Basic {basic}")),
        (
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        ),
    ];

    let before = loadavg();
    eprintln!("decision_http: custos, saturated");
    let custos_full = oha(
        &custos_url,
        &custos_headers,
        &custos_body,
        seconds,
        connections,
        None,
    )?;
    eprintln!("decision_http: custos, half load");
    let custos_half = oha(
        &custos_url,
        &custos_headers,
        &custos_body,
        seconds,
        connections,
        Some((custos_full.rate / 2.0) as u64),
    )?;
    eprintln!("decision_http: oidc-provider, saturated");
    let peer_full = oha(
        &peer_url,
        &peer_headers,
        &peer_body,
        seconds,
        connections,
        None,
    )?;
    eprintln!("decision_http: oidc-provider, half load");
    let peer_half = oha(
        &peer_url,
        &peer_headers,
        &peer_body,
        seconds,
        connections,
        Some((peer_full.rate / 2.0) as u64),
    )?;
    let after = loadavg();
    let memory = server.memory()?;

    println!("### The decision point over HTTP, beside oidc-provider\n");
    println!("{}\n", machine());
    println!(
        "`oha` with {connections} keep-alive connections, {seconds} s per run, on the same machine; custos on SQLite \
         with 50 guardrail policies; oidc-provider {} on Node.js {} (in-memory store). Load average {before} → {after}.\n",
        Peer::version(&peer_dir).await,
        String::from_utf8_lossy(
            &std::process::Command::new("node")
                .arg("--version")
                .output()?
                .stdout
        )
        .trim(),
    );
    println!(
        "| server, question | saturated: answers/s | p50 | p99 | half load: answers/s | p50 | p99 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "{}",
        row(
            "custos `POST /access/v1/evaluation`",
            &custos_full,
            &custos_half
        )
    );
    println!(
        "{}",
        row(
            "oidc-provider `POST /token/introspection`",
            &peer_full,
            &peer_half
        )
    );
    println!(
        "\nRatio custos / oidc-provider, saturated: **{:.1}×** the answers per second; at half load, p99 {:.2} ms against {:.2} ms. \
         Answered without error: custos {} + {}, oidc-provider {} + {}. custos RSS after: {} MiB.",
        custos_full.rate / peer_full.rate.max(1e-9),
        custos_half.p99_ms,
        peer_half.p99_ms,
        thousands(custos_full.answered),
        thousands(custos_half.answered),
        thousands(peer_full.answered),
        thousands(peer_half.answered),
        memory.rss_kib / 1024,
    );
    drop(peer);
    server.stop().await?;
    Ok(())
}
