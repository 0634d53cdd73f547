//! Notifications of the review inbox against local receivers: webhooks signed, retried with
//! backoff until delivered or given up (visibly), routed by team, in our JSON or Slack's shape;
//! channels admin-only, their secrets shown once and never again. Email over a real SMTP
//! server is tested in interop/test_notifications_smtp.py.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{ADMIN_TOKEN, Backend, TestServer, client};

both_backends!(
    webhooks_are_signed_retried_and_delivered_to_their_team,
    a_receiver_that_keeps_failing_is_given_up_visibly,
    slack_channels_get_text_and_blocks,
    channels_are_admin_only_validated_and_keep_their_secrets,
    decisions_and_votes_are_announced_to_the_owner_team,
    escalations_and_expiries_are_announced,
    agents_hear_of_decisions_at_a_signed_callback,
    callback_urls_follow_the_channels_host_rules,
);

/// A server whose failed notifications are retried after 20 ms, 40 ms, …
async fn start(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |config| {
        config.notify_retry_base_ms = 20;
        config.notify_allowed_hosts = Some(vec!["127.0.0.1".into()]);
    })
    .await
}

#[derive(Clone, Debug)]
struct Received {
    delivery: String,
    signature: String,
    callback_signature: String,
    content_type: String,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A local webhook receiver that records every request and answers 500 to the first
/// `failures` of them (all of them for `usize::MAX`), 200 after.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Received>>>,
    serving: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(failures: usize) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let app = axum::Router::new().route(
            "/hooks/T0/not-for-your-eyes",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let record = Arc::clone(&record);
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    let mut seen = record.lock().unwrap();
                    seen.push(Received {
                        delivery: header("custos-delivery"),
                        signature: header("custos-signature"),
                        callback_signature: header("custos-callback-signature"),
                        content_type: header("content-type"),
                        body: body.to_vec(),
                    });
                    if seen.len() <= failures {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/hooks/T0/not-for-your-eyes",
            listener.local_addr().unwrap()
        );
        let serving = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, seen, serving }
    }

    fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// Checks a `Custos-Signature` the way a receiver would: HMAC-SHA256 with the secret over
/// `"<t>.<raw body>"`, and `t` within 5 minutes of now. Returns `t`.
fn verify_signature(secret: &str, header: &str, body: &[u8]) -> i64 {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.parse::<i64>().unwrap()),
            Some(("v1", value)) => v1 = Some(hex::decode(value).unwrap()),
            _ => panic!("unexpected signature part {part:?} in {header:?}"),
        }
    }
    let (t, v1) = (t.expect("t="), v1.expect("v1="));
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1).expect("the signature verifies");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - t).abs() < 300, "t={t} is within 5 minutes of {now}");
    t
}

async fn create_channel(server: &TestServer, body: Value) -> Value {
    server
        .admin(
            Method::POST,
            "/v1/notifications/channels",
            Some(body),
            StatusCode::CREATED,
        )
        .await
}

/// An approval request: a task asked beyond its NHI's ceiling. Returns the approval's id.
async fn request_approval(server: &TestServer, key: &str, purpose: &str) -> String {
    let (status, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(key),
            Some(json!({"purpose": purpose, "scope": ["crm:delete:customers/42"]})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    task["approval_id"].as_str().unwrap().to_owned()
}

/// The channel's deliveries, polled until `done` holds of them (at most 20 s).
async fn deliveries_until(
    server: &TestServer,
    channel: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = server
            .admin(
                Method::GET,
                &format!("/v1/notifications/deliveries?channel={channel}"),
                None,
                StatusCode::OK,
            )
            .await;
        let items = list["items"].as_array().unwrap().clone();
        if done(&items) {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries of {channel} never got there: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn webhooks_are_signed_retried_and_delivered_to_their_team(backend: Backend) {
    let server = start(backend).await;
    let (_, key) = client(&server, "crm-agent", &["crm:read"]).await;
    server.team("elsewhere").await;
    let flaky = Receiver::start(2).await;
    let other = Receiver::start(0).await;
    let created = create_channel(
        &server,
        json!({"name": "owners-hook", "kind": "webhook", "team": "owners-oauth", "url": flaky.url}),
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("custos_whsec_"), "{created}");
    assert_eq!(created["format"], "json");
    assert_eq!(created["enabled"], true);
    let shown = created["url"].as_str().unwrap();
    assert!(
        shown.ends_with("/…") && !shown.contains("not-for-your-eyes"),
        "only the origin is shown: {shown}"
    );
    let channel = created["id"].as_str().unwrap().to_owned();
    let elsewhere = create_channel(
        &server,
        json!({"name": "elsewhere-hook", "kind": "webhook", "team": "elsewhere", "url": other.url}),
    )
    .await;

    let approval = request_approval(&server, &key, "clean up a duplicate customer").await;
    let items = deliveries_until(&server, &channel, |items| {
        items.iter().any(|d| d["state"] == "delivered")
    })
    .await;
    assert_eq!(items.len(), 1, "{items:?}");
    let delivery = &items[0];
    assert_eq!(delivery["subject"], format!("approval:{approval}"));
    assert_eq!(delivery["attempts"], 3, "two failures, then delivered");
    assert_eq!(delivery["last_error"], Value::Null);
    assert_eq!(delivery["next_attempt_at"], Value::Null);
    assert!(delivery["delivered_at"].is_string());

    // Every attempt carried the same delivery id, JSON, and a signature that verifies.
    let seen = flaky.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let mut times = Vec::new();
    for received in &seen {
        assert_eq!(received.delivery, delivery["id"].as_str().unwrap());
        assert_eq!(received.content_type, "application/json");
        assert_eq!(received.body, seen[0].body, "the same body every time");
        times.push(verify_signature(
            &secret,
            &received.signature,
            &received.body,
        ));
    }
    // A signature made with another secret, or over another body, does not verify.
    let forged = std::panic::catch_unwind(|| {
        verify_signature("custos_whsec_other", &seen[0].signature, &seen[0].body)
    });
    assert!(forged.is_err());
    let tampered = std::panic::catch_unwind(|| {
        verify_signature(&secret, &seen[0].signature, b"{\"type\":\"x\"}")
    });
    assert!(tampered.is_err());

    let body = seen[2].json();
    assert_eq!(body["type"], "approval.requested");
    assert_eq!(body["id"], delivery["id"]);
    assert_eq!(
        body["link"],
        format!("{}/ui/approvals/{approval}", server.base)
    );
    assert_eq!(body["approval"]["id"], approval.as_str());
    assert_eq!(body["approval"]["purpose"], "clean up a duplicate customer");
    assert_eq!(
        body["approval"]["excess"],
        json!(["crm:delete:customers/42"])
    );
    assert_eq!(
        body["approval"]["requested_scope"],
        json!(["crm:delete:customers/42"])
    );
    assert!(
        body["approval"]["requested_by"]
            .as_str()
            .unwrap()
            .starts_with("nhi:")
    );
    assert!(body["approval"]["created_at"].is_string());
    assert_eq!(body["nhi"]["name"], "crm-agent");

    // Another team's channel heard nothing.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(other.seen().is_empty());
    let none = server
        .admin(
            Method::GET,
            &format!(
                "/v1/notifications/deliveries?channel={}",
                elsewhere["id"].as_str().unwrap()
            ),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(none["items"], json!([]));
    server.stop().await;
}

async fn a_receiver_that_keeps_failing_is_given_up_visibly(backend: Backend) {
    let server = start(backend).await;
    let (_, key) = client(&server, "crm-agent", &["crm:read"]).await;
    let down = Receiver::start(usize::MAX).await;
    let created = create_channel(
        &server,
        json!({"name": "down-hook", "kind": "webhook", "url": down.url}),
    )
    .await;
    let channel = created["id"].as_str().unwrap().to_owned();
    request_approval(&server, &key, "a request nobody hears of").await;
    let items = deliveries_until(&server, &channel, |items| {
        items.iter().any(|d| d["state"] == "failed")
    })
    .await;
    let failed = &items[0];
    assert_eq!(failed["attempts"], 8);
    assert_eq!(
        failed["last_error"],
        "the receiver answered HTTP 500 Internal Server Error"
    );
    assert!(failed["last_attempt_at"].is_string());
    assert_eq!(down.seen().len(), 8, "no attempt after giving up");

    // Visible among the failures, and in the trail.
    let listed = server
        .admin(
            Method::GET,
            "/v1/notifications/deliveries?state=failed",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["id"], failed["id"]);
    let events = server
        .admin(
            Method::GET,
            "/v1/audit/events?kind=notification.failed",
            None,
            StatusCode::OK,
        )
        .await;
    let events = events["items"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0]["subject"],
        format!("notification_delivery:{}", failed["id"].as_str().unwrap())
    );
    assert_eq!(events[0]["details"]["channel"], channel.as_str());
    assert_eq!(events[0]["details"]["attempts"], "8");
    assert_eq!(events[0]["actor"], "system");
    server.stop().await;
}

async fn slack_channels_get_text_and_blocks(backend: Backend) {
    let server = start(backend).await;
    let (_, key) = client(&server, "crm-agent", &["crm:read"]).await;
    let slack = Receiver::start(0).await;
    let created = create_channel(
        &server,
        json!({"name": "slack", "kind": "webhook", "format": "slack", "url": slack.url}),
    )
    .await;
    assert_eq!(created["format"], "slack");
    let channel = created["id"].as_str().unwrap().to_owned();

    // The test message, queued and sent like any other.
    let (status, test) = server
        .call(
            Method::POST,
            &format!("/v1/notifications/channels/{channel}/test"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{test}");
    assert_eq!(test["state"], "pending");
    assert_eq!(test["subject"], format!("test:{channel}"));
    let approval = request_approval(&server, &key, "<!channel> *urgent* & <https://x|y>").await;
    deliveries_until(&server, &channel, |items| {
        items.len() == 2 && items.iter().all(|d| d["state"] == "delivered")
    })
    .await;
    let seen = slack.seen();
    assert_eq!(seen.len(), 2);
    for received in &seen {
        let body = received.json();
        assert!(body["text"].is_string(), "{body}");
        assert!(!body["blocks"].as_array().unwrap().is_empty(), "{body}");
    }
    let request = seen
        .iter()
        .map(Received::json)
        .find(|b| b["text"].as_str().unwrap().contains(&approval))
        .expect("the approval's message");
    let link = format!("{}/ui/approvals/{approval}", server.base);
    assert!(
        request["text"].as_str().unwrap().ends_with(&link),
        "{request}"
    );
    let text = request.to_string();
    assert!(text.contains(&link));
    // The requester's text cannot mention everyone or make a link.
    assert!(!text.contains("<!channel>"), "{text}");
    assert!(text.contains("&lt;!channel&gt; *urgent* &amp; &lt;https://x|y&gt;"));
    let button = request["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "actions")
        .unwrap();
    assert_eq!(button["elements"][0]["url"], link.as_str());
    server.stop().await;
}

async fn channels_are_admin_only_validated_and_keep_their_secrets(backend: Backend) {
    let server = start(backend).await;
    let (_, key) = client(&server, "crm-agent", &["crm:read"]).await;
    let (_, reviewer) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;
    let (_, auditor) = server.operator("audrey", &["auditor"], &[]).await;
    let receiver = Receiver::start(0).await;
    let hook = create_channel(
        &server,
        json!({"name": "hook", "kind": "webhook", "url": receiver.url}),
    )
    .await;
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let password = "smtp-password-1f2e3d4c5b6a";
    let mail = create_channel(
        &server,
        json!({"name": "mail", "kind": "email", "team": "owners-oauth", "email": {
            "smtp_host": "127.0.0.1", "smtp_port": 2525, "tls": "starttls",
            "username": "custos", "password": password,
            "from": "Custos <custos@example.com>", "to": ["reviewers@example.com"]}}),
    )
    .await;
    assert!(mail.get("secret").is_none(), "{mail}");
    assert_eq!(mail["password_set"], true);
    assert_eq!(mail["format"], "text");
    assert_eq!(mail["email"]["to"], json!(["reviewers@example.com"]));
    assert!(mail["email"].get("password").is_none());

    // Reads: admins and auditors; never a secret, a password or a whole webhook URL.
    for token in [ADMIN_TOKEN, auditor.as_str()] {
        let (status, list) = server
            .call(Method::GET, "/v1/notifications/channels", Some(token), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["items"].as_array().unwrap().len(), 2);
        let text = list.to_string();
        for hidden in [secret.as_str(), password, "not-for-your-eyes"] {
            assert!(!text.contains(hidden), "{hidden} in {text}");
        }
        let (status, _) = server
            .call(
                Method::GET,
                "/v1/notifications/deliveries",
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    // Writes: admins only; reviewers read nothing; an NHI nothing at all.
    let body = json!({"name": "sneaky", "kind": "webhook", "url": receiver.url});
    for token in [reviewer.as_str(), auditor.as_str(), key.as_str()] {
        for (method, path, body) in [
            (
                Method::POST,
                "/v1/notifications/channels".to_owned(),
                Some(body.clone()),
            ),
            (
                Method::DELETE,
                format!("/v1/notifications/channels/{hook_id}"),
                None,
            ),
            (
                Method::POST,
                format!("/v1/notifications/channels/{hook_id}/test"),
                None,
            ),
        ] {
            let (status, problem) = server.call(method, &path, Some(token), body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {problem}");
        }
    }
    for token in [reviewer.as_str(), key.as_str()] {
        for path in ["/v1/notifications/channels", "/v1/notifications/deliveries"] {
            let (status, _) = server.call(Method::GET, path, Some(token), None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        }
    }
    let (status, _) = server
        .call(Method::GET, "/v1/notifications/channels", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Bad input: refused with a stable code, nothing written.
    let refused = [
        (
            json!({"name": "x", "kind": "webhook", "url": "ftp://127.0.0.1/hook"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("url"),
        ),
        (
            json!({"name": "x", "kind": "webhook", "url": "not a url"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("url"),
        ),
        (
            json!({"name": "x", "kind": "webhook", "url": "https://example.com/hook"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("url"),
        ),
        (
            json!({"name": "x", "kind": "webhook"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("url"),
        ),
        (
            json!({"name": "x", "kind": "sms", "url": receiver.url}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            Some("kind"),
        ),
        (
            json!({"name": "x", "kind": "webhook", "url": receiver.url, "format": "xml"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            Some("format"),
        ),
        (
            json!({"kind": "webhook", "url": receiver.url}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            None,
        ),
        (
            json!({"name": "x", "kind": "webhook", "url": receiver.url, "secret": "mine"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            None,
        ),
        (
            json!({"name": "x", "kind": "webhook", "url": receiver.url, "team": "nobody"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("team"),
        ),
        (
            json!({"name": "x", "kind": "email"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("email"),
        ),
        (
            json!({"name": "x", "kind": "email", "email": {"smtp_host": "127.0.0.1", "tls": "none",
                "from": "not an address", "to": ["a@example.com"]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("email.from"),
        ),
        (
            json!({"name": "x", "kind": "email", "email": {"smtp_host": "127.0.0.1", "tls": "none",
                "from": "c@example.com", "to": []}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("email.to"),
        ),
        (
            json!({"name": "x", "kind": "email", "email": {"smtp_host": "127.0.0.1", "tls": "none",
                "username": "u", "password": "p", "from": "c@example.com", "to": ["a@example.com"]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("email.password"),
        ),
        (
            json!({"name": "x", "kind": "email", "email": {"smtp_host": "127.0.0.1", "tls": "ssl",
                "from": "c@example.com", "to": ["a@example.com"]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            Some("email.tls"),
        ),
        (
            json!({"name": "hook", "kind": "webhook", "url": receiver.url}),
            StatusCode::CONFLICT,
            "channel_name_taken",
            None,
        ),
    ];
    for (body, status, code, field) in refused {
        let (got, problem) = server
            .call(
                Method::POST,
                "/v1/notifications/channels",
                Some(ADMIN_TOKEN),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (got, problem["code"].as_str()),
            (status, Some(code)),
            "{body}: {problem}"
        );
        if let Some(field) = field {
            assert!(
                problem["errors"]
                    .as_array()
                    .is_some_and(|errors| errors.iter().any(|e| e["field"] == field)),
                "{body}: {problem}"
            );
        }
    }
    let (status, _, problem) = server
        .call_full(
            Method::POST,
            "/v1/notifications/channels",
            Some(ADMIN_TOKEN),
            None,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let (_, list) = server
        .call(
            Method::GET,
            "/v1/notifications/channels",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        2,
        "nothing written"
    );
    for (path, code) in [
        (
            "/v1/notifications/deliveries?state=lost",
            "invalid_parameter",
        ),
        (
            "/v1/notifications/deliveries?channels=x",
            "unknown_parameter",
        ),
        ("/v1/notifications/deliveries?limit=0", "invalid_parameter"),
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

    // Disabling: once in the trail, the same answer twice, and no more tests.
    let path = format!("/v1/notifications/channels/{hook_id}");
    for _ in 0..2 {
        let disabled = server
            .admin(Method::DELETE, &path, None, StatusCode::OK)
            .await;
        assert_eq!(disabled["enabled"], false);
        assert!(disabled["disabled_at"].is_string());
    }
    let (status, problem) = server
        .call(
            Method::POST,
            &format!("{path}/test"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("channel_disabled"))
    );
    for missing in [
        "/v1/notifications/channels/nope",
        "/v1/notifications/channels/nope/test",
    ] {
        let method = if missing.ends_with("test") {
            Method::POST
        } else {
            Method::DELETE
        };
        let (status, _) = server.call(method, missing, Some(ADMIN_TOKEN), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    }
    let events = server
        .admin(
            Method::GET,
            "/v1/audit/events?kind=notification.channel_disabled",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(events["items"].as_array().unwrap().len(), 1);
    let created = server
        .admin(
            Method::GET,
            "/v1/audit/events?kind=notification.channel_created",
            None,
            StatusCode::OK,
        )
        .await;
    let text = created.to_string();
    assert_eq!(created["items"].as_array().unwrap().len(), 2);
    for hidden in [secret.as_str(), password, "not-for-your-eyes"] {
        assert!(!text.contains(hidden), "{hidden} in the trail: {text}");
    }

    // Neither secret reaches the store in the clear.
    if matches!(backend, Backend::Sqlite) {
        let mut stored = Vec::new();
        for entry in std::fs::read_dir(server.data_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                stored.extend(std::fs::read(path).unwrap());
            }
        }
        for hidden in [secret.as_bytes(), password.as_bytes(), b"not-for-your-eyes"] {
            assert!(
                !stored.windows(hidden.len()).any(|w| w == hidden),
                "{} is in the data directory",
                String::from_utf8_lossy(hidden)
            );
        }
    }
    server.stop().await;
}

/// The JSON bodies a receiver got, in order.
fn bodies(receiver: &Receiver) -> Vec<Value> {
    receiver.seen().iter().map(Received::json).collect()
}

/// Waits until the receiver got `count` requests (at most 20 s) and a little longer, to see
/// that no more come.
async fn received(receiver: &Receiver, count: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.seen().len() < count {
        assert!(
            Instant::now() < deadline,
            "got {} of {count}: {:?}",
            receiver.seen().len(),
            bodies(receiver)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    receiver.seen()
}

async fn decisions_and_votes_are_announced_to_the_owner_team(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.notify_retry_base_ms = 20;
        config.notify_allowed_hosts = Some(vec!["127.0.0.1".into()]);
        config.high_risk_quorum = 2;
    })
    .await;
    let (_, key) = client(&server, "crm-agent", &["crm:read"]).await;
    server.team("elsewhere").await;
    let (rita_id, rita) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;
    let (sam_id, sam) = server
        .operator("sam", &["reviewer"], &["owners-oauth"])
        .await;
    let owners = Receiver::start(0).await;
    let slack = Receiver::start(0).await;
    let other = Receiver::start(0).await;
    for (name, team, format, url) in [
        ("owners-hook", "owners-oauth", "json", &owners.url),
        ("owners-slack", "owners-oauth", "slack", &slack.url),
        ("elsewhere-hook", "elsewhere", "json", &other.url),
    ] {
        create_channel(
            &server,
            json!({"name": name, "kind": "webhook", "team": team, "format": format, "url": url}),
        )
        .await;
    }

    // Denied by one reviewer.
    let denied = request_approval(&server, &key, "remove a duplicate").await;
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/v1/approvals/{denied}/deny"),
            Some(&rita),
            Some(json!({"reason": "merge it instead"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // High risk: counted, then approved by the second reviewer.
    let (status, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&key),
            Some(json!({"purpose": "a bulk fix", "scope": ["crm:*"]})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    let quorum = task["approval_id"].as_str().unwrap().to_owned();
    for (token, reason) in [(&rita, "looks right"), (&sam, "agreed")] {
        let (status, answer) = server
            .call(
                Method::POST,
                &format!("/v1/approvals/{quorum}/approve"),
                Some(token),
                Some(json!({"reason": reason})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }

    // Deliveries due together are sent side by side: found by what they are, not by order.
    let seen = received(&owners, 5).await;
    assert_eq!(seen.len(), 5, "{:?}", bodies(&owners));
    let messages: Vec<Value> = seen.iter().map(Received::json).collect();
    let find = |kind: &str, approval: &str| -> Value {
        let found: Vec<&Value> = messages
            .iter()
            .filter(|m| m["type"] == kind && m["approval"]["id"] == approval)
            .collect();
        assert_eq!(found.len(), 1, "one {kind} of {approval}: {messages:?}");
        found[0].clone()
    };
    find("approval.requested", &denied);
    find("approval.requested", &quorum);
    let deny = &find("approval.decided", &denied);
    assert_eq!(deny["who"], format!("operator:{rita_id}").as_str());
    assert_eq!(deny["decision"], "denied");
    assert_eq!(deny["reason"], "merge it instead");
    assert_eq!(deny["approval"]["id"], denied.as_str());
    assert_eq!(deny["approval"]["state"], "denied");
    assert_eq!(
        deny["link"],
        format!("{}/ui/approvals/{denied}", server.base)
    );
    assert_eq!(deny["nhi"]["name"], "crm-agent");
    let vote = &find("approval.voted", &quorum);
    assert_eq!(
        (vote["decision"].as_str(), vote["remaining"].as_i64()),
        (Some("voted"), Some(1))
    );
    assert_eq!(vote["who"], format!("operator:{rita_id}").as_str());
    assert_eq!(vote["reason"], "looks right");
    assert_eq!(vote["approval"]["state"], "pending");
    let approved = &find("approval.decided", &quorum);
    assert_eq!(approved["decision"], "approved");
    assert_eq!(approved["who"], format!("operator:{sam_id}").as_str());
    assert_eq!(approved["approval"]["granted_scope"], json!(["crm:*"]));
    // Every message is signed like any other webhook.
    assert!(seen.iter().all(|r| r.signature.starts_with("t=")));

    // Slack hears the same in its own words; another team's channel hears nothing.
    let slack_texts: Vec<String> = received(&slack, 5)
        .await
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        slack_texts
            .iter()
            .any(|t| t.contains(&format!("denied by operator:{rita_id}"))
                && t.ends_with(&format!("/ui/approvals/{denied}"))),
        "{slack_texts:?}"
    );
    assert!(
        slack_texts.iter().any(|t| t.contains(&format!(
            "approved by operator:{rita_id}; 1 more approval is needed"
        ))),
        "{slack_texts:?}"
    );
    assert!(other.seen().is_empty());
    server.stop().await;
}

async fn escalations_and_expiries_are_announced(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.notify_retry_base_ms = 20;
        config.notify_allowed_hosts = Some(vec!["127.0.0.1".into()]);
        config.escalate_after_seconds = 1;
        config.approval_ttl_seconds = 4;
    })
    .await;
    let (_, key) = client(&server, "crm-agent", &["crm:read"]).await;
    let backup = server.team("backup").await;
    server
        .admin(
            Method::PATCH,
            "/v1/teams/owners-oauth",
            Some(json!({"fallback_team": "backup"})),
            StatusCode::OK,
        )
        .await;
    let owners = Receiver::start(0).await;
    let fallback = Receiver::start(0).await;
    let agent = Receiver::start(0).await;
    for (name, team, url) in [
        ("owners-hook", "owners-oauth", &owners.url),
        ("backup-hook", "backup", &fallback.url),
    ] {
        create_channel(
            &server,
            json!({"name": name, "kind": "webhook", "team": team, "url": url}),
        )
        .await;
    }
    let (status, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&key),
            Some(
                json!({"purpose": "an export nobody answers", "scope": ["crm:export:all"],
                        "callback_url": agent.url}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    let approval = task["approval_id"].as_str().unwrap().to_owned();

    // Owners: asked, escalated, expired. The fallback team: escalated only.
    let to_owners: Vec<Value> = received(&owners, 3)
        .await
        .iter()
        .map(Received::json)
        .collect();
    let mut types: Vec<&str> = to_owners
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "approval.escalated",
            "approval.expired",
            "approval.requested"
        ]
    );
    let to_fallback: Vec<Value> = received(&fallback, 1)
        .await
        .iter()
        .map(Received::json)
        .collect();
    assert_eq!(to_fallback.len(), 1, "{to_fallback:?}");
    let escalated = &to_fallback[0];
    assert_eq!(escalated["type"], "approval.escalated");
    assert_eq!(escalated["decision"], "escalated");
    assert_eq!(escalated["who"], "system");
    assert_eq!(escalated["escalated_to"]["name"], "backup");
    assert_eq!(escalated["escalated_to"]["id"], backup["id"]);
    assert_eq!(escalated["approval"]["escalated_to"], backup["id"]);
    assert!(
        escalated["reason"]
            .as_str()
            .unwrap()
            .starts_with("unanswered by the owner team"),
        "{escalated}"
    );
    assert_eq!(
        escalated["link"],
        format!("{}/ui/approvals/{approval}", server.base)
    );
    let expired = to_owners
        .iter()
        .find(|m| m["type"] == "approval.expired")
        .unwrap();
    assert_eq!(expired["decision"], "expired");
    assert_eq!(expired["who"], "system");
    assert_eq!(expired["reason"], "expired unanswered");
    assert_eq!(expired["approval"]["state"], "expired");

    // The agent heard that its task was denied by the deadline.
    let callback = received(&agent, 1).await;
    assert_eq!(callback.len(), 1);
    let body = callback[0].json();
    assert_eq!(
        (
            body["type"].as_str(),
            body["state"].as_str(),
            body["decision"].as_str()
        ),
        (Some("task.decided"), Some("denied"), Some("expired"))
    );
    assert_eq!(body["task_id"], task["id"]);
    assert!(!callback[0].callback_signature.is_empty());
    server.stop().await;
}

/// Checks a `Custos-Callback-Signature` the way an agent would, with an ES256 implementation of
/// its own (RustCrypto `p256`): the detached JWS's header names a key of the JWKS, and the
/// signature holds over `<header>.<base64url(raw body)>`.
fn verify_callback(jwks: &Value, jws: &str, body: &[u8]) -> Result<Value, String> {
    use base64::Engine as _;
    use p256::ecdsa::signature::Verifier;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (protected, signature) = jws.split_once("..").ok_or("not a detached jws")?;
    let header: Value = serde_json::from_slice(&b64.decode(protected).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if header["typ"] != "custos-callback+jws" || header["alg"] != "ES256" {
        return Err(format!("unexpected header {header}"));
    }
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .ok_or("the kid is not in the jwks")?;
    let coordinate = |name: &str| b64.decode(jwk[name].as_str().unwrap()).unwrap();
    let mut point = vec![4u8];
    point.extend(coordinate("x"));
    point.extend(coordinate("y"));
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|e| e.to_string())?;
    let signature =
        p256::ecdsa::Signature::from_slice(&b64.decode(signature).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let signing_input = format!("{protected}.{}", b64.encode(body));
    key.verify(signing_input.as_bytes(), &signature)
        .map_err(|_| "the signature does not verify".to_owned())?;
    Ok(header)
}

/// The callback deliveries of a task, polled until `done` holds of them (at most 20 s).
async fn callbacks_until(
    server: &TestServer,
    task_id: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = server
            .admin(
                Method::GET,
                "/v1/notifications/deliveries?limit=500",
                None,
                StatusCode::OK,
            )
            .await;
        let items: Vec<Value> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["subject"] == format!("task:{task_id}").as_str())
            .cloned()
            .collect();
        if done(&items) {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "callbacks of {task_id}: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn agents_hear_of_decisions_at_a_signed_callback(backend: Backend) {
    let server = start(backend).await;
    let (nhi_id, key) = client(&server, "crm-agent", &["crm:read"]).await;
    // The agent's receiver fails once, then takes it.
    let agent = Receiver::start(1).await;
    let ask = async |scope: &str| {
        let (status, task) = server
            .call(
                Method::POST,
                "/v1/tasks",
                Some(&key),
                Some(json!({"purpose": "clean up", "scope": [scope], "callback_url": agent.url})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{task}");
        task
    };
    let task = ask("crm:delete:customers/42").await;
    let task_id = task["id"].as_str().unwrap().to_owned();
    assert_eq!(task["callback_url"], agent.url.as_str());
    let (_, read) = server
        .call(
            Method::GET,
            &format!("/v1/tasks/{task_id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(read["callback_url"], agent.url.as_str());
    assert!(agent.seen().is_empty(), "nothing before a decision");

    let approval = task["approval_id"].as_str().unwrap();
    let decided = server
        .admin(
            Method::POST,
            &format!("/v1/approvals/{approval}/approve"),
            Some(json!({"reason": "fine"})),
            StatusCode::OK,
        )
        .await;
    let items = callbacks_until(&server, &task_id, |items| {
        items.iter().any(|d| d["state"] == "delivered")
    })
    .await;
    assert_eq!(items.len(), 1, "{items:?}");
    let delivery = &items[0];
    assert_eq!(delivery["attempts"], 2, "a 500, then delivered");
    assert_eq!(delivery["channel_id"], Value::Null);
    let shown = delivery["callback_url"].as_str().unwrap();
    assert!(
        shown.ends_with("/…") && !shown.contains("not-for-your-eyes"),
        "only the origin is shown: {shown}"
    );

    let seen = agent.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].body, seen[1].body, "the same body every time");
    assert_eq!(seen[0].delivery, delivery["id"].as_str().unwrap());
    assert_eq!(seen[1].delivery, seen[0].delivery);
    assert_eq!(seen[1].content_type, "application/json");
    assert!(seen[1].signature.is_empty(), "no shared-secret signature");
    let body = seen[1].json();
    assert_eq!(body["type"], "task.decided");
    assert_eq!(body["task_id"], task_id.as_str());
    assert_eq!(body["state"], "active");
    assert_eq!(body["decision"], "approved");
    assert_eq!(body["approval_id"], approval);
    assert_eq!(body["decided_at"], decided["decided_at"]);
    let text = String::from_utf8(seen[1].body.clone()).unwrap();
    assert!(
        !text.contains("access_token") && !text.contains("credential"),
        "never the credential: {text}"
    );

    // The signature verifies against the published keys, with our own ES256 and with the
    // core's verifier; a changed body, or a signature moved to another body, does not.
    let (_, jwks) = server
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let header = verify_callback(&jwks, &seen[1].callback_signature, &seen[1].body).unwrap();
    let active = server.state().keyring.active();
    assert_eq!(header["kid"], active.kid());
    let keys = custos_core::jose::Jwks::from_json(&jwks).unwrap();
    custos_core::jose::verify_detached(
        &seen[1].callback_signature,
        &seen[1].body,
        &keys,
        "custos-callback+jws",
    )
    .unwrap();
    let tampered = text.replace("\"active\"", "\"denied\"");
    assert_ne!(tampered, text);
    assert!(verify_callback(&jwks, &seen[1].callback_signature, tampered.as_bytes()).is_err());
    assert!(
        custos_core::jose::verify_detached(
            &seen[1].callback_signature,
            tampered.as_bytes(),
            &keys,
            "custos-callback+jws",
        )
        .is_err()
    );

    // The agent collects its credential itself.
    let (_, collected) = server
        .call(
            Method::GET,
            &format!("/v1/tasks/{task_id}"),
            Some(&key),
            None,
        )
        .await;
    assert!(collected["credential"]["access_token"].is_string());

    // A denial is told the same way.
    let denied_task = ask("crm:delete:customers/43").await;
    server
        .admin(
            Method::POST,
            &format!(
                "/v1/approvals/{}/deny",
                denied_task["approval_id"].as_str().unwrap()
            ),
            Some(json!({"reason": "no"})),
            StatusCode::OK,
        )
        .await;
    let denied_id = denied_task["id"].as_str().unwrap().to_owned();
    callbacks_until(&server, &denied_id, |items| {
        items.iter().any(|d| d["state"] == "delivered")
    })
    .await;
    let last = agent.seen().last().unwrap().json();
    assert_eq!(
        (
            last["task_id"].as_str(),
            last["state"].as_str(),
            last["decision"].as_str()
        ),
        (Some(denied_id.as_str()), Some("denied"), Some("denied"))
    );

    // And an approval by a standing rule.
    server
        .admin(
            Method::POST,
            "/v1/approvals/rules",
            Some(
                json!({"nhi_id": nhi_id, "scope": ["crm:delete:customers/*"],
                        "reason": "routine clean-ups"}),
            ),
            StatusCode::CREATED,
        )
        .await;
    let ruled = ask("crm:delete:customers/44").await;
    assert_eq!(ruled["state"], "active", "{ruled}");
    let ruled_id = ruled["id"].as_str().unwrap().to_owned();
    callbacks_until(&server, &ruled_id, |items| {
        items.iter().any(|d| d["state"] == "delivered")
    })
    .await;
    let last = agent.seen().last().unwrap().json();
    assert_eq!(
        (
            last["task_id"].as_str(),
            last["state"].as_str(),
            last["decision"].as_str()
        ),
        (Some(ruled_id.as_str()), Some("active"), Some("approved"))
    );
    server.stop().await;
}

async fn callback_urls_follow_the_channels_host_rules(backend: Backend) {
    let ask = async |server: &TestServer, key: &str, url: &str| {
        server
            .call(
                Method::POST,
                "/v1/tasks",
                Some(key),
                Some(json!({"purpose": "p", "scope": ["crm:delete:x"], "callback_url": url})),
            )
            .await
    };
    // Only 127.0.0.1 allowed: plain http to it is fine, anything elsewhere is refused.
    let listed = start(backend).await;
    let (_, key) = client(&listed, "crm-agent", &["crm:read"]).await;
    for url in [
        "ftp://127.0.0.1/hook",
        "not a url",
        "http://example.com/hook",
        "https://example.com/hook",
        "https://",
    ] {
        let (status, problem) = ask(&listed, &key, url).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed")),
            "{url}: {problem}"
        );
        assert_eq!(problem["errors"][0]["field"], "callback_url", "{problem}");
    }
    let (status, _) = ask(
        &listed,
        &key,
        &format!("{}x", "https://127.0.0.1/".repeat(150)),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "too long");
    let (status, task) = ask(&listed, &key, "http://127.0.0.1:9/callback").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    let requested = listed
        .admin(
            Method::GET,
            "/v1/audit/events?kind=task.requested",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        requested["items"].as_array().unwrap().len(),
        1,
        "refused tasks were not written"
    );
    listed.stop().await;

    // No allow-list: any https host, but plain http to none.
    let open = TestServer::start(backend).await;
    let (_, key) = client(&open, "crm-agent", &["crm:read"]).await;
    let (status, problem) = ask(&open, &key, "http://example.com/hook").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("must be https"),
        "{problem}"
    );
    let (status, task) = ask(&open, &key, "https://agent.example.com/hook").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    assert_eq!(task["callback_url"], "https://agent.example.com/hook");
    open.stop().await;
}
