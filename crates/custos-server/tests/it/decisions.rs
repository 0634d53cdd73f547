//! The AuthZEN decision point as an enforcement point meets it: every reason code over HTTP,
//! batches and their semantics, malformed requests, who may ask, the trail of decisions, and
//! the revocation race.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestServer, client};

both_backends!(
    every_reason_code_reaches_the_enforcement_point,
    batches_follow_their_evaluation_semantics,
    only_enforcement_points_may_ask_and_bad_requests_are_refused,
    no_allow_is_answered_after_revoke_returns,
    custos_check_answers_scripts_by_exit_code,
);

fn ask(token: &str, service: &str, operation: &str, resource: &str) -> Value {
    json!({
        "subject": {"type": "agent", "id": "", "properties": {"token": token}},
        "action": {"name": operation},
        "resource": {"type": service, "id": resource},
    })
}

async fn evaluate(server: &TestServer, pep: &str, body: Value) -> (StatusCode, Value) {
    server
        .call(Method::POST, "/access/v1/evaluation", Some(pep), Some(body))
        .await
}

/// The decision and its reason code for one question.
async fn decide(server: &TestServer, pep: &str, body: Value) -> (bool, String) {
    let (status, answer) = evaluate(server, pep, body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    (
        answer["decision"].as_bool().expect("a boolean decision"),
        answer["context"]["reason"]
            .as_str()
            .expect("a reason")
            .to_owned(),
    )
}

fn verdict(allowed: bool, reason: &str) -> (bool, String) {
    (allowed, reason.to_owned())
}

async fn task_token(
    server: &TestServer,
    secret: &str,
    scope: &[&str],
    ttl: u32,
) -> (String, String) {
    let (status, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(secret),
            Some(json!({"purpose": "nightly report", "scope": scope, "ttl_seconds": ttl})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    (
        task["id"].as_str().unwrap().to_owned(),
        task["credential"]["access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

async fn client_token(server: &TestServer, id: &str, secret: &str) -> String {
    let (status, _, answer) = server
        .form(
            "/oauth2/token",
            Some((id, secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["access_token"].as_str().unwrap().to_owned()
}

async fn every_reason_code_reaches_the_enforcement_point(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let (agent_id, agent_key) =
        client(&server, "crm-agent", &["crm:read:customers/*", "mail:send"]).await;

    // A static key may do what its NHI's ceiling allows, and nothing else.
    assert_eq!(
        decide(&server, &pep, ask(&agent_key, "crm", "read", "customers/1")).await,
        verdict(true, "allowed")
    );
    let (_, answer) = evaluate(&server, &pep, ask(&agent_key, "crm", "read", "customers/1")).await;
    assert_eq!(answer["context"]["nhi"], agent_id.as_str());
    assert_eq!(
        decide(
            &server,
            &pep,
            ask(&agent_key, "crm", "write", "customers/1")
        )
        .await,
        verdict(false, "out_of_scope")
    );
    assert_eq!(
        decide(&server, &pep, ask(&agent_key, "crm", "read", "orders/1")).await,
        verdict(false, "out_of_scope")
    );
    // The subject the enforcement point names must be the credential's holder.
    let mut other = ask(&agent_key, "mail", "send", "");
    other["subject"]["id"] = json!("someone-else");
    assert_eq!(
        decide(&server, &pep, other).await,
        verdict(false, "subject_mismatch")
    );
    let mut by_id = ask(&agent_key, "mail", "send", "");
    by_id["subject"]["id"] = json!(agent_id);
    assert_eq!(decide(&server, &pep, by_id).await, verdict(true, "allowed"));
    let mut by_name = ask(&agent_key, "mail", "send", "");
    by_name["subject"]["id"] = json!("crm-agent");
    assert_eq!(
        decide(&server, &pep, by_name).await,
        verdict(true, "allowed")
    );

    // A task's token may do exactly the task's scope, until the task ends.
    let (task_id, token) = task_token(&server, &agent_key, &["crm:read:customers/42"], 600).await;
    assert_eq!(
        decide(&server, &pep, ask(&token, "crm", "read", "customers/42")).await,
        verdict(true, "allowed")
    );
    assert_eq!(
        decide(&server, &pep, ask(&token, "crm", "read", "customers/43")).await,
        verdict(false, "out_of_scope")
    );
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/v1/tasks/{task_id}/end"),
            Some(&agent_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        decide(&server, &pep, ask(&token, "crm", "read", "customers/42")).await,
        verdict(false, "task_ended")
    );

    // A token revoked by its client is refused at the next check.
    let token = client_token(&server, &agent_id, &agent_key).await;
    assert_eq!(
        decide(&server, &pep, ask(&token, "mail", "send", "")).await,
        verdict(true, "allowed")
    );
    let (status, _, _) = server
        .form(
            "/oauth2/revoke",
            Some((&agent_id, &agent_key)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        decide(&server, &pep, ask(&token, "mail", "send", "")).await,
        verdict(false, "revoked")
    );

    // A delegated token falls with its delegator's NHI.
    let (planner_id, planner_key) = client(&server, "planner", &["crm:read"]).await;
    let (helper_id, _) = client(&server, "helper", &["crm:read"]).await;
    let root = client_token(&server, &planner_id, &planner_key).await;
    let (status, _, delegated) = server
        .form(
            "/oauth2/token",
            Some((&planner_id, &planner_key)),
            &[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("subject_token", &root),
                ("audience", &helper_id),
                ("scope", "crm:read:customers/7"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{delegated}");
    let delegated = delegated["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        decide(&server, &pep, ask(&delegated, "crm", "read", "customers/7")).await,
        verdict(true, "allowed")
    );
    server
        .admin(
            Method::POST,
            &format!("/v1/nhis/{planner_id}/suspend"),
            Some(json!({"reason": "incident"})),
            StatusCode::OK,
        )
        .await;
    let (_, answer) = evaluate(&server, &pep, ask(&delegated, "crm", "read", "customers/7")).await;
    assert_eq!(answer["decision"], false, "{answer}");
    assert_eq!(answer["context"]["reason"], "nhi_suspended", "{answer}");
    assert_eq!(
        answer["context"]["refused_nhi"],
        planner_id.as_str(),
        "{answer}"
    );

    // Suspending the agent itself refuses its key.
    server
        .admin(
            Method::POST,
            &format!("/v1/nhis/{agent_id}/suspend"),
            Some(json!({"reason": "incident"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        decide(&server, &pep, ask(&agent_key, "crm", "read", "customers/1")).await,
        verdict(false, "nhi_suspended")
    );

    // A rotated key lives on for the grace period (1 s in tests), then is refused as expired:
    // rotation reaches the live state as it shortens the key.
    let (short_id, short) = client(&server, "rotating", &["mail:send"]).await;
    assert_eq!(
        decide(&server, &pep, ask(&short, "mail", "send", "")).await,
        verdict(true, "allowed")
    );
    let (_, creds) = server
        .call(
            Method::GET,
            &format!("/v1/credentials?nhi_id={short_id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    let old = creds["items"][0]["id"].as_str().unwrap().to_owned();
    let rotated = server
        .admin(
            Method::POST,
            &format!("/v1/credentials/{old}/rotate"),
            None,
            StatusCode::CREATED,
        )
        .await;
    let new_key = rotated["key"]["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        decide(&server, &pep, ask(&short, "mail", "send", "")).await,
        verdict(true, "allowed")
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        decide(&server, &pep, ask(&short, "mail", "send", "")).await,
        verdict(false, "expired")
    );
    assert_eq!(
        decide(&server, &pep, ask(&new_key, "mail", "send", "")).await,
        verdict(true, "allowed")
    );

    // Forged, unknown and foreign secrets.
    let (_, fresh) = client(&server, "fresh", &["mail:send"]).await;
    let fresh_token = {
        let (id, key) = client(&server, "fresh-2", &["mail:send"]).await;
        client_token(&server, &id, &key).await
    };
    let mut forged = fresh_token.clone();
    forged.pop();
    forged.push(if fresh_token.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(
        decide(&server, &pep, ask(&forged, "mail", "send", "")).await,
        verdict(false, "invalid_token")
    );
    assert_eq!(
        decide(&server, &pep, ask("not a credential", "mail", "send", "")).await,
        verdict(false, "invalid_token")
    );
    // A well-formed key that was never issued.
    let mut unknown = fresh.clone();
    let tail = unknown.split_off(unknown.len() - 1);
    unknown.push(if tail == "a" { 'b' } else { 'a' });
    let (allowed, reason) = decide(&server, &pep, ask(&unknown, "mail", "send", "")).await;
    assert!(!allowed);
    assert!(
        ["invalid_token", "unknown_credential"].contains(&reason.as_str()),
        "{reason}"
    );
    // An operator token is not an agent credential.
    assert_eq!(
        decide(&server, &pep, ask(ADMIN_TOKEN, "mail", "send", "")).await,
        verdict(false, "invalid_token")
    );

    // Every decision is in the trail, by fingerprint, never by secret; what was let through
    // is the credential's and its NHI's last use.
    server.state().decisions.flush(Duration::from_secs(5)).await;
    let nhi = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{agent_id}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(nhi["last_used_at"].is_string(), "{nhi}");
    let (_, creds) = server
        .call(
            Method::GET,
            &format!("/v1/credentials?nhi_id={agent_id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert!(
        creds["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["last_used_at"].is_string()),
        "{creds}"
    );
    let (status, events) = server
        .call(
            Method::GET,
            "/v1/audit/events?kind=access.decided&limit=200",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let items = events["items"].as_array().unwrap();
    assert!(items.len() >= 20, "{}", items.len());
    let text = events.to_string();
    assert!(
        !text.contains(&agent_key) && !text.contains(&token),
        "a secret reached the trail"
    );
    let reasons: Vec<&str> = items
        .iter()
        .filter_map(|e| e["details"]["reason"].as_str())
        .collect();
    for reason in [
        "allowed",
        "out_of_scope",
        "task_ended",
        "revoked",
        "nhi_suspended",
        "expired",
        "invalid_token",
        "subject_mismatch",
    ] {
        assert!(reasons.contains(&reason), "no {reason} in {reasons:?}");
    }
    assert!(items.iter().all(|e| {
        e["details"]["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("fp_"))
    }));
    server.stop().await;
}

async fn batches_follow_their_evaluation_semantics(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let (_, key) = client(&server, "crm-agent", &["crm:read"]).await;
    let items = json!([
        {"action": {"name": "read"}},
        {"action": {"name": "write"}},
        {"action": {"name": "read"}, "resource": {"type": "crm", "id": "orders/2"}},
        {"action": {"name": "read"}, "resource": {"type": "mail", "id": ""}},
    ]);
    let batch = |semantic: Option<&str>| {
        let mut body = json!({
            "subject": {"type": "agent", "id": "", "properties": {"token": key}},
            "resource": {"type": "crm", "id": "customers/1"},
            "evaluations": items,
        });
        if let Some(semantic) = semantic {
            body["options"] = json!({"evaluations_semantic": semantic});
        }
        body
    };
    let decisions = |answer: &Value| -> Vec<bool> {
        answer["evaluations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["decision"].as_bool().unwrap())
            .collect()
    };
    for (semantic, expected) in [
        (None, vec![true, false, true, false]),
        (Some("execute_all"), vec![true, false, true, false]),
        (Some("deny_on_first_deny"), vec![true, false]),
        (Some("permit_on_first_permit"), vec![true]),
    ] {
        let (status, answer) = server
            .call(
                Method::POST,
                "/access/v1/evaluations",
                Some(&pep),
                Some(batch(semantic)),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(decisions(&answer), expected, "{semantic:?}: {answer}");
    }
    // An item that cannot be asked is a deny carrying the error; the others are answered.
    let (status, answer) = server
        .call(
            Method::POST,
            "/access/v1/evaluations",
            Some(&pep),
            Some(json!({
                "action": {"name": "read"},
                "resource": {"type": "crm", "id": "x"},
                "evaluations": [
                    {"subject": {"type": "agent", "id": "", "properties": {"token": key}}},
                    {"subject": {"type": "agent", "id": ""}},
                    {}
                ]
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(decisions(&answer), [true, false, false]);
    assert_eq!(answer["evaluations"][1]["context"]["error"]["status"], 400);
    // Without items, a batch request is one evaluation.
    let (status, answer) = server
        .call(
            Method::POST,
            "/access/v1/evaluations",
            Some(&pep),
            Some(ask(&key, "crm", "read", "customers/1")),
        )
        .await;
    assert_eq!(
        (status, answer["decision"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{answer}"
    );
    server.stop().await;
}

async fn only_enforcement_points_may_ask_and_bad_requests_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let (_, key) = client(&server, "crm-agent", &["crm:read"]).await;
    let good = ask(&key, "crm", "read", "x");

    let (status, config) = server
        .call(
            Method::GET,
            "/.well-known/authzen-configuration",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        config["access_evaluation_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/access/v1/evaluation")
    );
    assert!(
        config["access_evaluations_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/access/v1/evaluations")
    );
    assert_eq!(config["policy_decision_point"], server.base.as_str());

    let (status, _) = evaluate(&server, "", good.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, problem) = server
        .call(
            Method::POST,
            "/access/v1/evaluation",
            None,
            Some(good.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    // An agent without custos:evaluate, and an operator, are not enforcement points.
    let (status, problem) = evaluate(&server, &key, good.clone()).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("evaluate_not_allowed")),
        "{problem}"
    );
    let (status, _) = evaluate(&server, ADMIN_TOKEN, good.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    for (body, what) in [
        (json!({}), "empty"),
        (
            json!({"subject": {"type": "agent", "id": ""}, "action": {"name": "read"}, "resource": {"type": "crm", "id": "x"}}),
            "no token",
        ),
        (
            json!({"subject": {"type": "agent", "id": "", "properties": {"token": 7}}, "action": {"name": "read"}, "resource": {"type": "crm", "id": "x"}}),
            "token not a string",
        ),
        (
            json!({"subject": {"type": "agent", "id": "", "properties": {"token": key}}, "resource": {"type": "crm", "id": "x"}}),
            "no action",
        ),
        (
            json!({"subject": {"type": "agent", "id": "", "properties": {"token": key}}, "action": {"name": ""}, "resource": {"type": "crm", "id": "x"}}),
            "empty action",
        ),
        (
            json!({"subject": {"type": "agent", "id": "", "properties": {"token": key}}, "action": {"name": "read"}, "resource": {"type": "", "id": "x"}}),
            "empty service",
        ),
        (json!([1, 2]), "not an object"),
    ] {
        let (status, problem) = evaluate(&server, &pep, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {problem}");
        assert!(problem["code"].is_string(), "{what}: {problem}");
    }
    let (status, problem) = server
        .call(
            Method::POST,
            "/access/v1/evaluations",
            Some(&pep),
            Some(json!({"evaluations": []})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let too_many: Vec<Value> = (0..1_001).map(|_| json!({})).collect();
    let mut body = good.clone();
    body["evaluations"] = json!(too_many);
    let (status, _) = server
        .call(
            Method::POST,
            "/access/v1/evaluations",
            Some(&pep),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Revoking the enforcement point's own key shuts it out at once.
    let (status, creds) = server
        .call(
            Method::GET,
            "/v1/credentials?limit=100",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let fingerprint = server.state().keys.fingerprint(&pep);
    let pep_credential = creds["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["fingerprint"] == fingerprint.as_str())
        .expect("the gateway's key is listed")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .admin(
            Method::POST,
            &format!("/v1/credentials/{pep_credential}/revoke"),
            None,
            StatusCode::OK,
        )
        .await;
    let (status, _) = evaluate(&server, &pep, good).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

/// Concurrent checks of one credential while it is revoked: every check that starts after
/// `revoke` has returned is refused.
async fn no_allow_is_answered_after_revoke_returns(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let (agent_id, key) = client(&server, "crm-agent", &["crm:read"]).await;
    let (_, creds) = server
        .call(
            Method::GET,
            &format!("/v1/credentials?nhi_id={agent_id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    let credential = creds["items"][0]["id"].as_str().unwrap().to_owned();
    let revoked_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let stop_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let mut checkers = Vec::new();
    for _ in 0..8 {
        let (server, pep, key, stop_at) =
            (server.clone(), pep.clone(), key.clone(), stop_at.clone());
        checkers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                if stop_at.lock().unwrap().is_some_and(|s| Instant::now() >= s) {
                    return seen;
                }
                let started = Instant::now();
                let (allowed, _) = decide(&server, &pep, ask(&key, "crm", "read", "x")).await;
                seen.push((started, allowed));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server
        .admin(
            Method::POST,
            &format!("/v1/credentials/{credential}/revoke"),
            None,
            StatusCode::OK,
        )
        .await;
    let returned = Instant::now();
    *revoked_at.lock().unwrap() = Some(returned);
    *stop_at.lock().unwrap() = Some(returned + Duration::from_millis(300));
    let mut before = 0;
    let mut after = 0;
    for checker in checkers {
        for (started, allowed) in checker.await.unwrap() {
            if started > returned {
                after += 1;
                assert!(
                    !allowed,
                    "a check started {:?} after revoke returned was allowed",
                    started - returned
                );
            } else if allowed {
                before += 1;
            }
        }
    }
    assert!(before > 0 && after > 0, "before {before}, after {after}");
    Arc::into_inner(server)
        .expect("the checkers are done")
        .stop()
        .await;
}

/// `custos check` for scripts: 0 allowed, 3 refused with the reason, 1 when it cannot ask.
async fn custos_check_answers_scripts_by_exit_code(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let (_, key) = client(&server, "crm-agent", &["crm:read:customers/*"]).await;
    let check = |token: &str, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_custos"))
            .arg("check")
            .args(args)
            .env("CUSTOS_URL", &server.base)
            .env("CUSTOS_TOKEN", token)
            .env("CUSTOS_CHECK_CREDENTIAL", &key)
            .output()
            .unwrap()
    };
    let allowed = check(&pep, &["crm", "read", "customers/1", "--output", "json"]);
    assert_eq!(allowed.status.code(), Some(0), "{allowed:?}");
    let answer: Value = serde_json::from_slice(&allowed.stdout).unwrap();
    assert_eq!(answer["context"]["reason"], "allowed");
    let refused = check(&pep, &["crm", "delete", "customers/1"]);
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("out_of_scope"));
    // The agent's own key is not an enforcement point's: an error, not a refusal.
    let error = check(&key, &["crm", "read", "customers/1"]);
    assert_eq!(error.status.code(), Some(1), "{error:?}");
    assert!(String::from_utf8_lossy(&error.stderr).contains("evaluate_not_allowed"));
    server.stop().await;
}

/// Two nodes on one PostgreSQL store: what one revokes, suspends or changes in the guardrails,
/// the other refuses within a few of its polling intervals (100 ms), though it had the
/// credential warm in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_nodes_changes_reach_this_node() {
    let first = TestServer::start(Backend::Postgres).await;
    let master_key = std::fs::read_to_string(first.data_dir().join("master.key")).unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::test_config(second_dir.path(), first.database_url.clone());
    config.master_key = Some(master_key.trim().to_owned());
    let second = custos_server::serve::start(config).await.unwrap();
    let second_base = format!("http://{}", second.addr);
    let (_, pep) = client(&first, "gateway", &["custos:evaluate"]).await;
    let (agent_id, key) = client(&first, "crm-agent", &["crm:read", "mail:read"]).await;
    let http = reqwest::Client::new();
    let on_second = async |service: &str| -> (bool, String) {
        let answer: Value = http
            .post(format!("{second_base}/access/v1/evaluation"))
            .bearer_auth(&pep)
            .json(&ask(&key, service, "read", "x"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            answer["decision"].as_bool().unwrap_or(false),
            answer["context"]["reason"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        )
    };
    let within = async |deadline: Duration, service: &str, wanted: (bool, &str)| {
        let started = Instant::now();
        loop {
            let got = on_second(service).await;
            if got == (wanted.0, wanted.1.to_owned()) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < deadline,
                "still {got:?} after {deadline:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    assert_eq!(on_second("crm").await, verdict(true, "allowed"));
    // A guardrail kept on the first node applies on the second.
    let (status, _) = first
        .call(
            Method::PUT,
            "/v1/policies",
            Some(ADMIN_TOKEN),
            Some(json!({"policies": "forbid(principal, action in Custos::Action::\"mail:*\", resource);",
                        "catalogue": {"services": [{"name": "mail", "operations": ["read"]}]}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    within(Duration::from_secs(2), "mail", (false, "policy_forbid")).await;
    // Suspended on the first node, refused on the second.
    first
        .admin(
            Method::POST,
            &format!("/v1/nhis/{agent_id}/suspend"),
            None,
            StatusCode::OK,
        )
        .await;
    let took = within(Duration::from_secs(2), "crm", (false, "nhi_suspended")).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    second.stop().await.unwrap();
    first.stop().await;
}
