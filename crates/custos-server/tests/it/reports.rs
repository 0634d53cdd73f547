//! Risk and posture reports and the blast radius, over HTTP and through the `custos` binary,
//! on an inventory built to hit each rule.

use std::collections::BTreeMap;

use custos_core::finding::{Finding, Noticed, ResponseAction, Severity};
use custos_core::{Actor, DomainEvent, EventKind};
use custos_server::service::new_id;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestServer, client, json_of, ok};

async fn register(
    server: &TestServer,
    name: &str,
    team: &str,
    kind: &str,
    environment: &str,
    ceiling: &[&str],
    tags: Value,
) -> String {
    let nhi = server
        .admin(
            Method::POST,
            "/v1/nhis",
            Some(json!({
                "name": name, "kind": kind, "platform": "custom", "environment": environment,
                "owner": {"team": team}, "purpose": "report tests",
                "scope_ceiling": ceiling, "tags": tags,
            })),
            StatusCode::CREATED,
        )
        .await;
    nhi["id"].as_str().unwrap().to_owned()
}

/// Opens a finding as a detector would (`nhi_id` `None`: about no NHI, as a shadow NHI is).
async fn finding(server: &TestServer, kind: &str, nhi_id: Option<&str>, severity: Severity) {
    let state = server.state();
    let now = state.now();
    let finding = Finding::opened(
        new_id(),
        Noticed {
            kind: kind.into(),
            nhi_id: nhi_id.map(str::to_owned),
            dedupe_key: format!("{kind}:{}", new_id()),
            severity,
            score: 1.0,
            summary: format!("{kind} seen"),
            evidence: json!({"seen": kind}),
            action: ResponseAction::Record,
        },
        now,
    );
    let event = DomainEvent::new(
        new_id(),
        EventKind::FindingOpened,
        Actor::System,
        format!("finding:{}", finding.id),
        now,
    );
    state
        .store
        .open_finding(&finding, &event, &[])
        .await
        .unwrap();
}

struct Inventory {
    ids: BTreeMap<&'static str, String>,
    reviewer_b: String,
}

/// Six NHIs over three teams, each hitting known rules, and one shadow identity:
///
/// | nhi | hits | risk |
/// | --- | --- | --- |
/// | wide-agent | NHI5 | 25 (scope 15+10) |
/// | vendor-app | NHI3, NHI5 | 10 (service-wide) |
/// | prod-worker (team b) | NHI4, NHI6, NHI7 | 35 (static 10, lifetime 5, sensitivity 10, production 10) |
/// | orphan-bot (team gone) | NHI1 | 15 (owner) |
/// | noisy-bot | NHI2, NHI4, NHI8, NHI9, NHI10 | 20 (findings, capped) |
/// | quiet-bot | — | 0 |
async fn inventory(server: &TestServer) -> Inventory {
    server.team("risk-a").await;
    server.team("risk-b").await;
    server.team("risk-gone").await;
    let mut ids = BTreeMap::new();
    let none = json!({});
    ids.insert(
        "wide-agent",
        register(
            server,
            "wide-agent",
            "risk-a",
            "ai_agent",
            "staging",
            &["crm:*"],
            none.clone(),
        )
        .await,
    );
    ids.insert(
        "vendor-app",
        register(
            server,
            "vendor-app",
            "risk-a",
            "oauth_app",
            "staging",
            &["drive:read"],
            none.clone(),
        )
        .await,
    );
    let worker = register(
        server,
        "prod-worker",
        "risk-b",
        "workload",
        "production",
        &["erp:read:invoices/*"],
        json!({"sensitivity": "high"}),
    )
    .await;
    server.static_key(&worker).await;
    ids.insert("prod-worker", worker);
    ids.insert(
        "orphan-bot",
        register(
            server,
            "orphan-bot",
            "risk-gone",
            "ai_agent",
            "staging",
            &["crm:read:x/*"],
            none.clone(),
        )
        .await,
    );
    let noisy = register(
        server,
        "noisy-bot",
        "risk-a",
        "ai_agent",
        "staging",
        &["crm:read:y/*"],
        none.clone(),
    )
    .await;
    for (kind, severity) in [
        ("leaked_secret", Severity::High),
        ("credential_stuffing", Severity::High),
        ("environment_crossing", Severity::Medium),
        ("reused_secret", Severity::Medium),
        ("interactive_use", Severity::Low),
    ] {
        finding(server, kind, Some(&noisy), severity).await;
    }
    ids.insert("noisy-bot", noisy);
    ids.insert(
        "quiet-bot",
        register(
            server,
            "quiet-bot",
            "risk-a",
            "ai_agent",
            "staging",
            &["crm:read:z/*"],
            none,
        )
        .await,
    );
    finding(server, "shadow_nhi", None, Severity::Medium).await;

    // The gone team's only member leaves: its NHIs are orphaned.
    let gone = server
        .admin(Method::GET, "/v1/teams/risk-gone", None, StatusCode::OK)
        .await;
    let (leaver, _) = server
        .operator("leaver", &["reviewer"], &[gone["id"].as_str().unwrap()])
        .await;
    server
        .admin(
            Method::POST,
            &format!("/v1/operators/{leaver}/revoke"),
            None,
            StatusCode::OK,
        )
        .await;
    let team_b = server
        .admin(Method::GET, "/v1/teams/risk-b", None, StatusCode::OK)
        .await;
    let (_, reviewer_b) = server
        .operator(
            "reviewer-b",
            &["reviewer"],
            &[team_b["id"].as_str().unwrap()],
        )
        .await;
    Inventory { ids, reviewer_b }
}

fn counts(report: &Value) -> Vec<(String, u64)> {
    report["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn listed(report: &Value, category: &str) -> Vec<String> {
    let c = report["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == category)
        .unwrap();
    c["nhis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect()
}

fn evidence(report: &Value, category: &str, name: &str) -> Vec<String> {
    let c = report["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == category)
        .unwrap();
    let nhi = c["nhis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in {category}"));
    serde_json::from_value(nhi["evidence"].clone()).unwrap()
}

const EXPECTED: [(&str, u64); 10] = [
    ("NHI1", 1),
    ("NHI2", 1),
    ("NHI3", 1),
    ("NHI4", 2),
    ("NHI5", 2),
    ("NHI6", 1),
    ("NHI7", 1),
    ("NHI8", 1),
    ("NHI9", 1),
    ("NHI10", 1),
];

async fn posture_classifies_every_rule_with_evidence(backend: Backend) {
    let server = TestServer::start(backend).await;
    let inv = inventory(&server).await;
    let report = server
        .admin(Method::GET, "/v1/reports/posture", None, StatusCode::OK)
        .await;
    let expected: Vec<(String, u64)> = EXPECTED.iter().map(|(c, n)| (c.to_string(), *n)).collect();
    assert_eq!(counts(&report), expected, "{report:#}");
    assert_eq!(
        (report["nhis"].as_u64(), report["affected"].as_u64()),
        (Some(6), Some(5))
    );
    assert_eq!(report["categories"][4]["title"], "Overprivileged NHI");
    assert_eq!(listed(&report, "NHI4"), ["prod-worker", "noisy-bot"]);
    assert_eq!(listed(&report, "NHI5"), ["wide-agent", "vendor-app"]);
    assert_eq!(
        evidence(&report, "NHI1", "orphan-bot"),
        ["owner gone: its owner team risk-gone has no active member left"]
    );
    assert_eq!(
        evidence(&report, "NHI3", "vendor-app"),
        ["an oauth_app with a broad ceiling (service-wide grants: drive:read)"]
    );
    assert_eq!(
        evidence(&report, "NHI4", "prod-worker"),
        ["a workload authenticating with 1 static key(s) and no client key for private_key_jwt"]
    );
    assert_eq!(
        evidence(&report, "NHI4", "noisy-bot"),
        ["1 unresolved credential_stuffing finding(s)"]
    );
    assert_eq!(
        evidence(&report, "NHI6", "prod-worker"),
        ["runs in production with 1 live static key(s)"]
    );
    assert_eq!(
        evidence(&report, "NHI7", "prod-worker"),
        ["a live static key lives 90 days (rotation age 60 days)"]
    );
    for (category, kind) in [
        ("NHI2", "leaked_secret"),
        ("NHI8", "environment_crossing"),
        ("NHI9", "reused_secret"),
        ("NHI10", "interactive_use"),
    ] {
        assert_eq!(
            evidence(&report, category, "noisy-bot"),
            [format!("1 unresolved {kind} finding(s)")]
        );
    }
    assert_eq!(report["unmanaged"]["count"], 1);
    assert_eq!(
        report["unmanaged"]["identities"][0]["summary"],
        "shadow_nhi seen"
    );

    // A reviewer of team b sees its one NHI, and no unmanaged identity (they belong to no
    // team).
    let (status, mine) = server
        .call(
            Method::GET,
            "/v1/reports/posture",
            Some(&inv.reviewer_b),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (mine["nhis"].as_u64(), mine["unmanaged"]["count"].as_u64()),
        (Some(1), Some(0))
    );
    let nonzero: Vec<_> = counts(&mine).into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(
        nonzero,
        [
            ("NHI4".to_owned(), 1),
            ("NHI6".to_owned(), 1),
            ("NHI7".to_owned(), 1)
        ]
    );

    // The HTML page: standalone, no script, nothing fetched, and the same counts.
    let response = server
        .http
        .get(format!("{}/v1/reports/posture?format=html", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
    assert!(html.contains("<svg"));
    let html_counts: Vec<(String, u64)> = EXPECTED
        .iter()
        .map(|(c, _)| (c.to_string(), html_count(&html, c)))
        .collect();
    assert_eq!(html_counts, expected);
    assert_eq!(html_count(&html, "unmanaged"), 1);

    // CSV: every row, and the same counts.
    let csv = posture_csv(&server).await;
    assert_eq!(csv_counts(&csv), csv_expected());
    assert!(csv.contains(&format!(
        "NHI1,{},orphan-bot,owner gone: its owner team risk-gone has no active member left\r\n",
        inv.ids["orphan-bot"]
    )));
    server.stop().await;
}

/// The count in the summary row of `category`, read back from the page.
fn html_count(html: &str, category: &str) -> u64 {
    let row = html
        .find(&format!("<tr data-category=\"{category}\">"))
        .unwrap_or_else(|| panic!("no summary row for {category}"));
    let rest = &html[row..];
    let start = rest.find("data-count=\"").unwrap() + "data-count=\"".len();
    let end = start + rest[start..].find('"').unwrap();
    rest[start..end].parse().unwrap()
}

/// The posture report as CSV, read whole, as the admin.
async fn posture_csv(server: &TestServer) -> String {
    server
        .http
        .get(format!("{}/v1/reports/posture?format=csv", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn csv_counts(csv: &str) -> BTreeMap<String, u64> {
    let mut lines = csv.split("\r\n").filter(|l| !l.is_empty());
    assert_eq!(lines.next(), Some("category,nhi_id,name,evidence"));
    let mut counts = BTreeMap::new();
    for line in lines {
        *counts
            .entry(line.split(',').next().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    counts
}

fn csv_expected() -> BTreeMap<String, u64> {
    EXPECTED
        .iter()
        .map(|(c, n)| (c.to_string(), *n))
        .chain([("unmanaged".to_owned(), 1)])
        .collect()
}

/// The CSV is streamed a page of NHIs at a time: over several pages it still lists every
/// NHI once per category it falls into, in id order, as the JSON report counts them.
async fn posture_csv_spans_pages(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.team("bulk").await;
    let mut inventory =
        String::from("name,kind,platform,environment,owner_team,purpose,scope_ceiling\n");
    for i in 0..1_203 {
        // Service-wide grants: every row is an overprivileged NHI (NHI5).
        inventory.push_str(&format!(
            "bulk-{i:04},workload,k8s,staging,bulk,batch,crm:read\n"
        ));
    }
    let (status, imported) = server
        .upload(
            "/v1/discovery/imports?format=inventory-csv",
            ADMIN_TOKEN,
            inventory.into_bytes(),
        )
        .await;
    assert_eq!(
        (status, imported["registered"].as_u64()),
        (StatusCode::OK, Some(1_203)),
        "{imported}"
    );
    let report = server
        .admin(Method::GET, "/v1/reports/posture", None, StatusCode::OK)
        .await;
    let csv = posture_csv(&server).await;
    let from_csv = csv_counts(&csv);
    for (category, count) in counts(&report) {
        assert_eq!(
            from_csv.get(&category).copied().unwrap_or(0),
            count,
            "{category}"
        );
    }
    assert_eq!(from_csv.get("NHI5"), Some(&1_203));
    let ids: Vec<&str> = csv
        .split("\r\n")
        .filter(|line| line.starts_with("NHI5,"))
        .map(|line| line.split(',').nth(1).unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(ids, sorted, "each NHI once, in id order");
    server.stop().await;
}

async fn risk_ranks_the_top_n_with_their_factors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let inv = inventory(&server).await;
    let report = server
        .admin(
            Method::GET,
            "/v1/reports/risk?limit=4",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(report["scored"], 6);
    let ranked: Vec<(&str, u64)> = report["nhis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["score"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        ranked,
        [
            ("prod-worker", 35),
            ("wide-agent", 25),
            ("noisy-bot", 20),
            ("orphan-bot", 15)
        ]
    );
    let top = &report["nhis"][0];
    assert_eq!(top["level"], "low");
    let factors: Vec<(&str, u64, &str)> = top["factors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap(),
                f["points"].as_u64().unwrap(),
                f["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        factors,
        [
            ("static_secrets", 10, "1 live static key(s)"),
            ("credential_lifetime", 5, "a live credential lives 90 days"),
            ("sensitivity", 10, "tagged sensitivity=high"),
            ("production", 10, "runs in production"),
        ]
    );
    let noisy = &report["nhis"][2];
    assert_eq!(noisy["factors"][0]["name"], "findings");
    assert_eq!(
        noisy["factors"][0]["reason"],
        "unresolved findings: 1 high credential_stuffing, 1 medium environment_crossing, \
         1 low interactive_use, 1 high leaked_secret, 1 medium reused_secret"
    );

    // One NHI's risk, the same as in the list.
    let one = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{}/risk", inv.ids["prod-worker"]),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (one["score"].as_u64(), &one["factors"]),
        (Some(35), &top["factors"])
    );

    // A reviewer ranks only their team's NHIs; others' are not found.
    let (status, mine) = server
        .call(Method::GET, "/v1/reports/risk", Some(&inv.reviewer_b), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["scored"], 1);
    assert_eq!(mine["nhis"][0]["name"], "prod-worker");
    for path in ["risk", "blast-radius"] {
        let (status, _) = server
            .call(
                Method::GET,
                &format!("/v1/nhis/{}/{path}", inv.ids["wide-agent"]),
                Some(&inv.reviewer_b),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    server.stop().await;
}

async fn risk_and_posture_refuse_bad_parameters_and_nhis(backend: Backend) {
    let server = TestServer::start(backend).await;
    for (path, code) in [
        ("/v1/reports/risk?limit=0", "invalid_parameter"),
        ("/v1/reports/risk?limit=1001", "invalid_parameter"),
        ("/v1/reports/risk?limit=ten", "invalid_parameter"),
        ("/v1/reports/risk?limit=1&limit=2", "invalid_parameter"),
        ("/v1/reports/risk?top=3", "unknown_parameter"),
        ("/v1/reports/posture?format=xml", "invalid_parameter"),
        ("/v1/reports/posture?fmt=csv", "unknown_parameter"),
    ] {
        let (status, problem) = server
            .call(Method::GET, path, Some(ADMIN_TOKEN), None)
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{path}"
        );
    }
    let (status, _) = server
        .call(
            Method::GET,
            "/v1/nhis/nope/blast-radius",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // An NHI's own key is no operator: deny by default.
    let (_, secret) = client(&server, "curious", &["crm:read"]).await;
    for path in ["/v1/reports/risk", "/v1/reports/posture"] {
        let (status, problem) = server.call(Method::GET, path, Some(&secret), None).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("operator_required"))
        );
    }
    let (status, _) = server
        .call(Method::GET, "/v1/reports/posture", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

async fn exchange(server: &TestServer, client: (&str, &str), params: &[(&str, &str)]) -> Value {
    let mut all = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
    ];
    all.extend_from_slice(params);
    let (status, _, answer) = server.form("/oauth2/token", Some(client), &all).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

async fn token(server: &TestServer, client: (&str, &str)) -> String {
    let (_, _, answer) = server
        .form(
            "/oauth2/token",
            Some(client),
            &[("grant_type", "client_credentials")],
        )
        .await;
    answer["access_token"].as_str().unwrap().to_owned()
}

async fn blast_radius_follows_delegation_both_ways(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (planner, planner_secret) =
        client(&server, "planner", &["crm:read:customers/*", "mail:send"]).await;
    let (researcher, _) = client(&server, "researcher", &["crm:read"]).await;
    let (summariser, summariser_secret) = client(&server, "summariser", &["crm:read"]).await;
    let root = token(&server, (&planner, &planner_secret)).await;
    // planner → researcher → summariser: two delegations below the planner's token.
    let child = exchange(
        &server,
        (&planner, &planner_secret),
        &[
            ("subject_token", &root),
            ("audience", &researcher),
            ("scope", "crm:read:customers/7"),
        ],
    )
    .await;
    let child = child["access_token"].as_str().unwrap().to_owned();
    let actor = token(&server, (&summariser, &summariser_secret)).await;
    exchange(
        &server,
        (&summariser, &summariser_secret),
        &[
            ("subject_token", &child),
            ("actor_token", &actor),
            (
                "actor_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
        ],
    )
    .await;

    let blast = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{planner}/blast-radius"),
            None,
            StatusCode::OK,
        )
        .await;
    // Its static key and its token; the key reaches its ceiling, the token its scope.
    let kinds: Vec<&str> = blast["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{blast:#}");
    assert!(kinds.contains(&"static_key") && kinds.contains(&"access_token"));
    let descendants: Vec<(&str, u64, Value)> = blast["descendants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["nhi_id"].as_str().unwrap(),
                c["depth"].as_u64().unwrap(),
                c["scope"].clone(),
            )
        })
        .collect();
    assert_eq!(
        descendants,
        [
            (researcher.as_str(), 1, json!(["crm:read:customers/7"])),
            (summariser.as_str(), 2, json!(["crm:read:customers/7"])),
        ]
    );
    assert_eq!(blast["max_depth"], 2);
    assert_eq!(blast["reach"], json!(["crm:read:customers/*", "mail:send"]));
    let mut dependents: Vec<(&str, &str)> = blast["dependents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].as_str().unwrap(), d["relation"].as_str().unwrap()))
        .collect();
    dependents.sort();
    assert_eq!(
        dependents,
        [
            ("researcher", "holds_delegated_credential"),
            ("summariser", "holds_delegated_credential"),
        ]
    );
    assert_eq!(blast["delegators"], json!([]));

    // Seen from the researcher: the planner delegated to it, the summariser depends on it.
    let blast = server
        .admin(
            Method::GET,
            &format!("/v1/nhis/{researcher}/blast-radius"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(blast["delegators"][0]["nhi_id"], planner.as_str());
    assert_eq!(blast["delegators"][0]["relation"], "delegated_to_it");
    assert_eq!(blast["dependents"][0]["nhi_id"], summariser.as_str());
    assert_eq!(blast["max_depth"], 2);

    // The same through the binary.
    let cli = json_of(&server, &["nhi", "blast-radius", &planner]).await;
    assert_eq!(cli["max_depth"], 2);
    server.stop().await;
}

async fn posture_and_risk_through_the_cli(backend: Backend) {
    let server = TestServer::start(backend).await;
    let inv = inventory(&server).await;
    let csv = ok(&server, &["report", "posture", "--format", "csv"]).await;
    assert_eq!(csv_counts(&csv), csv_expected());
    let out = server.data_dir().join("posture.html");
    ok(
        &server,
        &[
            "report",
            "posture",
            "--format",
            "html",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    let html = std::fs::read_to_string(&out).unwrap();
    assert_eq!(html_count(&html, "NHI4"), 2);
    let json = ok(&server, &["report", "posture"]).await;
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["affected"], 5);
    let risk = json_of(&server, &["report", "risk", "--limit", "1"]).await;
    assert_eq!(risk["nhis"][0]["nhi_id"], inv.ids["prod-worker"].as_str());
    let table = ok(&server, &["report", "risk", "--limit", "2"]).await;
    assert!(table.contains("prod-worker") && table.contains("+10 production: runs in production"));
    server.stop().await;
}

both_backends!(
    posture_csv_spans_pages,
    posture_classifies_every_rule_with_evidence,
    risk_ranks_the_top_n_with_their_factors,
    risk_and_posture_refuse_bad_parameters_and_nhis,
    blast_radius_follows_delegation_both_ways,
    posture_and_risk_through_the_cli,
);
