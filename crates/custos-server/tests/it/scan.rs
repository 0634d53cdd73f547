//! `custos scan` as a user runs it: the real binary over a tree with planted secrets, offline
//! and against a server, with `--report` and `--revoke`; the endpoints it calls refusing bad
//! input; and no planted secret in the store or the command's output.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, DebugBinary, TestServer, client, text};

both_backends!(
    scan_finds_checks_reports_and_revokes_planted_secrets,
    scan_endpoints_refuse_bad_input,
);

const AWS_ID: &str = "AKIA2OGYBAH6STMMNXNN";
const AWS_SECRET: &str = "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";
const OPENAI: &str = "sk-proj-Zk3J9vQm2xR7tLp0WbN4cY8dF1gH6sK5aE3uI9oT2rV7yM0nB4xC8zQ1wS6eD5fG";
const ANTHROPIC: &str =
    "sk-ant-api03-Xb7Kq2Lm9Vn4Rt8Wc1Yd6Fg3Hj0Ps5Ua2Ie7Oz4Bx9Nv1Mk8Ql3Wr6Ty0Cu5Ji2Gh-AA";
const SLACK_BOT: &str = "xoxb-1234567890123-2345678901234-Zx8Vb3Nm6Qw1Er4Ty7Ui0Op";
const SLACK_HOOK: &str = "hooks.slack.com/services/T0123ABCD/B0456EFGH/Xy7Zq2Wv9Ut4Sr1Po6Nm3Lk";
const PEM_BODY: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7V2m5Yx1Kq9R\nZt4Lw8Nc3Pf6Hd0Js2Ga7Ub5Ve1Xo9Ti4Qr8Wm3Ky6Cn0Bl2Dh7Fp5Gz1Aq4Es8Iu\n";
const GITHUB_RANDOM: &str = "Zk3J9vQm2xR7tLp0WbN4cY8dF1gH6s";

fn base62_6(mut n: u32) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).unwrap()
}

fn sha(secret: &str) -> String {
    hex::encode(&Sha256::digest(secret.as_bytes())[..16])
}

/// The planted tree and every secret in it (found or decoy), for the searches at the end.
struct Tree {
    dir: tempfile::TempDir,
    github: String,
    pem: String,
    account_key: String,
    planted: Vec<String>,
}

fn plant(live: &str, revoked: &str) -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, content: &[u8]| {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    };
    // A Custos key whose checksum fails: a typo, not a key.
    let mut decoy = live.as_bytes().to_vec();
    decoy[20] = if decoy[20] == b'a' { b'b' } else { b'a' };
    let decoy = String::from_utf8(decoy).unwrap();
    let github = format!(
        "ghp_{GITHUB_RANDOM}{}",
        base62_6(crc32fast::hash(GITHUB_RANDOM.as_bytes()))
    );
    let bad_github = format!("ghp_{GITHUB_RANDOM}000000");
    let pem = format!("-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}-----END RSA PRIVATE KEY-----");
    let account_key = format!(
        "-----BEGIN PRIVATE KEY-----\\n{}-----END PRIVATE KEY-----\\n",
        PEM_BODY.replace('\n', "\\n")
    );

    write(
        "svc-a/.env",
        format!(
            "CUSTOS_KEY={live}\nAWS_ACCESS_KEY_ID={AWS_ID}\nAWS_SECRET_ACCESS_KEY={AWS_SECRET}\n"
        )
        .as_bytes(),
    );
    write(
        "svc-b/config.yaml",
        format!("service:\n  api_key: {revoked}\n  old_key: {decoy}\n").as_bytes(),
    );
    write(
        "svc-c/settings.py",
        format!(
            "AWS_ACCESS_KEY_ID = \"{AWS_ID}\"\nOPENAI_API_KEY = \"{OPENAI}\"\n\
             ANTHROPIC_API_KEY = \"{ANTHROPIC}\"\nPLACEHOLDER = \"sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"\n"
        )
        .as_bytes(),
    );
    write(
        "svc-d/ci.yml",
        format!("github_token: {github}\nstale_token: {bad_github}\nslack: {SLACK_BOT}\nwebhook: https://{SLACK_HOOK}\n")
            .as_bytes(),
    );
    write(
        "svc-d/sa.json",
        format!(
            "{{\n  \"type\": \"service_account\",\n  \"project_id\": \"demo\",\n  \"private_key_id\": \"0123456789abcdef\",\n  \"private_key\": \"{account_key}\",\n  \"client_email\": \"ci@demo.iam.gserviceaccount.com\"\n}}\n"
        )
        .as_bytes(),
    );
    write("svc-d/deploy/id_rsa", format!("{pem}\n").as_bytes());
    // Binary files are skipped (and listed), whatever they hold.
    let mut blob = b"\x7fELF\x00\x01".to_vec();
    blob.extend_from_slice(live.as_bytes());
    write("svc-e/blob.bin", &blob);
    // Over the size cap the test passes: skipped, and listed.
    let mut huge = format!("{OPENAI}\n").into_bytes();
    huge.resize(200_000, b'.');
    write("svc-e/huge.log", &huge);
    // Dependencies are not the project's: never read.
    write("node_modules/pkg/index.js", OPENAI.as_bytes());

    Tree {
        planted: vec![
            live.to_owned(),
            revoked.to_owned(),
            decoy,
            AWS_SECRET.to_owned(),
            OPENAI.to_owned(),
            ANTHROPIC.to_owned(),
            github.clone(),
            bad_github,
            SLACK_BOT.to_owned(),
            SLACK_HOOK.to_owned(),
            PEM_BODY.lines().next().unwrap().to_owned(),
        ],
        dir,
        github,
        pem,
        account_key,
    }
}

/// Runs `custos scan` over the tree, with a server when `server` is given; the exit code and
/// the output as JSON, with the tree's path replaced by `ROOT`.
async fn scan(tree: &Tree, server: Option<&TestServer>, flags: &[&str]) -> (i32, Value, String) {
    let root = tree.dir.path().to_str().unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_custos"));
    command
        .args([
            "scan",
            root,
            "--max-file-size",
            "100000",
            "--output",
            "json",
        ])
        .args(flags)
        .env_remove("CUSTOS_TOKEN")
        .env_remove("CUSTOS_URL");
    if let Some(server) = server {
        command
            .env("CUSTOS_URL", &server.base)
            .env("CUSTOS_TOKEN", ADMIN_TOKEN);
    }
    let out = command.output().await.unwrap();
    let stdout = text(&out.stdout).replace(root, "ROOT");
    let all = format!("{stdout}{}", text(&out.stderr));
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {all}"));
    (out.status.code().unwrap(), value, all)
}

fn found(path: &str, line: u64, column: u64, kind: &str, preview: &str, secret: &str) -> Value {
    let service = path.split('/').nth(1).unwrap();
    json!({
        "path": path, "line": line, "column": column, "kind": kind, "preview": preview,
        "secret_sha256": sha(secret), "service": service,
    })
}

/// What the scan finds in the tree, in path order; Custos keys get `custos` merged in.
fn expected(tree: &Tree, live: &str, revoked: &str, custos: [Value; 2]) -> Value {
    let merge = |mut base: Value, extra: &Value| {
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    };
    json!([
        merge(
            found(
                "ROOT/svc-a/.env",
                1,
                12,
                "custos_static_key",
                "custos…",
                live
            ),
            &custos[0]
        ),
        found(
            "ROOT/svc-a/.env",
            2,
            19,
            "aws_access_key_id",
            "AKIA2O…",
            AWS_ID
        ),
        found(
            "ROOT/svc-a/.env",
            3,
            23,
            "aws_secret_access_key",
            "q3T9vR…",
            AWS_SECRET
        ),
        merge(
            found(
                "ROOT/svc-b/config.yaml",
                2,
                12,
                "custos_static_key",
                "custos…",
                revoked
            ),
            &custos[1]
        ),
        found(
            "ROOT/svc-c/settings.py",
            1,
            22,
            "aws_access_key_id",
            "AKIA2O…",
            AWS_ID
        ),
        found(
            "ROOT/svc-c/settings.py",
            2,
            19,
            "openai_api_key",
            "sk-pro…",
            OPENAI
        ),
        found(
            "ROOT/svc-c/settings.py",
            3,
            22,
            "anthropic_api_key",
            "sk-ant…",
            ANTHROPIC
        ),
        found(
            "ROOT/svc-d/ci.yml",
            1,
            15,
            "github_token",
            "ghp_Zk…",
            &tree.github
        ),
        found(
            "ROOT/svc-d/ci.yml",
            3,
            8,
            "slack_token",
            "xoxb-1…",
            SLACK_BOT
        ),
        found(
            "ROOT/svc-d/ci.yml",
            4,
            18,
            "slack_token",
            "hooks.…",
            SLACK_HOOK
        ),
        found(
            "ROOT/svc-d/deploy/id_rsa",
            1,
            1,
            "private_key",
            "-----BEGIN RSA PRIVATE KEY-----…",
            &tree.pem
        ),
        found(
            "ROOT/svc-d/sa.json",
            5,
            19,
            "google_service_account",
            "-----B…",
            &tree.account_key
        ),
    ])
}

fn reuse() -> Value {
    json!([{
        "secret_sha256": sha(AWS_ID),
        "kind": "aws_access_key_id",
        "services": ["svc-a", "svc-c"],
        "locations": [
            {"path": "ROOT/svc-a/.env", "line": 2, "service": "svc-a"},
            {"path": "ROOT/svc-c/settings.py", "line": 1, "service": "svc-c"},
        ],
    }])
}

/// The id of the NHI's first listed credential (the client's static key).
async fn first_credential(server: &TestServer, nhi: &str) -> String {
    let page = server
        .admin(
            Method::GET,
            &format!("/v1/credentials?nhi_id={nhi}"),
            None,
            StatusCode::OK,
        )
        .await;
    page["items"][0]["id"].as_str().unwrap().to_owned()
}

async fn tasks_status(server: &TestServer, key: &str) -> StatusCode {
    server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(key),
            Some(json!({"purpose": "sync", "scope": ["crm:read:customers/1"], "ttl_seconds": 60})),
        )
        .await
        .0
}

async fn findings(server: &TestServer, kind: &str) -> Vec<Value> {
    let page = server
        .admin(
            Method::GET,
            &format!("/v1/findings?kind={kind}"),
            None,
            StatusCode::OK,
        )
        .await;
    page["items"].as_array().unwrap().clone()
}

/// Two agents with a static key each, `svc-a-agent`'s live and `svc-b-agent`'s revoked, and
/// a tree with both keys planted in it.
struct TwoKeys {
    live_nhi: String,
    live: String,
    live_id: String,
    revoked_nhi: String,
    revoked: String,
    revoked_id: String,
    tree: Tree,
}

async fn plant_live_and_revoked(server: &TestServer) -> TwoKeys {
    let (live_nhi, live) = client(server, "svc-a-agent", &["crm:read:customers/*"]).await;
    let (revoked_nhi, revoked) = client(server, "svc-b-agent", &["crm:read:customers/*"]).await;
    let live_id = first_credential(server, &live_nhi).await;
    let revoked_id = first_credential(server, &revoked_nhi).await;
    server
        .admin(
            Method::POST,
            &format!("/v1/credentials/{revoked_id}/revoke"),
            None,
            StatusCode::OK,
        )
        .await;
    let tree = plant(&live, &revoked);
    TwoKeys {
        live_nhi,
        live,
        live_id,
        revoked_nhi,
        revoked,
        revoked_id,
        tree,
    }
}

async fn scan_finds_checks_reports_and_revokes_planted_secrets(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let TwoKeys {
        live_nhi,
        live,
        live_id,
        revoked_nhi,
        revoked,
        revoked_id,
        tree,
    } = plant_live_and_revoked(&server).await;
    let fingerprint = |secret: &str| server.state().keys.fingerprint(secret);
    let mut outputs = String::new();
    let files: u64 = [
        "svc-a/.env",
        "svc-b/config.yaml",
        "svc-c/settings.py",
        "svc-d/ci.yml",
        "svc-d/sa.json",
        "svc-d/deploy/id_rsa",
    ]
    .iter()
    .map(|f| std::fs::metadata(tree.dir.path().join(f)).unwrap().len())
    .sum();
    let skipped = json!([
        {"path": "ROOT/svc-e/blob.bin", "reason": "binary"},
        {"path": "ROOT/svc-e/huge.log", "reason": "too_large"},
    ]);

    // Offline: every match, Custos keys unchecked; none known live, so exit 5.
    let (code, out, all) = scan(&tree, None, &[]).await;
    outputs.push_str(&all);
    let unchecked = json!({"state": "unchecked"});
    assert_eq!(
        out,
        json!({
            "files_scanned": 6,
            "bytes_scanned": files,
            "skipped": skipped,
            "matches": expected(&tree, &live, &revoked, [unchecked.clone(), unchecked]),
            "reuse": reuse(),
            "live": 0,
            "revoked": 0,
        })
    );
    assert_eq!(code, 5);

    // With the server and --report: states and owners, the findings opened; exit 4 (live).
    let live_answer = json!({
        "state": "live", "fingerprint": fingerprint(&live), "credential_id": live_id,
        "nhi_id": live_nhi, "nhi_name": "svc-a-agent",
    });
    let revoked_answer = json!({
        "state": "revoked", "fingerprint": fingerprint(&revoked), "credential_id": revoked_id,
        "nhi_id": revoked_nhi, "nhi_name": "svc-b-agent",
    });
    let (code, out, all) = scan(&tree, Some(&server), &["--report"]).await;
    outputs.push_str(&all);
    assert_eq!(code, 4, "{all}");
    assert_eq!(
        out["matches"],
        expected(
            &tree,
            &live,
            &revoked,
            [live_answer.clone(), revoked_answer.clone()]
        )
    );
    assert_eq!(out["reuse"], reuse());
    assert_eq!(
        (out["live"].clone(), out["revoked"].clone()),
        (json!(1), json!(0))
    );
    let reported: Vec<(&str, i64)> = out["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap(),
                f["occurrences"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(reported.len(), 2, "{reported:?}");
    assert!(reported.contains(&("reused_secret", 1)) && reported.contains(&("leaked_secret", 1)));
    // Reporting is not revoking: the key still works.
    assert_eq!(tasks_status(&server, &live).await, StatusCode::CREATED);

    // --revoke --report: the live key revoked (and its row says so); the findings fold.
    let (code, out, all) = scan(&tree, Some(&server), &["--revoke", "--report"]).await;
    outputs.push_str(&all);
    assert_eq!(code, 4, "{all}");
    let mut revoked_now = live_answer.clone();
    revoked_now["action"] = json!("revoked");
    assert_eq!(
        out["matches"],
        expected(
            &tree,
            &live,
            &revoked,
            [revoked_now, revoked_answer.clone()]
        )
    );
    assert_eq!(
        (out["live"].clone(), out["revoked"].clone()),
        (json!(1), json!(1))
    );
    let mut occurrences: Vec<(String, i64)> = out["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["occurrences"].as_i64().unwrap(),
            )
        })
        .collect();
    occurrences.sort();
    assert_eq!(
        occurrences,
        [
            ("leaked_secret".to_owned(), 2),
            ("reused_secret".to_owned(), 2)
        ]
    );
    assert_eq!(tasks_status(&server, &live).await, StatusCode::UNAUTHORIZED);
    let events = server
        .admin(
            Method::GET,
            &format!("/v1/audit/events?kind=credential.revoked&nhi={live_nhi}"),
            None,
            StatusCode::OK,
        )
        .await;
    let details = &events["items"][0]["details"];
    assert_eq!(details["credential"], live_id.as_str());
    assert_eq!(details["fingerprint"], fingerprint(&live).as_str());
    let root = tree.dir.path().to_str().unwrap();
    assert_eq!(
        details["reason"],
        format!("found by custos scan in {root}/svc-a/.env").as_str()
    );

    // Once revoked, it is reported as revoked: nothing live, exit 5; the leak is not again.
    let (code, out, all) = scan(&tree, Some(&server), &["--report"]).await;
    outputs.push_str(&all);
    assert_eq!(code, 5, "{all}");
    assert_eq!(out["matches"][0]["state"], "revoked");
    assert_eq!(out["findings"].as_array().unwrap().len(), 1);

    // One finding of each, folded, with evidence that names places and digests only.
    let reused = findings(&server, "reused_secret").await;
    assert_eq!(reused.len(), 1, "{reused:?}");
    assert_eq!(reused[0]["occurrences"], 3);
    assert_eq!(reused[0]["nhi_id"], Value::Null);
    assert_eq!(
        reused[0]["dedupe_key"],
        format!("reused_secret:{}", sha(AWS_ID)).as_str()
    );
    assert_eq!(reused[0]["evidence"]["services"], json!(["svc-a", "svc-c"]));
    assert_eq!(reused[0]["evidence"]["secret_sha256"], sha(AWS_ID).as_str());
    let leaked = findings(&server, "leaked_secret").await;
    assert_eq!(leaked.len(), 1, "{leaked:?}");
    assert_eq!(leaked[0]["occurrences"], 2);
    assert_eq!(leaked[0]["nhi_id"], live_nhi.as_str());
    assert_eq!(leaked[0]["severity"], "high");
    assert_eq!(leaked[0]["evidence"]["credential_id"], live_id.as_str());
    assert_eq!(
        leaked[0]["evidence"]["locations"],
        json!([{"path": format!("{root}/svc-a/.env"), "line": 1, "service": "svc-a"}])
    );

    // The table form says the same in rows and a summary.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["scan", root, "--max-file-size", "100000"])
        .env("CUSTOS_URL", &server.base)
        .env("CUSTOS_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    let table = text(&out.stdout);
    outputs.push_str(&table);
    outputs.push_str(&text(&out.stderr));
    assert_eq!(out.status.code(), Some(5));
    assert!(
        table.contains("svc-a-agent") && table.contains("REUSED SECRET"),
        "{table}"
    );
    assert!(
        table.contains(&format!("skipped {root}/svc-e/blob.bin (binary)")),
        "{table}"
    );
    assert!(table.contains("12 secrets in 6 files"), "{table}");

    // No planted secret in anything the command printed, nor in the store.
    for secret in &tree.planted {
        assert!(
            !outputs.contains(secret.as_str()),
            "the output holds a planted secret"
        );
    }
    let store = store_bytes(&mut server).await;
    for secret in &tree.planted {
        assert!(
            !store.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the store holds a planted secret"
        );
    }
    assert!(
        store.windows(32).any(|w| w == sha(AWS_ID).as_bytes()),
        "the search reads the findings"
    );
}

/// `custos scan --revoke --report` against the real binary with its logs at debug: the check
/// sends the Custos keys themselves and the report fingerprints of the rest, and none of the
/// planted secrets, whole or a distinctive middle part, reaches the server's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_planted_secret_reaches_the_servers_debug_logs() {
    let binary = DebugBinary::start().await;
    let server = &binary.server;
    let TwoKeys { live, tree, .. } = plant_live_and_revoked(server).await;
    let (_, out, all) = scan(&tree, Some(server), &["--revoke", "--report"]).await;
    assert!(
        out["matches"].as_array().is_some_and(|m| !m.is_empty()),
        "{all}"
    );
    assert_eq!(
        tasks_status(server, &live).await,
        StatusCode::UNAUTHORIZED,
        "--revoke revoked it"
    );
    let (_, logs) = binary.stop().await;
    let logs = String::from_utf8_lossy(&logs);
    for route in [
        "/v1/discovery/secrets/check",
        "/v1/discovery/secrets/report",
        "DEBUG",
    ] {
        assert!(
            logs.contains(route),
            "{route} in the logs: the search reads what was logged"
        );
    }
    for secret in &tree.planted {
        let chars: Vec<char> = secret.chars().collect();
        let middle: String = chars[chars.len() / 4..chars.len() / 4 + chars.len() / 2]
            .iter()
            .collect();
        assert!(
            !logs.contains(secret.as_str()),
            "{secret} in the server's logs"
        );
        assert!(
            !logs.contains(&middle),
            "{middle} (part of {secret}) in the server's logs"
        );
    }
}

/// Every byte of the store: SQLite's files after a clean stop, or every row of the schema.
async fn store_bytes(server: &mut TestServer) -> Vec<u8> {
    server.server.take().unwrap().stop().await.unwrap();
    if let Some(url) = &server.database_url {
        return crate::secrets::dump_postgres(url).await;
    }
    let wal = server.data_dir().join("custos.db-wal");
    let deadline = Instant::now() + Duration::from_secs(10);
    while wal.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut all = Vec::new();
    for path in crate::secrets::files_under(server.data_dir()) {
        all.extend(std::fs::read(&path).unwrap());
    }
    all
}

async fn scan_endpoints_refuse_bad_input(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, key) = client(&server, "scan-agent", &["crm:read:customers/*"]).await;
    let (_, reviewer) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;
    let check = "/v1/discovery/secrets/check";
    let report = "/v1/discovery/secrets/report";
    let location = json!({"path": "a/.env", "line": 1, "service": "a"});
    let digest = sha("x");
    let cases: Vec<(&str, Option<&str>, Value, StatusCode, &str)> = vec![
        (
            check,
            Some(ADMIN_TOKEN),
            json!({"secrets": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            check,
            Some(ADMIN_TOKEN),
            json!({"secrets": ["not-a-key"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            check,
            Some(ADMIN_TOKEN),
            json!({"secrets": vec![key.clone(); 101]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            check,
            Some(ADMIN_TOKEN),
            json!({"secrets": [key], "extra": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            check,
            Some(reviewer.as_str()),
            json!({"secrets": [key]}),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            check,
            Some(&key),
            json!({"secrets": [key]}),
            StatusCode::FORBIDDEN,
            "operator_required",
        ),
        (
            check,
            None,
            json!({"secrets": [key]}),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            report,
            Some(ADMIN_TOKEN),
            json!({"secrets": [{"kind": "aws_access_key_id", "secret_sha256": "XYZ", "locations": [location]}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            report,
            Some(ADMIN_TOKEN),
            json!({"secrets": [{"kind": "nope", "secret_sha256": digest, "locations": [location]}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            report,
            Some(ADMIN_TOKEN),
            json!({"secrets": [{"kind": "aws_access_key_id", "secret_sha256": digest, "locations": []}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            report,
            Some(ADMIN_TOKEN),
            json!({"secrets": [{"kind": "aws_access_key_id", "secret_sha256": digest, "credential_id": "c", "locations": [location]}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            report,
            Some(ADMIN_TOKEN),
            json!({"secrets": [{"kind": "aws_access_key_id", "secret_sha256": digest, "locations": [{"path": "a", "line": 0, "service": "a"}]}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            report,
            Some(ADMIN_TOKEN),
            json!({"secrets": [{"kind": "custos_static_key", "secret_sha256": digest, "credential_id": "nope", "locations": [location]}]}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            report,
            Some(reviewer.as_str()),
            json!({"secrets": [{"kind": "aws_access_key_id", "secret_sha256": digest, "locations": [location]}]}),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ];
    for (path, token, body, status, code) in cases {
        let (got, problem) = server
            .call(Method::POST, path, token, Some(body.clone()))
            .await;
        assert_eq!(
            (got, problem["code"].as_str().unwrap()),
            (status, code),
            "{path} {body}: {problem}"
        );
        // A refused check never echoes what it was sent.
        assert!(!problem.to_string().contains(&key), "{problem}");
    }
    // An unknown (well-formed) key is `unknown`, and the answer holds no secret.
    let stranger = custos_core::token::mint(custos_core::token::SecretKind::StaticKey, &[42; 32]);
    let answer = server
        .admin(
            Method::POST,
            check,
            Some(json!({"secrets": [stranger, key]})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(answer["results"][0]["state"], "unknown");
    assert_eq!(answer["results"][1]["state"], "live");
    assert!(!answer.to_string().contains(&key) && !answer.to_string().contains(&stranger));
}
