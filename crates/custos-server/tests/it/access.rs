//! The role matrix: every route × every kind of caller, with the status each must get.
//! Deny by default: anything not listed as allowed must be refused.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestServer, nhi_body};

both_backends!(
    every_route_checks_every_caller,
    reviewers_see_only_their_teams
);

/// The callers, in the column order of the matrix below.
const CALLERS: [&str; 6] = ["none", "admin", "reviewer", "auditor", "revoked", "nhi"];

/// A route, a body, and the expected status for each caller.
struct Row {
    method: Method,
    path: &'static str,
    body: Option<fn(usize) -> Value>,
    expect: [u16; 6],
}

fn row(
    method: Method,
    path: &'static str,
    body: Option<fn(usize) -> Value>,
    expect: [u16; 6],
) -> Row {
    Row {
        method,
        path,
        body,
        expect,
    }
}

async fn every_route_checks_every_caller(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("alpha").await;
    let alpha = server
        .admin(Method::GET, "/v1/teams/alpha", None, StatusCode::OK)
        .await;
    let agent = server.nhi("matrix-agent", "alpha").await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let nhi_key = server.static_key(&agent_id).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, reviewer) = server.operator("rita", &["reviewer"], &["alpha"]).await;
    let (auditor_id, auditor) = server.operator("otto", &["auditor"], &[]).await;
    let (revoked_id, revoked) = server.operator("gone", &["admin"], &[]).await;
    server
        .admin(
            Method::POST,
            &format!("/v1/operators/{revoked_id}/revoke"),
            None,
            StatusCode::OK,
        )
        .await;
    let tokens: [Option<&str>; 6] = [
        None,
        Some(ADMIN_TOKEN),
        Some(&reviewer),
        Some(&auditor),
        Some(&revoked),
        Some(&nhi_key),
    ];

    use Method as M;
    let team_body: fn(usize) -> Value =
        |i| json!({"name": format!("team-{i}"), "contact": "c@example.com"});
    let operator_body: fn(usize) -> Value =
        |i| json!({"name": format!("op-{i}"), "roles": ["auditor"]});
    let nhi_create: fn(usize) -> Value = |i| nhi_body(&format!("bot-{i}"), "alpha");
    let patch: fn(usize) -> Value = |i| json!({"purpose": format!("purpose {i}")});
    let empty: fn(usize) -> Value = |_| json!({});
    let transfer: fn(usize) -> Value =
        |_| json!({"owner": {"team": "alpha"}, "reason": "stays with alpha"});
    let client_key: fn(usize) -> Value = |_| {
        let key = custos_core::jose::SigningKey::generate(
            custos_core::jose::SigningAlg::EdDsa,
            &mut rand::rng(),
        )
        .unwrap();
        json!({"jwk": key.public_jwk()})
    };
    let task_body: fn(usize) -> Value =
        |i| json!({"purpose": format!("task {i}"), "scope": ["mail:send"], "nhi_id": "{nhi}"});
    let reason: fn(usize) -> Value = |i| json!({"reason": format!("reason {i}")});
    let hook_body: fn(usize) -> Value = |i| json!({"name": format!("deployer-{i}")});
    let no_policies: fn(usize) -> Value = |_| json!({"policies": ""});
    let evaluation: fn(usize) -> Value = |_| {
        json!({"subject": {"type": "agent", "id": "", "properties": {"token": "x"}},
               "action": {"name": "read"}, "resource": {"type": "crm", "id": "1"}})
    };
    // A task and an approval request of the agent's, for the read routes.
    let new_task = |scope: &'static str| {
        let server = &server;
        let nhi_key = nhi_key.clone();
        async move {
            let (status, task) = server
                .call(
                    Method::POST,
                    "/v1/tasks",
                    Some(&nhi_key),
                    Some(json!({"purpose": "matrix", "scope": [scope]})),
                )
                .await;
            assert!(status.is_success(), "{task}");
            task
        }
    };
    let task_id = new_task("mail:send").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let approval_id = new_task("mail:*").await["approval_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A logical agent of alpha's, the matrix's agent among its members.
    let logical = server
        .admin(
            M::POST,
            "/v1/logical-agents",
            Some(json!({"name": "matrix-logical", "team": "alpha", "nhis": [agent_id]})),
            StatusCode::CREATED,
        )
        .await;
    let logical_id = logical["id"].as_str().unwrap().to_owned();
    // {team}, {operator}, {nhi}, {logical}: fixtures that stay; {fresh_*}: made anew for each call, so
    // one caller's success cannot change what the next caller meets.
    let matrix = [
        row(M::GET, "/healthz", None, [200; 6]),
        row(M::GET, "/readyz", None, [200; 6]),
        row(M::GET, "/metrics", None, [200; 6]),
        row(M::GET, "/openapi.json", None, [200; 6]),
        row(M::GET, "/v1/whoami", None, [401, 200, 200, 200, 401, 200]),
        row(
            M::POST,
            "/v1/teams",
            Some(team_body),
            [401, 201, 403, 403, 401, 403],
        ),
        row(M::GET, "/v1/teams", None, [401, 200, 200, 200, 401, 403]),
        row(
            M::GET,
            "/v1/teams/{team}",
            None,
            [401, 200, 200, 200, 401, 403],
        ),
        row(
            M::POST,
            "/v1/operators",
            Some(operator_body),
            [401, 201, 403, 403, 401, 403],
        ),
        row(
            M::GET,
            "/v1/operators",
            None,
            [401, 200, 403, 403, 401, 403],
        ),
        row(
            M::GET,
            "/v1/operators/{operator}",
            None,
            [401, 200, 403, 403, 401, 403],
        ),
        row(
            M::POST,
            "/v1/operators/{fresh_operator}/revoke",
            None,
            [401, 200, 403, 403, 401, 403],
        ),
        row(
            M::POST,
            "/v1/nhis",
            Some(nhi_create),
            [401, 201, 403, 403, 401, 403],
        ),
        row(M::GET, "/v1/nhis", None, [401, 200, 200, 200, 401, 403]),
        row(
            M::GET,
            "/v1/nhis/{nhi}",
            None,
            [401, 200, 200, 200, 401, 403],
        ),
        row(
            M::PATCH,
            "/v1/nhis/{nhi}",
            Some(patch),
            [401, 200, 403, 403, 401, 403],
        ),
        row(
            M::POST,
            "/v1/nhis/{fresh_nhi}/suspend",
            None,
            [401, 200, 200, 403, 401, 403],
        ),
        row(
            M::POST,
            "/v1/nhis/{fresh_suspended_nhi}/resume",
            None,
            [401, 200, 403, 403, 401, 403],
        ),
        row(
            M::POST,
            "/v1/nhis/{fresh_nhi}/decommission",
            None,
            [401, 202, 202, 403, 401, 403],
        ),
        row(
            M::GET,
            "/v1/decommissions",
            None,
            [401, 200, 200, 200, 401, 403],
        ),
        row(
            M::GET,
            "/v1/lifecycle/upcoming",
            None,
            [401, 200, 200, 200, 401, 403],
        ),
        row(
            M::POST,
            "/v1/lifecycle/run",
            None,
            [401, 200, 403, 403, 401, 403],
        ),
        row(
            M::POST,
            "/v1/nhis/{fresh_nhi}/transfer",
            Some(transfer),
            [401, 200, 200, 403, 401, 403],
        ),
        // Only an nhi collects a rotated key, with the old key; none waits for this one.
        row(
            M::POST,
            "/v1/credentials/rotated",
            None,
            [401, 403, 403, 403, 401, 404],
        ),
        row(
            M::GET,
            "/v1/decommissions/no-such-workflow",
            None,
            [401, 404, 404, 404, 401, 403],
        ),
        row(
            M::POST,
            "/v1/decommissions/no-such-workflow/cancel",
            None,
            [401, 404, 404, 404, 401, 403],
        ),
        row(
            M::POST,
            "/v1/deployment-hooks",
            Some(hook_body),
            [401, 201, 403, 403, 401, 403],
        ),
        row(
            M::GET,
            "/v1/deployment-hooks",
            None,
            [401, 200, 403, 200, 401, 403],
        ),
        row(
            M::POST,
            "/v1/deployment-hooks/no-such-hook/disable",
            None,
            [401, 404, 403, 403, 401, 403],
        ),
        // The signature is the credential: a bearer token of any kind proves nothing.
        row(
            M::POST,
            "/v1/deployment-hooks/no-such-hook/events",
            Some(empty),
            [401; 6],
        ),
        row(
            M::POST,
            "/v1/nhis/{fresh_nhi}/credentials",
            Some(empty),
            [401, 201, 403, 403, 401, 403],
        ),
        row(
            M::GET,
            "/v1/credentials",
            None,
            [401, 200, 403, 200, 401, 403],
        ),
        row(
            M::POST,
            "/v1/credentials/{fresh_credential}/revoke",
            None,
            [401, 200, 200, 403, 401, 403],
        ),
        row(
            M::POST,
            "/v1/credentials/{fresh_credential}/rotate",
            None,
            [401, 201, 403, 403, 401, 403],
        ),
        row(
            M::POST,
            "/v1/nhis/{fresh_nhi}/client-keys",
            Some(client_key),
            [401, 201, 403, 403, 401, 403],
        ),
        row(M::GET, "/v1/keys", None, [401, 200, 403, 200, 401, 403]),
        row(
            M::POST,
            "/v1/keys/rotate",
            None,
            [401, 200, 403, 403, 401, 403],
        ),
        row(
            M::POST,
            "/v1/tasks",
            Some(task_body),
            [401, 202, 202, 403, 401, 201],
        ),
        row(
            M::GET,
            "/v1/tasks/{task}",
            None,
            [401, 200, 200, 200, 401, 200],
        ),
        row(
            M::POST,
            "/v1/tasks/{fresh_task}/end",
            None,
            [401, 200, 200, 403, 401, 200],
        ),
        row(
            M::GET,
            "/v1/approvals",
            None,
            [401, 200, 200, 200, 401, 403],
        ),
        row(
            M::GET,
            "/v1/approvals/{approval}",
            None,
            [401, 200, 200, 200, 401, 403],
        ),
        row(
            M::POST,
            "/v1/approvals/{fresh_approval}/approve",
            Some(reason),
            [401, 200, 200, 403, 401, 403],
        ),
        row(
            M::POST,
            "/v1/approvals/{fresh_approval}/deny",
            Some(reason),
            [401, 200, 200, 403, 401, 403],
        ),
        row(
            M::POST,
            "/v1/approvals/batch",
            Some(|_| json!({"ids": ["no-such-request"], "decision": "deny", "reason": "x"})),
            [401, 200, 200, 403, 401, 403],
        ),
        row(
            M::GET,
            "/v1/approvals/rules",
            None,
            [401, 200, 403, 200, 401, 403],
        ),
        row(
            M::GET,
            "/v1/nhis/{nhi}/baseline",
            None,
            [401, 200, 200, 200, 401, 403],
        ),
        row(M::GET, "/v1/findings", None, [401, 200, 200, 200, 401, 403]),
        row(
            M::GET,
            "/v1/findings/no-such-finding",
            None,
            [401, 404, 404, 404, 401, 403],
        ),
        row(
            M::POST,
            "/v1/findings/no-such-finding/acknowledge",
            Some(empty),
            [401, 404, 404, 404, 401, 403],
        ),
        row(
            M::GET,
            "/v1/response-policies",
            None,
            [401, 200, 403, 200, 401, 403],
        ),
        row(
            M::POST,
            "/v1/response-policies",
            Some(|_| json!({"target": "kind", "id": "workload", "action": "record"})),
            [401, 201, 403, 403, 401, 403],
        ),
        row(
            M::POST,
            "/v1/observations",
            Some(|_| {
                json!({"events": [{"nhi_id": "no-such-nhi", "at": "2026-11-29T10:00:00Z",
                    "service": "crm", "operation": "read"}]})
            }),
            [401, 200, 403, 403, 401, 403],
        ),
        row(
            M::GET,
            "/v1/notifications/channels",
            None,
            [401, 200, 403, 200, 401, 403],
        ),
        row(
            M::GET,
            "/v1/notifications/deliveries",
            None,
            [401, 200, 403, 200, 401, 403],
        ),
        row(
            M::GET,
            "/.well-known/oauth-authorization-server",
            None,
            [200; 6],
        ),
        row(M::GET, "/.well-known/jwks.json", None, [200; 6]),
        row(
            M::GET,
            "/v1/audit/events",
            None,
            [401, 200, 403, 200, 401, 403],
        ),
        row(
            M::GET,
            "/v1/audit/checkpoint",
            None,
            [401, 200, 403, 200, 401, 403],
        ),
        row(
            M::GET,
            "/v1/audit/proof/inclusion?index=0&size=1",
            None,
            [401, 200, 403, 200, 401, 403],
        ),
        row(
            M::GET,
            "/v1/audit/proof/consistency?from=1&to=1",
            None,
            [401, 200, 403, 200, 401, 403],
        ),
        row(M::GET, "/v1/policies", None, [401, 200, 403, 200, 401, 403]),
        row(
            M::PUT,
            "/v1/policies",
            Some(no_policies),
            [401, 200, 403, 403, 401, 403],
        ),
        row(
            M::GET,
            "/v1/policies/schema",
            None,
            [401, 200, 403, 200, 401, 403],
        ),
        // Discovery, secrets and reports (issue 9).
        row(
            M::POST,
            "/v1/discovery/imports?format=cloudtrail",
            Some(|_| json!({"Records": []})),
            [401, 200, 403, 403, 401, 403],
        ),
        row(
            M::GET,
            "/v1/discovery/identities",
            None,
            [401, 200, 403, 200, 401, 403],
        ),
        row(
            M::POST,
            "/v1/findings/no-such-finding/adopt",
            Some(|_| {
                json!({"kind": "automation", "owner": {"team": "alpha"}, "purpose": "adopted",
                       "environment": "production", "scope_ceiling": ["mail:send"]})
            }),
            [401, 404, 403, 403, 401, 403],
        ),
        row(
            M::POST,
            "/v1/logical-agents",
            Some(
                |i| json!({"name": format!("logical-{i}"), "team": "alpha", "nhis": ["{fresh_nhi}"]}),
            ),
            [401, 201, 403, 403, 401, 403],
        ),
        row(
            M::GET,
            "/v1/logical-agents",
            None,
            [401, 200, 200, 200, 401, 403],
        ),
        row(
            M::GET,
            "/v1/logical-agents/suggestions",
            None,
            [401, 200, 403, 200, 401, 403],
        ),
        row(
            M::GET,
            "/v1/logical-agents/{logical}",
            None,
            [401, 200, 200, 200, 401, 403],
        ),
        row(
            M::PUT,
            "/v1/logical-agents/{logical}/members/{fresh_nhi}",
            None,
            [401, 200, 403, 403, 401, 403],
        ),
        row(
            M::DELETE,
            "/v1/logical-agents/{logical}/members/{nhi}",
            None,
            [401, 200, 403, 403, 401, 403],
        ),
        row(
            M::POST,
            "/v1/discovery/secrets/check",
            Some(|_| json!({"secrets": ["{nhi_key}"]})),
            [401, 200, 403, 403, 401, 403],
        ),
        row(
            M::POST,
            "/v1/discovery/secrets/report",
            Some(|_| {
                json!({"secrets": [{"kind": "aws_access_key_id", "secret_sha256": "0".repeat(32),
                                    "locations": [{"path": "a/.env", "line": 1, "service": "a"}]}]})
            }),
            [401, 200, 403, 403, 401, 403],
        ),
        row(
            M::GET,
            "/v1/reports/risk",
            None,
            [401, 200, 200, 200, 401, 403],
        ),
        row(
            M::GET,
            "/v1/nhis/{nhi}/risk",
            None,
            [401, 200, 200, 200, 401, 403],
        ),
        row(
            M::GET,
            "/v1/nhis/{nhi}/blast-radius",
            None,
            [401, 200, 200, 200, 401, 403],
        ),
        row(
            M::GET,
            "/v1/reports/posture?format=csv",
            None,
            [401, 200, 200, 200, 401, 403],
        ),
        row(M::GET, "/.well-known/authzen-configuration", None, [200; 6]),
        // Operator tokens are not agent credentials; the agent lacks custos:evaluate.
        row(
            M::POST,
            "/access/v1/evaluation",
            Some(evaluation),
            [401, 401, 401, 401, 401, 403],
        ),
        row(
            M::POST,
            "/access/v1/evaluations",
            Some(evaluation),
            [401, 401, 401, 401, 401, 403],
        ),
    ];

    let mut serial = 0;
    let mut failures = Vec::new();
    for row in &matrix {
        for (caller, token) in tokens.iter().enumerate() {
            serial += 1;
            let mut path = row
                .path
                .replace("{team}", alpha["id"].as_str().unwrap())
                .replace("{operator}", &auditor_id)
                .replace("{nhi}", &agent_id)
                .replace("{task}", &task_id)
                .replace("{approval}", &approval_id)
                .replace("{logical}", &logical_id);
            if path.contains("{fresh_task}") {
                let task = new_task("mail:send").await;
                path = path.replace("{fresh_task}", task["id"].as_str().unwrap());
            }
            if path.contains("{fresh_approval}") {
                let task = new_task("mail:*").await;
                path = path.replace("{fresh_approval}", task["approval_id"].as_str().unwrap());
            }
            if path.contains("{fresh_operator}") {
                let (id, _) = server
                    .operator(&format!("victim-{serial}"), &["auditor"], &[])
                    .await;
                path = path.replace("{fresh_operator}", &id);
            }
            if path.contains("{fresh_nhi}")
                || path.contains("{fresh_suspended_nhi}")
                || path.contains("{fresh_credential}")
            {
                let fresh = server.nhi(&format!("fresh-{serial}"), "alpha").await;
                let id = fresh["id"].as_str().unwrap().to_owned();
                if path.contains("{fresh_suspended_nhi}") {
                    server
                        .admin(
                            M::POST,
                            &format!("/v1/nhis/{id}/suspend"),
                            None,
                            StatusCode::OK,
                        )
                        .await;
                }
                if path.contains("{fresh_credential}") {
                    let key = server.static_key(&id).await;
                    path = path.replace("{fresh_credential}", key["id"].as_str().unwrap());
                }
                path = path
                    .replace("{fresh_nhi}", &id)
                    .replace("{fresh_suspended_nhi}", &id);
            }
            let mut body_text = row.body.map(|make| {
                make(serial)
                    .to_string()
                    .replace("{nhi}", &agent_id)
                    .replace("{nhi_key}", &nhi_key)
            });
            if let Some(text) = body_text.as_mut().filter(|t| t.contains("{fresh_nhi}")) {
                let fresh = server.nhi(&format!("fresh-body-{serial}"), "alpha").await;
                *text = text.replace("{fresh_nhi}", fresh["id"].as_str().unwrap());
            }
            let body = body_text.map(|text| serde_json::from_str::<Value>(&text).unwrap());
            let (status, value) = server.call(row.method.clone(), &path, *token, body).await;
            if status.as_u16() != row.expect[caller] {
                failures.push(format!(
                    "{} {} as {}: expected {}, got {} {}",
                    row.method, row.path, CALLERS[caller], row.expect[caller], status, value
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "role matrix mismatches:\n{}",
        failures.join("\n")
    );

    // An NHI credential is told plainly why it cannot use an operator route.
    let (status, problem) = server.call(M::GET, "/v1/nhis", Some(&nhi_key), None).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("operator_required"))
    );
    // A revoked token is refused as such, not as missing.
    let (_, problem) = server
        .call(M::GET, "/v1/whoami", Some(&revoked), None)
        .await;
    assert_eq!(problem["code"], "invalid_token");
    server.stop().await;
}

async fn reviewers_see_only_their_teams(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("alpha").await;
    server.team("beta").await;
    let mine = server.nhi("mine", "alpha").await;
    let theirs = server.nhi("theirs", "beta").await;
    let (_, reviewer) = server.operator("rita", &["reviewer"], &["alpha"]).await;
    let token = Some(reviewer.as_str());

    let (status, list) = server.call(Method::GET, "/v1/nhis", token, None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mine"]);
    let (_, list) = server
        .call(Method::GET, "/v1/nhis?team=beta", token, None)
        .await;
    assert!(
        list["items"].as_array().unwrap().is_empty(),
        "asking for another team widens nothing"
    );

    let theirs_id = theirs["id"].as_str().unwrap();
    let (status, _) = server
        .call(Method::GET, &format!("/v1/nhis/{theirs_id}"), token, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/v1/nhis/{theirs_id}/suspend"),
            token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let theirs_now = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{theirs_id}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(theirs_now["status"], "active");

    let mine_id = mine["id"].as_str().unwrap();
    let (status, suspended) = server
        .call(
            Method::POST,
            &format!("/v1/nhis/{mine_id}/suspend"),
            token,
            Some(json!({"reason": "leaked key"})),
        )
        .await;
    assert_eq!(
        (status, suspended["status"].as_str()),
        (StatusCode::OK, Some("suspended"))
    );
    server.stop().await;
}
