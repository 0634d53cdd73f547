//! Guardrail policies as an admin writes them and an enforcement point meets them: versions,
//! validation before anything is kept, forbids and approvals over AuthZEN, and the approval
//! that lets exactly the held-back action through.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestServer, client};

both_backends!(
    policies_are_validated_versioned_and_audited,
    guardrails_forbid_or_hold_back_for_approval,
    templates_apply_through_links_kept_with_each_version,
);

fn catalogue() -> Value {
    json!({"services": [
        {"name": "crm", "operations": ["read", "write", "delete", "export"],
         "resources": [{"pattern": "customers/*", "sensitivity": ["pii"]}, {"pattern": "*", "sensitivity": []}]},
        {"name": "mail", "operations": ["send"], "resources": []}
    ]})
}

const POLICIES: &str = r#"
@id("no-pii-deletes-in-production")
forbid(principal, action == Custos::Action::"crm:delete", resource)
when { resource.sensitivity.contains("pii") && principal.environment == "production" };

@id("exports-need-a-human")
@approval_required("bulk export of customer data")
forbid(principal, action == Custos::Action::"crm:export", resource);
"#;

async fn put(
    server: &TestServer,
    token: &str,
    body: Value,
    if_match: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = server
        .http
        .put(format!("{}/v1/policies", server.base))
        .bearer_auth(token)
        .json(&body);
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn policies_are_validated_versioned_and_audited(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, empty) = server
        .call(Method::GET, "/v1/policies", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(
        (status, empty["version"].as_i64()),
        (StatusCode::OK, Some(0)),
        "{empty}"
    );

    let (status, kept) = put(
        &server,
        ADMIN_TOKEN,
        json!({"policies": POLICIES, "catalogue": catalogue()}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    assert_eq!(kept["version"], 1);
    assert_eq!(
        kept["policy_ids"],
        json!(["no-pii-deletes-in-production", "exports-need-a-human"])
    );

    // Refused, with nothing kept: a parse error, an attribute the schema lacks, an action the
    // catalogue lacks, a permit, a stale If-Match.
    for (text, code) in [
        ("forbid(principal, action, resource", "policy_parse_error"),
        (
            "forbid(principal, action, resource) when { principal.shoe_size > 3 };",
            "policy_invalid",
        ),
        (
            "forbid(principal, action == Custos::Action::\"crm:teleport\", resource);",
            "policy_invalid",
        ),
        (
            "permit(principal, action, resource);",
            "policy_permit_not_allowed",
        ),
    ] {
        let (status, problem) = put(&server, ADMIN_TOKEN, json!({"policies": text}), None).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{text}: {problem}"
        );
        assert_eq!(problem["code"], code, "{text}: {problem}");
    }
    let (status, problem) = put(&server, ADMIN_TOKEN, json!({"policies": "", "catalogue": {"services": [{"name": "Bad Name", "operations": []}]}}), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, _) = put(&server, ADMIN_TOKEN, json!({"policies": ""}), Some("\"7\"")).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (_, still) = server
        .call(Method::GET, "/v1/policies", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(still["version"], 1);
    assert_eq!(still["catalogue"], catalogue());

    // The Cedar text alone, as text/plain, keeps the catalogue.
    let response = server
        .http
        .put(format!("{}/v1/policies", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/plain")
        .header("if-match", "\"1\"")
        .body("forbid(principal, action == Custos::Action::\"mail:send\", resource);")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = server
        .http
        .get(format!("{}/v1/policies", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(text.headers()["etag"], "\"2\"");
    assert!(text.text().await.unwrap().contains("mail:send"));
    let schema = server
        .http
        .get(format!("{}/v1/policies/schema", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        schema.contains("entity Nhi") && schema.contains("crm:delete"),
        "{schema}"
    );

    // Only admins write; auditors read; NHIs neither.
    let (_, auditor) = server.operator("audrey", &["auditor"], &[]).await;
    let (status, _) = server
        .call(Method::GET, "/v1/policies", Some(&auditor), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = put(&server, &auditor, json!({"policies": ""}), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, key) = client(&server, "agent", &["crm:read"]).await;
    let (status, _) = server
        .call(Method::GET, "/v1/policies", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (_, events) = server
        .call(
            Method::GET,
            "/v1/audit/events?kind=policies.updated",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    let versions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["details"]["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1", "2"]);
    server.stop().await;
}

async fn guardrails_forbid_or_hold_back_for_approval(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let (_, key) = client(&server, "crm-agent", &["crm:*"]).await;
    let ask = |token: &str, operation: &str, resource: &str| {
        json!({
            "subject": {"type": "agent", "id": "", "properties": {"token": token}},
            "action": {"name": operation},
            "resource": {"type": "crm", "id": resource},
        })
    };
    let evaluate = async |body: Value| {
        let (status, answer) = server
            .call(
                Method::POST,
                "/access/v1/evaluation",
                Some(&pep),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer
    };
    // Before any policy, the scope alone decides.
    assert_eq!(
        evaluate(ask(&key, "delete", "customers/1")).await["decision"],
        true
    );
    let (status, _) = put(
        &server,
        ADMIN_TOKEN,
        json!({"policies": POLICIES, "catalogue": catalogue()}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // The very next check sees the new policies.
    let answer = evaluate(ask(&key, "delete", "customers/1")).await;
    assert_eq!(answer["decision"], false, "{answer}");
    assert_eq!(answer["context"]["reason"], "policy_forbid");
    assert_eq!(
        answer["context"]["policies"],
        json!(["no-pii-deletes-in-production"])
    );
    assert_eq!(
        evaluate(ask(&key, "delete", "orders/1")).await["decision"],
        true
    );
    assert_eq!(
        evaluate(ask(&key, "read", "customers/1")).await["decision"],
        true
    );

    // An export is held back for a human, with one approval request however often it is tried.
    let answer = evaluate(ask(&key, "export", "customers/all")).await;
    assert_eq!(answer["decision"], false, "{answer}");
    assert_eq!(answer["context"]["reason"], "approval_required");
    let approval = answer["context"]["approval_id"]
        .as_str()
        .expect("an approval request")
        .to_owned();
    let again = evaluate(ask(&key, "export", "customers/all")).await;
    assert_eq!(again["context"]["approval_id"], approval.as_str());
    let (status, request) = server
        .call(
            Method::GET,
            &format!("/v1/approvals/{approval}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{request}");
    assert_eq!(
        request["requested_scope"],
        json!(["crm:export:customers/all"])
    );
    assert_eq!(request["state"], "pending");

    // Approved, the agent collects a credential for exactly that action, and it is let through.
    let (status, decided) = server
        .call(
            Method::POST,
            &format!("/v1/approvals/{approval}/approve"),
            Some(ADMIN_TOKEN),
            Some(json!({"reason": "quarterly export agreed with legal"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    let task = request["task_id"].as_str().unwrap();
    let (status, task) = server
        .call(Method::GET, &format!("/v1/tasks/{task}"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{task}");
    let token = task["credential"]["access_token"]
        .as_str()
        .expect("the approved credential")
        .to_owned();
    let answer = evaluate(ask(&token, "export", "customers/all")).await;
    assert_eq!(
        (
            answer["decision"].as_bool(),
            answer["context"]["reason"].as_str()
        ),
        (Some(true), Some("allowed")),
        "{answer}"
    );
    // Only that action: the approved token cannot export anything else, and a forbid still wins.
    assert_eq!(
        evaluate(ask(&token, "export", "customers/other")).await["context"]["reason"],
        "out_of_scope"
    );
    assert_eq!(
        evaluate(ask(&key, "export", "customers/all")).await["decision"],
        false
    );

    // A denied request is not pointed at again: asked anew, the action opens a new request.
    let held = evaluate(ask(&key, "export", "customers/other")).await;
    let first = held["context"]["approval_id"].as_str().unwrap().to_owned();
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/v1/approvals/{first}/deny"),
            Some(ADMIN_TOKEN),
            Some(json!({"reason": "not without legal"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let again = evaluate(ask(&key, "export", "customers/other")).await;
    let second = again["context"]["approval_id"].as_str().unwrap();
    assert_ne!(second, first);
    let (_, reopened) = server
        .call(
            Method::GET,
            &format!("/v1/approvals/{second}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        (reopened["state"].as_str(), reopened["kind"].as_str()),
        (Some("pending"), Some("policy_approval"))
    );
    assert_eq!(reopened["policies"], json!(["exports-need-a-human"]));
    assert_eq!(reopened["context"]["history"]["denied"], 1);
    server.stop().await;
}

async fn templates_apply_through_links_kept_with_each_version(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let (suspect, suspect_key) = client(&server, "suspect-agent", &["crm:*"]).await;
    let (_, other_key) = client(&server, "other-agent", &["crm:*"]).await;
    let reason = async |token: &str| {
        let body = json!({
            "subject": {"type": "agent", "id": "", "properties": {"token": token}},
            "action": {"name": "read"},
            "resource": {"type": "crm", "id": "customers/1"},
        });
        let (status, answer) = server
            .call(
                Method::POST,
                "/access/v1/evaluation",
                Some(&pep),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        (
            answer["context"]["reason"].as_str().unwrap().to_owned(),
            answer["context"]["policies"].clone(),
        )
    };

    // Before any catalogue exists a condition is still typed: one that reads an attribute NHIs
    // lack is refused, rather than kept to fail, and so forbid, on every action.
    let (status, problem) = put(
        &server,
        ADMIN_TOKEN,
        json!({"policies": "forbid(principal, action, resource) when { principal.team == \"t1\" };"}),
        None,
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("policy_invalid")),
        "{problem}"
    );
    assert_eq!(reason(&suspect_key).await.0, "allowed");

    // A template applies through its links alone.
    let template = r#"@id("quarantine") forbid(principal == ?principal, action, resource);"#;
    let (status, kept) = put(
        &server,
        ADMIN_TOKEN,
        json!({"policies": template, "catalogue": catalogue()}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    assert_eq!(
        (kept["policy_ids"].clone(), kept["links"].clone()),
        (json!([]), json!([]))
    );
    assert_eq!(reason(&suspect_key).await.0, "allowed");

    let links = json!([{"template_id": "quarantine", "link_id": "quarantine-suspect",
                        "principal": {"nhi": suspect}}]);
    let (status, kept) = put(
        &server,
        ADMIN_TOKEN,
        json!({"policies": template, "links": links}),
        Some("\"1\""),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    assert_eq!(kept["policy_ids"], json!(["quarantine-suspect"]));
    assert_eq!(kept["links"], links);
    assert_eq!(
        reason(&suspect_key).await,
        ("policy_forbid".to_owned(), json!(["quarantine-suspect"]))
    );
    assert_eq!(reason(&other_key).await.0, "allowed");

    // The Cedar text alone keeps the links; text that drops their template is refused whole.
    let text_put = async |body: &str| {
        server
            .http
            .put(format!("{}/v1/policies", server.base))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    };
    let response = text_put(&format!("{template}\n// reviewed")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let kept: Value = response.json().await.unwrap();
    assert_eq!(
        (kept["version"].clone(), kept["links"].clone()),
        (json!(3), links.clone())
    );
    let response = text_put("").await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "policy_link_invalid", "{problem}");

    // A link that fills a slot its template does not have is refused.
    let (status, problem) = put(
        &server,
        ADMIN_TOKEN,
        json!({"policies": template, "links": [{"template_id": "quarantine", "link_id": "q2",
               "principal": {"nhi": suspect}, "resource": {"service": "crm"}}]}),
        None,
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("policy_link_invalid")
        ),
        "{problem}"
    );

    // The version in force, read back, still has its links.
    let (_, current) = server
        .call(Method::GET, "/v1/policies", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(
        (current["version"].clone(), current["links"].clone()),
        (json!(3), links)
    );
    assert_eq!(reason(&suspect_key).await.0, "policy_forbid");
    server.stop().await;
}
