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
    teams_name_a_fallback_team_and_a_wait_checked_and_changed,
    an_unanswered_request_escalates_to_the_fallback_team_once,
    separation_of_duties_keeps_the_owner_team_from_approving,
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

/// The kinds of the events about one approval request, in order.
async fn approval_events(server: &TestServer, id: &str) -> Vec<Value> {
    let events = server
        .admin(
            Method::GET,
            &format!("/v1/audit/events?subject=approval:{id}"),
            None,
            StatusCode::OK,
        )
        .await;
    events["items"].as_array().unwrap().clone()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["kind"].as_str().unwrap()).collect()
}

async fn teams_name_a_fallback_team_and_a_wait_checked_and_changed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let backup = server.team("backup").await;
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    assert_eq!(backup["fallback_team"], Value::Null);
    assert_eq!(backup["escalate_after_seconds"], Value::Null);
    // By name or by id; shown by id.
    let owners = server
        .admin(
            Method::POST,
            "/v1/teams",
            Some(json!({"name": "owners", "contact": "owners@example.com",
                        "fallback_team": "backup", "escalate_after_seconds": 600})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(owners["fallback_team"], backup_id.as_str());
    assert_eq!(owners["escalate_after_seconds"], 600);
    let owners_id = owners["id"].as_str().unwrap().to_owned();
    let shown = server
        .admin(Method::GET, "/v1/teams/owners", None, StatusCode::OK)
        .await;
    assert_eq!(shown["fallback_team"], backup_id.as_str());
    let listed = server
        .admin(Method::GET, "/v1/teams", None, StatusCode::OK)
        .await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "owners" && t["escalate_after_seconds"] == 600),
        "{listed}"
    );

    // Refused, each naming its field: no such team, a wait out of range or without a
    // fallback, the team itself.
    for (body, field) in [
        (
            json!({"name": "a", "contact": "a@example.com", "fallback_team": "nobody"}),
            "fallback_team",
        ),
        (
            json!({"name": "b", "contact": "b@example.com", "fallback_team": "backup",
                   "escalate_after_seconds": 59}),
            "escalate_after_seconds",
        ),
        (
            json!({"name": "c", "contact": "c@example.com", "fallback_team": "backup",
                   "escalate_after_seconds": 2_592_001}),
            "escalate_after_seconds",
        ),
        (
            json!({"name": "d", "contact": "d@example.com", "escalate_after_seconds": 600}),
            "escalate_after_seconds",
        ),
    ] {
        let (status, problem) = server
            .call(
                Method::POST,
                "/v1/teams",
                Some(ADMIN_TOKEN),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed")),
            "{body}: {problem}"
        );
        assert!(
            problem["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{body}: {problem}"
        );
    }
    let path = format!("/v1/teams/{owners_id}");
    for (body, field) in [
        (json!({"fallback_team": "owners"}), "fallback_team"),
        (json!({"fallback_team": owners_id}), "fallback_team"),
        (json!({"fallback_team": "nobody"}), "fallback_team"),
        (
            json!({"escalate_after_seconds": 10}),
            "escalate_after_seconds",
        ),
        (
            json!({"fallback_team": null, "escalate_after_seconds": 600}),
            "escalate_after_seconds",
        ),
    ] {
        let (status, problem) = server
            .call(Method::PATCH, &path, Some(ADMIN_TOKEN), Some(body.clone()))
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
    for bad in [
        json!({"fallback": "backup"}),
        json!({"escalate_after_seconds": "soon"}),
    ] {
        let (status, problem) = server
            .call(Method::PATCH, &path, Some(ADMIN_TOKEN), Some(bad.clone()))
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_body")),
            "{bad}: {problem}"
        );
    }
    // Admins only; a team that does not exist is not found.
    let (_, reviewer) = server.operator("rita", &["reviewer"], &["owners"]).await;
    let (status, _) = server
        .call(
            Method::PATCH,
            &path,
            Some(&reviewer),
            Some(json!({"fallback_team": null})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server
        .call(
            Method::PATCH,
            "/v1/teams/nobody",
            Some(ADMIN_TOKEN),
            Some(json!({"fallback_team": null})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A field left out stays; the wait alone changes; clearing the fallback clears the wait.
    let changed = server
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"escalate_after_seconds": 120})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (
            changed["fallback_team"].clone(),
            changed["escalate_after_seconds"].clone()
        ),
        (json!(backup_id), json!(120))
    );
    let defaulted = server
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"escalate_after_seconds": null})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(defaulted["escalate_after_seconds"], Value::Null);
    assert_eq!(defaulted["fallback_team"], backup_id.as_str());
    server
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"escalate_after_seconds": 300})),
            StatusCode::OK,
        )
        .await;
    let cleared = server
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"fallback_team": null})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (
            cleared["fallback_team"].clone(),
            cleared["escalate_after_seconds"].clone()
        ),
        (Value::Null, Value::Null)
    );
    let (_, events) = server
        .call(
            Method::GET,
            &format!("/v1/audit/events?subject=team:{owners_id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        kinds(events["items"].as_array().unwrap()),
        [
            "team.created",
            "team.updated",
            "team.updated",
            "team.updated",
            "team.updated"
        ]
    );

    // The OpenAPI document has the route and the fields.
    let (_, doc) = server.call(Method::GET, "/openapi.json", None, None).await;
    assert!(doc["paths"]["/v1/teams/{id}"]["patch"].is_object());
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [
        ("TeamView", "fallback_team"),
        ("TeamView", "escalate_after_seconds"),
        ("CreateTeam", "fallback_team"),
        ("UpdateTeam", "escalate_after_seconds"),
        ("ApprovalView", "escalated_to"),
        ("ApprovalView", "escalated_at"),
        ("TaskView", "callback_url"),
        ("CreateTask", "callback_url"),
    ] {
        assert!(
            schemas[schema]["properties"][field].is_object(),
            "{schema}.{field} is documented"
        );
    }
    server.stop().await;
}

/// Polls the request as the admin until `done` holds of it (at most 15 s).
async fn approval_until(server: &TestServer, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let request = approval(server, id).await;
        if done(&request) {
            return request;
        }
        assert!(Instant::now() < deadline, "never got there: {request}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn an_unanswered_request_escalates_to_the_fallback_team_once(backend: Backend) {
    // Teams with a fallback and no wait of their own wait the configured default: a second.
    let server = TestServer::start_with(backend, |c| c.escalate_after_seconds = 1).await;
    let (_, secret) = client(&server, "slow-agent", &["crm:read:orders/*"]).await;
    let backup = server.team("backup").await;
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    server.team("loners").await;
    let (_, rita) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;
    let (bea_id, bea) = server.operator("bea", &["reviewer"], &["backup"]).await;
    // A team without a fallback: its requests never escalate.
    let loner = server
        .admin(
            Method::POST,
            "/v1/nhis",
            Some(
                json!({"name": "lonely-agent", "kind": "ai_agent", "platform": "custom",
                        "environment": "production", "owner": {"team": "loners"},
                        "purpose": "test", "scope_ceiling": ["crm:read:orders/*"]}),
            ),
            StatusCode::CREATED,
        )
        .await;
    let loner_key = server.static_key(loner["id"].as_str().unwrap()).await;
    let lonely = ask_task(
        &server,
        loner_key["secret"].as_str().unwrap(),
        &["crm:write:orders/2"],
    )
    .await;

    let task = ask_task(&server, &secret, &["crm:write:orders/1"]).await;
    let id = task["approval_id"].as_str().unwrap().to_owned();
    let first = approval(&server, &id).await;
    assert_eq!(first["escalated_to"], Value::Null, "{first}");
    assert_eq!(first["escalated_at"], Value::Null);
    // The fallback team's reviewers do not see it yet.
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/v1/approvals/{id}"),
            Some(&bea),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = server
        .call(Method::GET, "/v1/approvals", Some(&bea), None)
        .await;
    assert_eq!(listed["items"], json!([]));

    // Once the owner team has had its time, and only then.
    server
        .admin(
            Method::PATCH,
            "/v1/teams/owners-oauth",
            Some(json!({"fallback_team": "backup"})),
            StatusCode::OK,
        )
        .await;
    let escalated = approval_until(&server, &id, |a| a["escalated_to"].is_string()).await;
    assert_eq!(escalated["escalated_to"], backup_id.as_str());
    assert!(escalated["escalated_at"].is_string());
    assert_eq!(escalated["state"], "pending");

    // Now the fallback team's reviewers see it, listed and alone, and may decide it.
    let (_, listed) = server
        .call(Method::GET, "/v1/approvals?state=pending", Some(&bea), None)
        .await;
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    let (status, shown) = server
        .call(
            Method::GET,
            &format!("/v1/approvals/{id}"),
            Some(&bea),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["context"]["nhi"]["name"], "slow-agent");
    // The owner team's reviewers still see it too.
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/v1/approvals/{id}"),
            Some(&rita),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Escalated once, whatever the sweeper does after.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let events = approval_events(&server, &id).await;
    assert_eq!(kinds(&events), ["approval.requested", "approval.escalated"]);
    let details = &events[1]["details"];
    assert_eq!(events[1]["actor"], "system");
    assert_eq!(details["to_team"], backup_id.as_str());
    assert_eq!(details["task"], task["id"]);
    assert!(details["from_team"].is_string() && details["nhi"].is_string());
    assert_eq!(
        approval(&server, &id).await["escalated_at"],
        escalated["escalated_at"]
    );

    let (status, decided) = server
        .call(
            Method::POST,
            &format!("/v1/approvals/{id}/approve"),
            Some(&bea),
            Some(json!({"reason": "covering for the owners"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    assert_eq!(decided["state"], "approved");
    assert_eq!(decided["decided_by"], format!("operator:{bea_id}").as_str());
    let (_, active) = server
        .call(
            Method::GET,
            &format!("/v1/tasks/{}", task["id"].as_str().unwrap()),
            Some(&secret),
            None,
        )
        .await;
    assert_eq!(active["state"], "active", "{active}");

    // The lonely request stayed with its team, out of the fallback's sight.
    let lonely = approval(&server, lonely["approval_id"].as_str().unwrap()).await;
    assert_eq!(lonely["escalated_to"], Value::Null, "{lonely}");
    assert_eq!(lonely["state"], "pending");
    server.stop().await;
}

async fn separation_of_duties_keeps_the_owner_team_from_approving(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.separation_of_duties = true).await;
    let (_, secret) = client(&server, "sod-agent", &["crm:read:orders/*"]).await;
    let backup = server.team("backup").await;
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    let (_, rita) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;
    // An admin who is a member of the owner team is bound like its reviewers.
    let (_, ada) = server.operator("ada", &["admin"], &["owners-oauth"]).await;
    let (bea_id, bea) = server.operator("bea", &["reviewer"], &["backup"]).await;

    // Without a fallback team, a request stays with its team; its members may not approve it,
    // but may deny it, and an admin outside the team may approve.
    let stays = ask_task(&server, &secret, &["crm:write:orders/1"]).await;
    let stays_id = stays["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(
        approval(&server, &stays_id).await["escalated_to"],
        Value::Null
    );
    for token in [&rita, &ada] {
        let (status, problem) = server
            .call(
                Method::POST,
                &format!("/v1/approvals/{stays_id}/approve"),
                Some(token),
                Some(json!({"reason": "mine"})),
            )
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("own_team_nhi")),
            "{problem}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("separation of duties"),
            "{problem}"
        );
    }
    // Nothing was recorded.
    assert_eq!(approval(&server, &stays_id).await["state"], "pending");
    assert_eq!(
        kinds(&approval_events(&server, &stays_id).await),
        ["approval.requested"]
    );
    let (status, batch) = server
        .call(
            Method::POST,
            "/v1/approvals/batch",
            Some(&rita),
            Some(json!({"ids": [stays_id], "decision": "approve", "reason": "mine"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(batch["items"][0]["outcome"], "refused");
    assert_eq!(batch["items"][0]["code"], "own_team_nhi");
    let approved = server
        .admin(
            Method::POST,
            &format!("/v1/approvals/{stays_id}/approve"),
            Some(json!({"reason": "an admin outside the team"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(approved["state"], "approved");

    // With a fallback team, a request goes to it at once, for someone who may approve.
    server
        .admin(
            Method::PATCH,
            "/v1/teams/owners-oauth",
            Some(json!({"fallback_team": "backup", "escalate_after_seconds": 3600})),
            StatusCode::OK,
        )
        .await;
    let denied_task = ask_task(&server, &secret, &["crm:write:orders/2"]).await;
    let denied_id = denied_task["approval_id"].as_str().unwrap().to_owned();
    let at_once = approval(&server, &denied_id).await;
    assert_eq!(at_once["escalated_to"], backup_id.as_str(), "{at_once}");
    assert_eq!(at_once["escalated_at"], at_once["created_at"]);
    let events = approval_events(&server, &denied_id).await;
    assert_eq!(kinds(&events), ["approval.requested", "approval.escalated"]);
    assert_eq!(events[1]["details"]["to_team"], backup_id.as_str());
    // Denying stays open to the owner team: refusing is always safe.
    let (status, denied) = server
        .call(
            Method::POST,
            &format!("/v1/approvals/{denied_id}/deny"),
            Some(&rita),
            Some(json!({"reason": "not now"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{denied}");
    assert_eq!(denied["state"], "denied");

    let task = ask_task(&server, &secret, &["crm:write:orders/3"]).await;
    let id = task["approval_id"].as_str().unwrap().to_owned();
    let (status, problem) = server
        .call(
            Method::POST,
            &format!("/v1/approvals/{id}/approve"),
            Some(&rita),
            Some(json!({"reason": "mine"})),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("own_team_nhi"))
    );
    let (status, decided) = server
        .call(
            Method::POST,
            &format!("/v1/approvals/{id}/approve"),
            Some(&bea),
            Some(json!({"reason": "the fallback agrees"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    assert_eq!(decided["decided_by"], format!("operator:{bea_id}").as_str());
    // The requester still never decides its own request, whatever its team.
    let nhi_id = task["nhi_id"].as_str().unwrap();
    let (status, filed) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(ADMIN_TOKEN),
            Some(
                json!({"purpose": "on the agent's behalf", "scope": ["crm:read:orders/*"],
                        "nhi_id": nhi_id}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{filed}");
    let (status, problem) = server
        .call(
            Method::POST,
            &format!(
                "/v1/approvals/{}/approve",
                filed["approval_id"].as_str().unwrap()
            ),
            Some(ADMIN_TOKEN),
            Some(json!({"reason": "mine"})),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("own_request")),
        "{problem}"
    );
    server.stop().await;
}
