//! The audit log as an auditor meets it: a signed checkpoint over every event, inclusion and
//! consistency proofs that verify against it, and the witness copy outside the store.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use custos_core::checkpoint::{Checkpoint, NoteVerifier};
use custos_core::merkle::{self, Hash};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestServer};

both_backends!(
    checkpoints_and_proofs_verify_offline,
    proof_requests_are_checked,
    a_changed_event_is_named,
    a_deleted_event_is_named,
    swapped_events_are_named,
    an_inserted_event_is_named,
    a_truncated_tail_is_caught_by_the_kept_checkpoint,
    exports_verify_offline_and_name_what_was_altered,
    a_secret_s_events_are_found_by_its_fingerprint,
    readiness_says_when_the_trail_cannot_be_sealed,
);

fn hash(text: &Value) -> Hash {
    Hash::from_slice(&STANDARD.decode(text.as_str().unwrap()).unwrap()).unwrap()
}

fn hashes(list: &Value) -> Vec<Hash> {
    list.as_array().unwrap().iter().map(hash).collect()
}

async fn checkpoint(server: &TestServer) -> (Checkpoint, Value) {
    let view = server
        .admin(Method::GET, "/v1/audit/checkpoint", None, StatusCode::OK)
        .await;
    let verifier = NoteVerifier::from_vkey(view["verifier_key"].as_str().unwrap()).unwrap();
    let checkpoint =
        Checkpoint::open(view["note"].as_str().unwrap().as_bytes(), &verifier).unwrap();
    assert_eq!(checkpoint.size(), view["size"].as_u64().unwrap());
    assert_eq!(checkpoint.root(), hash(&view["root"]));
    (checkpoint, view)
}

async fn checkpoints_and_proofs_verify_offline(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("auditors-see").await;
    for i in 0..5 {
        server.team(&format!("team-{i}")).await;
    }
    let (first, _) = checkpoint(&server).await;
    assert!(
        first.size() >= 7,
        "bootstrap, the first admin and six teams"
    );

    // Every leaf of the first checkpoint is proven against its root, and is the event the
    // trail lists at that position.
    for index in 0..first.size() {
        let proof = server
            .admin(
                Method::GET,
                &format!(
                    "/v1/audit/proof/inclusion?index={index}&size={}",
                    first.size()
                ),
                None,
                StatusCode::OK,
            )
            .await;
        let leaf = hash(&proof["leaf_hash"]);
        let event = custos_core::DomainEvent {
            id: proof["event"]["id"].as_str().unwrap().into(),
            kind: custos_core::EventKind::parse(proof["event"]["kind"].as_str().unwrap()).unwrap(),
            actor: custos_core::Actor::parse(proof["event"]["actor"].as_str().unwrap()).unwrap(),
            subject: proof["event"]["subject"].as_str().unwrap().into(),
            occurred_at: custos_core::Timestamp::parse_rfc3339(
                proof["event"]["occurred_at"].as_str().unwrap(),
            )
            .unwrap(),
            details: serde_json::from_value(proof["event"]["details"].clone()).unwrap(),
        };
        assert_eq!(
            custos_core::audit::leaf_hash(&event),
            leaf,
            "the leaf is that event"
        );
        merkle::verify_inclusion(
            &leaf,
            index,
            first.size(),
            &hashes(&proof["hashes"]),
            &first.root(),
        )
        .unwrap();
    }

    // More events, a newer checkpoint, and a proof that the new log extends the old one.
    for i in 5..9 {
        server.team(&format!("team-{i}")).await;
    }
    let (second, _) = checkpoint(&server).await;
    assert!(second.size() >= first.size() + 4);
    let proof = server
        .admin(
            Method::GET,
            &format!(
                "/v1/audit/proof/consistency?from={}&to={}",
                first.size(),
                second.size()
            ),
            None,
            StatusCode::OK,
        )
        .await;
    merkle::verify_consistency(
        first.size(),
        second.size(),
        &first.root(),
        &second.root(),
        &hashes(&proof["hashes"]),
    )
    .unwrap();
    // A tampered proof does not verify.
    let mut forged = hashes(&proof["hashes"]);
    if let Some(first_hash) = forged.first_mut() {
        *first_hash = merkle::leaf_hash(b"forged");
    }
    assert!(
        merkle::verify_consistency(
            first.size(),
            second.size(),
            &first.root(),
            &second.root(),
            &forged
        )
        .is_err()
    );

    // The witness copy outside the store holds the same signed note.
    let witness = server.data_dir().join("checkpoints").join("latest");
    let (_, view) = checkpoint(&server).await;
    assert_eq!(
        std::fs::read_to_string(witness).unwrap(),
        view["note"].as_str().unwrap()
    );
    server.stop().await;
}

async fn proof_requests_are_checked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (current, _) = checkpoint(&server).await;
    let size = current.size();
    for path in [
        format!("/v1/audit/proof/inclusion?index={size}&size={size}"),
        format!("/v1/audit/proof/inclusion?index=0&size={}", size + 1000),
        "/v1/audit/proof/inclusion?index=0&size=0".to_owned(),
        "/v1/audit/proof/inclusion?index=-1&size=1".to_owned(),
        "/v1/audit/proof/inclusion?index=0".to_owned(),
        format!("/v1/audit/proof/consistency?from={}&to=1", size),
        format!("/v1/audit/proof/consistency?from=0&to={}", size + 1000),
        "/v1/audit/proof/consistency?from=0&to=1&extra=1".to_owned(),
    ] {
        let (status, problem) = server
            .call(Method::GET, &path, Some(ADMIN_TOKEN), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {problem}");
    }
    server.team("reviewed").await;
    let (_, reviewer) = server.operator("rita", &["reviewer"], &["reviewed"]).await;
    let (_, auditor) = server.operator("aude", &["auditor"], &[]).await;
    let (status, _) = server
        .call(Method::GET, "/v1/audit/checkpoint", Some(&reviewer), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, view) = server
        .call(Method::GET, "/v1/audit/checkpoint", Some(&auditor), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    server.stop().await;
}

/// Direct access to the server's database, as an attacker with the disk would have.
enum Db {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Db {
    async fn open(server: &TestServer) -> Self {
        use sqlx::Connection;
        match &server.database_url {
            Some(url) => Db::Postgres(sqlx::PgConnection::connect(url).await.unwrap()),
            None => {
                let path = server.data_dir().join("custos.db");
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(std::time::Duration::from_secs(5));
                Db::Sqlite(
                    sqlx::SqliteConnection::connect_with(&options)
                        .await
                        .unwrap(),
                )
            }
        }
    }

    async fn exec(&mut self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Db::Sqlite(c) => {
                sqlx::raw_sql(sql).execute(c).await.unwrap();
            }
            Db::Postgres(c) => {
                sqlx::raw_sql(sql).execute(c).await.unwrap();
            }
        }
    }

    async fn seq_at(&mut self, index: u64) -> i64 {
        let sql = format!("SELECT event_seq FROM audit_leaves WHERE leaf_index = {index}");
        match self {
            Db::Sqlite(c) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(c)
                .await
                .unwrap(),
            Db::Postgres(c) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(c)
                .await
                .unwrap(),
        }
    }

    async fn leaf_hashes(&mut self) -> Vec<Vec<u8>> {
        let sql = "SELECT hash FROM audit_nodes WHERE level = 0 ORDER BY idx";
        match self {
            Db::Sqlite(c) => sqlx::query_scalar(sql).fetch_all(c).await.unwrap(),
            Db::Postgres(c) => sqlx::query_scalar(sql).fetch_all(c).await.unwrap(),
        }
    }
}

/// Runs `custos audit verify` (the binary) against the server; its status and output.
fn verify(server: &TestServer, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["audit", "verify"])
        .args(args)
        .env("CUSTOS_URL", &server.base)
        .env("CUSTOS_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A server with a few dozen events, its log sealed, and a checkpoint kept in a file.
async fn scene(backend: Backend) -> (TestServer, std::path::PathBuf) {
    let server = TestServer::start(backend).await;
    for i in 0..12 {
        server.team(&format!("team-{i}")).await;
    }
    let (_, view) = checkpoint(&server).await;
    let kept = server.data_dir().join("kept-checkpoint");
    std::fs::write(&kept, view["note"].as_str().unwrap()).unwrap();
    let (ok, text) = verify(&server, &["--checkpoint", kept.to_str().unwrap()]);
    assert!(ok, "an untouched log verifies: {text}");
    (server, kept)
}

async fn tamper_and_expect(backend: Backend, tamper: &str, expected: &str) {
    let (server, kept) = scene(backend).await;
    let mut db = Db::open(&server).await;
    let seq3 = db.seq_at(3).await;
    match tamper {
        "change a byte" => {
            db.exec(&format!("UPDATE events SET subject = subject || 'x' WHERE seq = {seq3}"))
                .await
        }
        "delete an event" => {
            db.exec(&format!("DELETE FROM audit_leaves WHERE leaf_index = 3; DELETE FROM events WHERE seq = {seq3}"))
                .await
        }
        "swap two" => {
            db.exec(
                "UPDATE audit_leaves SET leaf_index = -1 WHERE leaf_index = 3; \
                 UPDATE audit_leaves SET leaf_index = 3 WHERE leaf_index = 4; \
                 UPDATE audit_leaves SET leaf_index = 4 WHERE leaf_index = -1",
            )
            .await
        }
        "insert one" => {
            // A forged event put at position 3, the rest moved one along.
            db.exec(
                "UPDATE audit_leaves SET leaf_index = -leaf_index - 1 WHERE leaf_index >= 3; \
                 UPDATE audit_leaves SET leaf_index = -leaf_index WHERE leaf_index < 0; \
                 INSERT INTO events (id, kind, actor, subject, occurred_at, details) \
                     VALUES ('forged', 'team.created', 'system', 'team:forged', 1, '{}'); \
                 INSERT INTO audit_leaves (leaf_index, event_seq) \
                     SELECT 3, seq FROM events WHERE id = 'forged'",
            )
            .await
        }
        "truncate the tail" => {
            // The last three events go, and the log's head and checkpoints are rewritten to
            // match, so the server itself signs the shorter log: only the kept checkpoint tells.
            let hashes = db.leaf_hashes().await;
            let keep = hashes.len() - 3;
            let mut range = merkle::CompactRange::new();
            for h in &hashes[..keep] {
                range.push(Hash::from_slice(h).unwrap()).unwrap();
            }
            let last_seq = db.seq_at(keep as u64 - 1).await;
            let hex: String = range.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
            let sealed_until = format!("SELECT event_seq FROM audit_leaves WHERE leaf_index >= {keep}");
            db.exec(&format!(
                "CREATE TABLE doomed AS {sealed_until}; \
                 DELETE FROM audit_leaves WHERE leaf_index >= {keep}; \
                 DELETE FROM events WHERE seq IN (SELECT event_seq FROM doomed); \
                 DROP TABLE doomed; \
                 DELETE FROM audit_nodes WHERE (idx + 1) << CAST(level AS INTEGER) > {keep}; \
                 DELETE FROM audit_checkpoints; \
                 UPDATE meta SET value = '{keep},{last_seq},{hex}' WHERE key = 'audit_head'"
            ))
            .await
        }
        other => panic!("unknown tamper {other}"),
    }
    let (ok, text) = verify(&server, &["--checkpoint", kept.to_str().unwrap()]);
    assert!(!ok, "{tamper}: verification must fail: {text}");
    assert!(
        text.contains(expected),
        "{tamper}: expected {expected:?} in: {text}"
    );
    server.stop().await;
}

async fn a_changed_event_is_named(backend: Backend) {
    tamper_and_expect(backend, "change a byte", "index 3:").await;
}

async fn a_deleted_event_is_named(backend: Backend) {
    tamper_and_expect(backend, "delete an event", "index 3:").await;
}

async fn swapped_events_are_named(backend: Backend) {
    tamper_and_expect(backend, "swap two", "index 3:").await;
}

async fn an_inserted_event_is_named(backend: Backend) {
    tamper_and_expect(backend, "insert one", "index 3:").await;
}

async fn a_truncated_tail_is_caught_by_the_kept_checkpoint(backend: Backend) {
    tamper_and_expect(backend, "truncate the tail", "truncated").await;
}

async fn exports_verify_offline_and_name_what_was_altered(backend: Backend) {
    let (server, _) = scene(backend).await;
    let nhi = server.nhi("exported-bot", "team-0").await;
    let nhi_id = nhi["id"].as_str().unwrap();
    server.static_key(nhi_id).await;
    let dir = server.data_dir().to_path_buf();
    let write = |name: &str, value: &Value| {
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_vec(value).unwrap()).unwrap();
        path
    };
    let slice = server
        .admin(
            Method::GET,
            "/v1/audit/export?from=2&to=9",
            None,
            StatusCode::OK,
        )
        .await;
    let of_nhi = server
        .admin(
            Method::GET,
            &format!("/v1/audit/export?nhi={nhi_id}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        of_nhi["events"].as_array().unwrap().len(),
        2,
        "registered, key issued"
    );
    for (name, export) in [("slice.json", &slice), ("nhi.json", &of_nhi)] {
        let path = write(name, export);
        let (ok, text) = verify(&server, &[path.to_str().unwrap()]);
        assert!(ok, "{name}: {text}");
    }
    // Altered copies: one detail changed, one event dropped, another signer's key trusted.
    let mut changed = slice.clone();
    changed["events"][2]["event"]["subject"] = Value::from("team:someone-else");
    let (ok, text) = verify(
        &server,
        &[write("changed.json", &changed).to_str().unwrap()],
    );
    assert!(!ok && text.contains("index 4:"), "{text}");
    let mut dropped = slice.clone();
    dropped["events"].as_array_mut().unwrap().remove(3);
    let (ok, text) = verify(
        &server,
        &[write("dropped.json", &dropped).to_str().unwrap()],
    );
    assert!(!ok && text.contains("index 5:"), "{text}");
    let mut forged_proof = of_nhi.clone();
    forged_proof["events"][0]["inclusion"][0] = Value::from(STANDARD.encode([7u8; 32]));
    let (ok, text) = verify(
        &server,
        &[write("forged.json", &forged_proof).to_str().unwrap()],
    );
    assert!(
        !ok && text.contains("not in the checkpointed log"),
        "{text}"
    );
    let other_key = custos_core::checkpoint::NoteSigner::from_seed("someone/else", &[9; 32])
        .unwrap()
        .verifier()
        .to_vkey();
    let path = write("slice2.json", &slice);
    let (ok, text) = verify(&server, &[path.to_str().unwrap(), "--key", &other_key]);
    assert!(!ok && text.contains("another key"), "{text}");
    server.stop().await;
}

async fn a_secret_s_events_are_found_by_its_fingerprint(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("owners").await;
    let nhi = server.nhi("traced-bot", "owners").await;
    let other = server.nhi("other-bot", "owners").await;
    let nhi_id = nhi["id"].as_str().unwrap();
    let key = server.static_key(nhi_id).await;
    server.static_key(other["id"].as_str().unwrap()).await;
    let secret = key["secret"].as_str().unwrap();
    let hashed = server
        .admin(
            Method::POST,
            "/v1/audit/hash",
            Some(serde_json::json!({"secret": secret})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(hashed["fingerprint"], key["fingerprint"]);
    let found = server
        .admin(
            Method::GET,
            &format!(
                "/v1/audit/events?fingerprint={}",
                hashed["fingerprint"].as_str().unwrap()
            ),
            None,
            StatusCode::OK,
        )
        .await;
    let kinds: Vec<&str> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["credential.issued"]);
    // Revoking it adds its revocation to what the fingerprint finds.
    server
        .admin(
            Method::POST,
            &format!("/v1/credentials/{}/revoke", key["id"].as_str().unwrap()),
            None,
            StatusCode::OK,
        )
        .await;
    let found = server
        .admin(
            Method::GET,
            &format!(
                "/v1/audit/events?fingerprint={}",
                key["fingerprint"].as_str().unwrap()
            ),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(found["items"].as_array().unwrap().len(), 2);
    // By NHI: its registration, its key's issue and revocation; none of the other NHI's.
    let of_nhi = server
        .admin(
            Method::GET,
            &format!("/v1/audit/events?nhi={nhi_id}"),
            None,
            StatusCode::OK,
        )
        .await;
    let items = of_nhi["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{of_nhi}");
    assert!(
        items
            .iter()
            .all(|e| e["subject"] == format!("nhi:{nhi_id}"))
    );
    // By time: nothing before the server existed, everything before the far future.
    let none = server
        .admin(
            Method::GET,
            "/v1/audit/events?until=2000-01-01T00:00:00Z",
            None,
            StatusCode::OK,
        )
        .await;
    assert!(none["items"].as_array().unwrap().is_empty());
    let all = server
        .admin(
            Method::GET,
            "/v1/audit/events?since=2000-01-01T00:00:00Z&until=2100-01-01T00:00:00Z&limit=500",
            None,
            StatusCode::OK,
        )
        .await;
    assert!(all["items"].as_array().unwrap().len() >= 8);
    for bad in [
        "/v1/audit/events?fingerprint=%25",
        "/v1/audit/events?since=yesterday",
    ] {
        let (status, _) = server.call(Method::GET, bad, Some(ADMIN_TOKEN), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    server.stop().await;
}

async fn readiness_says_when_the_trail_cannot_be_sealed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, _) = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    // The disk loses the log's node table: the changes themselves still commit with their
    // events, but the trail cannot be sealed, and readiness must say so.
    let mut db = Db::open(&server).await;
    db.exec("DROP TABLE audit_nodes").await;
    server.team("after-the-loss").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        // Not `server.call`: a 503 is the right answer here, which it forbids.
        let response = server
            .http
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let problem: Value = response.json().await.unwrap();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(problem["code"], "audit_log_unavailable", "{problem}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readiness never reported the trail"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
