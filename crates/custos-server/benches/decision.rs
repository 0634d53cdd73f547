//! The decision point's bars (DESIGN.md §5): "decision in process, verified-token cache warm:
//! median ≤ 10 µs, ≥ 100k/s on one core, with 50 Cedar guardrail policies loaded".
//!
//! A server is started in this process on a fresh SQLite store (so the decision events are
//! written for real, by the batching writer), and set up over its HTTP API: an enforcement
//! point holding `custos:evaluate`, `CUSTOS_BENCH_AGENTS` agents with a `client_credentials`
//! access token each, and a resource catalogue. Then, for 0, 50 and 500 guardrail policies:
//!
//! 1. **warm**: `custos_server::access::check` (what `/access/v1/evaluation` calls after
//!    parsing) on one task, sequentially, for `CUSTOS_BENCH_CHECKS` checks cycling over the
//!    agents' tokens, all seen once before: median and p99 per check, and checks/s of that one
//!    sequential loop (so on one core, with the event writers on the other). The checks run in
//!    rounds of 50,000, each followed by waiting until the trail has written their events
//!    (durably): checks/s is the checking time alone, and beside it the rate with the waits;
//! 2. **cold**: the first check of `CUSTOS_BENCH_COLD` tokens never seen before (a signature
//!    verification, the credential's chain, NHI and task read from the store): median and p99.
//!
//! The policies are `common::guardrail_policies`: what an admin writes. Checks ask `crm:read` on
//! a customer resource, allowed, so every policy that could apply is evaluated.
//!
//! ```text
//! export CARGO_TARGET_DIR=/var/tmp/custos-target
//! cargo bench -p custos-server --bench decision
//! CUSTOS_BENCH_CHECKS=20000 CUSTOS_BENCH_AGENTS=50 cargo bench -p custos-server --bench decision   # smoke
//! ```

mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::{
    bench_main, env_number, guardrail_catalogue, guardrail_policies, loadavg, machine, percentiles,
    rate, thousands,
};
use custos_server::access::{self, Question};
use serde_json::{Value, json};

/// The allocator of the `custos` binary, so that the server in this process allocates as it does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN: &str = "custos_bench_admin_token_0123456789abcdef";
/// Checks per round: well within the decision queue (65,536 events).
const ROUND: usize = 50_000;

fn main() -> ExitCode {
    bench_main(
        "decision",
        "starts a server in process and times its decision point",
        run,
    )
}

struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        ensure!(status.is_success(), "{path}: {status} {value}");
        Ok(value)
    }

    async fn agent(&self, name: &str, ceiling: &[&str]) -> Result<(String, String)> {
        let nhi = self
            .call(
                reqwest::Method::POST,
                "/v1/nhis",
                ADMIN,
                Some(json!({
                    "name": name, "kind": "ai_agent", "platform": "custom",
                    "environment": "production", "owner": {"team": "bench"},
                    "purpose": "benchmark", "scope_ceiling": ceiling,
                })),
            )
            .await?;
        let id = nhi["id"].as_str().context("nhi id")?.to_owned();
        let key = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/nhis/{id}/credentials"),
                ADMIN,
                Some(json!({})),
            )
            .await?;
        Ok((id, key["secret"].as_str().context("secret")?.to_owned()))
    }

    async fn token(&self, id: &str, key: &str) -> Result<String> {
        let response = self
            .client
            .post(format!("{}/oauth2/token", self.base))
            .basic_auth(id, Some(key))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await?;
        let value: Value = response.json().await?;
        Ok(value["access_token"]
            .as_str()
            .context("access token")?
            .to_owned())
    }
}

/// The question every timed check asks: an allowed read of a customer record.
fn ask(token: &str) -> Question<'_> {
    Question {
        secret: token,
        subject_id: None,
        service: "crm",
        operation: "read",
        resource: "customers/42",
        context: custos_server::behaviour::CallContext::default(),
    }
}

async fn run() -> Result<()> {
    let agents_wanted = env_number("CUSTOS_BENCH_AGENTS", 1_000)?;
    let checks = env_number("CUSTOS_BENCH_CHECKS", 300_000)?;
    let cold = env_number("CUSTOS_BENCH_COLD", 500)?;
    let dir = tempfile::tempdir()?;
    let config = custos_server::config::Config {
        listen: "127.0.0.1:0".parse()?,
        log_level: "error".into(),
        admin_token: Some(ADMIN.into()),
        static_key_rotation_grace_seconds: 3600,
        ..custos_server::config::Config::defaults(dir.path().to_path_buf())
    };
    let server = custos_server::serve::start(config).await?;
    let state = server.state.clone();
    let http = Http {
        base: format!("http://{}", server.addr),
        client: reqwest::Client::new(),
    };
    http.call(
        reqwest::Method::POST,
        "/v1/teams",
        ADMIN,
        Some(json!({"name": "bench", "contact": "bench@example.com"})),
    )
    .await?;
    let (pep_id, _) = http.agent("gateway", &["custos:evaluate"]).await?;
    eprintln!("decision: {agents_wanted} agents with a token each, and {cold} fresh tokens");
    let mut agents = Vec::new();
    let mut tokens = Vec::new();
    let mut keys = Vec::new();
    for i in 0..agents_wanted {
        let (id, key) = http
            .agent(&format!("agent-{i}"), &["crm:*", "mail:send", "s3:get"])
            .await?;
        tokens.push(http.token(&id, &key).await?);
        keys.push((id.clone(), key));
        agents.push(id);
    }
    let mut fresh = Vec::new();
    for i in 0..cold {
        let (id, key) = &keys[i % keys.len()];
        fresh.push(http.token(id, key).await?);
    }
    println!(
        "### Decision in process, SQLite trail: {} agents\n",
        thousands(agents_wanted as u64)
    );
    println!("{}\n", machine());
    println!(
        "| guardrail policies | warm: median | warm: p99 | warm: checks/s on one task | with the trail written: checks/s | cold: median | cold: p99 | load average before → after |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    let mut cold_tokens = fresh.into_iter();
    for count in [0usize, 50, 500] {
        http.call(
            reqwest::Method::PUT,
            "/v1/policies",
            ADMIN,
            Some(json!({"policies": guardrail_policies(count, &agents), "catalogue": guardrail_catalogue()})),
        )
        .await?;
        ensure!(
            state.live.guardrails().policy_count() == count,
            "the policies were not installed"
        );
        let check = async |token: &str| {
            access::check(&state, &pep_id, &ask(token))
                .await
                .map_err(|e| anyhow::anyhow!("{} {}: {}", e.status, e.code, e.detail))
        };
        let before = loadavg();
        // Warm every token once.
        for token in &tokens {
            let answer = check(token).await?;
            ensure!(
                answer.allowed(),
                "the warm-up check was refused: {:?}",
                answer.decision.reason
            );
        }
        state.decisions.flush(Duration::from_secs(30)).await;
        // In rounds the decision queue absorbs, each followed by waiting for the trail to
        // write them: the checks' own cost is timed, and the sustained rate with the trail.
        let mut samples = Vec::with_capacity(checks);
        let mut checking = Duration::ZERO;
        let started = Instant::now();
        let mut done = 0;
        while done < checks {
            let round = (checks - done).min(ROUND);
            let round_started = Instant::now();
            for i in done..done + round {
                let one = Instant::now();
                let answer = check(&tokens[i % tokens.len()]).await?;
                samples.push(one.elapsed());
                ensure!(
                    answer.allowed(),
                    "check {i} was refused: {:?}",
                    answer.decision.reason
                );
            }
            checking += round_started.elapsed();
            state.decisions.flush(Duration::from_secs(60)).await;
            done += round;
        }
        let sustained = started.elapsed();
        let (warm_median, warm_p99) = percentiles(&mut samples);
        let mut cold_samples = Vec::new();
        for token in cold_tokens.by_ref().take(cold / 3) {
            let one = Instant::now();
            let answer = check(&token).await?;
            cold_samples.push(one.elapsed());
            ensure!(
                answer.allowed(),
                "a cold check was refused: {:?}",
                answer.decision.reason
            );
        }
        let (cold_median, cold_p99) = percentiles(&mut cold_samples);
        println!(
            "| {count} | **{:.2} µs** | {:.2} µs | **{}** | {} | {:.0} µs | {:.0} µs | {before} → {} |",
            warm_median * 1000.0,
            warm_p99 * 1000.0,
            thousands(rate(checks, checking)),
            thousands(rate(checks, sustained)),
            cold_median * 1000.0,
            cold_p99 * 1000.0,
            loadavg(),
        );
    }
    server.stop().await?;
    Ok(())
}
