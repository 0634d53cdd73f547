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
