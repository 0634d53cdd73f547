//! The `custos` binary as a user runs it: first start, configuration precedence, signals,
//! JSON logs, the admin CLI, and no secret in the clear on disk or in the logs.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_custos");

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(cmd: &mut Command) -> Server {
    // Logs go nowhere: an unread pipe would fill and block the server.
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server { child, port: 0 }
}

/// Waits until something answers /readyz on `port`.
fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if raw::blocking_get(&format!("http://127.0.0.1:{port}/readyz"))
            .is_ok_and(|status| status == 200)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server on port {port} never became ready");
}

mod raw {
    /// A tiny blocking GET over a raw socket, so these tests need no second HTTP client.
    pub fn blocking_get(url: &str) -> std::io::Result<u16> {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let mut stream = std::net::TcpStream::connect(host)?;
        write!(
            stream,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }
}

pub(crate) fn custos(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("CUSTOS_ADMIN_TOKEN")
        .env_remove("CUSTOS_LISTEN")
        .env_remove("CUSTOS_DATA_DIR")
        .env_remove("CUSTOS_DATABASE_URL")
        .env_remove("CUSTOS_CONFIG")
        .env_remove("CUSTOS_MASTER_KEY")
        .env_remove("CUSTOS_TOKEN")
        .env_remove("CUSTOS_URL")
        .current_dir(dir);
    cmd
}

fn cli(dir: &Path, url: &str, token: &str, args: &[&str]) -> Output {
    custos(dir)
        .env("CUSTOS_URL", url)
        .env("CUSTOS_TOKEN", token)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn first_start_writes_a_private_admin_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("data");
    let mut server = serve(custos(dir.path()).args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        "data",
    ]));
    server.port = port;
    wait_ready(port);
    let token_file = data.join("admin-token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(token.starts_with("custos_op_"));
    let who = cli(
        dir.path(),
        &server.url(),
        &token,
        &["whoami", "--output", "json"],
    );
    assert!(who.status.success(), "{who:?}");
    let who: Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(who["roles"], serde_json::json!(["admin"]));

    // SIGTERM: a graceful exit with status 0, and its stdout says where the token is.
    let pid = server.child.id();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let mut out = String::new();
    server
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        out.contains(
            &token_file
                .display()
                .to_string()
                .replace(&format!("{}/", dir.path().display()), "")
        ),
        "{out}"
    );

    // A restart keeps the same admin and does not mint another token.
    let port2 = free_port();
    let mut again = serve(custos(dir.path()).args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port2}"),
        "--data-dir",
        "data",
    ]));
    again.port = port2;
    wait_ready(port2);
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
    assert!(
        cli(dir.path(), &again.url(), &token, &["whoami"])
            .status
            .success()
    );
}

#[test]
fn configuration_precedence_is_file_then_env_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.path().join("custos.toml"),
        format!("listen = \"127.0.0.1:{file_port}\"\ndata_dir = \"from-file\"\n"),
    )
    .unwrap();
    for (env, flag, expected) in [
        (None, None, file_port),
        (Some(env_port), None, env_port),
        (Some(env_port), Some(flag_port), flag_port),
    ] {
        let mut cmd = custos(dir.path());
        cmd.args(["serve", "--config", "custos.toml"])
            .env("CUSTOS_ADMIN_TOKEN", "preset-admin-token-for-tests-0001");
        if let Some(p) = env {
            cmd.env("CUSTOS_LISTEN", format!("127.0.0.1:{p}"));
        }
        if let Some(p) = flag {
            cmd.args(["--listen", &format!("127.0.0.1:{p}")]);
        }
        let mut server = serve(&mut cmd);
        server.port = expected;
        wait_ready(expected);
        // The preset token is the admin's.
        assert!(
            cli(
                dir.path(),
                &server.url(),
                "preset-admin-token-for-tests-0001",
                &["whoami"]
            )
            .status
            .success()
        );
    }
    assert!(
        dir.path().join("from-file/custos.db").exists(),
        "data_dir came from the file"
    );

    std::fs::write(dir.path().join("bad.toml"), "listen = 5\n").unwrap();
    let out = custos(dir.path())
        .args(["serve", "--config", "bad.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.toml"),
        "{out:?}"
    );
}

#[test]
fn the_cli_round_trip_keeps_no_secret_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = serve(custos(dir.path()).args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        "data",
        "--log-format",
        "json",
        "--log-level",
        "debug",
    ]));
    server.port = port;
    wait_ready(port);
    let admin = std::fs::read_to_string(dir.path().join("data/admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    let url = server.url();
    let run = |args: &[&str]| {
        let out = cli(dir.path(), &url, &admin, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out)
    };
    run(&["team", "create", "payments", "--contact", "pay@example.com"]);
    let op: Value = serde_json::from_str(&run(&[
        "operator", "create", "--name", "rita", "--role", "reviewer", "--team", "payments",
        "--output", "json",
    ]))
    .unwrap();
    let nhi: Value = serde_json::from_str(&run(&[
        "nhi",
        "create",
        "--name",
        "invoice-bot",
        "--kind",
        "ai_agent",
        "--platform",
        "openai",
        "--environment",
        "production",
        "--team",
        "payments",
        "--purpose",
        "reconciles invoices",
        "--scope",
        "erp:read",
        "--tag",
        "tier=gold",
        "--output",
        "json",
    ]))
    .unwrap();
    let nhi_id = nhi["id"].as_str().unwrap();
    // A static key, through the API (the CLI for credentials arrives with their lifecycle).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key: Value = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("{url}/v1/nhis/{nhi_id}/credentials"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let secrets = vec![
        admin.clone(),
        op["token"].as_str().unwrap().to_owned(),
        key["secret"].as_str().unwrap().to_owned(),
    ];
    // Use each secret once so it passes through the request path and its logging.
    for s in &secrets {
        let _ = cli(dir.path(), &url, s, &["whoami"]);
    }

    let listed = run(&[
        "nhi",
        "list",
        "--team",
        "payments",
        "--tag",
        "tier:gold",
        "--output",
        "json",
    ]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let table = run(&["nhi", "list"]);
    assert!(
        table.contains("invoice-bot") && table.contains("NAME"),
        "{table}"
    );
    let updated = run(&[
        "nhi",
        "update",
        nhi_id,
        "--purpose",
        "pays invoices",
        "--output",
        "json",
    ]);
    assert!(updated.contains("pays invoices"));
    assert!(run(&["nhi", "suspend", nhi_id, "--reason", "test"]).contains("suspended"));
    let bad = cli(
        dir.path(),
        &url,
        &admin,
        &[
            "nhi",
            "create",
            "--name",
            "x",
            "--kind",
            "robot",
            "--platform",
            "p",
            "--environment",
            "e",
            "--team",
            "payments",
            "--purpose",
            "p",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("422"),
        "{bad:?}"
    );

    drop(server);
    let mut database = Vec::new();
    for name in ["custos.db", "custos.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.path().join("data").join(name)) {
            database.extend(bytes);
        }
    }
    for secret in &secrets {
        assert!(
            !contains(&database, secret.as_bytes()),
            "a secret is stored in the clear"
        );
    }
}

#[test]
fn the_cli_manages_keys_credentials_and_approvals() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = serve(custos(dir.path()).args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        "data",
    ]));
    server.port = port;
    wait_ready(port);
    let admin = std::fs::read_to_string(dir.path().join("data/admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    let url = server.url();
    let run = |token: &str, args: &[&str]| {
        let out = cli(dir.path(), &url, token, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out)
    };
    let json = |token: &str, args: &[&str]| -> Value {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        serde_json::from_str(&run(token, &args)).unwrap()
    };
    run(
        &admin,
        &["team", "create", "payments", "--contact", "pay@example.com"],
    );
    let op = json(
        &admin,
        &[
            "operator", "create", "--name", "rita", "--role", "reviewer", "--team", "payments",
        ],
    );
    let reviewer = op["token"].as_str().unwrap().to_owned();
    let nhi = json(
        &admin,
        &[
            "nhi",
            "create",
            "--name",
            "refund-bot",
            "--kind",
            "ai_agent",
            "--platform",
            "openai",
            "--environment",
            "production",
            "--team",
            "payments",
            "--purpose",
            "refunds",
            "--scope",
            "crm:read",
        ],
    );
    let nhi_id = nhi["id"].as_str().unwrap();
    let key = json(&admin, &["credential", "issue", nhi_id]);
    let secret = key["secret"].as_str().unwrap().to_owned();

    // The agent asks beyond its ceiling; a reviewer approves narrower from the CLI.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let task: Value = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("{url}/v1/tasks"))
            .bearer_auth(&secret)
            .json(
                &serde_json::json!({"purpose": "refund", "scope": ["crm:read", "payments:refund"]}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(task["state"], "pending_approval", "{task}");
    let pending = json(&reviewer, &["approvals", "list", "--state", "pending"]);
    let approval_id = pending["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        pending["items"][0]["excess"],
        serde_json::json!(["payments:refund"])
    );
    let table = run(&reviewer, &["approvals", "show", &approval_id]);
    assert!(table.contains("payments:refund"), "{table}");
    let approved = json(
        &reviewer,
        &[
            "approvals",
            "approve",
            &approval_id,
            "--reason",
            "ticket 81",
            "--scope",
            "payments:refund",
            "--ttl-seconds",
            "120",
        ],
    );
    assert_eq!(approved["state"], "approved");
    assert_eq!(
        approved["granted_scope"],
        serde_json::json!(["payments:refund"])
    );
    let task_id = task["id"].as_str().unwrap();
    let seen = json(&reviewer, &["task", "get", task_id]);
    assert_eq!(seen["state"], "active");
    let ended = json(&reviewer, &["task", "end", task_id]);
    assert_eq!(ended["state"], "ended");

    // Static key rotation, and the signing keys.
    let rotated = json(
        &admin,
        &["credential", "rotate", key["id"].as_str().unwrap()],
    );
    assert!(
        rotated["key"]["secret"]
            .as_str()
            .unwrap()
            .starts_with("custos_sk_")
    );
    let listed = run(&admin, &["credential", "list", "--nhi-id", nhi_id]);
    assert!(
        listed.contains(rotated["key"]["fingerprint"].as_str().unwrap()),
        "{listed}"
    );
    let keys = json(&admin, &["keys", "list"]);
    assert_eq!(keys["items"].as_array().unwrap().len(), 1);
    let keys = json(&admin, &["keys", "rotate", "--alg", "EdDSA"]);
    let states: Vec<(&str, &str)> = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["alg"].as_str().unwrap(), k["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("ES256", "retired_published"), ("EdDSA", "active")]
    );
    let refused = cli(dir.path(), &url, &reviewer, &["keys", "rotate"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("403"),
        "{refused:?}"
    );
}

#[test]
fn after_kill_9_under_load_every_acknowledged_action_is_in_a_verifiable_log() {
    let dir = tempfile::tempdir().unwrap();
    let start = |port: u16| {
        let mut server = serve(custos(dir.path()).args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            "data",
        ]));
        server.port = port;
        wait_ready(port);
        server
    };
    let mut first = start(free_port());
    let admin = std::fs::read_to_string(dir.path().join("data/admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    let url = first.url();
    let kept = dir.path().join("kept-checkpoint");
    let checkpoint = cli(dir.path(), &url, &admin, &["audit", "checkpoint"]);
    assert!(checkpoint.status.success(), "{checkpoint:?}");
    std::fs::write(&kept, &checkpoint.stdout).unwrap();

    // Eight clients create teams as fast as they can; each remembers what was acknowledged.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let acknowledged = runtime.block_on(async {
        let http = reqwest::Client::new();
        let mut clients = tokio::task::JoinSet::new();
        for client in 0..8 {
            let (http, url, admin) = (http.clone(), url.clone(), admin.clone());
            clients.spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let sent = http
                        .post(format!("{url}/v1/teams"))
                        .bearer_auth(&admin)
                        .json(&serde_json::json!({"name": format!("t-{client}-{i}"), "contact": "c@example.com"}))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 201 => {
                            let team: Value = response.json().await.unwrap_or(Value::Null);
                            acknowledged.push(team["id"].as_str().unwrap_or_default().to_owned());
                        }
                        // The server is gone: stop.
                        _ => return acknowledged,
                    }
                }
                acknowledged
            });
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // SIGKILL mid-load: no shutdown path runs, no final checkpoint is signed.
        first.child.kill().unwrap();
        let mut all = Vec::new();
        while let Some(done) = clients.join_next().await {
            all.extend(done.unwrap());
        }
        all
    });
    first.child.wait().unwrap();
    assert!(
        acknowledged.len() > 50,
        "only {} writes before the kill",
        acknowledged.len()
    );

    let second = start(free_port());
    let url = second.url();
    let events: Value = runtime.block_on(async {
        reqwest::Client::new()
            .get(format!("{url}/v1/audit/events?kind=team.created&limit=500"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let mut recorded: Vec<String> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["subject"]
                .as_str()
                .unwrap()
                .trim_start_matches("team:")
                .to_owned()
        })
        .collect();
    let mut cursor = events["next_cursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let page: Value = runtime.block_on(async {
            reqwest::Client::new()
                .get(format!(
                    "{url}/v1/audit/events?kind=team.created&limit=500&cursor={c}"
                ))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        recorded.extend(page["items"].as_array().unwrap().iter().map(|e| {
            e["subject"]
                .as_str()
                .unwrap()
                .trim_start_matches("team:")
                .to_owned()
        }));
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    for id in &acknowledged {
        assert!(recorded.contains(id), "acknowledged team {id} has no event");
    }
    // The restarted server seals what the killed one had not, and the whole log verifies
    // and extends the checkpoint kept before the load.
    let verified = cli(
        dir.path(),
        &url,
        &admin,
        &["audit", "verify", "--checkpoint", kept.to_str().unwrap()],
    );
    assert!(
        verified.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn logs_are_json_lines_and_carry_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = custos(dir.path())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            "data",
            "--log-format",
            "json",
            "--log-level",
            "trace",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the logs as they come, so the pipe never fills.
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    });
    wait_ready(port);
    let admin = std::fs::read_to_string(dir.path().join("data/admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        cli(
            dir.path(),
            &format!("http://127.0.0.1:{port}"),
            &admin,
            &["team", "list"]
        )
        .status
        .success()
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut lines = 0;
    for line in reader.join().unwrap() {
        let parsed: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(parsed["level"].is_string());
        assert!(!line.contains(&admin), "a token reached the logs: {line}");
        lines += 1;
    }
    assert!(child.wait().unwrap().success());
    assert!(lines > 3, "the server logged something");
}

#[test]
fn an_acknowledged_write_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let start = |port: u16| {
        let mut server = serve(custos(dir.path()).args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            "data",
        ]));
        server.port = port;
        wait_ready(port);
        server
    };
    let mut first = start(free_port());
    let admin = std::fs::read_to_string(dir.path().join("data/admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    let url = first.url();
    let team = cli(
        dir.path(),
        &url,
        &admin,
        &["team", "create", "durable", "--contact", "d@example.com"],
    );
    assert!(team.status.success());
    let created = cli(
        dir.path(),
        &url,
        &admin,
        &[
            "nhi",
            "create",
            "--name",
            "survivor",
            "--kind",
            "workload",
            "--platform",
            "kubernetes",
            "--environment",
            "production",
            "--team",
            "durable",
            "--purpose",
            "outlives its server",
            "--output",
            "json",
        ],
    );
    assert!(created.status.success(), "{created:?}");
    let id = serde_json::from_slice::<Value>(&created.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // SIGKILL: no shutdown path runs, only what was made durable before the answer survives.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let second = start(free_port());
    let found = cli(
        dir.path(),
        &second.url(),
        &admin,
        &["nhi", "get", &id, "--output", "json"],
    );
    assert!(found.status.success(), "{found:?}");
    assert_eq!(
        serde_json::from_slice::<Value>(&found.stdout).unwrap()["name"],
        "survivor"
    );
}

/// A decommission is killed (the process aborts, as with `kill -9`) after each step's work
/// and before its record; restarted, the server resumes the workflow, which finishes exactly
/// once: every step recorded once, one tombstone, one completion, the key refused, and the
/// archived trail verifies with `custos audit verify`. On both stores: on PostgreSQL each
/// cycle has a schema of its own, shared by the killed server and its successor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommission_killed_at_any_step_finishes_once_after_a_restart_sqlite() {
    decommission_killed_at_any_step(crate::support::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommission_killed_at_any_step_finishes_once_after_a_restart_postgres() {
    decommission_killed_at_any_step(crate::support::Backend::Postgres).await;
}

async fn decommission_killed_at_any_step(backend: crate::support::Backend) {
    const TOKEN: &str = crate::support::ADMIN_TOKEN;
    for step in ["revoke", "tombstone", "archive", "notify"] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let database_url = match backend {
            crate::support::Backend::Sqlite => None,
            crate::support::Backend::Postgres => Some(crate::support::postgres_schema_url().await),
        };
        let start = |crash: bool| {
            let mut cmd = custos(dir.path());
            cmd.env("CUSTOS_ADMIN_TOKEN", TOKEN).args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
                "data",
            ]);
            if let Some(database_url) = &database_url {
                cmd.args(["--database-url", database_url]);
            }
            if crash {
                cmd.env("CUSTOS_TEST_CRASH_AT", format!("decommission:{step}"));
            } else {
                cmd.env_remove("CUSTOS_TEST_CRASH_AT");
            }
            let mut server = serve(&mut cmd);
            server.port = port;
            wait_ready(port);
            server
        };
        let http = reqwest::Client::new();
        let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
            let mut request = http
                .request(method, format!("{url}{path}"))
                .bearer_auth(TOKEN);
            if let Some(body) = body {
                request = request.json(&body);
            }
            async move {
                let response = request.send().await?;
                let status = response.status();
                let value: Value = response.json().await.unwrap_or(Value::Null);
                Ok::<_, reqwest::Error>((status, value))
            }
        };

        let mut server = start(true);
        call(
            reqwest::Method::POST,
            "/v1/teams",
            Some(serde_json::json!({"name": "owners", "contact": "owners@example.com"})),
        )
        .await
        .unwrap();
        let (_, nhi) = call(
            reqwest::Method::POST,
            "/v1/nhis",
            Some(serde_json::json!({
                "name": "doomed-agent", "kind": "ai_agent", "platform": "custom",
                "environment": "production", "owner": {"team": "owners"},
                "purpose": "to be retired", "scope_ceiling": ["erp:read:*"],
            })),
        )
        .await
        .unwrap();
        let id = nhi["id"].as_str().expect("an nhi").to_owned();
        let (_, key) = call(
            reqwest::Method::POST,
            &format!("/v1/nhis/{id}/credentials"),
            None,
        )
        .await
        .unwrap();
        let secret = key["secret"].as_str().unwrap().to_owned();
        // The answer may or may not get out before the process aborts.
        let _ = call(
            reqwest::Method::POST,
            &format!("/v1/nhis/{id}/decommission"),
            Some(serde_json::json!({"reason": "shut down"})),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not crash at {step}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(!status.success(), "crashed at {step}: {status:?}");
        drop(server);

        let _server = start(false);
        let deadline = Instant::now() + Duration::from_secs(30);
        let workflow = loop {
            let (_, list) = call(
                reqwest::Method::GET,
                &format!("/v1/decommissions?nhi_id={id}"),
                None,
            )
            .await
            .unwrap();
            let workflow = list["items"][0].clone();
            if workflow["step"] == "done" {
                break workflow;
            }
            assert!(
                Instant::now() < deadline,
                "not resumed after a crash at {step}: {list}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            workflow["teardown"]["revoked_credentials"]
                .as_array()
                .unwrap()
                .contains(&key["id"]),
            "crash at {step}: {workflow}"
        );
        // The timing of a revocation is lost with a run killed before its record.
        let refused_after = &workflow["teardown"]["last_refused_after_ms"];
        if step == "revoke" {
            assert!(refused_after.is_null(), "{workflow}");
        } else {
            assert!(refused_after.as_f64().is_some(), "{step}: {workflow}");
        }
        let (_, events) = call(
            reqwest::Method::GET,
            &format!("/v1/audit/events?subject=nhi:{id}&limit=500"),
            None,
        )
        .await
        .unwrap();
        let kinds: Vec<&str> = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        let count = |kind: &str| kinds.iter().filter(|k| **k == kind).count();
        assert_eq!(count("decommission.started"), 1, "{step}: {kinds:?}");
        assert_eq!(count("decommission.progressed"), 4, "{step}: {kinds:?}");
        assert_eq!(count("nhi.decommissioned"), 1, "{step}: {kinds:?}");
        assert_eq!(count("decommission.completed"), 1, "{step}: {kinds:?}");
        assert_eq!(count("nhi.suspended"), 1, "{step}: {kinds:?}");

        let (_, nhi) = call(reqwest::Method::GET, &format!("/v1/nhis/{id}"), None)
            .await
            .unwrap();
        assert_eq!(nhi["status"], "decommissioned", "{step}");
        let refused = http
            .post(format!("{url}/oauth2/token"))
            .basic_auth(&id, Some(&secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401, "{step}");

        let archive = dir.path().join("data/archive").join(
            workflow["teardown"]["archive"]["files"][0]["file"]
                .as_str()
                .unwrap(),
        );
        let verified = custos(dir.path())
            .args(["audit", "verify", archive.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            verified.status.success(),
            "{step}: {}{}",
            stdout(&verified),
            String::from_utf8_lossy(&verified.stderr)
        );
    }
}
