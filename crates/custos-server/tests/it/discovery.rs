//! Discovery as its users meet it: an inventory imported (and imported again), a platform's
//! logs imported against it, the shadow NHIs they reveal adopted through the owner team's
//! inbox or dismissed, people told apart from machines, logical agents linked across
//! platforms, and every bad input refused with a stable code.

use std::io::Write;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestServer, json_of, ok};

both_backends!(
    discovery_inventory_imports_register_by_the_api_rules_and_repeat_harmlessly,
    discovery_logs_reveal_shadow_nhis_and_tell_people_from_machines,
    discovery_a_shadow_nhi_is_adopted_through_the_owner_inbox_or_refused,
    discovery_a_dismissed_shadow_nhi_is_not_reported_again,
    discovery_bad_imports_are_refused_with_stable_codes,
    discovery_logical_agents_link_one_agent_across_platforms,
    discovery_import_cli_streams_files_and_prints_counts,
    discovery_the_invictus_capture_reveals_its_attack_principals,
);

const ACCOUNT: &str = "111122223333";

fn arn(user: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/{user}")
}

/// A CloudTrail record, shaped as in AWS's "CloudTrail record contents" documentation.
fn api_call(user: &str, at: &str, source: &str, name: &str, agent: &str, params: Value) -> Value {
    json!({
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": format!("AIDA{}", user.len()),
            "arn": arn(user),
            "accountId": ACCOUNT,
            "accessKeyId": "AKIAEXAMPLEKEYID0001",
            "userName": user,
        },
        "eventTime": at,
        "eventSource": source,
        "eventName": name,
        "awsRegion": "eu-west-1",
        "sourceIPAddress": "203.0.113.7",
        "userAgent": agent,
        "requestParameters": params,
        "responseElements": null,
        "eventID": format!("{user}-{at}-{name}"),
        "readOnly": false,
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": ACCOUNT,
    })
}

/// A small trail: a deploy bot nobody registered, a registered agent, a person signing in
/// to the console, and an AWS service acting for itself.
fn trail() -> Value {
    let sdk = "aws-sdk-go-v2/1.17.0 os/linux lang/go/1.20";
    json!({"Records": [
        api_call("ci-deployer", "2026-11-20T10:00:00Z", "s3.amazonaws.com", "PutObject", sdk,
            json!({"bucketName": "releases", "key": "app.tar.gz"})),
        api_call("ci-deployer", "2026-11-20T10:05:00Z", "lambda.amazonaws.com", "UpdateFunctionCode20150331v2", sdk,
            json!({"functionName": "api"})),
        api_call("invoice-bot", "2026-11-20T11:00:00Z", "s3.amazonaws.com", "GetObject", sdk,
            json!({"bucketName": "invoices", "key": "7.pdf"})),
        {
            "eventVersion": "1.08",
            "userIdentity": {"type": "IAMUser", "principalId": "AIDAALICE", "arn": arn("alice"),
                             "accountId": ACCOUNT, "userName": "alice"},
            "eventTime": "2026-11-20T09:00:00Z",
            "eventSource": "signin.amazonaws.com",
            "eventName": "ConsoleLogin",
            "awsRegion": "us-east-1",
            "sourceIPAddress": "198.51.100.4",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
            "requestParameters": null,
            "responseElements": {"ConsoleLogin": "Success"},
            "additionalEventData": {"MFAUsed": "Yes", "MobileVersion": "No"},
            "eventID": "alice-login",
            "eventType": "AwsConsoleSignIn",
            "recipientAccountId": ACCOUNT,
        },
        {
            "eventVersion": "1.08",
            "userIdentity": {"type": "AWSService", "invokedBy": "cloudtrail.amazonaws.com"},
            "eventTime": "2026-11-20T09:30:00Z",
            "eventSource": "kms.amazonaws.com",
            "eventName": "GenerateDataKey",
            "awsRegion": "eu-west-1",
            "sourceIPAddress": "cloudtrail.amazonaws.com",
            "userAgent": "cloudtrail.amazonaws.com",
            "requestParameters": {"keySpec": "AES_256"},
            "responseElements": null,
            "eventID": "kms-1",
            "eventType": "AwsApiCall",
            "recipientAccountId": ACCOUNT,
        },
    ]})
}

async fn import(server: &TestServer, format: &str, source: &str, body: Vec<u8>) -> Value {
    let (status, report) = server
        .upload(
            &format!("/v1/discovery/imports?format={format}&source={source}"),
            ADMIN_TOKEN,
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The agent registered in the inventory, known on AWS by its IAM user.
async fn registered_agent(server: &TestServer) -> Value {
    server.team("payments").await;
    let mut body = crate::support::nhi_body("invoice-bot", "payments");
    body["platform"] = json!("aws");
    body["external_ids"] = json!({"aws": arn("invoice-bot")});
    server
        .admin(Method::POST, "/v1/nhis", Some(body), StatusCode::CREATED)
        .await
}

async fn shadow_findings(server: &TestServer) -> Vec<Value> {
    server
        .admin(
            Method::GET,
            "/v1/findings?kind=shadow_nhi",
            None,
            StatusCode::OK,
        )
        .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn discovery_inventory_imports_register_by_the_api_rules_and_repeat_harmlessly(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    server.team("payments").await;
    let rows = [
        json!({"name": "invoice-bot", "kind": "ai_agent", "platform": "aws",
               "environment": "production",
               "owner": {"team": "payments", "application": "billing", "contact": "ops@example.com"},
               "purpose": "reconciles invoices", "scope_ceiling": ["erp:read:invoices/*"],
               "external_ids": {"aws": arn("invoice-bot")}}),
        json!({"name": "bad-kind", "kind": "robot", "platform": "aws", "environment": "dev",
               "owner": {"team": "payments"}, "purpose": "x"}),
        json!({"name": "no-team", "kind": "workload", "platform": "aws", "environment": "dev",
               "owner": {"team": "nobody"}, "purpose": "x"}),
        json!({"name": "nightly-etl", "kind": "workload", "platform": "kubernetes", "environment": "production",
               "owner": {"team": "payments"}, "purpose": "loads the warehouse",
               "expires_at": "2030-01-01T00:00:00Z", "tags": {"tier": "silver"}}),
    ];
    let lines: String = rows.iter().map(|row| format!("{row}\n")).collect();
    let report = import(
        &server,
        "inventory-json",
        "cmdb.jsonl",
        lines.clone().into_bytes(),
    )
    .await;
    assert_eq!(report["records"], 4, "{report}");
    assert_eq!(report["registered"], 2, "{report}");
    assert_eq!(report["malformed"], 2, "{report}");
    assert_eq!(report["complete"], true);
    let reasons: Vec<(u64, String)> = report["malformed_records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["position"]["record"].as_u64().unwrap(),
                m["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(reasons[0].0, 2, "{reasons:?}");
    assert!(reasons[0].1.contains("robot"), "{reasons:?}");
    assert_eq!(reasons[1].0, 3, "{reasons:?}");
    assert!(reasons[1].1.contains("nobody"), "{reasons:?}");

    // Registered exactly as `POST /v1/nhis` would have.
    let listed = server
        .admin(
            Method::GET,
            "/v1/nhis?platform=kubernetes",
            None,
            StatusCode::OK,
        )
        .await;
    let etl = &listed["items"][0];
    assert_eq!(etl["name"], "nightly-etl");
    assert_eq!(etl["status"], "active");
    assert_eq!(etl["tags"]["tier"], "silver");
    assert_eq!(etl["expires_at"], "2030-01-01T00:00:00Z");
    let events = server
        .admin(
            Method::GET,
            "/v1/audit/events?kind=nhi.registered",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(events["items"].as_array().unwrap().len(), 2, "{events}");

    // The same inventory again, gzipped: nothing new, nothing duplicated.
    let again = import(
        &server,
        "inventory-json",
        "cmdb.jsonl.gz",
        gzip(lines.as_bytes()),
    )
    .await;
    assert_eq!(again["registered"], 0, "{again}");
    assert_eq!(again["existing"], 2, "{again}");

    // CSV, with the documented columns.
    let csv = "name,kind,platform,environment,owner_team,owner_application,owner_contact,purpose,scope_ceiling,tags,external_ids,expires_at\n\
               report-writer,automation,github,production,payments,reports,ops@example.com,writes reports,repo:read;repo:write,tier=bronze,github=report-writer[bot],\n\
               nightly-etl,workload,kubernetes,,payments,,,loads the warehouse,,,,\n";
    let report = import(
        &server,
        "inventory-csv",
        "cmdb.csv",
        csv.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(report["registered"], 1, "{report}");
    assert_eq!(report["existing"], 1, "{report}");
    let writer = server
        .admin(
            Method::GET,
            "/v1/nhis?platform=github",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        writer["items"][0]["scope_ceiling"],
        json!(["repo:read", "repo:write"])
    );
    assert_eq!(
        writer["items"][0]["external_ids"]["github"],
        "report-writer[bot]"
    );
    server.stop().await;
}

async fn discovery_logs_reveal_shadow_nhis_and_tell_people_from_machines(backend: Backend) {
    let server = TestServer::start(backend).await;
    let agent = registered_agent(&server).await;
    let trail = serde_json::to_vec(&trail()).unwrap();
    let report = import(&server, "cloudtrail", "trail-1.json", trail.clone()).await;
    assert_eq!(report["records"], 5, "{report}");
    assert_eq!(report["malformed"], 0, "{report}");
    assert_eq!(report["identities"], 4, "{report}");
    assert_eq!(report["humans"], 1, "{report}");
    assert_eq!(report["platform_services"], 1, "{report}");
    assert_eq!(report["matched"], 1, "{report}");
    assert_eq!(report["shadow"], 1, "{report}");
    assert_eq!(report["new_shadow"], 1, "{report}");
    assert_eq!(
        report["observed"], 1,
        "the registered agent's call feeds its baseline"
    );

    // The registered agent's activity moved its last use.
    let nhi = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{}", agent["id"].as_str().unwrap()),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(nhi["last_used_at"], "2026-11-20T11:00:00Z", "{nhi}");

    // One shadow NHI, with its evidence; the person and the AWS service are not NHIs.
    let shadows = shadow_findings(&server).await;
    assert_eq!(shadows.len(), 1, "{shadows:?}");
    let shadow = &shadows[0];
    assert_eq!(shadow["nhi_id"], Value::Null);
    let evidence = &shadow["evidence"];
    assert_eq!(evidence["principal"], arn("ci-deployer"));
    assert_eq!(evidence["platform"], "aws");
    assert_eq!(evidence["records"], 2);
    assert_eq!(evidence["first_seen"], "2026-11-20T10:00:00Z");
    assert_eq!(evidence["last_seen"], "2026-11-20T10:05:00Z");
    assert_eq!(evidence["sources"], json!(["trail-1.json"]));
    assert_eq!(evidence["operations"]["s3:PutObject"], 1, "{evidence}");
    assert_eq!(shadow["first_seen"], "2026-11-20T10:00:00Z");

    let people = server
        .admin(
            Method::GET,
            "/v1/discovery/identities?class=human",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(people["items"][0]["principal"], arn("alice"), "{people}");
    let listed = server
        .admin(
            Method::GET,
            "/v1/discovery/identities?shadow=true",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");

    // A second file folds into the same finding and identity.
    let report = import(&server, "cloudtrail", "trail-2.json", trail).await;
    assert_eq!(report["new_shadow"], 0, "{report}");
    let shadows = shadow_findings(&server).await;
    assert_eq!(shadows.len(), 1);
    assert_eq!(shadows[0]["occurrences"], 2);
    let identity = server
        .admin(
            Method::GET,
            "/v1/discovery/identities?platform=aws&shadow=true",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(identity["items"][0]["events"], 4, "{identity}");
    assert_eq!(
        identity["items"][0]["evidence"]["sources"],
        json!(["trail-1.json", "trail-2.json"])
    );
    server.stop().await;
}

async fn discovery_a_shadow_nhi_is_adopted_through_the_owner_inbox_or_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    registered_agent(&server).await;
    let (_, reviewer) = server.operator("rita", &["reviewer"], &["payments"]).await;
    import(
        &server,
        "cloudtrail",
        "trail.json",
        serde_json::to_vec(&trail()).unwrap(),
    )
    .await;
    let finding = shadow_findings(&server).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let adopt = json!({
        "kind": "automation",
        "owner": {"team": "payments", "contact": "ops@example.com"},
        "purpose": "deploys releases",
        "environment": "production",
        "scope_ceiling": ["s3:PutObject:releases/*"],
    });
    // Only an admin adopts.
    let (status, refused) = server
        .call(
            Method::POST,
            &format!("/v1/findings/{finding}/adopt"),
            Some(&reviewer),
            Some(adopt.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    let adopted = server
        .admin(
            Method::POST,
            &format!("/v1/findings/{finding}/adopt"),
            Some(adopt.clone()),
            StatusCode::ACCEPTED,
        )
        .await;
    let nhi_id = adopted["nhi"]["id"].as_str().unwrap().to_owned();
    assert_eq!(adopted["nhi"]["status"], "suspended");
    assert_eq!(adopted["nhi"]["name"], "ci-deployer");
    assert_eq!(adopted["nhi"]["external_ids"]["aws"], arn("ci-deployer"));
    // Twice is a conflict: the identity is registered now.
    let (status, again) = server
        .call(
            Method::POST,
            &format!("/v1/findings/{finding}/adopt"),
            Some(ADMIN_TOKEN),
            Some(adopt),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["code"], "already_registered");

    // The owner team's reviewer finds it in the inbox and approves.
    let inbox = server
        .call(
            Method::GET,
            "/v1/approvals?state=pending&kind=adoption",
            Some(&reviewer),
            None,
        )
        .await
        .1;
    let approval = &inbox["items"][0];
    assert_eq!(approval["id"], adopted["approval_id"], "{inbox}");
    assert_eq!(approval["nhi_id"], nhi_id.as_str());
    assert_eq!(approval["task_id"], Value::Null);
    let (status, decided) = server
        .call(
            Method::POST,
            &format!(
                "/v1/approvals/{}/approve",
                adopted["approval_id"].as_str().unwrap()
            ),
            Some(&reviewer),
            Some(json!({"reason": "ours: the release pipeline"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    let nhi = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{nhi_id}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(nhi["status"], "active", "{nhi}");
    let settled = server
        .admin(
            Method::GET,
            &format!("/v1/findings/{finding}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(settled["state"], "accepted", "{settled}");
    assert!(settled["resolution"].as_str().unwrap().contains(&nhi_id));

    // The next import matches it: no shadow, its activity is its own.
    let report = import(
        &server,
        "cloudtrail",
        "trail-2.json",
        serde_json::to_vec(&trail()).unwrap(),
    )
    .await;
    assert_eq!(report["shadow"], 0, "{report}");
    assert_eq!(report["matched"], 2, "{report}");
    assert!(
        shadow_findings(&server)
            .await
            .iter()
            .all(|f| f["state"] == "accepted")
    );

    // A refused adoption: the registration is decommissioned, the finding stays unresolved.
    let mut trail = trail();
    trail["Records"][0] = api_call(
        "backup-runner",
        "2026-11-21T01:00:00Z",
        "s3.amazonaws.com",
        "PutObject",
        "aws-cli/2.15.0",
        json!({"bucketName": "backups"}),
    );
    import(
        &server,
        "cloudtrail",
        "trail-3.json",
        serde_json::to_vec(&trail).unwrap(),
    )
    .await;
    let open: Vec<Value> = shadow_findings(&server)
        .await
        .into_iter()
        .filter(|f| f["state"] == "open")
        .collect();
    assert_eq!(open.len(), 1, "{open:?}");
    let finding = open[0]["id"].as_str().unwrap().to_owned();
    let adopted = server
        .admin(
            Method::POST,
            &format!("/v1/findings/{finding}/adopt"),
            Some(
                json!({"kind": "automation", "owner": {"team": "payments"}, "purpose": "backups?", "environment": "production"}),
            ),
            StatusCode::ACCEPTED,
        )
        .await;
    let (status, denied) = server
        .call(
            Method::POST,
            &format!(
                "/v1/approvals/{}/deny",
                adopted["approval_id"].as_str().unwrap()
            ),
            Some(&reviewer),
            Some(json!({"reason": "not ours"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{denied}");
    let gone = server
        .decommissioned(adopted["nhi"]["id"].as_str().unwrap())
        .await;
    assert_eq!(gone["step"], "done", "{gone}");
    assert_eq!(gone["trigger"], "review", "{gone}");
    let tombstone = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{}", adopted["nhi"]["id"].as_str().unwrap()),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(tombstone["status"], "decommissioned", "{tombstone}");
    let finding = server
        .admin(
            Method::GET,
            &format!("/v1/findings/{finding}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(finding["state"], "acknowledged", "{finding}");
    server.stop().await;
}

async fn discovery_a_dismissed_shadow_nhi_is_not_reported_again(backend: Backend) {
    let server = TestServer::start(backend).await;
    registered_agent(&server).await;
    let trail = serde_json::to_vec(&trail()).unwrap();
    import(&server, "cloudtrail", "trail.json", trail.clone()).await;
    let finding = shadow_findings(&server).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, refused) = server
        .call(
            Method::POST,
            &format!("/v1/findings/{finding}/dismiss"),
            Some(ADMIN_TOKEN),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a dismissal needs a reason: {refused}"
    );
    server
        .admin(
            Method::POST,
            &format!("/v1/findings/{finding}/dismiss"),
            Some(json!({"reason": "the vendor's deploy user, governed by their contract"})),
            StatusCode::OK,
        )
        .await;
    let report = import(&server, "cloudtrail", "trail-2.json", trail).await;
    assert_eq!(report["shadow"], 1, "{report}");
    assert_eq!(report["new_shadow"], 0, "{report}");
    assert_eq!(report["dismissed_shadow"], 1, "{report}");
    let shadows = shadow_findings(&server).await;
    assert_eq!(shadows.len(), 1, "{shadows:?}");
    assert_eq!(shadows[0]["state"], "dismissed");
    server.stop().await;
}

async fn discovery_bad_imports_are_refused_with_stable_codes(backend: Backend) {
    let server =
        TestServer::start_with(backend, |config| config.import_max_bytes = 64 * 1024).await;
    server.team("payments").await;
    let (_, reviewer) = server.operator("rita", &["reviewer"], &["payments"]).await;
    let (_, auditor) = server.operator("audrey", &["auditor"], &[]).await;
    let body = serde_json::to_vec(&trail()).unwrap();
    let cases: [(&str, &str, Vec<u8>, StatusCode, &str); 6] = [
        (
            "/v1/discovery/imports?format=syslog",
            ADMIN_TOKEN,
            body.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_format",
        ),
        (
            "/v1/discovery/imports",
            ADMIN_TOKEN,
            body.clone(),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/v1/discovery/imports?format=cloudtrail&colour=red",
            ADMIN_TOKEN,
            body.clone(),
            StatusCode::BAD_REQUEST,
            "unknown_parameter",
        ),
        (
            "/v1/discovery/imports?format=cloudtrail",
            &reviewer,
            body.clone(),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "/v1/discovery/imports?format=cloudtrail",
            ADMIN_TOKEN,
            b"<html>not a trail</html>".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unreadable_import",
        ),
        (
            "/v1/discovery/imports?format=cloudtrail",
            ADMIN_TOKEN,
            vec![b' '; 70 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (path, token, body, status, code) in cases {
        let (got, problem) = server.upload(path, token, body).await;
        assert_eq!(got, status, "{path}: {problem}");
        assert_eq!(problem["code"], code, "{path}: {problem}");
    }
    // Nothing of the refused imports was written.
    let identities = server
        .admin(
            Method::GET,
            "/v1/discovery/identities",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(identities["items"], json!([]), "{identities}");
    // Auditors read what was seen; reviewers do not.
    let (status, _) = server
        .call(
            Method::GET,
            "/v1/discovery/identities",
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for query in ["class=robot", "shadow=maybe", "platform=AWS!", "cursor=%%%"] {
        let (status, problem) = server
            .call(
                Method::GET,
                &format!("/v1/discovery/identities?{query}"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
    }

    // A file that breaks off part-way: what came before is imported, and the report says where.
    let mut truncated = serde_json::to_vec(&trail()).unwrap();
    truncated.truncate(truncated.len() * 3 / 4);
    let report = import(&server, "cloudtrail", "cut.json", truncated).await;
    assert_eq!(report["complete"], false, "{report}");
    assert!(
        report["stopped"].as_str().unwrap().contains("record"),
        "{report}"
    );
    assert!(report["records"].as_u64().unwrap() >= 1, "{report}");

    // NUL characters (valid JSON, refused by PostgreSQL as text) are no 5xx: a log's are
    // replaced, a row holding one is malformed, a source name with one is refused.
    let mut poisoned = trail();
    poisoned["Records"][0]["userIdentity"]["arn"] = json!("arn:aws:iam::1:user/nul\u{0}bot");
    poisoned["Records"][0]["userAgent"] = json!("agent\u{0}");
    let report = import(
        &server,
        "cloudtrail",
        "nul.json",
        serde_json::to_vec(&poisoned).unwrap(),
    )
    .await;
    assert_eq!(report["malformed"], 0, "{report}");
    let row = json!({"name": "nul\u{0}row", "kind": "workload", "platform": "aws",
        "environment": "dev", "owner": {"team": "payments"}, "purpose": "x"});
    let report = import(
        &server,
        "inventory-json",
        "nul.jsonl",
        format!("{row}\n").into_bytes(),
    )
    .await;
    assert_eq!(report["malformed"], 1, "{report}");
    // A control character in the source name is the route's to refuse; a NUL, in any query,
    // is refused before any route reads it.
    for (source, expected) in [
        ("a%01b", StatusCode::UNPROCESSABLE_ENTITY),
        ("a%00b", StatusCode::BAD_REQUEST),
    ] {
        let (status, problem) = server
            .upload(
                &format!("/v1/discovery/imports?format=cloudtrail&source={source}"),
                ADMIN_TOKEN,
                b"[]".to_vec(),
            )
            .await;
        assert_eq!(status, expected, "{problem}");
    }

    // Adopting what is not a shadow NHI.
    let (status, problem) = server
        .call(
            Method::POST,
            "/v1/findings/nope/adopt",
            Some(ADMIN_TOKEN),
            Some(json!({"kind": "automation", "owner": {"team": "payments"}, "purpose": "x", "environment": "dev"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(problem["code"], "finding_not_found");
    server.stop().await;
}

async fn discovery_logical_agents_link_one_agent_across_platforms(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("payments").await;
    server.team("growth").await;
    let mut ids = Vec::new();
    for (name, platform, team) in [
        ("invoice-bot-aws", "aws", "payments"),
        ("invoice_bot_github", "github", "payments"),
        ("invoice-bot", "okta", "growth"),
        ("mailer", "aws", "payments"),
    ] {
        let mut body = crate::support::nhi_body(name, team);
        body["platform"] = json!(platform);
        let nhi = server
            .admin(Method::POST, "/v1/nhis", Some(body), StatusCode::CREATED)
            .await;
        ids.push(nhi["id"].as_str().unwrap().to_owned());
    }
    let suggestions = server
        .admin(
            Method::GET,
            "/v1/logical-agents/suggestions",
            None,
            StatusCode::OK,
        )
        .await;
    let suggestions = suggestions.as_array().unwrap();
    // Same team, names equal but for platform words, across two platforms; the same name in
    // another team is not suggested with them. `nhi_body` gives every NHI one purpose, so
    // growth's and payments' leftovers are not one agent either (different teams).
    assert_eq!(suggestions.len(), 1, "{suggestions:?}");
    assert_eq!(suggestions[0]["name"], "invoice-bot");
    assert_eq!(suggestions[0]["nhi_ids"], json!([ids[0], ids[1]]));
    assert!(
        suggestions[0]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("aws, github")
    );

    let agent = server
        .admin(
            Method::POST,
            "/v1/logical-agents",
            Some(json!({"name": "invoice-bot", "team": "payments", "nhis": [ids[0], ids[1]]})),
            StatusCode::CREATED,
        )
        .await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    assert_eq!(agent["members"].as_array().unwrap().len(), 2);
    // Confirmed links leave the suggestions.
    let after = server
        .admin(
            Method::GET,
            "/v1/logical-agents/suggestions",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(after, json!([]));
    // An NHI is in one logical agent at most; names are unique.
    let (status, problem) = server
        .call(
            Method::POST,
            "/v1/logical-agents",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "other", "team": "payments", "nhis": [ids[0]]})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "logical_agent_conflict");
    let linked = server
        .admin(
            Method::PUT,
            &format!("/v1/logical-agents/{agent_id}/members/{}", ids[2]),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(linked["members"].as_array().unwrap().len(), 3);
    let unlinked = server
        .admin(
            Method::DELETE,
            &format!("/v1/logical-agents/{agent_id}/members/{}", ids[2]),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(unlinked["members"].as_array().unwrap().len(), 2);
    let (status, problem) = server
        .call(
            Method::DELETE,
            &format!("/v1/logical-agents/{agent_id}/members/{}", ids[2]),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    // Bad input.
    for body in [
        json!({"name": "x", "team": "payments", "nhis": []}),
        json!({"name": "x", "team": "payments", "nhis": ["no-such-nhi"]}),
        json!({"name": "x", "team": "payments", "nhis": [ids[3], ids[3]]}),
        json!({"name": "", "team": "payments", "nhis": [ids[3]]}),
        json!({"name": "x", "team": "nobody", "nhis": [ids[3]]}),
    ] {
        let (status, problem) = server
            .call(
                Method::POST,
                "/v1/logical-agents",
                Some(ADMIN_TOKEN),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
    }
    // Reviewers see their teams' logical agents only.
    let (_, grower) = server.operator("gus", &["reviewer"], &["growth"]).await;
    let (status, hidden) = server
        .call(
            Method::GET,
            &format!("/v1/logical-agents/{agent_id}"),
            Some(&grower),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{hidden}");
    let listed = server
        .call(Method::GET, "/v1/logical-agents", Some(&grower), None)
        .await
        .1;
    assert_eq!(listed["items"], json!([]));
    server.stop().await;
}

async fn discovery_import_cli_streams_files_and_prints_counts(backend: Backend) {
    let server = TestServer::start(backend).await;
    registered_agent(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("trail.json");
    std::fs::write(&plain, serde_json::to_vec(&trail()).unwrap()).unwrap();
    let zipped = dir.path().join("trail.json.gz");
    std::fs::write(&zipped, gzip(&serde_json::to_vec(&trail()).unwrap())).unwrap();
    let reports = json_of(
        &server,
        &[
            "import",
            "cloudtrail",
            plain.to_str().unwrap(),
            zipped.to_str().unwrap(),
        ],
    )
    .await;
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["source"], plain.to_str().unwrap());
    assert_eq!(reports[0]["new_shadow"], 1);
    assert_eq!(reports[1]["records"], 5);
    assert_eq!(reports[1]["new_shadow"], 0);
    let table = ok(&server, &["import", "cloudtrail", plain.to_str().unwrap()]).await;
    assert!(table.contains("shadow") && table.contains("| 5"), "{table}");
    let listed = ok(&server, &["discovery", "identities", "--shadow"]).await;
    assert!(listed.contains("ci-deployer"), "{listed}");
    let missing = crate::support::custos(&server, &["import", "cloudtrail", "/no/such/file"]).await;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot open"));
    server.stop().await;
}

/// The real capture (a Stratus Red Team run in one AWS account, 55 gzipped log files), each
/// file imported as CloudTrail delivers it, against an inventory that knows one EC2
/// instance's role session: every principal with an ARN is found; the console user is a
/// person and no NHI; AWS's own services are no NHIs; every other machine principal is a
/// shadow NHI with a finding; the registered session is matched.
async fn discovery_the_invictus_capture_reveals_its_attack_principals(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("cloud").await;
    let known = "arn:aws:sts::123837392027:assumed-role/stratus-red-team-ec2-steal-credentials-role/i-0dbc91f429e48eeed";
    let mut body = crate::support::nhi_body("ec2-steal-credentials", "cloud");
    body["platform"] = json!("aws");
    body["external_ids"] = json!({"aws": known});
    let registered = server
        .admin(Method::POST, "/v1/nhis", Some(body), StatusCode::CREATED)
        .await;

    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/cloudtrail-invictus/raw"
    );
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 55);
    // What the files hold, read independently: every ARN, and who signed in to the console.
    let mut arns = std::collections::BTreeSet::new();
    let mut console = std::collections::BTreeSet::new();
    let mut records = 0;
    for path in &files {
        let gz = std::fs::read(path).unwrap();
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain).unwrap();
        let file: Value = serde_json::from_slice(&plain).unwrap();
        for record in file["Records"].as_array().unwrap() {
            records += 1;
            if let Some(arn) = record["userIdentity"]["arn"].as_str() {
                arns.insert(arn.to_owned());
                if record["eventName"] == "ConsoleLogin" {
                    console.insert(arn.to_owned());
                }
            }
        }
        let name = path.file_name().unwrap().to_str().unwrap();
        let report = import(&server, "cloudtrail", name, gz).await;
        assert_eq!(report["malformed"], 0, "{report}");
        assert_eq!(report["complete"], true, "{report}");
    }
    assert_eq!(records, 2_900);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/discovery/identities?limit=100&cursor={cursor}"),
            None => "/v1/discovery/identities?limit=100".to_owned(),
        };
        let page = server.admin(Method::GET, &path, None, StatusCode::OK).await;
        seen.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let by_principal: std::collections::BTreeMap<&str, &Value> = seen
        .iter()
        .map(|identity| (identity["principal"].as_str().unwrap(), identity))
        .collect();
    for arn in &arns {
        assert!(
            by_principal.contains_key(arn.as_str()),
            "{arn} was not found"
        );
    }
    let total_events: i64 = seen.iter().map(|i| i["events"].as_i64().unwrap()).sum();
    assert_eq!(total_events, 2_900, "every record is some identity's");
    // The person browsing the console is a person, not a shadow NHI.
    let benjamin = by_principal["arn:aws:iam::123837392027:user/benjamin"];
    assert_eq!(benjamin["class"], "human", "{benjamin}");
    assert!(!console.is_empty());
    // AWS acting for itself is the platform's.
    assert!(
        seen.iter()
            .any(|i| i["class"] == "platform" && i["principal"] == "cloudtrail.amazonaws.com")
    );
    // The registered session is matched and used; the other machines are shadow NHIs.
    let matched = by_principal[known];
    assert_eq!(matched["nhi_id"], registered["id"], "{matched}");
    let nhi = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{}", registered["id"].as_str().unwrap()),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(
        nhi["last_used_at"]
            .as_str()
            .unwrap()
            .starts_with("2023-07-10T"),
        "{nhi}"
    );
    let findings = shadow_findings(&server).await;
    let reported: std::collections::BTreeSet<&str> = findings
        .iter()
        .filter(|f| f["state"] == "open")
        .map(|f| f["evidence"]["principal"].as_str().unwrap())
        .collect();
    // Bert-Jan ran the attack tool with his access keys before his console sign-in showed
    // him to be a person: his finding was opened, then dismissed by the system.
    let bert = findings
        .iter()
        .find(|f| f["evidence"]["principal"] == "arn:aws:iam::123837392027:user/bert-jan")
        .unwrap();
    assert_eq!(bert["state"], "dismissed", "{bert}");
    assert!(
        bert["resolution"].as_str().unwrap().contains("person"),
        "{bert}"
    );
    let shadows: std::collections::BTreeSet<&str> = seen
        .iter()
        .filter(|i| i["class"] == "non_human" && i["nhi_id"].is_null())
        .map(|i| i["principal"].as_str().unwrap())
        .collect();
    assert_eq!(reported, shadows);
    assert!(!reported.contains(known));
    assert!(!reported.contains("arn:aws:iam::123837392027:user/benjamin"));
    for attack in [
        "arn:aws:sts::123837392027:assumed-role/stratus-red-team-ec2-get-password-data-role/aws-go-sdk-1688990082523310002",
        "arn:aws:sts::123837392027:assumed-role/stratus-red-team-leave-org-role/aws-go-sdk-1688990515440126480",
    ] {
        assert!(
            reported.contains(attack),
            "{attack} not reported: {reported:?}"
        );
    }
    server.stop().await;
}
