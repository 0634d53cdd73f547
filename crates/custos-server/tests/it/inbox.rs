//! The review inbox: what a request says about itself (kind, risk and why), the quorum a
//! high-risk request needs, the deadline after which it denies, and the filters reviewers use.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestServer, client};

both_backends!(
    a_high_risk_request_needs_a_quorum_of_distinct_reviewers,
    an_unanswered_request_expires_and_its_task_is_denied,
    requests_say_their_kind_and_risk_and_can_be_filtered_by_them,
    similar_low_risk_requests_are_decided_in_one_batch,
    a_standing_rule_approves_the_same_safe_request_until_revoked,
);

async fn ask_task(server: &TestServer, secret: &str, scope: &[&str]) -> Value {
    let (status, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(secret),
            Some(json!({"purpose": "quarterly export", "scope": scope, "ttl_seconds": 600})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    task
}

async fn approval(server: &TestServer, id: &str) -> Value {
    server
        .admin(
            Method::GET,
            &format!("/v1/approvals/{id}"),
            None,
            StatusCode::OK,
        )
        .await
}

async fn a_high_risk_request_needs_a_quorum_of_distinct_reviewers(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.high_risk_quorum = 2).await;
    let (_, secret) = client(&server, "export-agent", &["crm:read:orders/*"]).await;
    let (rita_id, rita) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;
    let (_, sam) = server
        .operator("sam", &["reviewer"], &["owners-oauth"])
        .await;
    let task = ask_task(
        &server,
        &secret,
        &["crm:export:customers/*", "crm:read:orders/*"],
    )
    .await;
    let id = task["approval_id"].as_str().unwrap().to_owned();
    let request = approval(&server, &id).await;
    assert_eq!(request["kind"], "scope_escalation");
    assert_eq!(request["risk"], "high", "{request}");
    assert_eq!(request["required_approvals"], 2);
    assert!(
        request["risk_factors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().contains("production")),
        "{request}"
    );

    // The first approval is counted, narrower; the request stays pending and the task waits.
    let approve = |token: String, body: Value| {
        let path = format!("/v1/approvals/{id}/approve");
        let server = &server;
        async move {
            server
                .call(Method::POST, &path, Some(&token), Some(body))
                .await
        }
    };
    let (status, first) = approve(
        rita.clone(),
        json!({"reason": "for the audit", "scope": ["crm:export:customers/*"], "ttl_seconds": 300}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["state"], "pending");
    assert_eq!(
        first["approvals"][0]["reviewer"],
        format!("operator:{rita_id}").as_str()
    );
    let (status, again) = approve(rita.clone(), json!({"reason": "twice"})).await;
    assert_eq!(
        (status, again["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_voted")),
        "{again}"
    );
    let (_, waiting) = server
        .call(
            Method::GET,
            &format!("/v1/tasks/{}", task["id"].as_str().unwrap()),
            Some(&secret),
            None,
        )
        .await;
    assert_eq!(waiting["state"], "pending_approval");

    // The second reviewer cannot widen what the first approved, and decides by approving.
    let (status, wider) = approve(
        sam.clone(),
        json!({"reason": "all of it", "scope": ["crm:export:customers/*", "crm:read:orders/*"]}),
    )
    .await;
    assert_eq!(
        (status, wider["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("not_narrower")),
        "{wider}"
    );
    let (status, done) = approve(sam, json!({"reason": "agreed"})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["state"], "approved");
    assert_eq!(done["granted_scope"], json!(["crm:export:customers/*"]));
    assert_eq!(done["granted_ttl_seconds"], 300);
    let (_, active) = server
        .call(
            Method::GET,
            &format!("/v1/tasks/{}", task["id"].as_str().unwrap()),
            Some(&secret),
            None,
        )
        .await;
    assert_eq!(active["state"], "active", "{active}");
    assert_eq!(active["scope"], json!(["crm:export:customers/*"]));

    let (_, events) = server
        .call(
            Method::GET,
            &format!("/v1/audit/events?subject=approval:{id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    let kinds: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["approval.requested", "approval.voted", "approval.decided"]
    );
    server.stop().await;
}

async fn an_unanswered_request_expires_and_its_task_is_denied(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.approval_ttl_seconds = 1).await;
    let (_, secret) = client(&server, "patient-agent", &["crm:read:orders/*"]).await;
    let task = ask_task(&server, &secret, &["crm:write:orders/1"]).await;
    let task_id = task["id"].as_str().unwrap().to_owned();
    let id = task["approval_id"].as_str().unwrap().to_owned();
    let request = approval(&server, &id).await;
    assert_eq!(request["state"], "pending");

    // The agent's long-poll hears the denial soon after the deadline.
    let started = Instant::now();
    let (status, waited) = server
        .call(
            Method::GET,
            &format!("/v1/tasks/{task_id}?wait=10"),
            Some(&secret),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{waited}");
    assert_eq!(waited["state"], "denied", "{waited}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(waited["credential"].is_null());

    // Expired, it can be neither approved nor denied.
    let request = approval(&server, &id).await;
    assert_eq!(request["state"], "expired", "{request}");
    for verb in ["approve", "deny"] {
        let (status, problem) = server
            .call(
                Method::POST,
                &format!("/v1/approvals/{id}/{verb}"),
                Some(ADMIN_TOKEN),
                Some(json!({"reason": "too late"})),
            )
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::CONFLICT, Some("approval_not_pending")),
            "{verb}: {problem}"
        );
    }
    let (_, events) = server
        .call(
            Method::GET,
            "/v1/audit/events?kind=approval.expired",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "expired once: {events}");
    assert_eq!(items[0]["actor"], "system");
    server.stop().await;
}

async fn requests_say_their_kind_and_risk_and_can_be_filtered_by_them(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, secret) = client(&server, "small-agent", &["crm:read:orders/*"]).await;
    server
        .admin(
            Method::PUT,
            "/v1/policies",
            Some(json!({"policies": "", "catalogue": {"services": [
                {"name": "mail", "operations": ["send"],
                 "resources": [{"pattern": "outbox/*", "sensitivity": ["confidential"]}]}]}})),
            StatusCode::OK,
        )
        .await;
    // One narrow, one broad request.
    let narrow = ask_task(
        &server,
        &secret,
        &["crm:read:orders/*", "mail:send:outbox/1"],
    )
    .await;
    let broad = ask_task(&server, &secret, &["crm:*"]).await;
    let narrow_id = narrow["approval_id"].as_str().unwrap();
    let broad_id = broad["approval_id"].as_str().unwrap();
    assert_eq!(approval(&server, narrow_id).await["risk"], "medium");
    assert_eq!(approval(&server, broad_id).await["risk"], "high");

    let ids = async |query: &str| -> Vec<String> {
        let listed = server
            .admin(
                Method::GET,
                &format!("/v1/approvals?{query}"),
                None,
                StatusCode::OK,
            )
            .await;
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids("risk=high").await, [broad_id]);
    assert_eq!(
        ids("risk=medium&kind=scope_escalation&state=pending").await,
        [narrow_id]
    );
    assert!(ids("kind=policy_approval").await.is_empty());
    // The context a reviewer decides on: who, what against the ceiling, what it reaches.
    let shown = approval(&server, narrow_id).await;
    let context = &shown["context"];
    assert_eq!(context["nhi"]["name"], "small-agent", "{shown}");
    assert_eq!(context["nhi"]["owner_team_name"], "owners-oauth");
    assert_eq!(context["ceiling"], json!(["crm:read:orders/*"]));
    assert_eq!(context["within_ceiling"], json!(["crm:read:orders/*"]));
    assert_eq!(
        context["reach"],
        json!([{"grant": "mail:send:outbox/1", "sensitivity": ["confidential"]}])
    );
    assert_eq!(context["history"]["denied"], 0);
    // Denied once, the same request asked again shows it in its history.
    server
        .admin(
            Method::POST,
            &format!("/v1/approvals/{narrow_id}/deny"),
            Some(json!({"reason": "not this week"})),
            StatusCode::OK,
        )
        .await;
    let again = ask_task(
        &server,
        &secret,
        &["crm:read:orders/*", "mail:send:outbox/1"],
    )
    .await;
    let history =
        &approval(&server, again["approval_id"].as_str().unwrap()).await["context"]["history"];
    assert_eq!(
        (history["denied"].clone(), history["approved"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(history["recent"][0]["id"], narrow_id);
    assert_eq!(history["recent"][0]["reason"], "not this week");
    // Lists carry no context: it is read per request.
    let listed = server
        .admin(Method::GET, "/v1/approvals", None, StatusCode::OK)
        .await;
    assert!(listed["items"][0].get("context").is_none());

    for bad in ["risk=extreme", "kind=whim"] {
        let (status, problem) = server
            .call(
                Method::GET,
                &format!("/v1/approvals?{bad}"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
    }
    server.stop().await;
}

async fn similar_low_risk_requests_are_decided_in_one_batch(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, secret) = client(&server, "batch-agent", &["crm:read:orders/*"]).await;
    server.team("elsewhere").await;
    let (_, other_team) = server.operator("olga", &["reviewer"], &["elsewhere"]).await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        let task = ask_task(&server, &secret, &[&format!("mail:send:outbox/{n}")]).await;
        ids.push(task["approval_id"].as_str().unwrap().to_owned());
    }
    let high = ask_task(&server, &secret, &["crm:*"]).await;
    let high_id = high["approval_id"].as_str().unwrap().to_owned();

    let batch = |token: &str, body: Value| {
        let token = token.to_owned();
        let server = &server;
        async move {
            server
                .call(
                    Method::POST,
                    "/v1/approvals/batch",
                    Some(&token),
                    Some(body),
                )
                .await
        }
    };
    // A reviewer of another team decides none of them: each is refused on its own.
    let (status, result) = batch(
        &other_team,
        json!({"ids": [ids[0]], "decision": "approve", "reason": "ok"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["items"][0]["outcome"], "refused");

    let mut asked = ids.clone();
    asked.push(high_id.clone());
    let (status, result) = batch(
        ADMIN_TOKEN,
        json!({"ids": asked, "decision": "approve", "reason": "routine outbox sends"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    let items = result["items"].as_array().unwrap();
    for item in &items[..3] {
        assert_eq!(item["outcome"], "decided", "{item}");
        assert_eq!(item["approval"]["state"], "approved");
    }
    assert_eq!(items[3]["outcome"], "refused");
    assert_eq!(items[3]["code"], "high_risk_not_batched");
    assert_eq!(approval(&server, &high_id).await["state"], "pending");

    // Decided ones are not decided again; bad batches are refused whole.
    let (_, again) = batch(
        ADMIN_TOKEN,
        json!({"ids": [ids[0]], "decision": "deny", "reason": "late"}),
    )
    .await;
    assert_eq!(again["items"][0]["code"], "approval_not_pending");
    for bad in [
        json!({"ids": [], "decision": "approve", "reason": "x"}),
        json!({"ids": [ids[0], ids[0]], "decision": "approve", "reason": "x"}),
        json!({"ids": [ids[0]], "decision": "maybe", "reason": "x"}),
        json!({"ids": [ids[0]], "decision": "approve", "reason": ""}),
    ] {
        let (status, problem) = batch(ADMIN_TOKEN, bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {problem}");
    }
    server.stop().await;
}

async fn a_standing_rule_approves_the_same_safe_request_until_revoked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (nhi_id, secret) = client(&server, "outbox-agent", &["crm:read:orders/*"]).await;
    let (_, reviewer) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;
    let rule = server
        .admin(
            Method::POST,
            "/v1/approvals/rules",
            Some(
                json!({"nhi_id": nhi_id, "scope": ["mail:send:outbox/*", "crm:*"],
                        "reason": "daily digests, agreed with the owner"}),
            ),
            StatusCode::CREATED,
        )
        .await;
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    assert_eq!(rule["active"], true);

    // Covered and not high risk: approved at once by the rule; the agent collects its token.
    let task = ask_task(&server, &secret, &["mail:send:outbox/7"]).await;
    assert_eq!(task["state"], "active", "{task}");
    let request = approval(&server, task["approval_id"].as_str().unwrap()).await;
    assert_eq!(request["state"], "approved");
    assert_eq!(request["decided_by"], format!("rule:{rule_id}").as_str());
    let (_, collected) = server
        .call(
            Method::GET,
            &format!("/v1/tasks/{}", task["id"].as_str().unwrap()),
            Some(&secret),
            None,
        )
        .await;
    assert!(
        collected["credential"]["access_token"].is_string(),
        "{collected}"
    );

    // Outside the rule, or high risk although inside it: a reviewer decides.
    let outside = ask_task(&server, &secret, &["mail:send:inbox/1"]).await;
    assert_eq!(outside["state"], "pending_approval");
    let high = ask_task(&server, &secret, &["crm:*"]).await;
    assert_eq!(high["state"], "pending_approval");

    // Only admins set or revoke rules; bad rules are refused.
    let (status, _) = server
        .call(
            Method::POST,
            "/v1/approvals/rules",
            Some(&reviewer),
            Some(json!({"nhi_id": nhi_id, "scope": ["mail:send"], "reason": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for bad in [
        json!({"nhi_id": nhi_id, "scope": ["mail:send"], "reason": "x", "ttl_seconds": 7776001}),
        json!({"nhi_id": nhi_id, "scope": [], "reason": "x"}),
        json!({"nhi_id": nhi_id, "scope": ["not a grant"], "reason": "x"}),
        json!({"nhi_id": nhi_id, "scope": ["mail:send"], "reason": ""}),
    ] {
        let (status, problem) = server
            .call(
                Method::POST,
                "/v1/approvals/rules",
                Some(ADMIN_TOKEN),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {problem}");
    }
    let (status, _) = server
        .call(
            Method::POST,
            "/v1/approvals/rules",
            Some(ADMIN_TOKEN),
            Some(json!({"nhi_id": "no-such-nhi", "scope": ["mail:send"], "reason": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Revoked, the same request waits for a reviewer again.
    let revoked = server
        .admin(
            Method::POST,
            &format!("/v1/approvals/rules/{rule_id}/revoke"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(revoked["active"], false);
    let after = ask_task(&server, &secret, &["mail:send:outbox/7"]).await;
    assert_eq!(after["state"], "pending_approval");
    let listed = server
        .admin(
            Method::GET,
            &format!("/v1/approvals/rules?nhi_id={nhi_id}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let (_, events) = server
        .call(
            Method::GET,
            &format!("/v1/audit/events?subject=approval_rule:{rule_id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    let kinds: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["approval_rule.created", "approval_rule.revoked"]);
    server.stop().await;
}
