//! The inventory as a user meets it over HTTP: registering, reading, filtering, paging,
//! changing with optimistic concurrency, suspending, static keys, and what bad input gets.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestServer, client, nhi_body};

both_backends!(
    registering_and_reading_an_nhi,
    owner_and_purpose_are_required,
    bad_input_gets_a_precise_problem,
    nul_characters_are_refused_alike_on_every_store,
    filters_and_pages,
    patch_is_optimistic,
    suspend_and_resume_are_idempotent_and_recorded,
    static_keys_authenticate_the_nhi_until_revoked,
    teams_and_operators,
);

fn id(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

async fn registering_and_reading_an_nhi(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("payments").await;
    let (status, headers, created) = server
        .call_full(
            Method::POST,
            "/v1/nhis",
            Some(ADMIN_TOKEN),
            Some(nhi_body("invoice-bot", "payments")),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "active");
    assert_eq!(created["owner"]["team"], "payments");
    assert_eq!(
        created["scope_ceiling"],
        json!(["erp:read:invoices/*", "mail:send"])
    );
    assert_eq!(headers["etag"], "\"1\"");
    assert_eq!(
        headers["location"].to_str().unwrap(),
        format!("/v1/nhis/{}", id(&created))
    );
    let read = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{}", id(&created)),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(read, created);

    // The same name on the same platform is a conflict, and nothing is written.
    let (status, problem) = server
        .call(
            Method::POST,
            "/v1/nhis",
            Some(ADMIN_TOKEN),
            Some(nhi_body("invoice-bot", "payments")),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("nhi_name_taken"))
    );
    let list = server
        .admin(Method::GET, "/v1/nhis", None, StatusCode::OK)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // On another platform the name is free.
    let mut elsewhere = nhi_body("invoice-bot", "payments");
    elsewhere["platform"] = json!("anthropic");
    server
        .admin(
            Method::POST,
            "/v1/nhis",
            Some(elsewhere),
            StatusCode::CREATED,
        )
        .await;
    server.stop().await;
}

async fn owner_and_purpose_are_required(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("payments").await;
    for field in ["owner", "purpose"] {
        let mut body = nhi_body("bot", "payments");
        body.as_object_mut().unwrap().remove(field);
        let (status, problem) = server
            .call(Method::POST, "/v1/nhis", Some(ADMIN_TOKEN), Some(body))
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {problem}"
        );
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{problem}"
        );
    }
    let mut blank = nhi_body("bot", "payments");
    blank["purpose"] = json!("   ");
    let (_, problem) = server
        .call(Method::POST, "/v1/nhis", Some(ADMIN_TOKEN), Some(blank))
        .await;
    assert_eq!(problem["code"], "validation_failed");
    assert_eq!(problem["errors"][0]["field"], "purpose");
    let (status, problem) = server
        .call(
            Method::POST,
            "/v1/nhis",
            Some(ADMIN_TOKEN),
            Some(nhi_body("bot", "no-such-team")),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"][0]["field"], "owner.team");
    server.stop().await;
}

async fn bad_input_gets_a_precise_problem(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("payments").await;
    let raw = |content_type: &'static str, body: Vec<u8>| {
        server
            .http
            .post(format!("{}/v1/nhis", server.base))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let check = |response: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{problem}");
        assert_eq!(problem["status"], status);
    };
    check(
        raw("application/json", b"{not json".to_vec())
            .await
            .unwrap(),
        400,
        "malformed_json",
    )
    .await;
    check(
        raw("text/plain", b"{}".to_vec()).await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    check(
        raw("application/json", vec![b' '; 300 * 1024])
            .await
            .unwrap(),
        413,
        "body_too_large",
    )
    .await;

    // A body is an object: serde would read a struct from an array of its fields in order,
    // which no route documents, so that is refused too (here, and on a merge patch).
    for (method, path, body) in [
        (Method::POST, "/v1/teams", json!(["ops", "ops@example.com"])),
        (Method::PATCH, "/v1/teams/payments", json!([null, null])),
        (Method::POST, "/v1/teams", json!("ops")),
    ] {
        let (status, problem) = server
            .call(method, path, Some(ADMIN_TOKEN), Some(body))
            .await;
        assert_eq!(
            (status.as_u16(), problem["code"].as_str()),
            (422, Some("invalid_body")),
            "{problem}"
        );
        assert_eq!(problem["errors"][0]["message"], "must be a JSON object");
    }

    let mut unknown = nhi_body("bot", "payments");
    unknown["colour"] = json!("blue");
    let (status, problem) = server
        .call(Method::POST, "/v1/nhis", Some(ADMIN_TOKEN), Some(unknown))
        .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (422, Some("invalid_body"))
    );
    assert_eq!(problem["errors"][0]["field"], "colour");

    let mut bad_scope = nhi_body("bot", "payments");
    bad_scope["scope_ceiling"] = json!(["CRM:read"]);
    let (status, problem) = server
        .call(Method::POST, "/v1/nhis", Some(ADMIN_TOKEN), Some(bad_scope))
        .await;
    assert_eq!(status.as_u16(), 422);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("service \"CRM\""),
        "{problem}"
    );

    let mut bad_kind = nhi_body("bot", "payments");
    bad_kind["kind"] = json!("robot");
    assert_eq!(
        server
            .call(Method::POST, "/v1/nhis", Some(ADMIN_TOKEN), Some(bad_kind))
            .await
            .0
            .as_u16(),
        422
    );

    let mut past = nhi_body("bot", "payments");
    past["expires_at"] = json!("2001-01-01T00:00:00Z");
    let (_, problem) = server
        .call(Method::POST, "/v1/nhis", Some(ADMIN_TOKEN), Some(past))
        .await;
    assert_eq!(problem["errors"][0]["field"], "expires_at");

    for (path, code) in [
        ("/v1/nhis?limit=0", "invalid_parameter"),
        ("/v1/nhis?limit=abc", "invalid_parameter"),
        ("/v1/nhis?status=sleeping", "invalid_parameter"),
        ("/v1/nhis?expires_before=tomorrow", "invalid_parameter"),
        ("/v1/nhis?colour=blue", "unknown_parameter"),
        ("/v1/nhis?cursor=%%%", "invalid_cursor"),
        ("/v1/nhis?limit=1&limit=2", "invalid_parameter"),
    ] {
        let (status, problem) = server
            .call(Method::GET, path, Some(ADMIN_TOKEN), None)
            .await;
        assert_eq!(
            (status.as_u16(), problem["code"].as_str()),
            (400, Some(code)),
            "{path}"
        );
    }
    let (status, problem) = server
        .call(
            Method::GET,
            "/v1/nhis/does-not-exist",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, problem) = server
        .call(Method::GET, "/v1/nowhere", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, headers, problem) = server
        .call_full(Method::DELETE, "/v1/nhis", Some(ADMIN_TOKEN), None, &[])
        .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    assert!(headers.contains_key("allow"));
    let (status, problem) = server
        .call(Method::GET, "/v1/nhis", Some("custos_op_bad"), None)
        .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (401, Some("invalid_token"))
    );

    // Nothing of the refused requests was written.
    let list = server
        .admin(Method::GET, "/v1/nhis", None, StatusCode::OK)
        .await;
    assert!(list["items"].as_array().unwrap().is_empty());
    server.stop().await;
}

/// A NUL character can be sent in a path, a query, a JSON string or a form, but no store can
/// keep one (PostgreSQL refuses it in text). Each is refused as bad input, the same on both
/// stores, nothing is written, and the server keeps answering.
async fn nul_characters_are_refused_alike_on_every_store(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("payments").await;
    let get = |path: &'static str| server.call(Method::GET, path, Some(ADMIN_TOKEN), None);
    for path in [
        "/v1/nhis?q=bil%00ling",
        "/v1/nhis?platform=aws%00",
        "/v1/nhis?team=%00",
        "/v1/nhis?tag=tier%3D%00",
        "/v1/credentials?nhi_id=%00",
        "/v1/findings?nhi_id=a%00b",
        "/ui/nhis?q=%00abc",
    ] {
        let (status, problem) = get(path).await;
        assert_eq!(
            (status.as_u16(), problem["code"].as_str()),
            (400, Some("invalid_parameter")),
            "{path}: {problem}"
        );
    }
    for path in [
        "/v1/nhis/ab%00cd",
        "/v1/teams/%00",
        "/v1/credentials/x%00/revoke",
    ] {
        let (status, problem) = get(path).await;
        assert_eq!(status.as_u16(), 404, "{path}: {problem}");
    }

    let mut body = nhi_body("billing", "payments");
    body["purpose"] = json!("reconciles\u{0}invoices");
    let (status, problem) = server
        .call(Method::POST, "/v1/nhis", Some(ADMIN_TOKEN), Some(body))
        .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (422, Some("invalid_body")),
        "{problem}"
    );
    assert_eq!(problem["errors"][0]["field"], "body");
    let (_, listed) = get("/v1/nhis").await;
    assert_eq!(listed["items"], json!([]), "nothing is written");
    // An escaped backslash followed by `u0000` is six ordinary characters, kept as sent.
    let mut body = nhi_body("billing", "payments");
    body["purpose"] = json!("reconciles \\u0000 invoices");
    let (status, created) = server
        .call(Method::POST, "/v1/nhis", Some(ADMIN_TOKEN), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["purpose"], "reconciles \\u0000 invoices");

    // OAuth: a NUL in a form parameter or in Basic credentials.
    let (nhi, secret) = client(&server, "nul-client", &["mail:send"]).await;
    let (status, _, answer) = server
        .form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "nul\0client"),
                ("client_secret", &secret),
            ],
        )
        .await;
    assert_eq!(status.as_u16(), 400, "{answer}");
    assert_eq!(answer["error"], "invalid_request");
    let (status, _, answer) = server
        .form(
            "/oauth2/token",
            Some((&format!("{nhi}%00"), &secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(status.as_u16(), 401, "{answer}");
    assert_eq!(answer["error"], "invalid_client");
    // The client still works.
    let (status, _, answer) = server
        .form(
            "/oauth2/token",
            Some((&nhi, &secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    server.stop().await;
}

async fn filters_and_pages(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("red").await;
    server.team("blue").await;
    for i in 0..7 {
        let mut body = nhi_body(&format!("red-agent-{i}"), "red");
        if i % 2 == 0 {
            body["kind"] = json!("service_account");
            body["environment"] = json!("staging");
            body["tags"] = json!({"tier": "silver", "pci": "yes"});
        }
        if i == 3 {
            body["expires_at"] = json!("2099-01-01T00:00:00Z");
        }
        server
            .admin(Method::POST, "/v1/nhis", Some(body), StatusCode::CREATED)
            .await;
    }
    let blue = server.nhi("Blue-Crawler", "blue").await;
    server
        .admin(
            Method::POST,
            &format!("/v1/nhis/{}/suspend", id(&blue)),
            None,
            StatusCode::OK,
        )
        .await;

    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let get = |q: &'static str| server.admin(Method::GET, q, None, StatusCode::OK);
    assert_eq!(names(&get("/v1/nhis?team=blue").await), ["Blue-Crawler"]);
    assert_eq!(
        names(&get("/v1/nhis?status=suspended").await),
        ["Blue-Crawler"]
    );
    assert_eq!(
        get("/v1/nhis?kind=service_account&environment=staging").await["items"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        get("/v1/nhis?tag=pci&tag=tier:silver").await["items"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        names(&get("/v1/nhis?expires_before=2100-01-01T00:00:00Z").await),
        ["red-agent-3"]
    );
    assert_eq!(names(&get("/v1/nhis?q=crawl").await), ["Blue-Crawler"]);
    assert_eq!(
        get("/v1/nhis?unused_since=2026-01-01T00:00:00Z").await["items"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    assert!(names(&get("/v1/nhis?team=nobody").await).is_empty());

    // Pages of 3 visit all 8 exactly once, in creation order.
    let mut seen = Vec::new();
    let mut path = "/v1/nhis?limit=3".to_owned();
    loop {
        let page = server.admin(Method::GET, &path, None, StatusCode::OK).await;
        seen.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/nhis?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..7).map(|i| format!("red-agent-{i}")).collect();
    expected.push("Blue-Crawler".into());
    assert_eq!(seen, expected);
    server.stop().await;
}

async fn patch_is_optimistic(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("payments").await;
    server.team("platform").await;
    let nhi = server.nhi("bot", "payments").await;
    let path = format!("/v1/nhis/{}", id(&nhi));
    let change = json!({"purpose": "pays invoices", "owner": {"team": "platform"}, "expires_at": "2099-01-01T00:00:00Z"});
    let (status, headers, updated) = server
        .call_full(
            Method::PATCH,
            &path,
            Some(ADMIN_TOKEN),
            Some(change),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(headers["etag"], "\"2\"");
    assert_eq!(
        (
            updated["version"].as_i64(),
            updated["owner"]["team"].as_str()
        ),
        (Some(2), Some("platform"))
    );

    // A writer still holding version 1 is refused and changes nothing.
    let (status, _, problem) = server
        .call_full(
            Method::PATCH,
            &path,
            Some(ADMIN_TOKEN),
            Some(json!({"purpose": "lost update"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (412, Some("precondition_failed"))
    );
    assert_eq!(
        server.admin(Method::GET, &path, None, StatusCode::OK).await["purpose"],
        "pays invoices"
    );

    // null clears the expiry; an unchanged value does not bump the version.
    let cleared = server
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"expires_at": null})),
            StatusCode::OK,
        )
        .await;
    assert!(cleared["expires_at"].is_null());
    assert_eq!(cleared["version"], 3);
    let same = server
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"purpose": "pays invoices"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(same["version"], 3);

    let (status, _) = server
        .call(
            Method::PATCH,
            &path,
            Some(ADMIN_TOKEN),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(
        status.as_u16(),
        422,
        "status changes only through suspend and resume"
    );
    let (status, _, _) = server
        .call_full(
            Method::PATCH,
            &path,
            Some(ADMIN_TOKEN),
            Some(json!({"purpose": "x"})),
            &[("if-match", "garbage")],
        )
        .await;
    assert_eq!(status.as_u16(), 400);
    server.stop().await;
}

async fn suspend_and_resume_are_idempotent_and_recorded(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("payments").await;
    let nhi = server.nhi("bot", "payments").await;
    let nhi_id = id(&nhi);
    for _ in 0..2 {
        let s = server
            .admin(
                Method::POST,
                &format!("/v1/nhis/{nhi_id}/suspend"),
                Some(json!({"reason": "incident 42"})),
                StatusCode::OK,
            )
            .await;
        assert_eq!(s["status"], "suspended");
    }
    let r = server
        .admin(
            Method::POST,
            &format!("/v1/nhis/{nhi_id}/resume"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (r["status"].as_str(), r["version"].as_i64()),
        (Some("active"), Some(3))
    );
    let events = server
        .admin(
            Method::GET,
            &format!("/v1/audit/events?subject=nhi:{nhi_id}"),
            None,
            StatusCode::OK,
        )
        .await;
    let kinds: Vec<_> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["nhi.registered", "nhi.suspended", "nhi.resumed"]);
    assert_eq!(events["items"][1]["details"]["reason"], "incident 42");
    assert!(
        events["items"][1]["actor"]
            .as_str()
            .unwrap()
            .starts_with("operator:")
    );
    server.stop().await;
}

async fn static_keys_authenticate_the_nhi_until_revoked(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("payments").await;
    let nhi = server.nhi("bot", "payments").await;
    let nhi_id = id(&nhi);
    let key = server.static_key(&nhi_id).await;
    let secret = key["secret"].as_str().unwrap();
    assert!(secret.starts_with("custos_sk_"));
    assert!(key["fingerprint"].as_str().unwrap().starts_with("fp_"));

    let (status, me) = server
        .call(Method::GET, "/v1/whoami", Some(secret), None)
        .await;
    assert_eq!(
        (status, me["kind"].as_str(), me["id"].as_str()),
        (StatusCode::OK, Some("nhi"), Some(nhi_id.as_str()))
    );

    let list = server
        .admin(
            Method::GET,
            &format!("/v1/credentials?nhi_id={nhi_id}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(list["items"][0]["fingerprint"], key["fingerprint"]);
    assert!(
        !list.to_string().contains(secret),
        "listings never show the secret"
    );

    // Suspending an NHI revokes its keys: they stay dead after a resume, and a new one is
    // issued on purpose.
    server
        .admin(
            Method::POST,
            &format!("/v1/nhis/{nhi_id}/suspend"),
            None,
            StatusCode::OK,
        )
        .await;
    let (status, problem) = server
        .call(Method::GET, "/v1/whoami", Some(secret), None)
        .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (401, Some("invalid_token"))
    );
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/v1/nhis/{nhi_id}/credentials"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status.as_u16(), 409, "no new keys for a suspended nhi");
    server
        .admin(
            Method::POST,
            &format!("/v1/nhis/{nhi_id}/resume"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        server
            .call(Method::GET, "/v1/whoami", Some(secret), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let key = server
        .admin(
            Method::POST,
            &format!("/v1/nhis/{nhi_id}/credentials"),
            None,
            StatusCode::CREATED,
        )
        .await;
    let secret = key["secret"].as_str().unwrap();
    assert_eq!(
        server
            .call(Method::GET, "/v1/whoami", Some(secret), None)
            .await
            .0,
        StatusCode::OK
    );

    let revoked = server
        .admin(
            Method::POST,
            &format!("/v1/credentials/{}/revoke", id(&key)),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(revoked["status"], "revoked");
    let (status, problem) = server
        .call(Method::GET, "/v1/whoami", Some(secret), None)
        .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (401, Some("invalid_token"))
    );

    // A key with one character changed fails its checksum before any lookup.
    let mut typo = secret.to_owned().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let (status, problem) = server
        .call(
            Method::GET,
            "/v1/whoami",
            Some(&String::from_utf8(typo).unwrap()),
            None,
        )
        .await;
    assert_eq!(status.as_u16(), 401);
    assert!(
        problem["detail"].as_str().unwrap().contains("checksum"),
        "{problem}"
    );

    let (status, _) = server
        .call(
            Method::POST,
            &format!("/v1/nhis/{nhi_id}/credentials"),
            Some(ADMIN_TOKEN),
            Some(json!({"ttl_seconds": 5})),
        )
        .await;
    assert_eq!(status.as_u16(), 422);
    server.stop().await;
}

async fn teams_and_operators(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("payments").await;
    let (status, problem) = server
        .call(
            Method::POST,
            "/v1/teams",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "payments", "contact": "x"})),
        )
        .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (409, Some("team_exists"))
    );
    let (rita_id, rita) = server.operator("rita", &["reviewer"], &["payments"]).await;
    assert!(rita.starts_with("custos_op_"));
    let team = server
        .admin(Method::GET, "/v1/teams/payments", None, StatusCode::OK)
        .await;
    assert_eq!(team["members"][0]["id"], rita_id.as_str());
    let (status, problem) = server
        .call(
            Method::POST,
            "/v1/operators",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "r2", "roles": ["reviewer"]})),
        )
        .await;
    assert_eq!(status.as_u16(), 422, "a reviewer needs a team: {problem}");
    let (status, _) = server
        .call(
            Method::POST,
            "/v1/operators",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "r3", "roles": ["overlord"]})),
        )
        .await;
    assert_eq!(status.as_u16(), 422);
    let ops = server
        .admin(Method::GET, "/v1/operators", None, StatusCode::OK)
        .await;
    assert!(
        !ops.to_string().contains(&rita),
        "tokens are shown once, never listed"
    );

    // The last admin cannot revoke themselves away.
    let me = server
        .admin(Method::GET, "/v1/whoami", None, StatusCode::OK)
        .await;
    let (status, problem) = server
        .call(
            Method::POST,
            &format!("/v1/operators/{}/revoke", id(&me)),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (409, Some("last_admin"))
    );
    server
        .admin(
            Method::POST,
            &format!("/v1/operators/{rita_id}/revoke"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        server
            .call(Method::GET, "/v1/whoami", Some(&rita), None)
            .await
            .0
            .as_u16(),
        401
    );
    server.stop().await;
}
