//! Behaviour baselining as its users meet it: an NHI learns its normal through the decision
//! point, a departure becomes a finding with evidence, and the response policy decides what
//! the departure brings (a record, a step-up approval, a suspension with a request to
//! resume); findings are acknowledged, dismissed or accepted as the new normal; profiles
//! survive a restart.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestClock, TestServer, client};

both_backends!(
    a_departure_becomes_a_finding_that_can_be_accepted_as_the_new_normal,
    step_up_holds_an_out_of_baseline_action_for_a_reviewer,
    suspension_refuses_and_opens_a_request_to_resume,
    probation_records_but_never_enforces,
    named_detections_and_bad_input,
    an_assistant_called_without_its_person_departs,
    a_service_a_person_granted_lately_is_expected,
    the_same_departure_on_another_day_folds_into_its_open_finding,
    peers_of_a_group_take_up_a_new_service_together,
);

/// Probation short enough to pass in a test: no waiting time, 200 events.
fn learn_quickly(config: &mut custos_server::config::Config) {
    config.baseline.probation_days = 0;
    config.baseline.probation_events = 200;
}

fn ask(token: &str, service: &str, operation: &str, resource: &str, context: Value) -> Value {
    json!({
        "subject": {"type": "agent", "id": "", "properties": {"token": token}},
        "action": {"name": operation},
        "resource": {"type": service, "id": resource},
        "context": context,
    })
}

fn usual_context() -> Value {
    json!({"source_ip": "10.20.30.40", "user_agent": "billing-agent/2.3 (python)", "environment": "production"})
}

async fn evaluate(server: &TestServer, pep: &str, body: Value) -> Value {
    let (status, answer) = server
        .call(Method::POST, "/access/v1/evaluation", Some(pep), Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

/// Teaches the agent its normal: `events` reads of customers, from its usual network and
/// client, in batches through the AuthZEN batch endpoint.
async fn teach(server: &TestServer, pep: &str, secret: &str, events: usize) {
    teach_in(server, pep, secret, events, usual_context()).await;
}

/// [`teach`] with the enforcement point's `context` given.
async fn teach_in(server: &TestServer, pep: &str, secret: &str, events: usize, context: Value) {
    let mut sent = 0;
    while sent < events {
        let n = (events - sent).min(50);
        let items: Vec<Value> = (0..n)
            .map(|i| {
                json!({"action": {"name": if i % 5 == 0 { "list" } else { "read" }},
                       "resource": {"type": "crm", "id": format!("customers/{}", sent + i)}})
            })
            .collect();
        let (status, answer) = server
            .call(
                Method::POST,
                "/access/v1/evaluations",
                Some(pep),
                Some(json!({
                    "subject": {"type": "agent", "id": "", "properties": {"token": secret}},
                    "context": context,
                    "evaluations": items,
                })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        for result in answer["evaluations"].as_array().unwrap() {
            assert_eq!(result["decision"], json!(true), "{result}");
        }
        sent += n;
    }
}

/// A gateway, and an agent allowed crm and billing that has learnt to use only crm.
async fn learnt_agent(server: &TestServer) -> (String, String, String) {
    let (_, pep) = client(server, "gateway", &["custos:evaluate"]).await;
    let (agent, secret) = client(server, "billing-agent", &["crm:*", "billing:*"]).await;
    teach(server, &pep, &secret, 240).await;
    (pep, agent, secret)
}

async fn baseline_of(server: &TestServer, nhi: &str) -> Value {
    server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{nhi}/baseline"),
            None,
            StatusCode::OK,
        )
        .await
}

async fn findings_of(server: &TestServer, nhi: &str) -> Vec<Value> {
    let list = server
        .admin(
            Method::GET,
            &format!("/v1/findings?nhi_id={nhi}"),
            None,
            StatusCode::OK,
        )
        .await;
    list["items"].as_array().unwrap().clone()
}

/// The departure every test makes: billing, a service it never used, from a network it
/// never came from.
fn departure(secret: &str) -> Value {
    ask(
        secret,
        "billing",
        "export",
        "invoices/2026",
        json!({"source_ip": "203.0.113.9", "user_agent": "billing-agent/2.3 (python)", "environment": "production"}),
    )
}

async fn a_departure_becomes_a_finding_that_can_be_accepted_as_the_new_normal(backend: Backend) {
    let server = TestServer::start_with(backend, learn_quickly).await;
    let (pep, agent, secret) = learnt_agent(&server).await;

    let baseline = baseline_of(&server, &agent).await;
    assert_eq!(baseline["status"], "learnt", "{baseline}");
    assert_eq!(baseline["events"], 240);
    assert_eq!(baseline["services"], 1);
    assert_eq!(baseline["operations_known"], 2);
    assert_eq!(baseline["source_networks"], 1);
    assert!(baseline["bytes"].as_u64().unwrap() <= 2048);
    let operations: Vec<&str> = baseline["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["operation"].as_str().unwrap())
        .collect();
    assert_eq!(operations, ["crm:read", "crm:list"]);

    // In-baseline work raises nothing.
    let usual = evaluate(
        &server,
        &pep,
        ask(&secret, "crm", "read", "customers/7", usual_context()),
    )
    .await;
    assert_eq!(usual["decision"], json!(true));
    assert!(usual["context"].get("finding_id").is_none(), "{usual}");
    assert!(findings_of(&server, &agent).await.is_empty());

    // The default response (alert) lets the action through and records the finding.
    let answer = evaluate(&server, &pep, departure(&secret)).await;
    assert_eq!(answer["decision"], json!(true), "{answer}");
    let finding_id = answer["context"]["finding_id"].as_str().unwrap().to_owned();
    let findings = findings_of(&server, &agent).await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    let finding = &findings[0];
    assert_eq!(finding["id"], json!(finding_id));
    assert_eq!(finding["kind"], "anomaly");
    assert_eq!(finding["state"], "open");
    assert_eq!(finding["action"], "alert");
    let event = &finding["evidence"]["events"][0];
    assert_eq!(event["service"], "billing");
    assert_eq!(event["source"], "203.0.113.9");
    assert!(
        event["features"]["service"].as_f64().unwrap() > 0.0,
        "{event}"
    );
    assert!(event["features"]["source_network"].as_f64().unwrap() > 0.0);
    assert_eq!(finding["evidence"]["baseline"]["services"], 1);

    // A repeat folds into the same finding rather than raising another.
    let again = evaluate(&server, &pep, departure(&secret)).await;
    assert_eq!(again["context"]["finding_id"], json!(finding_id));
    assert_eq!(findings_of(&server, &agent).await.len(), 1);

    // The trail names the finding.
    let trail = server
        .admin(
            Method::GET,
            &format!("/v1/audit/events?subject=finding:{finding_id}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(trail["items"][0]["kind"], "finding.opened", "{trail}");

    // Acknowledge, then accept as the new normal: the same call departs no more.
    let acked = server
        .admin(
            Method::POST,
            &format!("/v1/findings/{finding_id}/acknowledge"),
            Some(json!({"reason": "looking"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(acked["state"], "acknowledged");
    let accepted = server
        .admin(
            Method::POST,
            &format!("/v1/findings/{finding_id}/accept"),
            Some(json!({"reason": "billing exports are part of its job now"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(accepted["state"], "accepted");
    let after = evaluate(&server, &pep, departure(&secret)).await;
    assert_eq!(after["decision"], json!(true));
    assert!(after["context"].get("finding_id").is_none(), "{after}");

    // A resolved finding stays resolved.
    let (status, problem) = server
        .call(
            Method::POST,
            &format!("/v1/findings/{finding_id}/dismiss"),
            Some(ADMIN_TOKEN),
            Some(json!({"reason": "no"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "finding_not_open");

    // The profile survives a restart: stopping writes it, the next server reads it back on
    // the NHI's first event, and what was accepted stays accepted.
    let mut server = server;
    server.restart_with(learn_quickly).await;
    let after_restart = evaluate(&server, &pep, departure(&secret)).await;
    assert_eq!(after_restart["decision"], json!(true));
    assert!(
        after_restart["context"].get("finding_id").is_none(),
        "{after_restart}"
    );
    let baseline = baseline_of(&server, &agent).await;
    assert_eq!(baseline["status"], "learnt", "{baseline}");
    assert!(baseline["events"].as_u64().unwrap() >= 244, "{baseline}");
    assert_eq!(baseline["services"], 2, "{baseline}");
    server.stop().await;
}

async fn step_up_holds_an_out_of_baseline_action_for_a_reviewer(backend: Backend) {
    let server = TestServer::start_with(backend, learn_quickly).await;
    let (pep, agent, secret) = learnt_agent(&server).await;
    let policy = server
        .admin(
            Method::POST,
            "/v1/response-policies",
            Some(json!({"target": "nhi", "id": agent, "action": "step_up"})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(policy["action"], "step_up");

    let held = evaluate(&server, &pep, departure(&secret)).await;
    assert_eq!(held["decision"], json!(false), "{held}");
    assert_eq!(held["context"]["reason"], "approval_required");
    let approval_id = held["context"]["approval_id"].as_str().unwrap().to_owned();
    let finding_id = held["context"]["finding_id"].as_str().unwrap().to_owned();
    // In-baseline work goes on meanwhile.
    let usual = evaluate(
        &server,
        &pep,
        ask(&secret, "crm", "read", "customers/9", usual_context()),
    )
    .await;
    assert_eq!(usual["decision"], json!(true), "{usual}");
    // Asking again waits on the same request.
    let again = evaluate(&server, &pep, departure(&secret)).await;
    assert_eq!(again["context"]["approval_id"], json!(approval_id));

    let approval = server
        .admin(
            Method::GET,
            &format!("/v1/approvals/{approval_id}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(approval["kind"], "anomaly", "{approval}");
    assert_eq!(approval["state"], "pending");
    let finding = server
        .admin(
            Method::GET,
            &format!("/v1/findings/{finding_id}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(finding["approval_id"], json!(approval_id));
    assert_eq!(finding["action"], "step_up");

    // The agent may not approve its own departure.
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/v1/approvals/{approval_id}/approve"),
            Some(&secret),
            Some(json!({"reason": "me"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    server
        .admin(
            Method::POST,
            &format!("/v1/approvals/{approval_id}/approve"),
            Some(json!({"reason": "expected: month-end export"})),
            StatusCode::OK,
        )
        .await;
    // Approved: the action is part of the baseline now, and the finding accepted.
    let after = evaluate(&server, &pep, departure(&secret)).await;
    assert_eq!(after["decision"], json!(true), "{after}");
    let finding = server
        .admin(
            Method::GET,
            &format!("/v1/findings/{finding_id}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(finding["state"], "accepted", "{finding}");
    server.stop().await;
}

async fn suspension_refuses_and_opens_a_request_to_resume(backend: Backend) {
    let server = TestServer::start_with(backend, learn_quickly).await;
    let (pep, agent, secret) = learnt_agent(&server).await;
    server
        .admin(
            Method::POST,
            "/v1/response-policies",
            Some(json!({"target": "team", "id": "owners-oauth", "action": "suspend"})),
            StatusCode::CREATED,
        )
        .await;
    let refused = evaluate(&server, &pep, departure(&secret)).await;
    assert_eq!(refused["decision"], json!(false), "{refused}");
    assert_eq!(refused["context"]["reason"], "anomaly");
    // Suspended: even its usual work is refused now, and its key is revoked.
    let usual = evaluate(
        &server,
        &pep,
        ask(&secret, "crm", "read", "customers/1", usual_context()),
    )
    .await;
    assert_eq!(usual["decision"], json!(false));
    let reason = usual["context"]["reason"].as_str().unwrap();
    assert!(["nhi_suspended", "revoked"].contains(&reason), "{usual}");
    let nhi = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{agent}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(nhi["status"], "suspended");

    let inbox = server
        .admin(
            Method::GET,
            &format!("/v1/approvals?state=pending&kind=resume&nhi_id={agent}"),
            None,
            StatusCode::OK,
        )
        .await;
    let items = inbox["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{inbox}");
    let resume_id = items[0]["id"].as_str().unwrap().to_owned();
    server
        .admin(
            Method::POST,
            &format!("/v1/approvals/{resume_id}/approve"),
            Some(json!({"reason": "the owner confirmed the export"})),
            StatusCode::OK,
        )
        .await;
    let nhi = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{agent}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(nhi["status"], "active", "{nhi}");
    server.stop().await;
}

async fn probation_records_but_never_enforces(backend: Backend) {
    // The default probation: 14 days, which a test never reaches.
    let server = TestServer::start(backend).await;
    let (pep, agent, secret) = learnt_agent(&server).await;
    server
        .admin(
            Method::POST,
            "/v1/response-policies",
            Some(json!({"target": "default", "action": "suspend"})),
            StatusCode::CREATED,
        )
        .await;
    let baseline = baseline_of(&server, &agent).await;
    assert_eq!(baseline["status"], "probation");
    // A person's browser using the agent's key is recorded, not enforced, in probation.
    let answer = evaluate(
        &server,
        &pep,
        ask(
            &secret,
            "crm",
            "read",
            "customers/3",
            json!({"source_ip": "10.20.30.40", "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0"}),
        ),
    )
    .await;
    assert_eq!(answer["decision"], json!(true), "{answer}");
    let findings = findings_of(&server, &agent).await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["kind"], "interactive_use");
    assert_eq!(findings[0]["action"], "record");
    assert_eq!(findings[0]["severity"], "low");
    assert_eq!(findings[0]["evidence"]["in_probation"], json!(true));
    server.stop().await;
}

async fn named_detections_and_bad_input(backend: Backend) {
    let server = TestServer::start_with(backend, learn_quickly).await;
    let (pep, agent, secret) = learnt_agent(&server).await;

    // Used from another environment (OWASP NHI8).
    let crossed = evaluate(
        &server,
        &pep,
        ask(
            &secret,
            "crm",
            "read",
            "customers/5",
            json!({"source_ip": "10.20.30.40", "user_agent": "billing-agent/2.3 (python)", "environment": "staging"}),
        ),
    )
    .await;
    assert!(crossed["context"]["finding_id"].is_string(), "{crossed}");
    // Interactive use of its credential (NHI10).
    evaluate(
        &server,
        &pep,
        ask(
            &secret,
            "crm",
            "read",
            "customers/6",
            json!({"source_ip": "10.20.30.40", "user_agent": "curl/8.5.0"}),
        ),
    )
    .await;
    let kinds: Vec<String> = findings_of(&server, &agent)
        .await
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        kinds.contains(&"environment_crossing".to_owned()),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"interactive_use".to_owned()), "{kinds:?}");
    let filtered = server
        .admin(
            Method::GET,
            "/v1/findings?kind=interactive_use&state=unresolved",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1, "{filtered}");

    // Bad input gets a clear 4xx with a stable code, and changes nothing.
    let bad_context = server
        .call(
            Method::POST,
            "/access/v1/evaluation",
            Some(&pep),
            Some(ask(
                &secret,
                "crm",
                "read",
                "x",
                json!({"source_ip": "not-an-ip"}),
            )),
        )
        .await;
    assert_eq!(bad_context.0, StatusCode::BAD_REQUEST, "{}", bad_context.1);
    for (path, body, status, code) in [
        (
            "/v1/findings?state=sideways",
            None,
            400,
            "invalid_parameter",
        ),
        (
            "/v1/findings?kind=DROP%20TABLE",
            None,
            400,
            "invalid_parameter",
        ),
        ("/v1/findings?colour=red", None, 400, "unknown_parameter"),
    ] {
        let (got, problem) = server
            .call(Method::GET, path, Some(ADMIN_TOKEN), body)
            .await;
        assert_eq!(got.as_u16(), status, "{path}: {problem}");
        assert_eq!(problem["code"], code, "{path}: {problem}");
    }
    let finding = findings_of(&server, &agent).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (path, body, status, code) in [
        (
            format!("/v1/findings/{finding}/dismiss"),
            json!({}),
            422,
            "validation_failed",
        ),
        (
            format!("/v1/findings/{finding}/dismiss"),
            json!({"reason": "x", "extra": 1}),
            422,
            "invalid_body",
        ),
        (
            "/v1/response-policies".to_owned(),
            json!({"target": "nhi", "action": "suspend"}),
            422,
            "validation_failed",
        ),
        (
            "/v1/response-policies".to_owned(),
            json!({"target": "default", "action": "explode"}),
            422,
            "validation_failed",
        ),
        (
            "/v1/observations".to_owned(),
            json!({"events": [{"nhi_id": agent, "at": "yesterday", "service": "crm", "operation": "read"}]}),
            422,
            "validation_failed",
        ),
    ] {
        let (got, problem) = server
            .call(Method::POST, &path, Some(ADMIN_TOKEN), Some(body))
            .await;
        assert_eq!(got.as_u16(), status, "{path}: {problem}");
        assert_eq!(problem["code"], code, "{path}: {problem}");
    }
    let still = server
        .admin(
            Method::GET,
            &format!("/v1/findings/{finding}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(still["state"], "open");

    // Observed events from a platform's logs feed the same baseline.
    let observed = server
        .admin(
            Method::POST,
            "/v1/observations",
            Some(json!({"events": [
                {"nhi_id": agent, "at": "2026-11-29T03:00:00Z", "service": "crm", "operation": "read",
                 "resource": "customers/1", "source_ip": "10.20.30.41"},
                {"nhi_id": "no-such-nhi", "at": "2026-11-29T03:00:00Z", "service": "crm", "operation": "read"}
            ]})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(observed["accepted"], 1, "{observed}");
    assert_eq!(observed["unknown_nhis"], json!(["no-such-nhi"]));
    server.stop().await;
}

/// An assistant that has only worked in Ann's signed-in sessions: with her it may work late;
/// its credential used with nobody's session departs, even at its usual work; whom it acted
/// for is in the trail and in the finding's evidence.
async fn an_assistant_called_without_its_person_departs(backend: Backend) {
    let server = TestServer::start_with(backend, learn_quickly).await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    // It may check its own actions too, but cannot vouch for a person by doing so.
    let (agent, secret) = client(&server, "ann-assistant", &["crm:*", "custos:evaluate"]).await;
    let with_ann = || {
        let mut context = usual_context();
        context["on_behalf_of"] = json!("ann@example.com");
        context
    };
    // Enough work that a call without her is rarer than one in a thousand.
    teach_in(&server, &pep, &secret, 700, with_ann()).await;
    let baseline = baseline_of(&server, &agent).await;
    assert_eq!(baseline["people"], 1, "{baseline}");
    assert_eq!(baseline["for_person_share"], 1.0, "{baseline}");

    let answer = evaluate(
        &server,
        &pep,
        ask(&secret, "crm", "read", "customers/7", with_ann()),
    )
    .await;
    assert_eq!(answer["decision"], json!(true), "{answer}");
    assert!(findings_of(&server, &agent).await.is_empty());

    // Checking its own call, it names Ann: its word is not the gateway's, so that is a call
    // with nobody's session.
    let answer = evaluate(
        &server,
        &secret,
        ask(&secret, "crm", "read", "customers/7", with_ann()),
    )
    .await;
    assert_eq!(answer["decision"], json!(true), "{answer}");
    assert_eq!(findings_of(&server, &agent).await.len(), 1);

    // The same call through the gateway, from the same network and client, with nobody's
    // session: the same finding.
    let answer = evaluate(
        &server,
        &pep,
        ask(&secret, "crm", "read", "customers/7", usual_context()),
    )
    .await;
    assert_eq!(answer["decision"], json!(true), "{answer}");
    let findings = findings_of(&server, &agent).await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    let finding = server
        .admin(
            Method::GET,
            &format!("/v1/findings/{}", findings[0]["id"].as_str().unwrap()),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(finding["kind"], "anomaly", "{finding}");
    let summary = finding["summary"].as_str().unwrap();
    assert!(summary.contains("no person"), "{summary}");
    let event = &finding["evidence"]["events"][0];
    assert!(
        event["features"]["on_behalf_of"].as_f64().unwrap() >= 10.0,
        "{event}"
    );
    assert_eq!(event["on_behalf_of"], Value::Null, "{event}");

    // The trail says whom each decision was for (the trail's writer appends them in
    // batches, so wait for them).
    let mut decisions = Vec::new();
    for _ in 0..50 {
        decisions.clear();
        let mut cursor = String::new();
        loop {
            let page = server
                .admin(
                    Method::GET,
                    &format!(
                        "/v1/audit/events?kind=access.decided&subject=nhi:{agent}&limit=500{cursor}"
                    ),
                    None,
                    StatusCode::OK,
                )
                .await;
            decisions.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
        if decisions.len() >= 703 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(decisions.len(), 703);
    // What each enforcement point said, the agent's own claim included.
    let last: Vec<&Value> = decisions[700..]
        .iter()
        .map(|e| &e["details"]["on_behalf_of"])
        .collect();
    let ann = json!("ann@example.com");
    assert_eq!(last, [&ann, &ann, &Value::Null]);

    // Bad input: not a string, empty, or too long.
    for bad in [json!(42), json!(""), json!("x".repeat(513))] {
        let mut context = usual_context();
        context["on_behalf_of"] = bad;
        let (status, problem) = server
            .call(
                Method::POST,
                "/access/v1/evaluation",
                Some(&pep),
                Some(ask(&secret, "crm", "read", "x", context)),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    }
    let (status, problem) = server
        .call(
            Method::POST,
            "/v1/observations",
            Some(ADMIN_TOKEN),
            Some(
                json!({"events": [{"nhi_id": agent, "at": "2026-11-29T03:00:00Z",
                "service": "crm", "operation": "read", "on_behalf_of": ""}]}),
            ),
        )
        .await;
    assert_eq!(status.as_u16(), 422, "{problem}");
    assert_eq!(problem["code"], "validation_failed", "{problem}");
    server.stop().await;
}

async fn a_service_a_person_granted_lately_is_expected(backend: Backend) {
    let server = TestServer::start_with(backend, learn_quickly).await;
    let (pep, agent, secret) = learnt_agent(&server).await;
    let first_call = |service: &str, operation: &str, resource: &str| {
        ask(&secret, service, operation, resource, usual_context())
    };

    // An operator widens the ceiling to a service the agent never held. The word is written
    // at once: it survives a restart.
    let widened = server
        .admin(
            Method::PATCH,
            &format!("/v1/nhis/{agent}"),
            Some(json!({"scope_ceiling": ["crm:*", "billing:*", "payments:*"]})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(widened["scope_ceiling"].as_array().unwrap().len(), 3);
    let mut server = server;
    server.restart_with(learn_quickly).await;
    let answer = evaluate(&server, &pep, first_call("payments", "charge", "cards/1")).await;
    assert_eq!(answer["decision"], json!(true), "{answer}");
    assert!(answer["context"].get("finding_id").is_none(), "{answer}");

    // Billing, held since the agent was made and never used, has no such word: it departs.
    let answer = evaluate(
        &server,
        &pep,
        first_call("billing", "export", "invoices/2026"),
    )
    .await;
    assert_eq!(answer["decision"], json!(true), "{answer}");
    assert!(answer["context"]["finding_id"].is_string(), "{answer}");

    // A reviewer approving a task beyond the ceiling says the same of what it approves.
    let (status, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&secret),
            Some(json!({"purpose": "close the month", "scope": ["ledger:read", "mail:send"], "ttl_seconds": 600})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    let approval = task["approval_id"].as_str().unwrap();
    server
        .admin(
            Method::POST,
            &format!("/v1/approvals/{approval}/approve"),
            Some(json!({"reason": "month end", "scope": ["ledger:read"]})),
            StatusCode::OK,
        )
        .await;
    let (status, active) = server
        .call(
            Method::GET,
            &format!("/v1/tasks/{}", task["id"].as_str().unwrap()),
            Some(&secret),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{active}");
    let token = active["credential"]["access_token"].as_str().unwrap();
    let answer = evaluate(
        &server,
        &pep,
        ask(token, "ledger", "read", "accounts/1", usual_context()),
    )
    .await;
    assert_eq!(answer["decision"], json!(true), "{answer} {active}");
    assert!(answer["context"].get("finding_id").is_none(), "{answer}");
    let findings = findings_of(&server, &agent).await;
    assert_eq!(findings.len(), 1, "only billing departed: {findings:?}");
    assert_eq!(findings[0]["evidence"]["events"][0]["service"], "billing");
    server.stop().await;
}

async fn the_same_departure_on_another_day_folds_into_its_open_finding(backend: Backend) {
    let clock = TestClock::new();
    let server = TestServer::start_clocked(backend, Some(clock.clone()), learn_quickly).await;
    let (pep, agent, secret) = learnt_agent(&server).await;
    let finding_of = |answer: &Value| answer["context"]["finding_id"].as_str().unwrap().to_owned();

    let first = finding_of(&evaluate(&server, &pep, departure(&secret)).await);
    // The next day, the same new service again: the finding still open about it gathers it.
    clock.advance_days(1);
    let again = evaluate(&server, &pep, departure(&secret)).await;
    assert_eq!(finding_of(&again), first, "{again}");
    // A departure by another new value is news, whatever is open.
    let elsewhere = ask(
        &secret,
        "crm",
        "read",
        "customers/1",
        json!({"source_ip": "198.51.100.7", "user_agent": "billing-agent/2.3 (python)", "environment": "production"}),
    );
    let other = finding_of(&evaluate(&server, &pep, elsewhere).await);
    assert_ne!(other, first);
    let findings = findings_of(&server, &agent).await;
    assert_eq!(findings.len(), 2, "{findings:?}");
    let folded = findings.iter().find(|f| f["id"] == first.as_str()).unwrap();
    assert_eq!(
        folded["evidence"]["events"].as_array().unwrap().len(),
        2,
        "{folded}"
    );

    // Once it is resolved (dismissed, not accepted), the same departure opens a new finding.
    server
        .admin(
            Method::POST,
            &format!("/v1/findings/{first}/dismiss"),
            Some(json!({"reason": "a one-off export"})),
            StatusCode::OK,
        )
        .await;
    let after = finding_of(&evaluate(&server, &pep, departure(&secret)).await);
    assert_ne!(after, first);
    assert_eq!(findings_of(&server, &agent).await.len(), 3);
    server.stop().await;
}

async fn peers_of_a_group_take_up_a_new_service_together(backend: Backend) {
    let server = TestServer::start_with(backend, learn_quickly).await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    // Three agents of one team and application learn alike; one moves to another team before
    // anything new happens, and so to another peer group.
    let mut agents = Vec::new();
    for name in ["summariser-1", "summariser-2", "summariser-3"] {
        let (id, secret) = client(&server, name, &["crm:*", "bedrock:*"]).await;
        teach(&server, &pep, &secret, 240).await;
        agents.push((id, secret));
    }
    server.team("research").await;
    let moved = server
        .admin(
            Method::PATCH,
            &format!("/v1/nhis/{}", agents[2].0),
            Some(json!({"owner": {"team": "research"}})),
            StatusCode::OK,
        )
        .await;
    let stayed = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{}", agents[0].0),
            None,
            StatusCode::OK,
        )
        .await;
    assert_ne!(moved["owner"]["team"], stayed["owner"]["team"], "{moved}");
    let take_up = |secret: &str| {
        ask(
            secret,
            "bedrock",
            "InvokeModel",
            "models/claude",
            usual_context(),
        )
    };

    // The first to take the new service up departs.
    let first = evaluate(&server, &pep, take_up(&agents[0].1)).await;
    assert!(first["context"]["finding_id"].is_string(), "{first}");
    // The agent of another group that follows still departs: one attacker with two stolen
    // credentials is not a rollout.
    let stranger = evaluate(&server, &pep, take_up(&agents[2].1)).await;
    assert!(stranger["context"]["finding_id"].is_string(), "{stranger}");
    // Its peer that follows is taking part in a rollout.
    let peer = evaluate(&server, &pep, take_up(&agents[1].1)).await;
    assert_eq!(peer["decision"], json!(true), "{peer}");
    assert!(peer["context"].get("finding_id").is_none(), "{peer}");
    server.stop().await;
}
