//! The admin CLI's standing rules and notification channels, as a user runs them: the real
//! `custos` binary against a live server, in tables and `--output json`, and a clear error
//! with a non-zero exit code on bad input.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::both_backends;
use crate::support::{Backend, TestServer, client, custos, fails, json_of, ok, text};

both_backends!(
    cli_sets_lists_and_revokes_standing_rules,
    cli_adds_lists_tests_and_disables_notification_channels,
    cli_decommissions_an_nhi_and_follows_the_workflow,
    cli_runs_the_lifecycle_jobs_transfers_an_nhi_and_collects_a_rotated_key,
);

fn ids(items: &Value) -> Vec<&str> {
    items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect()
}

fn seconds_between(from: &Value, to: &Value) -> i64 {
    let at = |v: &Value| OffsetDateTime::parse(v.as_str().unwrap(), &Rfc3339).unwrap();
    (at(to) - at(from)).whole_seconds()
}

async fn cli_sets_lists_and_revokes_standing_rules(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (nhi, _) = client(&server, "nightly-sync", &["crm:read:customers/*"]).await;
    let (other, _) = client(&server, "other-agent", &["crm:read:customers/*"]).await;

    // Set, in JSON: the body the server was sent is what the rule says.
    let days = json_of(
        &server,
        &[
            "approvals",
            "rules",
            "add",
            "--nhi",
            &nhi,
            "--scope",
            "crm:write:customers/*",
            "--scope",
            "mail:send",
            "--days",
            "2",
            "--reason",
            "the nightly sync writes back",
        ],
    )
    .await;
    assert_eq!(days["nhi_id"], nhi.as_str());
    assert_eq!(
        days["scope"],
        serde_json::json!(["crm:write:customers/*", "mail:send"])
    );
    assert_eq!(days["active"], true);
    assert_eq!(days["reason"], "the nightly sync writes back");
    assert_eq!(
        seconds_between(&days["created_at"], &days["expires_at"]),
        2 * 86_400
    );
    let days_id = days["id"].as_str().unwrap().to_owned();

    // Set, in a table: one row per field.
    let table = ok(
        &server,
        &[
            "approvals",
            "rules",
            "add",
            "--nhi-id",
            &other,
            "--scope",
            "crm:export:customers/7",
            "--ttl-seconds",
            "3600",
            "--reason",
            "one export",
        ],
    )
    .await;
    for expected in [
        "nhi_id",
        &other,
        "crm:export:customers/7",
        "one export",
        "active",
        "true",
    ] {
        assert!(table.contains(expected), "{expected:?} in\n{table}");
    }
    let all = json_of(&server, &["approvals", "rules", "list"]).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "{all}");
    let other_rule = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["nhi_id"] == other.as_str())
        .unwrap();
    assert_eq!(
        seconds_between(&other_rule["created_at"], &other_rule["expires_at"]),
        3600
    );
    let other_id = other_rule["id"].as_str().unwrap().to_owned();

    // List, in a table and filtered by NHI.
    let table = ok(&server, &["approvals", "rules", "list"]).await;
    assert!(
        table.contains("ID") && table.contains("NHI_ID") && table.contains("EXPIRES_AT"),
        "{table}"
    );
    assert!(
        table.contains(&days_id) && table.contains(&other_id),
        "{table}"
    );
    let mine = json_of(&server, &["approvals", "rules", "list", "--nhi", &nhi]).await;
    assert_eq!(ids(&mine), [days_id.as_str()]);

    // Revoke: the rule says so, drops out of the default listing, and stays in --all.
    let revoked = json_of(&server, &["approvals", "rules", "revoke", &days_id]).await;
    assert_eq!(revoked["id"], days_id.as_str());
    assert_eq!(revoked["active"], false);
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let table = ok(&server, &["approvals", "rules", "revoke", &other_id]).await;
    assert!(
        table.contains("revoked_at") && table.contains("false"),
        "{table}"
    );
    let active = json_of(&server, &["approvals", "rules", "list"]).await;
    assert!(ids(&active).is_empty(), "{active}");
    let table = ok(&server, &["approvals", "rules", "list"]).await;
    assert!(!table.contains(&days_id), "{table}");
    let every = json_of(&server, &["approvals", "rules", "list", "--all"]).await;
    let mut every = ids(&every);
    every.sort_unstable();
    let mut expected = vec![days_id.as_str(), other_id.as_str()];
    expected.sort_unstable();
    assert_eq!(every, expected);
    let table = ok(&server, &["approvals", "rules", "list", "--all"]).await;
    assert!(
        table.contains(&days_id) && table.contains(&other_id),
        "{table}"
    );

    // Bad input: the server's problem code and exit code 1; usage errors: clap's 2.
    fails(
        &server,
        &["approvals", "rules", "revoke", "no-such-rule"],
        1,
        "404 not_found: rule not found",
    )
    .await;
    fails(
        &server,
        &[
            "approvals",
            "rules",
            "add",
            "--nhi",
            &nhi,
            "--scope",
            "mail:send",
            "--days",
            "91",
            "--reason",
            "too long",
        ],
        1,
        "422 validation_failed",
    )
    .await;
    fails(
        &server,
        &[
            "approvals",
            "rules",
            "add",
            "--nhi",
            &nhi,
            "--scope",
            "not a grant",
            "--reason",
            "bad grant",
        ],
        1,
        "422",
    )
    .await;
    fails(
        &server,
        &[
            "approvals",
            "rules",
            "add",
            "--nhi",
            "no-such-nhi",
            "--scope",
            "mail:send",
            "--reason",
            "nobody",
        ],
        1,
        "404 not_found",
    )
    .await;
    fails(
        &server,
        &[
            "approvals",
            "rules",
            "add",
            "--nhi",
            &nhi,
            "--scope",
            "mail:send",
            "--days",
            "1",
            "--ttl-seconds",
            "60",
            "--reason",
            "both",
        ],
        2,
        "cannot be used with",
    )
    .await;
    fails(
        &server,
        &[
            "approvals",
            "rules",
            "add",
            "--nhi",
            &nhi,
            "--reason",
            "no scope",
        ],
        2,
        "--scope",
    )
    .await;
    // Nothing was written by the refused ones.
    let every = json_of(&server, &["approvals", "rules", "list", "--all"]).await;
    assert_eq!(every["items"].as_array().unwrap().len(), 2, "{every}");
    server.stop().await;
}

/// A request the receiver got: its `Custos-Signature` and its raw body.
#[derive(Clone, Debug)]
struct Received {
    signature: String,
    body: Vec<u8>,
}

/// A local webhook receiver that answers 200 and records each request.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Received>>>,
    serving: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let record = Arc::clone(&record);
                async move {
                    let signature = headers
                        .get("custos-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    record.lock().unwrap().push(Received {
                        signature,
                        body: body.to_vec(),
                    });
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let serving = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, seen, serving }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// Whether `header` (`t=…,v1=…`) is the HMAC-SHA256 of `"<t>.<body>"` under `secret`.
fn signed_with(secret: &str, header: &str, body: &[u8]) -> bool {
    let part = |name: &str| {
        header
            .split(',')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_owned()
    };
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{}.", part("t")).as_bytes());
    mac.update(body);
    hex::decode(part("v1")).is_ok_and(|v1| mac.verify_slice(&v1).is_ok())
}

async fn cli_adds_lists_tests_and_disables_notification_channels(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.notify_retry_base_ms = 20;
        config.notify_allowed_hosts = Some(vec!["127.0.0.1".into()]);
    })
    .await;
    server.team("payments").await;
    let receiver = Receiver::start().await;

    // A webhook, in JSON: the secret is in the answer, once.
    let hook = json_of(
        &server,
        &[
            "notifications",
            "channels",
            "add",
            "--name",
            "inbox-hook",
            "--webhook",
            &receiver.url,
        ],
    )
    .await;
    assert_eq!(hook["kind"], "webhook");
    assert_eq!(hook["format"], "json");
    assert_eq!(hook["enabled"], true);
    let secret = hook["secret"]
        .as_str()
        .expect("the secret, once")
        .to_owned();
    let hook_id = hook["id"].as_str().unwrap().to_owned();

    // A Slack webhook for one team, in a table: the secret is printed with a warning.
    let out = custos(
        &server,
        &[
            "notifications",
            "channels",
            "add",
            "--name",
            "payments-slack",
            "--webhook",
            &receiver.url,
            "--format",
            "slack",
            "--team",
            "payments",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let table = text(&out.stdout);
    for expected in ["payments-slack", "slack", "webhook", "secret", "team_id"] {
        assert!(table.contains(expected), "{expected:?} in\n{table}");
    }
    assert!(
        !table.contains("email."),
        "no email rows for a webhook:\n{table}"
    );
    assert!(text(&out.stderr).contains("shown once"), "{out:?}");

    // An email channel: recipients comma-separated, the SMTP settings mapped.
    let mail = json_of(
        &server,
        &[
            "notifications",
            "channels",
            "add",
            "--name",
            "inbox-mail",
            "--email",
            "sec@example.com,ops@example.com",
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            "2525",
            "--smtp-tls",
            "none",
            "--from",
            "Custos <custos@example.com>",
        ],
    )
    .await;
    assert_eq!(mail["kind"], "email");
    assert_eq!(
        mail["email"]["to"],
        serde_json::json!(["sec@example.com", "ops@example.com"])
    );
    assert_eq!(mail["email"]["smtp_port"], 2525);
    assert_eq!(mail["email"]["tls"], "none");
    assert!(mail.get("secret").is_none(), "{mail}");

    // List: every channel, never a secret.
    let list = json_of(&server, &["notifications", "channels", "list"]).await;
    assert_eq!(ids(&list).len(), 3, "{list}");
    assert!(!list.to_string().contains(&secret), "{list}");
    let table = ok(&server, &["notifications", "channels", "list"]).await;
    for expected in [
        "NAME",
        "KIND",
        "ENABLED",
        "inbox-hook",
        "payments-slack",
        "inbox-mail",
    ] {
        assert!(table.contains(expected), "{expected:?} in\n{table}");
    }
    assert!(!table.contains(&secret), "{table}");

    // Test: queued, then delivered, signed with the secret the CLI printed.
    let delivery = json_of(&server, &["notifications", "channels", "test", &hook_id]).await;
    assert_eq!(delivery["channel_id"], hook_id.as_str());
    assert_eq!(delivery["subject"], format!("test:{hook_id}"));
    let delivery_id = delivery["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let delivered = json_of(
            &server,
            &[
                "notifications",
                "deliveries",
                "list",
                "--state",
                "delivered",
            ],
        )
        .await;
        if ids(&delivered) == [delivery_id.as_str()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the test notification was never delivered: {delivered}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = receiver.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(
        signed_with(&secret, &seen[0].signature, &seen[0].body),
        "{seen:?}"
    );
    let table = ok(
        &server,
        &["notifications", "deliveries", "list", "--channel", &hook_id],
    )
    .await;
    for expected in ["SUBJECT", "STATE", &delivery_id, "delivered"] {
        assert!(table.contains(expected), "{expected:?} in\n{table}");
    }
    let pending = json_of(
        &server,
        &["notifications", "deliveries", "list", "--state", "pending"],
    )
    .await;
    assert!(ids(&pending).is_empty(), "{pending}");

    // Disable: the channel says so, the listing too, and a test of it is refused.
    let table = ok(&server, &["notifications", "channels", "disable", &hook_id]).await;
    assert!(
        table.contains("disabled_at") && table.contains("false"),
        "{table}"
    );
    let list = json_of(&server, &["notifications", "channels", "list"]).await;
    let disabled = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == hook_id.as_str())
        .unwrap();
    assert_eq!(disabled["enabled"], false);
    assert!(disabled["disabled_at"].is_string(), "{disabled}");

    // Bad input: the server's problem code and exit code 1; usage errors: clap's 2.
    fails(
        &server,
        &["notifications", "channels", "test", &hook_id],
        1,
        "409 channel_disabled",
    )
    .await;
    fails(
        &server,
        &["notifications", "channels", "disable", "no-such-channel"],
        1,
        "404 not_found",
    )
    .await;
    fails(
        &server,
        &[
            "notifications",
            "channels",
            "add",
            "--name",
            "inbox-hook",
            "--webhook",
            &receiver.url,
        ],
        1,
        "409 channel_name_taken",
    )
    .await;
    fails(
        &server,
        &[
            "notifications",
            "channels",
            "add",
            "--name",
            "ftp",
            "--webhook",
            "ftp://127.0.0.1/hook",
        ],
        1,
        "422 validation_failed",
    )
    .await;
    fails(
        &server,
        &["notifications", "deliveries", "list", "--state", "lost"],
        1,
        "400 invalid_parameter",
    )
    .await;
    fails(
        &server,
        &["notifications", "channels", "add", "--name", "nowhere"],
        2,
        "--webhook",
    )
    .await;
    fails(
        &server,
        &[
            "notifications",
            "channels",
            "add",
            "--name",
            "both",
            "--webhook",
            &receiver.url,
            "--email",
            "a@example.com",
            "--smtp-host",
            "127.0.0.1",
            "--from",
            "c@example.com",
        ],
        2,
        "cannot be used with",
    )
    .await;
    fails(
        &server,
        &[
            "notifications",
            "channels",
            "add",
            "--name",
            "half-mail",
            "--email",
            "a@example.com",
        ],
        2,
        "--smtp-host",
    )
    .await;
    let list = json_of(&server, &["notifications", "channels", "list"]).await;
    assert_eq!(
        ids(&list).len(),
        3,
        "nothing written by the refused ones: {list}"
    );
    server.stop().await;
}

/// `custos nhi decommission --wait` retires an NHI and prints the finished workflow; asking
/// again shows the same one; `custos decommissions list|show` find it; bad input fails
/// plainly.
async fn cli_decommissions_an_nhi_and_follows_the_workflow(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (agent, _) = client(&server, "retiring-agent", &["erp:read:*"]).await;

    let done = json_of(
        &server,
        &[
            "nhi",
            "decommission",
            &agent,
            "--reason",
            "replaced by v2",
            "--wait",
            "20",
        ],
    )
    .await;
    assert_eq!(done["step"], "done", "{done}");
    assert_eq!(done["reason"], "replaced by v2");
    assert!(done["receipt"].is_string(), "{done}");
    let id = done["id"].as_str().unwrap();
    let again = json_of(&server, &["nhi", "decommission", &agent]).await;
    assert_eq!(again["id"], done["id"]);

    let table = ok(&server, &["decommissions", "list", "--state", "done"]).await;
    assert!(table.contains(id) && table.contains("REVOKED"), "{table}");
    let shown = ok(&server, &["decommissions", "show", id]).await;
    assert!(
        shown.contains("nhi-") && shown.contains("signed"),
        "the archive file and the receipt are shown: {shown}"
    );
    let running = json_of(&server, &["decommissions", "list", "--state", "running"]).await;
    assert_eq!(running["items"], Value::Array(vec![]));

    fails(
        &server,
        &["nhi", "decommission", "no-such-nhi"],
        1,
        "not found",
    )
    .await;
    fails(
        &server,
        &["decommissions", "list", "--state", "stuck"],
        1,
        "running or done",
    )
    .await;
    fails(&server, &["decommissions", "show", "nope"], 1, "not found").await;
    server.stop().await;
}

async fn cli_runs_the_lifecycle_jobs_transfers_an_nhi_and_collects_a_rotated_key(backend: Backend) {
    let clock = crate::support::TestClock::new();
    let server = TestServer::start_clocked(backend, Some(clock.clone()), |config| {
        config.lifecycle_interval_seconds = 86_400;
        config.lifecycle.rotate_keys_after_days = 30;
    })
    .await;
    let (agent, key) = client(&server, "aging-agent", &["erp:read:*"]).await;
    server.team("platform").await;
    let moved = json_of(
        &server,
        &[
            "nhi",
            "transfer",
            &agent,
            "--team",
            "platform",
            "--contact",
            "pat",
            "--reason",
            "reorg",
        ],
    )
    .await;
    assert_eq!(moved["owner"]["contact"], "pat", "{moved}");
    fails(
        &server,
        &[
            "nhi",
            "transfer",
            &agent,
            "--team",
            "no-such-team",
            "--reason",
            "x",
        ],
        1,
        "owner.team",
    )
    .await;

    clock.advance_days(31);
    let report = json_of(&server, &["lifecycle", "run"]).await;
    assert_eq!(report["keys_rotated"], 1, "{report}");
    let table = ok(&server, &["lifecycle", "run"]).await;
    assert!(table.contains("keys_rotated"), "{table}");
    // The nhi collects its new key with the old one; a second try finds nothing.
    let collected = custos(
        &server,
        &["credential", "collect", "--token", &key, "--output", "json"],
    )
    .await;
    assert!(collected.status.success(), "{}", text(&collected.stderr));
    let collected: Value = serde_json::from_slice(&collected.stdout).unwrap();
    assert!(
        collected["key"]["secret"]
            .as_str()
            .unwrap()
            .starts_with("custos_sk_"),
        "{collected}"
    );
    let again = custos(&server, &["credential", "collect", "--token", &key]).await;
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("nothing_to_collect"),
        "{}",
        text(&again.stderr)
    );
    server.stop().await;
}
