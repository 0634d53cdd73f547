//! The lifecycle scheduler as its users meet it, on a clock the tests move: an NHI left
//! unused for 90 days lands in its owner team's inbox as a decommission review, and approving
//! it retires the NHI; expiry follows the configured policy; an aging static key is rotated
//! with a grace period and its replacement collected once with the old key; tasks past their
//! lifetime are closed; orphans and high-risk NHIs get ownership reviews.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestClock, TestServer, client};

both_backends!(
    ninety_idle_days_lead_to_a_review_an_approval_and_a_decommission,
    expiry_decommissions_or_asks_for_a_review_per_policy,
    an_aging_static_key_is_rotated_with_a_grace_period_and_collected_once,
    tasks_past_their_lifetime_are_closed,
    orphans_and_high_risk_nhis_get_ownership_reviews,
    a_staged_decommission_watches_then_revokes_or_is_cancelled,
);

/// A server on `clock` whose scheduler stays out of the way (the tests run rounds themselves)
/// and whose static keys outlive the walk through the calendar.
async fn clocked(backend: Backend, clock: &Arc<TestClock>) -> TestServer {
    TestServer::start_clocked(backend, Some(clock.clone()), |config| {
        config.lifecycle_interval_seconds = 86_400;
        config.static_key_max_age_seconds = 365 * 86_400;
        config.lifecycle.rotate_keys_after_days = 0;
    })
    .await
}

/// Runs one round of the lifecycle jobs now, as `custos lifecycle run` does.
async fn run_round(server: &TestServer) -> Value {
    let report = server
        .admin(Method::POST, "/v1/lifecycle/run", None, StatusCode::OK)
        .await;
    assert_eq!(report["scanned_inventory"], true, "{report}");
    report
}

/// The requests of one kind about one NHI, newest last.
async fn reviews_of(server: &TestServer, nhi: &str, kind: &str) -> Vec<Value> {
    server
        .admin(
            Method::GET,
            &format!("/v1/approvals?nhi_id={nhi}&kind={kind}"),
            None,
            StatusCode::OK,
        )
        .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// Whether the gateway `pep` is told to let `credential` read an invoice.
async fn allowed(server: &TestServer, pep: &str, credential: &str) -> bool {
    let body = json!({
        "subject": {"type": "agent", "id": "", "properties": {"token": credential}},
        "action": {"name": "read"},
        "resource": {"type": "erp", "id": "invoices/7"},
    });
    let (status, answer) = server
        .call(Method::POST, "/access/v1/evaluation", Some(pep), Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["decision"] == json!(true)
}

async fn nhi(server: &TestServer, id: &str) -> Value {
    server
        .admin(Method::GET, &format!("/v1/nhis/{id}"), None, StatusCode::OK)
        .await
}

async fn decide(server: &TestServer, token: &str, id: &str, verb: &str, reason: &str) -> Value {
    let (status, decided) = server
        .call(
            Method::POST,
            &format!("/v1/approvals/{id}/{verb}"),
            Some(token),
            Some(json!({"reason": reason})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    decided
}

async fn ninety_idle_days_lead_to_a_review_an_approval_and_a_decommission(backend: Backend) {
    let clock = TestClock::new();
    let server = clocked(backend, &clock).await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let (idle, idle_key) = client(&server, "idle-agent", &["erp:read:invoices/*"]).await;
    let (busy, busy_key) = client(&server, "busy-agent", &["erp:read:invoices/*"]).await;
    let (kept, _) = client(&server, "kept-agent", &["erp:read:invoices/*"]).await;
    let (_, reviewer) = server
        .operator("olga", &["reviewer"], &["owners-oauth"])
        .await;
    assert_eq!(run_round(&server).await["decommission_reviews"], 0);

    // Sixty days on, one agent works; it is not idle ninety days later.
    clock.advance_days(60);
    assert!(allowed(&server, &pep, &busy_key).await);
    let deadline = Instant::now() + Duration::from_secs(15);
    while nhi(&server, &busy).await["last_used_at"].is_null() {
        assert!(Instant::now() < deadline, "the use was never recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    clock.advance_days(29);
    assert_eq!(
        run_round(&server).await["decommission_reviews"],
        0,
        "89 days is not yet idle"
    );
    clock.advance_days(2);
    let report = run_round(&server).await;
    // The idle agent and the kept one, never used. The gateway presented its key to evaluate
    // the busy agent's call, which counts as use.
    assert_eq!(report["decommission_reviews"], 2, "{report}");
    assert!(reviews_of(&server, &busy, "decommission").await.is_empty());
    let review = reviews_of(&server, &idle, "decommission").await;
    assert_eq!(review.len(), 1, "{review:?}");
    let review = &review[0];
    assert_eq!(review["state"], "pending", "{review}");
    assert_eq!(
        review["task_id"],
        Value::Null,
        "a review of the nhi has no task"
    );
    assert_eq!(review["requested_scope"], json!([]));
    assert!(
        review["risk_factors"][0]
            .as_str()
            .unwrap()
            .contains("never used since it was registered 91 days ago"),
        "{review}"
    );
    // The reviewer sees it in the team's inbox; a second round opens nothing new.
    let (_, inbox) = server
        .call(
            Method::GET,
            "/v1/approvals?state=pending&kind=decommission",
            Some(&reviewer),
            None,
        )
        .await;
    assert!(
        inbox["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == review["id"]),
        "{inbox}"
    );
    assert_eq!(run_round(&server).await["decommission_reviews"], 0);

    // Approving decommissions the idle agent; its key is refused.
    assert!(allowed(&server, &pep, &idle_key).await, "usable until then");
    let decided = decide(
        &server,
        &reviewer,
        review["id"].as_str().unwrap(),
        "approve",
        "nobody uses it",
    )
    .await;
    assert_eq!(decided["state"], "approved");
    let workflow = server.decommissioned(&idle).await;
    assert_eq!(workflow["trigger"], "review", "{workflow}");
    assert!(
        workflow["reason"]
            .as_str()
            .unwrap()
            .contains(review["id"].as_str().unwrap()),
        "{workflow}"
    );
    assert_eq!(nhi(&server, &idle).await["status"], "decommissioned");
    assert!(!allowed(&server, &pep, &idle_key).await);

    // A review denied keeps the agent, and it is not asked again until it has been idle for
    // another period.
    let kept_review = reviews_of(&server, &kept, "decommission").await;
    decide(
        &server,
        &reviewer,
        kept_review[0]["id"].as_str().unwrap(),
        "deny",
        "the quarterly job needs it",
    )
    .await;
    assert_eq!(nhi(&server, &kept).await["status"], "active");
    clock.advance_days(30);
    run_round(&server).await;
    assert_eq!(reviews_of(&server, &kept, "decommission").await.len(), 1);
    clock.advance_days(61);
    run_round(&server).await;
    let again = reviews_of(&server, &kept, "decommission").await;
    assert_eq!(again.len(), 2, "asked again after another idle period");

    // A reviewer of another team cannot decide it; nobody decides it twice.
    server.team("elsewhere").await;
    let (_, stranger) = server.operator("sam", &["reviewer"], &["elsewhere"]).await;
    let newest = again.iter().find(|a| a["state"] == "pending").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, problem) = server
        .call(
            Method::POST,
            &format!("/v1/approvals/{newest}/approve"),
            Some(&stranger),
            Some(json!({"reason": "not mine"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (status, problem) = server
        .call(
            Method::POST,
            &format!("/v1/approvals/{}/approve", review["id"].as_str().unwrap()),
            Some(&reviewer),
            Some(json!({"reason": "again"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "approval_not_pending");
    server.stop().await;
}

async fn expiry_decommissions_or_asks_for_a_review_per_policy(backend: Backend) {
    let clock = TestClock::new();
    let server = clocked(backend, &clock).await;
    server.team("owners").await;
    let in_ten_days = custos_core::Timestamp::from_unix_millis(
        custos_server::service::Clock::now(clock.as_ref()).unix_millis() + 10 * 86_400_000,
    )
    .unwrap()
    .to_rfc3339();
    let register = |name: &'static str, tags: Value| {
        let mut body = crate::support::nhi_body(name, "owners");
        body["expires_at"] = json!(in_ten_days);
        body["tags"] = tags;
        let server = &server;
        async move {
            server
                .admin(Method::POST, "/v1/nhis", Some(body), StatusCode::CREATED)
                .await["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let retired = register("retired-agent", json!({})).await;
    let reviewed = register(
        "reviewed-agent",
        json!({"custos.lifecycle.on_expiry": "review"}),
    )
    .await;
    let report = run_round(&server).await;
    assert_eq!(report["decommissions_started"], 0, "{report}");

    clock.advance_days(11);
    let report = run_round(&server).await;
    assert_eq!(report["decommissions_started"], 1, "{report}");
    assert_eq!(report["decommission_reviews"], 1, "{report}");
    let workflow = server.decommissioned(&retired).await;
    assert_eq!(workflow["trigger"], "timeout");
    assert_eq!(nhi(&server, &reviewed).await["status"], "active");
    let review = reviews_of(&server, &reviewed, "decommission").await;
    assert_eq!(review.len(), 1);
    assert!(
        review[0]["purpose"]
            .as_str()
            .unwrap()
            .contains("expired at"),
        "{}",
        review[0]
    );
    // Denied: the expired NHI stays (unusable, but kept), and is not asked about again.
    decide(
        &server,
        ADMIN_TOKEN,
        review[0]["id"].as_str().unwrap(),
        "deny",
        "the contract is being renewed",
    )
    .await;
    clock.advance_days(1);
    let report = run_round(&server).await;
    assert_eq!(report["decommission_reviews"], 0, "{report}");
    assert_eq!(report["decommissions_started"], 0, "{report}");
    assert_eq!(nhi(&server, &reviewed).await["status"], "active");
    server.stop().await;
}

async fn an_aging_static_key_is_rotated_with_a_grace_period_and_collected_once(backend: Backend) {
    let clock = TestClock::new();
    let server = TestServer::start_clocked(backend, Some(clock.clone()), |config| {
        config.lifecycle_interval_seconds = 86_400;
        config.static_key_max_age_seconds = 90 * 86_400;
        config.static_key_rotation_grace_seconds = 86_400;
        config.lifecycle.rotate_keys_after_days = 60;
    })
    .await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let (agent, old_key) = client(&server, "rotating-agent", &["erp:read:invoices/*"]).await;
    let (flagged, flagged_key) = client(&server, "flagged-agent", &["erp:read:invoices/*"]).await;
    server
        .admin(
            Method::PATCH,
            &format!("/v1/nhis/{flagged}"),
            Some(json!({"tags": {"custos.lifecycle.on_key_age": "flag"}})),
            StatusCode::OK,
        )
        .await;
    // Nothing waits to be collected yet.
    let (status, problem) = server
        .call(
            Method::POST,
            "/v1/credentials/rotated",
            Some(&old_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(problem["code"], "nothing_to_collect");

    clock.advance_days(59);
    let report = run_round(&server).await;
    assert_eq!(report["keys_rotated"], 0, "{report}");
    clock.advance_days(2);
    let report = run_round(&server).await;
    // The rotating agent's key and the gateway's are rotated; the flagged one only flagged.
    assert_eq!(report["keys_rotated"], 2, "{report}");
    assert_eq!(report["keys_flagged"], 1, "{report}");
    let findings = server
        .admin(
            Method::GET,
            &format!("/v1/findings?nhi_id={agent}&kind=key_rotated"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(findings["items"].as_array().unwrap().len(), 1, "{findings}");
    let stale = server
        .admin(
            Method::GET,
            &format!("/v1/findings?nhi_id={flagged}&kind=stale_key"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(stale["items"].as_array().unwrap().len(), 1, "{stale}");
    assert!(
        allowed(&server, &pep, &flagged_key).await,
        "flagged, not rotated"
    );
    let report = run_round(&server).await;
    assert_eq!(
        report["keys_rotated"], 0,
        "each key is rotated once: {report}"
    );
    assert_eq!(
        report["keys_flagged"], 0,
        "each key is flagged once: {report}"
    );

    // The old key works through the grace period and collects its replacement, once.
    assert!(allowed(&server, &pep, &old_key).await);
    let (status, _, collected) = server
        .call_full(
            Method::POST,
            "/v1/credentials/rotated",
            Some(&old_key),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{collected}");
    let new_key = collected["key"]["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_key, old_key);
    assert!(allowed(&server, &pep, &new_key).await);
    let (status, problem) = server
        .call(
            Method::POST,
            "/v1/credentials/rotated",
            Some(&old_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "once only: {problem}");
    // Only the nhi, with the old static key, collects.
    let (status, problem) = server
        .call(
            Method::POST,
            "/v1/credentials/rotated",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["code"], "nhi_required");

    // The gateway's key was rotated too: it collects its replacement before the old one dies.
    let (status, gateway) = server
        .call(Method::POST, "/v1/credentials/rotated", Some(&pep), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{gateway}");
    let pep = gateway["key"]["secret"].as_str().unwrap().to_owned();

    // After the grace period the old key is dead and the new one lives on.
    clock.advance_days(1);
    clock.advance_seconds(1);
    assert!(!allowed(&server, &pep, &old_key).await);
    assert!(allowed(&server, &pep, &new_key).await);
    let events = server
        .admin(
            Method::GET,
            &format!("/v1/audit/events?nhi={agent}"),
            None,
            StatusCode::OK,
        )
        .await;
    let kinds: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"credential.rotated"), "{kinds:?}");
    assert!(kinds.contains(&"credential.collected"), "{kinds:?}");
    server.stop().await;
}

async fn tasks_past_their_lifetime_are_closed(backend: Backend) {
    let clock = TestClock::new();
    let server = clocked(backend, &clock).await;
    let (_, key) = client(&server, "tasked-agent", &["erp:read:invoices/*"]).await;
    let (status, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&key),
            Some(
                json!({"purpose": "read one invoice", "scope": ["erp:read:invoices/7"],
                        "ttl_seconds": 300}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let id = task["id"].as_str().unwrap();
    assert_eq!(run_round(&server).await["tasks_closed"], 0);
    clock.advance_seconds(301);
    assert_eq!(run_round(&server).await["tasks_closed"], 1);
    assert_eq!(run_round(&server).await["tasks_closed"], 0, "closed once");
    let (_, after) = server
        .call(Method::GET, &format!("/v1/tasks/{id}"), Some(&key), None)
        .await;
    assert_eq!(after["state"], "ended", "{after}");
    assert_eq!(after["ended_at"], after["expires_at"], "{after}");
    server.stop().await;
}

async fn orphans_and_high_risk_nhis_get_ownership_reviews(backend: Backend) {
    let clock = TestClock::new();
    let server = clocked(backend, &clock).await;
    let platform = server.team("platform").await["id"].clone();
    server.team("lonely").await;
    server
        .admin(
            Method::PATCH,
            "/v1/teams/lonely",
            Some(json!({"fallback_team": "platform"})),
            StatusCode::OK,
        )
        .await;
    let (lonely_member, _) = server.operator("lena", &["reviewer"], &["lonely"]).await;
    let (_, platform_reviewer) = server.operator("pat", &["reviewer"], &["platform"]).await;
    let (carol, _) = server.operator("carol", &["auditor"], &["platform"]).await;
    let mut body = crate::support::nhi_body("lonely-agent", "lonely");
    body["owner"] = json!({"team": "lonely"});
    let orphan = server
        .admin(Method::POST, "/v1/nhis", Some(body), StatusCode::CREATED)
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut body = crate::support::nhi_body("carols-agent", "platform");
    body["owner"] = json!({"team": "platform", "contact": "Carol"});
    let contactless = server
        .admin(Method::POST, "/v1/nhis", Some(body), StatusCode::CREATED)
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut body = crate::support::nhi_body("payments-agent", "platform");
    body["tags"] = json!({"risk": "85"});
    let risky = server
        .admin(Method::POST, "/v1/nhis", Some(body), StatusCode::CREATED)
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A team that never had members is run by the admins: its NHIs are not orphans.
    server.team("admin-run").await;
    server.nhi("admin-run-agent", "admin-run").await;
    let report = run_round(&server).await;
    assert_eq!(report["orphans"], 0, "{report}");
    assert_eq!(report["attestations"], 0, "{report}");

    // The lonely team's last member leaves, and carol's operator is revoked.
    for operator in [&lonely_member, &carol] {
        server
            .admin(
                Method::POST,
                &format!("/v1/operators/{operator}/revoke"),
                Some(json!({})),
                StatusCode::OK,
            )
            .await;
    }
    let report = run_round(&server).await;
    assert_eq!(report["orphans"], 2, "{report}");
    assert_eq!(run_round(&server).await["orphans"], 0, "found once");
    for id in [&orphan, &contactless] {
        let findings = server
            .admin(
                Method::GET,
                &format!("/v1/findings?nhi_id={id}&kind=orphaned&state=open"),
                None,
                StatusCode::OK,
            )
            .await;
        assert_eq!(findings["items"].as_array().unwrap().len(), 1, "{findings}");
    }
    let review = reviews_of(&server, &orphan, "ownership").await;
    assert_eq!(review.len(), 1);
    // The lonely team has nobody left: its fallback team sees the review.
    assert_eq!(review[0]["escalated_to"], platform, "{}", review[0]);
    let (_, inbox) = server
        .call(
            Method::GET,
            "/v1/approvals?kind=ownership&state=pending",
            Some(&platform_reviewer),
            None,
        )
        .await;
    assert!(
        inbox["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == review[0]["id"]),
        "{inbox}"
    );

    // An admin gives the orphan to the platform team, whose reviewer confirms it.
    let (status, problem) = server
        .call(
            Method::POST,
            &format!("/v1/nhis/{orphan}/transfer"),
            Some(ADMIN_TOKEN),
            Some(json!({"owner": {"team": "platform"}, "reason": " "})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, problem) = server
        .call(
            Method::POST,
            &format!("/v1/nhis/{orphan}/transfer"),
            Some(ADMIN_TOKEN),
            Some(json!({"owner": {"team": "no-such-team"}, "reason": "moved"})),
        )
        .await;
    assert!(status.is_client_error(), "{problem}");
    let moved = server
        .admin(
            Method::POST,
            &format!("/v1/nhis/{orphan}/transfer"),
            Some(json!({"owner": {"team": "platform", "contact": "pat"},
                        "reason": "the lonely team was disbanded"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(moved["owner"]["contact"], "pat", "{moved}");
    decide(
        &server,
        &platform_reviewer,
        review[0]["id"].as_str().unwrap(),
        "approve",
        "platform owns it now",
    )
    .await;
    let findings = server
        .admin(
            Method::GET,
            &format!("/v1/findings?nhi_id={orphan}&kind=orphaned"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(findings["items"][0]["state"], "accepted", "{findings}");
    assert_eq!(run_round(&server).await["orphans"], 0, "no longer orphaned");

    // Ninety-one days on, the high-risk agent's owner attests it; the others are not asked.
    clock.advance_days(91);
    let report = run_round(&server).await;
    assert_eq!(report["attestations"], 1, "{report}");
    let attestation = reviews_of(&server, &risky, "ownership").await;
    assert_eq!(attestation.len(), 1);
    decide(
        &server,
        &platform_reviewer,
        attestation[0]["id"].as_str().unwrap(),
        "approve",
        "still ours, still needed",
    )
    .await;
    assert_eq!(run_round(&server).await["attestations"], 0);
    // The orphan left unanswered: its first review expired after a fortnight, and the scan
    // that still found it orphaned asked again.
    let contact_reviews = reviews_of(&server, &contactless, "ownership").await;
    let states: Vec<&str> = contact_reviews
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["expired", "pending"], "{contact_reviews:?}");
    // Denying an ownership review asks whether to decommission the NHI.
    decide(
        &server,
        &platform_reviewer,
        contact_reviews[1]["id"].as_str().unwrap(),
        "deny",
        "not ours",
    )
    .await;
    assert_eq!(
        reviews_of(&server, &contactless, "decommission")
            .await
            .len(),
        1
    );
    server.stop().await;
}

async fn a_staged_decommission_watches_then_revokes_or_is_cancelled(backend: Backend) {
    let clock = TestClock::new();
    let server = clocked(backend, &clock).await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let (agent, key) = client(&server, "staged-agent", &["erp:read:invoices/*"]).await;
    let (kept, kept_key) = client(&server, "kept-agent", &["erp:read:invoices/*"]).await;
    for (days, code) in [(0, "validation_failed"), (91, "validation_failed")] {
        let (status, problem) = server
            .call(
                Method::POST,
                &format!("/v1/nhis/{agent}/decommission"),
                Some(ADMIN_TOKEN),
                Some(json!({"staged_days": days})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["code"], code);
    }
    let staged = server
        .admin(
            Method::POST,
            &format!("/v1/nhis/{agent}/decommission"),
            Some(json!({"reason": "retiring v1", "staged_days": 7})),
            StatusCode::ACCEPTED,
        )
        .await;
    assert_eq!(staged["step"], "watch", "{staged}");
    // Suspended at once, credentials kept: every call is refused, and counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while nhi(&server, &agent).await["status"] != "suspended" {
        assert!(Instant::now() < deadline, "never suspended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        assert!(!allowed(&server, &pep, &key).await);
    }
    let credentials = server
        .admin(
            Method::GET,
            &format!("/v1/credentials?nhi_id={agent}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(
        credentials["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["revoked_at"].is_null()),
        "nothing revoked while watching: {credentials}"
    );
    // It may not be resumed while it is being decommissioned.
    let (status, problem) = server
        .call(
            Method::POST,
            &format!("/v1/nhis/{agent}/resume"),
            Some(ADMIN_TOKEN),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "decommission_under_way");
    clock.advance_days(6);
    assert_eq!(run_round(&server).await["watches_ended"], 0);
    clock.advance_days(1);
    let report = run_round(&server).await;
    assert_eq!(report["watches_ended"], 1, "{report}");
    let done = server.decommissioned(&agent).await;
    let watch = &done["teardown"]["watch"];
    assert!(watch["refused_calls"].as_u64().unwrap() >= 3, "{done}");
    assert_eq!(watch["services"], json!(["erp"]), "{done}");
    assert!(
        !done["teardown"]["revoked_credentials"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{done}"
    );
    assert_eq!(nhi(&server, &agent).await["status"], "decommissioned");
    let claims = crate::support::jwt_claims(done["receipt"].as_str().unwrap());
    assert_eq!(claims["decommission"]["watch"], *watch, "{claims:?}");
    let (status, problem) = server
        .call(
            Method::POST,
            &format!("/v1/decommissions/{}/cancel", done["id"].as_str().unwrap()),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "decommission_not_watching");

    // Cancelled during the watch: the nhi is back, and may be decommissioned again later.
    let staged = server
        .admin(
            Method::POST,
            &format!("/v1/nhis/{kept}/decommission"),
            Some(json!({"staged_days": 3})),
            StatusCode::ACCEPTED,
        )
        .await;
    let id = staged["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while nhi(&server, &kept).await["status"] != "suspended" {
        assert!(Instant::now() < deadline, "never suspended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancelled = server
        .admin(
            Method::POST,
            &format!("/v1/decommissions/{id}/cancel"),
            Some(json!({"reason": "the billing job still needs it"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(cancelled["step"], "cancelled", "{cancelled}");
    assert_eq!(nhi(&server, &kept).await["status"], "active");
    assert!(allowed(&server, &pep, &kept_key).await);
    clock.advance_days(4);
    assert_eq!(run_round(&server).await["watches_ended"], 0);
    assert_eq!(nhi(&server, &kept).await["status"], "active");
    let again = server
        .admin(
            Method::POST,
            &format!("/v1/nhis/{kept}/decommission"),
            None,
            StatusCode::ACCEPTED,
        )
        .await;
    assert_ne!(again["id"], staged["id"]);
    server.decommissioned(&kept).await;
    server.stop().await;
}
