//! Per-task credentials as an agent and its reviewers meet them: instant issue within the
//! ceiling, approval beyond it, long-polling, narrowing, one credential per approval, ending.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestServer, client};

both_backends!(
    a_task_within_the_ceiling_gets_its_credential_at_once,
    a_task_beyond_the_ceiling_waits_for_a_reviewer,
    approvals_are_decided_once_by_the_right_people,
    a_denied_task_gets_nothing,
);

async fn introspect(server: &TestServer, gateway: (&str, &str), token: &str) -> Value {
    let (_, _, answer) = server
        .form("/oauth2/introspect", Some(gateway), &[("token", token)])
        .await;
    answer
}

async fn a_task_within_the_ceiling_gets_its_credential_at_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = client(&server, "crm-agent", &["crm:read:customers/*", "mail:send"]).await;
    let (gw_id, gw_secret) = client(&server, "gateway", &["custos:introspect"]).await;
    let (status, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&secret),
            Some(json!({"purpose": "weekly digest", "scope": ["crm:read:customers/42"], "ttl_seconds": 7200})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(task["state"], "active");
    let token = task["credential"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The lifetime is capped by the configuration (1 hour by default).
    let activated = time::OffsetDateTime::parse(
        task["activated_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires = time::OffsetDateTime::parse(
        task["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!((expires - activated).whole_seconds(), 3600);

    let seen = introspect(&server, (&gw_id, &gw_secret), &token).await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["scope"], "crm:read:customers/42");
    assert_eq!(seen["task_id"], task["id"]);

    // The token is a bearer credential of the NHI on the management API too.
    let (status, me) = server
        .call(Method::GET, "/v1/whoami", Some(&token), None)
        .await;
    assert_eq!(
        (status, me["id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );

    // Reading the task again never shows the token again.
    let task_path = format!("/v1/tasks/{}", task["id"].as_str().unwrap());
    let (_, again) = server
        .call(Method::GET, &task_path, Some(&secret), None)
        .await;
    assert!(again["credential"].get("access_token").is_none(), "{again}");
    assert_eq!(again["credential"]["jti"], task["credential"]["jti"]);

    // Another NHI cannot see it.
    let (_, other_secret) = client(&server, "other-agent", &["crm:read"]).await;
    let (status, _) = server
        .call(Method::GET, &task_path, Some(&other_secret), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Ending the task revokes its credential on the next use.
    let (status, ended) = server
        .call(
            Method::POST,
            &format!("{task_path}/end"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (status, ended["state"].as_str()),
        (StatusCode::OK, Some("ended"))
    );
    assert_eq!(
        introspect(&server, (&gw_id, &gw_secret), &token).await,
        json!({"active": false})
    );
    let (status, _) = server
        .call(Method::GET, "/v1/whoami", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

async fn a_task_beyond_the_ceiling_waits_for_a_reviewer(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, secret) = client(&server, "ops-agent", &["crm:read"]).await;
    let (gw_id, gw_secret) = client(&server, "gateway", &["custos:introspect"]).await;
    let (_, reviewer) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;
    let (status, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&secret),
            Some(json!({"purpose": "refund a customer", "scope": ["crm:read", "payments:refund", "mail:send"], "ttl_seconds": 600})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    assert_eq!(task["state"], "pending_approval");
    assert!(task.get("credential").is_none_or(Value::is_null));
    let approval_id = task["approval_id"].as_str().unwrap().to_owned();
    let task_path = format!("/v1/tasks/{}", task["id"].as_str().unwrap());

    let (status, pending) = server
        .call(
            Method::GET,
            "/v1/approvals?state=pending",
            Some(&reviewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let request = &pending["items"][0];
    assert_eq!(request["id"], approval_id.as_str());
    assert_eq!(request["excess"], json!(["mail:send", "payments:refund"]));

    // The agent long-polls; the approval wakes it well within a second.
    let waiting = {
        let base = server.base.clone();
        let path = format!("{task_path}?wait=20");
        let secret = secret.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let answer: Value = reqwest::Client::new()
                .get(format!("{base}{path}"))
                .bearer_auth(secret)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (answer, started)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let approved_at = Instant::now();
    let (status, decided) = server
        .call(
            Method::POST,
            &format!("/v1/approvals/{approval_id}/approve"),
            Some(&reviewer),
            Some(json!({"reason": "refund ticket 81", "scope": ["payments:refund"], "ttl_seconds": 120})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    assert_eq!(decided["state"], "approved");
    let (collected, started) = waiting.await.unwrap();
    let waited = approved_at.elapsed();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        waited < Duration::from_secs(1),
        "the waiting agent heard in {waited:?}"
    );
    assert_eq!(collected["state"], "active", "{collected}");
    assert_eq!(collected["scope"], json!(["payments:refund"]));
    let token = collected["credential"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = introspect(&server, (&gw_id, &gw_secret), &token).await;
    assert_eq!(
        seen["scope"], "payments:refund",
        "exactly the narrower grant"
    );
    assert!(seen["exp"].as_i64().unwrap() - seen["iat"].as_i64().unwrap() <= 120);

    // An approval mints one credential, once.
    let (_, again) = server
        .call(Method::GET, &task_path, Some(&secret), None)
        .await;
    assert!(again["credential"].get("access_token").is_none(), "{again}");
    server.stop().await;
}

async fn approvals_are_decided_once_by_the_right_people(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (nhi_id, secret) = client(&server, "ledger-agent", &["ledger:read"]).await;
    server.team("elsewhere").await;
    let (_, rita) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;
    let (_, sam) = server
        .operator("sam", &["reviewer"], &["owners-oauth"])
        .await;
    let (_, outsider) = server.operator("olga", &["reviewer"], &["elsewhere"]).await;
    let (_, auditor) = server.operator("aude", &["auditor"], &[]).await;

    // A reviewer asks on the agent's behalf: always an approval, never an instant credential.
    let (status, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&rita),
            Some(json!({"purpose": "month end", "scope": ["ledger:read"], "nhi_id": nhi_id})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    let approval = task["approval_id"].as_str().unwrap().to_owned();
    let approve = |token: String| {
        let path = format!("/v1/approvals/{approval}/approve");
        let server = &server;
        async move {
            server
                .call(
                    Method::POST,
                    &path,
                    Some(&token),
                    Some(json!({"reason": "ok"})),
                )
                .await
        }
    };
    let (status, problem) = approve(rita.clone()).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("own_request"))
    );
    let (status, problem) = approve(secret.clone()).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("operator_required")),
        "an nhi never approves"
    );
    let (status, _) = approve(outsider.clone()).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another team's request is invisible"
    );
    let (status, _) = approve(auditor.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = approve(sam.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = approve(ADMIN_TOKEN.to_owned()).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("approval_not_pending")),
        "an approval is used once"
    );
    // Approving more than was asked is refused.
    let (_, task2) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&secret),
            Some(json!({"purpose": "close books", "scope": ["ledger:write"]})),
        )
        .await;
    let (status, problem) = server
        .call(
            Method::POST,
            &format!(
                "/v1/approvals/{}/approve",
                task2["approval_id"].as_str().unwrap()
            ),
            Some(&sam),
            Some(json!({"reason": "ok", "scope": ["ledger:*"]})),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("not_narrower"))
    );

    // Only the NHI collects the credential; operators see that it exists.
    let task_path = format!("/v1/tasks/{}", task["id"].as_str().unwrap());
    let (_, seen_by_rita) = server
        .call(Method::GET, &task_path, Some(&rita), None)
        .await;
    assert_eq!(seen_by_rita["state"], "active");
    assert!(seen_by_rita["credential"].is_null(), "{seen_by_rita}");
    let (_, collected) = server
        .call(Method::GET, &task_path, Some(&secret), None)
        .await;
    assert!(
        collected["credential"]["access_token"].is_string(),
        "{collected}"
    );
    server.stop().await;
}

async fn a_denied_task_gets_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, secret) = client(&server, "greedy-agent", &["crm:read"]).await;
    let (_, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&secret),
            Some(json!({"purpose": "export everything", "scope": ["crm:*"]})),
        )
        .await;
    let (status, denied) = server
        .call(
            Method::POST,
            &format!(
                "/v1/approvals/{}/deny",
                task["approval_id"].as_str().unwrap()
            ),
            Some(ADMIN_TOKEN),
            Some(json!({"reason": "no bulk exports"})),
        )
        .await;
    assert_eq!(
        (status, denied["state"].as_str()),
        (StatusCode::OK, Some("denied"))
    );
    let (_, after) = server
        .call(
            Method::GET,
            &format!("/v1/tasks/{}?wait=5", task["id"].as_str().unwrap()),
            Some(&secret),
            None,
        )
        .await;
    assert_eq!(after["state"], "denied");
    assert!(after["credential"].is_null());
    // Bad input is refused precisely.
    for (body, code) in [
        (json!({"purpose": "x", "scope": []}), "empty_scope"),
        (
            json!({"purpose": "x", "scope": ["crm:read"], "ttl_seconds": 0}),
            "invalid_ttl",
        ),
        (
            json!({"purpose": " ", "scope": ["crm:read"]}),
            "validation_failed",
        ),
        (json!({"purpose": "x", "scope": ["NOPE"]}), "invalid_body"),
    ] {
        let (status, problem) = server
            .call(Method::POST, "/v1/tasks", Some(&secret), Some(body.clone()))
            .await;
        assert!(status.is_client_error(), "{body}");
        assert_eq!(problem["code"], code, "{body}: {problem}");
    }
    server.stop().await;
}
