//! The admin CLI's behaviour commands, as a user runs them: `custos findings` and
//! `custos response-policies` against a live server, and the offline `custos simulate`.

use serde_json::Value;

use crate::both_backends;
use crate::support::{Backend, TestServer, custos, json_of, ok, text};

both_backends!(cli_lists_findings_and_sets_response_policies);

async fn cli_lists_findings_and_sets_response_policies(backend: Backend) {
    let server = TestServer::start(backend).await;

    // No findings yet: an empty page, in JSON and as a table.
    let page = json_of(&server, &["findings", "list"]).await;
    assert_eq!(page["items"], Value::Array(vec![]), "{page}");
    assert!(page["next_cursor"].is_null(), "{page}");
    let table = ok(&server, &["findings", "list", "--state", "unresolved"]).await;
    assert!(table.contains("SEVERITY"), "{table}");
    // A bad filter is the server's 400, said on stderr with a non-zero exit code.
    let out = custos(&server, &["findings", "list", "--state", "closed"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("400 invalid_parameter: state"),
        "{}",
        text(&out.stderr)
    );

    // A default policy, then the list shows it (in force) with the default action.
    let added = json_of(
        &server,
        &[
            "response-policies",
            "add",
            "--target",
            "default",
            "--action",
            "record",
        ],
    )
    .await;
    let id = added["id"].as_str().unwrap().to_owned();
    assert_eq!(added["target"]["type"], "default", "{added}");
    assert_eq!(added["action"], "record", "{added}");
    assert!(added["revoked_at"].is_null(), "{added}");

    let list = json_of(&server, &["response-policies", "list"]).await;
    let items = list["items"].as_array().unwrap();
    assert!(items.iter().any(|p| p["id"] == id.as_str()), "{list}");
    assert!(list["default_action"].is_string(), "{list}");
    let table = ok(&server, &["response-policies", "list"]).await;
    assert!(table.contains(&id) && table.contains("record"), "{table}");

    // An NHI policy needs --id: clap says so before any request.
    let out = custos(
        &server,
        &[
            "response-policies",
            "add",
            "--target",
            "nhi",
            "--action",
            "alert",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--id"), "{}", text(&out.stderr));

    // Revoked: gone from the policies in force, still listed with --all.
    let revoked = json_of(&server, &["response-policies", "revoke", &id]).await;
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let list = json_of(&server, &["response-policies", "list"]).await;
    assert!(
        !list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == id.as_str()),
        "{list}"
    );
    let all = json_of(&server, &["response-policies", "list", "--all"]).await;
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == id.as_str()),
        "{all}"
    );

    server.stop().await;
}

/// `custos simulate` needs no server: a small fleet prints a report in JSON with each attack
/// type's results (the bars are not asserted at this size).
#[test]
fn cli_simulate_prints_a_json_report() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_custos"))
        .args([
            "simulate",
            "--nhis",
            "20",
            "--days",
            "2",
            "--warmup-days",
            "2",
            "--output",
            "json",
        ])
        .env_remove("CUSTOS_URL")
        .env_remove("CUSTOS_TOKEN")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "custos simulate failed: {stdout}{}",
        text(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON: {e}: {stdout}"));
    assert_eq!(report["nhis"], 20, "{report}");
    assert_eq!(report["days"], 2, "{report}");
    assert_eq!(report["warmup_days"], 2, "{report}");
    assert!(report["events"].as_u64().unwrap() > 0, "{report}");
    assert!(report["wall_seconds"].is_number(), "{report}");
    assert!(report["events_per_second"].is_number(), "{report}");
    assert!(
        report["false_alerts_per_1000_nhi_days"].is_number(),
        "{report}"
    );
    let attacks = report["attacks"].as_array().unwrap();
    assert_eq!(attacks.len(), 7, "{report}");
    for attack in attacks {
        assert!(attack["kind"].is_string(), "{attack}");
        for field in ["injected", "detected", "recall"] {
            assert!(attack[field].is_number(), "{field} of {attack}");
        }
    }
    let kinds: Vec<&str> = attacks
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"exfiltration_burst"), "{kinds:?}");
}
