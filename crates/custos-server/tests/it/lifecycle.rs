//! Decommissioning as its users meet it: one call retires an NHI for good. Its credentials
//! are refused at once (delegated ones too), it becomes a tombstone whose name stays taken,
//! its trail is archived as a file that verifies offline, its owner team is told, and a signed
//! teardown receipt says what was done. Asking again shows the same workflow.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestServer, client, jwt_claims};

both_backends!(
    decommissioning_revokes_tombstones_archives_tells_and_signs,
    decommissioning_refuses_bad_input_and_other_teams,
    an_expired_nhi_is_decommissioned_by_the_scheduler,
    a_signed_deployment_hook_call_decommissions_its_teams_agent,
    a_long_trail_is_archived_whole_in_several_files,
    upcoming_lists_expirations_idle_nhis_and_running_workflows,
);

/// Reads every file of an archived trail: each must match its SHA-256 and verify offline,
/// and together they must hold as many events as the teardown says, in log order, each once.
/// The kinds of the events, in order.
fn archived_kinds(server: &TestServer, archive: &Value) -> Vec<String> {
    use sha2::Digest as _;
    let mut kinds = Vec::new();
    let mut last_index = None;
    for part in archive["files"].as_array().unwrap() {
        let path = server
            .data_dir()
            .join("archive")
            .join(part["file"].as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            part["sha256"].as_str().unwrap(),
            hex::encode(sha2::Sha256::digest(&bytes))
        );
        let export: custos_server::verify::AuditExport = serde_json::from_slice(&bytes).unwrap();
        let verified = custos_server::verify::verify_export(&export, None).unwrap();
        assert_eq!(verified.events as u64, part["events"].as_u64().unwrap());
        for event in &export.events {
            assert!(last_index < Some(event.index), "in log order, each once");
            last_index = Some(event.index);
            kinds.push(event.event.kind.clone());
        }
    }
    assert_eq!(kinds.len() as u64, archive["events"].as_u64().unwrap());
    kinds
}

/// Polls a workflow until it is done (at most 20 s).
async fn until_done(server: &TestServer, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let workflow = server
            .admin(
                Method::GET,
                &format!("/v1/decommissions/{id}"),
                None,
                StatusCode::OK,
            )
            .await;
        if workflow["step"] == "done" {
            return workflow;
        }
        assert!(
            Instant::now() < deadline,
            "the decommission never finished: {workflow}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn access_token(server: &TestServer, id: &str, secret: &str) -> String {
    let (status, _, token) = server
        .form(
            "/oauth2/token",
            Some((id, secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{token}");
    token["access_token"].as_str().unwrap().to_owned()
}

async fn decommissioning_revokes_tombstones_archives_tells_and_signs(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, pep) = client(&server, "gateway", &["custos:evaluate"]).await;
    let (agent, secret) = client(&server, "invoice-agent", &["erp:read:invoices/*"]).await;
    let (helper, helper_secret) = client(&server, "helper-agent", &["erp:read:invoices/*"]).await;
    let token = access_token(&server, &agent, &secret).await;
    // A token delegated from the agent's to a helper: it must die with the agent.
    let helper_token = access_token(&server, &helper, &helper_secret).await;
    let (status, _, delegated) = server
        .form(
            "/oauth2/token",
            Some((&helper, &helper_secret)),
            &[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", &token),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("actor_token", &helper_token),
                (
                    "actor_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("scope", "erp:read:invoices/7"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{delegated}");
    let delegated = delegated["access_token"].as_str().unwrap().to_owned();
    let pep_key = pep.clone();
    let allowed = |credential: &str| {
        let body = json!({
            "subject": {"type": "agent", "id": "", "properties": {"token": credential}},
            "action": {"name": "read"},
            "resource": {"type": "erp", "id": "invoices/7"},
        });
        let server = &server;
        let pep_key = pep_key.clone();
        async move {
            let (status, answer) = server
                .call(
                    Method::POST,
                    "/access/v1/evaluation",
                    Some(&pep_key),
                    Some(body),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            answer["decision"] == json!(true)
        }
    };
    for credential in [&secret, &token, &delegated] {
        assert!(allowed(credential).await, "usable before the decommission");
    }
    let channel = server
        .admin(
            Method::POST,
            "/v1/notifications/channels",
            Some(
                json!({"name": "owners-hook", "kind": "webhook", "team": "owners-oauth",
                        "url": "http://127.0.0.1:9/hook"}),
            ),
            StatusCode::CREATED,
        )
        .await;

    let (status, headers, started) = server
        .call_full(
            Method::POST,
            &format!("/v1/nhis/{agent}/decommission"),
            Some(ADMIN_TOKEN),
            Some(json!({"reason": "the invoice agent was shut down"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    assert_eq!(
        headers["location"].to_str().unwrap(),
        format!("/v1/decommissions/{id}")
    );
    assert_eq!(started["trigger"], "request");
    let done = until_done(&server, &id).await;

    // Every credential is refused, the delegated one too, and nothing new is issued.
    for credential in [&secret, &token, &delegated] {
        assert!(!allowed(credential).await, "refused after the decommission");
    }
    let (status, _, refused) = server
        .form(
            "/oauth2/token",
            Some((&agent, &secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    let teardown = &done["teardown"];
    let revoked: Vec<&str> = teardown["revoked_credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(revoked.len() >= 3, "key, token and delegated token: {done}");
    let credentials = server
        .admin(
            Method::GET,
            &format!("/v1/credentials?nhi_id={agent}"),
            None,
            StatusCode::OK,
        )
        .await;
    for credential in credentials["items"].as_array().unwrap() {
        assert_eq!(credential["status"], "revoked", "{credential}");
        assert!(revoked.contains(&credential["id"].as_str().unwrap()));
    }
    assert!(teardown["last_refused_after_ms"].as_f64().unwrap() >= 0.0);

    // A tombstone: kept, unchangeable, its name taken.
    let nhi = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{agent}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(nhi["status"], "decommissioned");
    let (status, problem) = server
        .call(
            Method::PATCH,
            &format!("/v1/nhis/{agent}"),
            Some(ADMIN_TOKEN),
            Some(json!({"purpose": "back from the dead"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("tombstone"),
        "{problem}"
    );
    let (status, problem) = server
        .call(
            Method::POST,
            "/v1/nhis",
            Some(ADMIN_TOKEN),
            Some(json!({
                "name": "invoice-agent", "kind": "ai_agent", "platform": "custom",
                "environment": "production", "owner": {"team": "owners-oauth"},
                "purpose": "a new agent under an old name", "scope_ceiling": [],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let (status, problem) = server
        .call(
            Method::POST,
            &format!("/v1/nhis/{agent}/resume"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");

    // The archived trail verifies offline and is the file the receipt names.
    let archive = &teardown["archive"];
    let kinds = archived_kinds(&server, archive);
    for kind in [
        "nhi.registered",
        "decommission.started",
        "nhi.suspended",
        "nhi.decommissioned",
    ] {
        assert!(
            kinds.contains(&kind.to_owned()),
            "{kind} is in the archive: {kinds:?}"
        );
    }

    // The owner team's channel has its notice.
    let deliveries = server
        .admin(
            Method::GET,
            &format!(
                "/v1/notifications/deliveries?channel={}",
                channel["id"].as_str().unwrap()
            ),
            None,
            StatusCode::OK,
        )
        .await;
    let subjects: Vec<&str> = deliveries["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, [format!("decommission:{id}")], "{deliveries}");
    assert_eq!(teardown["notifications"], 1);

    // The receipt is signed by a key the JWKS publishes, and says what was done.
    let receipt = done["receipt"].as_str().unwrap();
    let jwks = server
        .admin(Method::GET, "/.well-known/jwks.json", None, StatusCode::OK)
        .await;
    let jwks = custos_core::jose::Jwks::from_json(&jwks).unwrap();
    let mut parts = receipt.split('.');
    let (header, payload, signature) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    use base64::Engine as _;
    let payload_bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    custos_core::jose::verify_detached(
        &format!("{header}..{signature}"),
        &payload_bytes,
        &jwks,
        custos_core::lifecycle::RECEIPT_TYPE,
    )
    .expect("the receipt's signature verifies");
    let claims = jwt_claims(receipt);
    assert_eq!(claims["sub"], json!(agent));
    assert_eq!(claims["jti"], json!(id));
    assert_eq!(claims["iss"], json!(server.base));
    assert_eq!(
        claims["decommission"]["revoked_credentials"],
        teardown["revoked_credentials"]
    );
    assert_eq!(claims["decommission"]["archive"], *archive);

    // Asking again shows the same workflow; it finished once.
    let (status, again) = server
        .call(
            Method::POST,
            &format!("/v1/nhis/{agent}/decommission"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], json!(id));
    let events = server
        .admin(
            Method::GET,
            &format!("/v1/audit/events?subject=nhi:{agent}&kind=decommission.completed"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(events["items"].as_array().unwrap().len(), 1, "{events}");
    let list = server
        .admin(
            Method::GET,
            &format!("/v1/decommissions?nhi_id={agent}&state=done"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(list["items"][0]["id"], json!(id), "{list}");
    let running = server
        .admin(
            Method::GET,
            "/v1/decommissions?state=running",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(running["items"], json!([]), "{running}");
    server.stop().await;
}

async fn decommissioning_refuses_bad_input_and_other_teams(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (agent, _) = client(&server, "payroll-agent", &["hr:read:*"]).await;
    server.team("elsewhere").await;
    let (_, reviewer) = server
        .operator("elsewhere-reviewer", &["reviewer"], &["elsewhere"])
        .await;
    let (_, auditor) = server.operator("auditor", &["auditor"], &[]).await;
    let path = format!("/v1/nhis/{agent}/decommission");

    let (status, problem) = server
        .call(
            Method::POST,
            "/v1/nhis/no-such-nhi/decommission",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (status, problem) = server
        .call(
            Method::POST,
            &path,
            Some(ADMIN_TOKEN),
            Some(json!({"reason": "x".repeat(501)})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, problem) = server
        .call(
            Method::POST,
            &path,
            Some(ADMIN_TOKEN),
            Some(json!({"reason": "ok", "force": true})),
        )
        .await;
    assert!(status.is_client_error(), "{status} {problem}");
    // A reviewer of another team does not see the NHI; an auditor may not act.
    let (status, problem) = server
        .call(Method::POST, &path, Some(&reviewer), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (status, problem) = server.call(Method::POST, &path, Some(&auditor), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let (status, problem) = server.call(Method::POST, &path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    // Nothing was started by any of it.
    let nhi = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{agent}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(nhi["status"], "active", "{nhi}");
    let list = server
        .admin(Method::GET, "/v1/decommissions", None, StatusCode::OK)
        .await;
    assert_eq!(list["items"], json!([]));

    for (query, code) in [
        ("state=stuck", StatusCode::BAD_REQUEST),
        ("limit=0", StatusCode::BAD_REQUEST),
        ("colour=red", StatusCode::BAD_REQUEST),
    ] {
        let (status, problem) = server
            .call(
                Method::GET,
                &format!("/v1/decommissions?{query}"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, code, "{query}: {problem}");
    }
    let (status, problem) = server
        .call(
            Method::GET,
            "/v1/decommissions/no-such-workflow",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");

    // The owner team's reviewer may; the other team's reviewer then cannot see the workflow.
    let (owner_reviewer_id, owner_reviewer) = server
        .operator("owners-reviewer", &["reviewer"], &["owners-oauth"])
        .await;
    let (status, started) = server
        .call(Method::POST, &path, Some(&owner_reviewer), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_str().unwrap();
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/v1/decommissions/{id}"),
            Some(&reviewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, list) = server
        .call(Method::GET, "/v1/decommissions", Some(&reviewer), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"], json!([]));
    let done = until_done(&server, id).await;
    assert_eq!(
        done["requested_by"],
        json!(format!("operator:{owner_reviewer_id}"))
    );
    server.stop().await;
}

/// The scheduler finds an NHI past its `expires_at` and decommissions it (trigger `timeout`);
/// an NHI not yet expired is left alone.
async fn an_expired_nhi_is_decommissioned_by_the_scheduler(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.lifecycle_interval_seconds = 1;
    })
    .await;
    server.team("owners").await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let later = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let register = |name: &str, expires: time::OffsetDateTime| {
        let mut body = crate::support::nhi_body(name, "owners");
        body["expires_at"] = json!(
            expires
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        );
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
    let expiring = register("expiring-agent", soon).await;
    let lasting = register("lasting-agent", later).await;

    let workflow = server.decommissioned(&expiring).await;
    assert_eq!(workflow["trigger"], "timeout", "{workflow}");
    assert_eq!(workflow["requested_by"], "system", "{workflow}");
    assert!(
        workflow["reason"]
            .as_str()
            .unwrap()
            .starts_with("expired at "),
        "{workflow}"
    );
    let nhi = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{expiring}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(nhi["status"], "decommissioned");
    let nhi = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{lasting}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(nhi["status"], "active");
    let list = server
        .admin(
            Method::GET,
            &format!("/v1/decommissions?nhi_id={lasting}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(list["items"], json!([]));
    server.stop().await;
}

/// `t=<now>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, computed here independently.
fn sign(secret: &str, at: i64, body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{at}.").as_bytes());
    mac.update(body);
    format!("t={at},v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_hook(
    server: &TestServer,
    url: &str,
    signature: Option<&str>,
    body: &[u8],
) -> (StatusCode, Value) {
    let mut request = server
        .http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("custos-signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A deployment system with a hook of its own signs "agent X was shut down"; its NHI is
/// decommissioned (trigger `webhook`). Unsigned, wrongly signed, stale, disabled or
/// out-of-team calls start nothing.
async fn a_signed_deployment_hook_call_decommissions_its_teams_agent(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (agent, _) = client(&server, "deployed-agent", &["erp:read:*"]).await;
    server.team("elsewhere").await;
    let stranger = server.nhi("stranger-agent", "elsewhere").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, headers, created) = server
        .call_full(
            Method::POST,
            "/v1/deployment-hooks",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "argo", "team": "owners-oauth"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(headers["cache-control"], "no-store");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("custos_hksec_"), "{created}");
    let url = created["url"].as_str().unwrap().to_owned();
    let hook_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        url,
        format!("{}/v1/deployment-hooks/{hook_id}/events", server.base)
    );

    let (status, problem) = server
        .call(
            Method::POST,
            "/v1/deployment-hooks",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "argo"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let (status, problem) = server
        .call(
            Method::POST,
            "/v1/deployment-hooks",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "flux", "team": "no-such-team"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let listed = server
        .admin(Method::GET, "/v1/deployment-hooks", None, StatusCode::OK)
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert!(!listed.to_string().contains(&secret), "never shown again");

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = serde_json::to_vec(&json!({"event": "agent.shut_down", "nhi_id": agent,
                                          "reason": "deployment deleted"}))
    .unwrap();
    for (signature, why) in [
        (None, "unsigned"),
        (
            Some(sign("custos_hksec_wrong", now, &body)),
            "another secret",
        ),
        (Some(sign(&secret, now - 1_000, &body)), "stale"),
        (Some(sign(&secret, now, b"{}")), "another body"),
        (Some("t=1,v1".to_owned()), "malformed"),
    ] {
        let (status, problem) = post_hook(&server, &url, signature.as_deref(), &body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {problem}");
        assert_eq!(problem["code"], "invalid_signature", "{why}");
    }
    let other_team =
        serde_json::to_vec(&json!({"event": "agent.shut_down", "nhi_id": stranger})).unwrap();
    let (status, problem) = post_hook(
        &server,
        &url,
        Some(&sign(&secret, now, &other_team)),
        &other_team,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let wrong_event =
        serde_json::to_vec(&json!({"event": "agent.started", "nhi_id": agent})).unwrap();
    let (status, problem) = post_hook(
        &server,
        &url,
        Some(&sign(&secret, now, &wrong_event)),
        &wrong_event,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let nhi = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{agent}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(nhi["status"], "active", "nothing started yet");

    let (status, started) = post_hook(&server, &url, Some(&sign(&secret, now, &body)), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["trigger"], "webhook");
    assert_eq!(
        started["requested_by"],
        json!(format!("deployment_hook:{hook_id}"))
    );
    assert_eq!(started["reason"], "deployment deleted");
    let done = until_done(&server, started["id"].as_str().unwrap()).await;
    assert_eq!(done["step"], "done");
    let (status, again) = post_hook(&server, &url, Some(&sign(&secret, now, &body)), &body).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], started["id"]);

    let disabled = server
        .admin(
            Method::POST,
            &format!("/v1/deployment-hooks/{hook_id}/disable"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(disabled["enabled"], false);
    let (status, _) = post_hook(&server, &url, Some(&sign(&secret, now, &body)), &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

/// `GET /v1/lifecycle/upcoming` and `custos lifecycle upcoming`: what expires within the
/// window, soonest first; what has been unused for the idle days (a never-used NHI counts from
/// its registration); bad parameters are 400s.
async fn upcoming_lists_expirations_idle_nhis_and_running_workflows(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("owners").await;
    let in_days = |days: i64| {
        (time::OffsetDateTime::now_utc() + time::Duration::days(days))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let register = |name: &'static str, expires: Option<String>| {
        let mut body = crate::support::nhi_body(name, "owners");
        if let Some(expires) = expires {
            body["expires_at"] = json!(expires);
        }
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
    let in_ten = register("expires-in-ten", Some(in_days(10))).await;
    let in_three = register("expires-in-three", Some(in_days(3))).await;
    let in_sixty = register("expires-in-sixty", Some(in_days(60))).await;
    let idle = register("idle-agent", None).await;
    let busy = register("busy-agent", None).await;
    // Last used 120 days ago, and yesterday: written as the decision point would.
    let store = server.state().store.clone();
    for (id, days_ago) in [(&idle, 120), (&busy, 1)] {
        let mut nhi = store.get_nhi(id).await.unwrap().unwrap();
        let version = nhi.version;
        nhi.last_used_at = Some(
            custos_core::Timestamp::from_unix_millis(
                time::OffsetDateTime::now_utc().unix_timestamp() * 1000 - days_ago * 86_400_000,
            )
            .unwrap(),
        );
        nhi.version += 1;
        let event = custos_core::DomainEvent::new(
            format!("fixture-{id}"),
            custos_core::EventKind::NhiUpdated,
            custos_core::Actor::System,
            format!("nhi:{id}"),
            nhi.updated_at,
        );
        store.update_nhi(&nhi, version, &event).await.unwrap();
    }

    let upcoming = server
        .admin(Method::GET, "/v1/lifecycle/upcoming", None, StatusCode::OK)
        .await;
    let ids = |name: &str| -> Vec<String> {
        upcoming[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(upcoming["within_days"], 30);
    assert_eq!(upcoming["idle_days"], 90);
    assert_eq!(
        ids("expiring"),
        [in_three.clone(), in_ten.clone()],
        "{upcoming}"
    );
    assert_eq!(ids("unused"), [idle], "{upcoming}");
    assert_eq!(upcoming["running"], json!([]));
    assert_eq!(upcoming["truncated"], false);
    let wider = server
        .admin(
            Method::GET,
            "/v1/lifecycle/upcoming?within_days=90&idle_days=365&limit=1",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(wider["expiring"].as_array().unwrap().len(), 1, "{wider}");
    assert_eq!(wider["expiring"][0]["id"], json!(in_three));
    assert_eq!(
        wider["truncated"], true,
        "three expire within 90 days: {wider}"
    );
    assert_eq!(wider["unused"], json!([]), "nothing idle for a year");
    let _ = in_sixty;
    for query in ["within_days=0", "idle_days=99999", "limit=501", "soon=1"] {
        let (status, problem) = server
            .call(
                Method::GET,
                &format!("/v1/lifecycle/upcoming?{query}"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
    }
    let table = crate::support::ok(&server, &["lifecycle", "upcoming"]).await;
    assert!(
        table.contains("expires-in-three") && table.contains("idle-agent"),
        "{table}"
    );
    assert!(!table.contains("busy-agent"), "{table}");
    server.stop().await;
}

/// An NHI with more events than one export holds (10,000) has its whole trail archived, in
/// several files that each verify, the decommission's own events in the last.
async fn a_long_trail_is_archived_whole_in_several_files(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (agent, _) = client(&server, "chatty-agent", &["erp:read:*"]).await;
    // 10,500 decisions about the agent, as the decision point records them.
    let store = server.state().store.clone();
    let now = custos_core::Timestamp::from_unix_millis(
        time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
    )
    .unwrap();
    for batch in 0..21 {
        let events: Vec<custos_core::DomainEvent> = (0..500)
            .map(|i| {
                custos_core::DomainEvent::new(
                    format!("decision-{batch}-{i}"),
                    custos_core::EventKind::AccessDecided,
                    custos_core::Actor::System,
                    format!("nhi:{agent}"),
                    now,
                )
                .with("decision", "allow")
            })
            .collect();
        store.append_events(&events).await.unwrap();
    }
    let (status, started) = server
        .call(
            Method::POST,
            &format!("/v1/nhis/{agent}/decommission"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let done = until_done(&server, started["id"].as_str().unwrap()).await;
    let archive = &done["teardown"]["archive"];
    let files: Vec<&str> = archive["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            format!("nhi-{agent}.trail.json"),
            format!("nhi-{agent}.trail.2.json")
        ],
        "{archive}"
    );
    let kinds = archived_kinds(&server, archive);
    assert_eq!(
        kinds.iter().filter(|k| *k == "access.decided").count(),
        10_500
    );
    assert_eq!(kinds.first().map(String::as_str), Some("nhi.registered"));
    assert!(
        kinds.contains(&"nhi.decommissioned".to_owned()),
        "the tombstone is archived"
    );
    server.stop().await;
}
