//! Several nodes: two `custos serve` processes share one PostgreSQL schema. Each lifecycle job
//! runs once; a decommission or a revocation on one node is refused on the other; a node in
//! strict mode that cannot hear the other nodes refuses with `state_unconfirmed` until it
//! hears them again; and the time from a revocation on one node to its refusal on the other,
//! measured over a couple of hundred revocations, is within the bar (p99 ≤ 200 ms).
//!
//! `CUSTOS_NODES_BIN` runs another `custos` binary than this build's, e.g. a release build
//! for the figures in docs/benchmarks.md.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;

use crate::process::free_port;
use crate::support::{ADMIN_TOKEN, postgres_base_url, postgres_schema_url};

/// One `custos serve` process, killed when dropped.
struct Node {
    child: Child,
    url: String,
    /// Its name among the nodes, as `/readyz` says and its listener's `application_name` shows.
    name: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// Starts a node on `database_url` with `config` (TOML), and waits until it is ready.
    async fn start(
        http: &reqwest::Client,
        database_url: &str,
        master_key: &str,
        config: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("custos.toml"), config).unwrap();
        let log = dir.path().join("custos.log");
        let port = free_port();
        let bin = std::env::var("CUSTOS_NODES_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_custos").to_owned());
        let child = std::process::Command::new(bin)
            .current_dir(dir.path())
            .env_remove("CUSTOS_LISTEN")
            .env_remove("CUSTOS_DATA_DIR")
            .env_remove("CUSTOS_STRICT_CONSISTENCY")
            .env_remove("CUSTOS_STRICT_MAX_LAG_MS")
            .env_remove("CUSTOS_CONFIG")
            .env_remove("CUSTOS_TEST_CRASH_AT")
            .env("CUSTOS_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("CUSTOS_MASTER_KEY", master_key)
            .env("CUSTOS_DATABASE_URL", database_url)
            .env("CUSTOS_LOG_LEVEL", "info,custos_server::nodes=debug")
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
                "data",
                "--config",
                "custos.toml",
            ])
            .stdout(Stdio::null())
            // Logs go to a file, read when a test fails: an unread pipe would block the node.
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut node = Node {
            child,
            url: format!("http://127.0.0.1:{port}"),
            name: String::new(),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = http.get(format!("{}/readyz", node.url)).send().await
                && response.status() == StatusCode::OK
            {
                let ready: Value = response.json().await.unwrap();
                node.name = ready["node"]
                    .as_str()
                    .expect("/readyz names the node")
                    .to_owned();
                return node;
            }
            if let Some(status) = node.child.try_wait().unwrap() {
                panic!("the node exited ({status}):\n{}", node.logs());
            }
            assert!(
                Instant::now() < deadline,
                "the node never became ready:\n{}",
                node.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Two nodes on one fresh schema, with one HTTP client.
struct Cluster {
    a: Node,
    b: Node,
    http: reqwest::Client,
}

impl Cluster {
    async fn start(config_a: &str, config_b: &str) -> Self {
        let database_url = postgres_schema_url().await;
        // Both nodes must hold the same master key (the store checks it).
        let master_key = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let http = reqwest::Client::new();
        // One after the other: the first creates the schema's tables and the first admin.
        let a = Node::start(&http, &database_url, &master_key, config_a).await;
        let b = Node::start(&http, &database_url, &master_key, config_b).await;
        assert_ne!(a.name, b.name);
        Self { a, b, http }
    }

    /// Calls `node` as the admin.
    async fn admin(
        &self,
        node: &Node,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", node.url))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn created(&self, node: &Node, path: &str, body: Value) -> Value {
        let (status, value) = self.admin(node, Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {value}");
        value
    }

    /// An NHI with the scope ceiling `ceiling` and one static key: (its id, the key).
    async fn agent(&self, name: &str, ceiling: &[&str], extra: Value) -> (String, String) {
        let (status, _) = self
            .admin(&self.a, Method::GET, "/v1/teams/owners", None)
            .await;
        if status == StatusCode::NOT_FOUND {
            self.created(
                &self.a,
                "/v1/teams",
                json!({"name": "owners", "contact": "owners@example.com"}),
            )
            .await;
        }
        let mut body = json!({
            "name": name, "kind": "ai_agent", "platform": "custom",
            "environment": "production", "owner": {"team": "owners"},
            "purpose": "a node test", "scope_ceiling": ceiling,
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let nhi = self.created(&self.a, "/v1/nhis", body).await;
        let id = nhi["id"].as_str().unwrap().to_owned();
        let key = self.key(&id).await;
        (id, key.1)
    }

    /// A new static key of the NHI: (its credential id, the secret).
    async fn key(&self, nhi: &str) -> (String, String) {
        let key = self
            .created(&self.a, &format!("/v1/nhis/{nhi}/credentials"), json!({}))
            .await;
        (
            key["id"].as_str().unwrap().to_owned(),
            key["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// May the holder of `key` read `crm`, asked of `node` by the enforcement point `pep`:
    /// (the decision, its reason code).
    async fn decide(&self, node: &Node, pep: &str, key: &str) -> (bool, String) {
        let response = self
            .http
            .post(format!("{}/access/v1/evaluation", node.url))
            .bearer_auth(pep)
            .json(&json!({
                "subject": {"type": "agent", "id": "", "properties": {"token": key}},
                "action": {"name": "read"},
                "resource": {"type": "crm", "id": "customers/1"},
            }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::OK, "{answer}");
        (
            answer["decision"].as_bool().unwrap(),
            answer["context"]["reason"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        )
    }

    /// Asks `node` until the answer is `wanted`; how long it took.
    async fn until(
        &self,
        node: &Node,
        pep: &str,
        key: &str,
        wanted: (bool, &str),
        limit: Duration,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let got = self.decide(node, pep, key).await;
            if got.0 == wanted.0 && got.1 == wanted.1 {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "still {got:?} after {limit:?}, not {wanted:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The trail's events of `kind` about `nhi`, read from node A.
    async fn events(&self, nhi: &str, kind: &str) -> Vec<Value> {
        let (status, page) = self
            .admin(
                &self.a,
                Method::GET,
                &format!("/v1/audit/events?nhi={nhi}&kind={kind}&limit=500"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["items"].as_array().unwrap().clone()
    }
}

/// Ends, again and again until `stop`, every PostgreSQL session named `application_name`:
/// a node's listener, which comes back each time. How many sessions it ended.
async fn keep_terminating(
    application_name: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> u64 {
    let mut conn = sqlx::PgConnection::connect(&postgres_base_url())
        .await
        .unwrap();
    let mut ended = 0;
    while !*stop.borrow() {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&application_name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        ended += killed.into_iter().filter(|k| *k).count() as u64;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ended
}

/// Both nodes run the lifecycle scheduler every second; five NHIs expire; each is
/// decommissioned exactly once (one workflow, each step once), whichever node took the job's
/// lock. Then a decommission asked of node A is refused on node B, which had the NHI's key
/// warm in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_run_each_job_once_and_refuse_what_the_other_decommissioned() {
    let config = "lifecycle_interval_seconds = 1\n";
    let cluster = Cluster::start(config, config).await;
    let (_, pep) = cluster
        .agent("gateway", &["custos:evaluate"], json!({}))
        .await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut expiring = Vec::new();
    for i in 0..5 {
        let (id, _) = cluster
            .agent(
                &format!("expiring-{i}"),
                &["crm:read"],
                json!({"expires_at": soon}),
            )
            .await;
        expiring.push(id);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &expiring {
        loop {
            let (_, list) = cluster
                .admin(
                    &cluster.b,
                    Method::GET,
                    &format!("/v1/decommissions?nhi_id={id}"),
                    None,
                )
                .await;
            let items = list["items"].as_array().unwrap();
            if items.first().is_some_and(|w| w["step"] == "done") {
                assert_eq!(items.len(), 1, "one workflow: {list}");
                break;
            }
            assert!(Instant::now() < deadline, "{id} not decommissioned: {list}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A few more rounds on both nodes, which must find nothing left to do.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in &expiring {
        for (kind, times) in [
            ("decommission.started", 1),
            ("nhi.suspended", 1),
            ("decommission.progressed", 4),
            ("nhi.decommissioned", 1),
            ("decommission.completed", 1),
        ] {
            let events = cluster.events(id, kind).await;
            assert_eq!(events.len(), times, "{id}: {kind}: {events:?}");
        }
    }

    // A decommission asked of A: B, with the key warm, refuses it once it has taken effect.
    let (victim, key) = cluster.agent("victim", &["crm:read"], json!({})).await;
    assert_eq!(
        cluster.decide(&cluster.b, &pep, &key).await,
        (true, "allowed".into())
    );
    let (status, workflow) = cluster
        .admin(
            &cluster.a,
            Method::POST,
            &format!("/v1/nhis/{victim}/decommission"),
            Some(json!({"reason": "retired"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{workflow}");
    // The workflow runs in the background on A: ask both nodes in turn until both refuse,
    // and note when each first did.
    let asked = Instant::now();
    let (mut on_a, mut on_b) = (None, None);
    let mut reason = String::new();
    while on_a.is_none() || on_b.is_none() {
        if on_a.is_none() && !cluster.decide(&cluster.a, &pep, &key).await.0 {
            on_a = Some(asked.elapsed());
        }
        let (allowed, why) = cluster.decide(&cluster.b, &pep, &key).await;
        if on_b.is_none() && !allowed {
            on_b = Some(asked.elapsed());
            reason = why;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "still allowed: A {on_a:?}, B {on_b:?}"
        );
    }
    let (on_a, on_b) = (on_a.unwrap(), on_b.unwrap());
    println!(
        "decommission asked of A: A refused after {:.1} ms, B after {:.1} ms ({reason})",
        on_a.as_secs_f64() * 1000.0,
        on_b.as_secs_f64() * 1000.0
    );
    assert!(
        ["nhi_suspended", "revoked", "nhi_decommissioned"].contains(&reason.as_str()),
        "{reason}"
    );
    assert!(
        on_b.saturating_sub(on_a) < Duration::from_millis(200),
        "B refused {on_b:?} after the request, A {on_a:?}"
    );
    let id = workflow["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster
        .admin(
            &cluster.a,
            Method::GET,
            &format!("/v1/decommissions/{id}"),
            None,
        )
        .await
        .1["step"]
        != "done"
    {
        assert!(Instant::now() < deadline, "the decommission never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once it is done, B's very next check refuses, and never allows again.
    let (allowed, reason) = cluster.decide(&cluster.b, &pep, &key).await;
    assert!(
        !allowed && ["revoked", "nhi_decommissioned"].contains(&reason.as_str()),
        "{reason}"
    );
    assert_eq!(
        cluster.events(&victim, "decommission.started").await.len(),
        1
    );
}

/// Node B is strict. While its listening connection is ended again and again, it cannot
/// confirm it has heard node A's changes, and refuses every decision with
/// `state_unconfirmed` (recorded in the trail) and says it is not ready; once it listens
/// again it allows again. Node A, lenient, whose own listener is cut off the same way, keeps
/// deciding and still refuses what B revoked meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_one_strict_refuses_while_it_cannot_hear_the_other() {
    let cluster = Cluster::start("", "strict_consistency = true\nstrict_max_lag_ms = 500\n").await;
    let (_, pep) = cluster
        .agent("gateway", &["custos:evaluate"], json!({}))
        .await;
    let (agent, key) = cluster.agent("agent", &["crm:read"], json!({})).await;
    assert_eq!(
        cluster.decide(&cluster.b, &pep, &key).await,
        (true, "allowed".into())
    );

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let cutting = tokio::spawn(keep_terminating(
        format!("custos-listener {}", cluster.b.name),
        stopped,
    ));
    cluster
        .until(
            &cluster.b,
            &pep,
            &key,
            (false, "state_unconfirmed"),
            Duration::from_secs(10),
        )
        .await;
    // With its listener ended every few milliseconds, B seldom if ever hears a heartbeat back
    // on a connection that lived since it was sent: most answers are refusals, and /readyz
    // sends load balancers elsewhere.
    let (mut refusals, mut unready) = (0, 0);
    for _ in 0..20 {
        if cluster.decide(&cluster.b, &pep, &key).await == (false, "state_unconfirmed".into()) {
            refusals += 1;
        }
        let ready = cluster
            .http
            .get(format!("{}/readyz", cluster.b.url))
            .send()
            .await
            .unwrap();
        if ready.status() == StatusCode::SERVICE_UNAVAILABLE {
            let problem: Value = ready.json().await.unwrap();
            assert_eq!(problem["code"], "state_unconfirmed", "{problem}");
            unready += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).unwrap();
    let ended = cutting.await.unwrap();
    assert!(
        ended > 0,
        "B's listener was never found:\n{}",
        cluster.b.logs()
    );
    assert!(
        refusals >= 10 && unready >= 1,
        "{refusals} refusals and {unready} not ready of 20"
    );
    let took = cluster
        .until(
            &cluster.b,
            &pep,
            &key,
            (true, "allowed"),
            Duration::from_secs(10),
        )
        .await;
    println!("strict node B allowed again {took:?} after its listener was left alone");
    let ready = cluster
        .http
        .get(format!("{}/readyz", cluster.b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    // The refusals are in the trail like any other decision. (The NHI is named only if B
    // still held the credential in memory, which losing its listener made it drop; the
    // credential is named either way.)
    let credential = cluster
        .admin(
            &cluster.a,
            Method::GET,
            &format!("/v1/credentials?nhi_id={agent}"),
            None,
        )
        .await
        .1["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = cluster
            .admin(
                &cluster.a,
                Method::GET,
                "/v1/audit/events?kind=access.decided&limit=500",
                None,
            )
            .await;
        let decided = page["items"].as_array().unwrap();
        if decided.iter().any(|e| {
            e["details"]["reason"] == "state_unconfirmed"
                && e["details"]["decision"] == "deny"
                && e["details"]["credential"] == credential.as_str()
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no state_unconfirmed refusal recorded: {decided:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A lenient node whose listener keeps being cut off keeps deciding, and still refuses, the
    // key warm, what B revoked meanwhile: from a notice heard on one of its short-lived
    // connections, the catch-up after each reconnection, or its 100 ms poll in between (this
    // test cannot tell which; the feed's own tests show each reconnection is reported).
    assert_eq!(
        cluster.decide(&cluster.a, &pep, &key).await,
        (true, "allowed".into())
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let cutting = tokio::spawn(keep_terminating(
        format!("custos-listener {}", cluster.a.name),
        stopped,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, revoked) = cluster
        .admin(
            &cluster.b,
            Method::POST,
            &format!("/v1/credentials/{credential}/revoke"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    let took = cluster
        .until(
            &cluster.a,
            &pep,
            &key,
            (false, "revoked"),
            Duration::from_secs(5),
        )
        .await;
    stop.send(true).unwrap();
    assert!(cutting.await.unwrap() > 0, "A's listener was never found");
    println!("lenient node A, its listener cut off, refused B's revocation after {took:?}");
}

/// The bar: a revocation on node A is refused on node B, which had the key warm in memory,
/// p99 ≤ 200 ms after A answered the revocation. Each round issues a key on A, has B allow
/// it, revokes it on A and asks B in a tight loop until it refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_revocation_on_one_is_refused_on_the_other_within_the_bar() {
    let rounds: usize = std::env::var("CUSTOS_NODES_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    let cluster = Cluster::start("", "").await;
    let (_, pep) = cluster
        .agent("gateway", &["custos:evaluate"], json!({}))
        .await;
    let (agent, _) = cluster.agent("agent", &["crm:read"], json!({})).await;
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut after_answer = Vec::with_capacity(rounds);
    let mut after_sending = Vec::with_capacity(rounds);
    let mut checks = 0usize;
    // Rounds in which B's first check after A's answer was still allowed: there the figure is
    // how long the notice took; elsewhere it is that first check's own round trip, an upper
    // bound.
    let mut stale_rounds = 0usize;
    for _ in 0..rounds {
        let (credential, key) = cluster.key(&agent).await;
        assert_eq!(
            cluster.decide(&cluster.b, &pep, &key).await,
            (true, "allowed".into())
        );
        let sent = Instant::now();
        let (status, revoked) = cluster
            .admin(
                &cluster.a,
                Method::POST,
                &format!("/v1/credentials/{credential}/revoke"),
                None,
            )
            .await;
        let answered = Instant::now();
        assert_eq!(status, StatusCode::OK, "{revoked}");
        for attempt in 0.. {
            checks += 1;
            let (allowed, reason) = cluster.decide(&cluster.b, &pep, &key).await;
            if !allowed {
                assert_eq!(reason, "revoked");
                break;
            }
            if attempt == 0 {
                stale_rounds += 1;
            }
            assert!(
                answered.elapsed() < Duration::from_secs(5),
                "B still allows after 5 s"
            );
        }
        let refused = Instant::now();
        after_answer.push(refused - answered);
        after_sending.push(refused - sent);
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let quantile = |samples: &mut Vec<Duration>, q: f64| {
        samples.sort();
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1].as_secs_f64() * 1000.0
    };
    let (p50, p95, p99, max) = (
        quantile(&mut after_answer, 0.50),
        quantile(&mut after_answer, 0.95),
        quantile(&mut after_answer, 0.99),
        quantile(&mut after_answer, 1.0),
    );
    let (s50, s95, s99, smax) = (
        quantile(&mut after_sending, 0.50),
        quantile(&mut after_sending, 0.95),
        quantile(&mut after_sending, 0.99),
        quantile(&mut after_sending, 1.0),
    );
    println!(
        "revocation on A -> refusal on B, {rounds} revocations, {checks} checks on B \
         ({:.2} per revocation); B's first check after A's answer still allowed in \
         {stale_rounds} rounds:",
        checks as f64 / rounds as f64
    );
    println!(
        "| measured from | p50 | p95 | p99 | max |\n| --- | ---: | ---: | ---: | ---: |\n\
         | A's answer to the revocation | {p50:.2} ms | {p95:.2} ms | {p99:.2} ms | {max:.2} ms |\n\
         | sending the revocation | {s50:.2} ms | {s95:.2} ms | {s99:.2} ms | {smax:.2} ms |"
    );
    println!("load average before: {}after: {}", load_before, load_after);
    assert!(p99 <= 200.0, "p99 {p99:.2} ms is over the bar of 200 ms");
}
