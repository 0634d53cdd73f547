//! The discovery readers, per format: fixtures written from each format's public
//! documentation (humans and machines side by side), malformed records and unreadable input,
//! arbitrary bytes, and the real CloudTrail capture against an expectation computed here with
//! `serde_json::Value`, independently of the reader.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use custos_core::discovery::formats::read;
use custos_core::discovery::{
    Format, IdentityClass, InventoryOwner, InventoryRow, Malformed, Position, ReadError, Record,
    Sighting, Sink,
};
use proptest::prelude::*;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures/discovery");
/// The capture's 55 log files as CloudTrail delivers them (each gzipped), committed with it.
const INVICTUS_RAW: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/cloudtrail-invictus/raw"
);
const INVICTUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/cloudtrail-invictus/records.json.gz"
);

/// Everything a reader delivered, in order.
#[derive(Default)]
struct Collected {
    records: Vec<(Position, Record)>,
    malformed: Vec<Malformed>,
}

impl Sink for Collected {
    fn record(&mut self, position: Position, record: Record) {
        self.records.push((position, record));
    }

    fn malformed(&mut self, malformed: Malformed) {
        self.malformed.push(malformed);
    }
}

impl Collected {
    fn sightings(&self) -> Vec<&Sighting> {
        self.records
            .iter()
            .map(|(_, record)| match record {
                Record::Sighting(sighting) => &**sighting,
                Record::Inventory(row) => panic!("an inventory row from a log: {row:?}"),
            })
            .collect()
    }

    /// One line per sighting: what the tests compare exactly.
    fn lines(&self) -> Vec<String> {
        self.sightings().into_iter().map(line).collect()
    }

    fn malformed(&self) -> Vec<(u64, Option<u64>, &str)> {
        self.malformed
            .iter()
            .map(|m| (m.position.record, m.position.line, m.reason.as_str()))
            .collect()
    }
}

fn line(s: &Sighting) -> String {
    let mut out = format!(
        "{} {} | {} | {:?} ({}) | {}",
        s.platform,
        s.principal,
        s.display_name,
        s.class,
        s.class_reason,
        s.at.map_or("-".to_owned(), |at| at.to_string())
    );
    if let Some(a) = &s.activity {
        out.push_str(&format!(
            " | {} {} {:?} {:?} {} {}",
            a.service,
            a.operation,
            a.resource,
            a.outcome,
            a.source.map_or("-".to_owned(), |ip| ip.to_string()),
            a.user_agent.as_deref().unwrap_or("-")
        ));
    }
    out
}

fn read_bytes(format: Format, bytes: &[u8]) -> (Collected, Result<(), ReadError>) {
    let mut collected = Collected::default();
    let result = read(format, bytes, &mut collected);
    (collected, result)
}

fn read_fixture(format: Format, name: &str) -> Collected {
    let bytes = std::fs::read(format!("{FIXTURES}/{name}")).unwrap();
    let (collected, result) = read_bytes(format, &bytes);
    result.unwrap();
    collected
}

fn unreadable(result: Result<(), ReadError>) -> (Position, String) {
    match result {
        Err(ReadError::Unreadable { position, reason }) => (position, reason),
        other => panic!("expected unreadable, got {other:?}"),
    }
}

#[test]
fn discovery_inventory_csv_rows() {
    let collected = read_fixture(Format::InventoryCsv, "inventory.csv");
    let rows: Vec<&InventoryRow> = collected
        .records
        .iter()
        .map(|(_, record)| match record {
            Record::Inventory(row) => &**row,
            Record::Sighting(s) => panic!("{s:?}"),
        })
        .collect();
    assert_eq!(
        *rows[0],
        InventoryRow {
            name: "ci-deployer".into(),
            kind: "service_account".into(),
            platform: "aws".into(),
            environment: "prod".into(),
            owner: InventoryOwner {
                team: "platform".into(),
                application: "deploy".into(),
                contact: "platform@example.com".into(),
            },
            purpose: "deploys the web tier".into(),
            scope_ceiling: vec!["s3:put:arn:aws:s3:::web/*".into(), "ec2:describe".into()],
            tags: BTreeMap::from([("cost".into(), "web".into()), ("tier".into(), "1".into())]),
            external_ids: BTreeMap::from([(
                "aws".into(),
                "arn:aws:iam::123456789012:user/ci-deployer".into()
            )]),
            expires_at: Some("2027-01-01T00:00:00Z".into()),
        }
    );
    assert_eq!(rows[1].name, "support-agent");
    assert_eq!(rows[1].purpose, "answers tickets, reads the crm");
    assert_eq!(rows[1].scope_ceiling, ["crm:read", "mail:send"]);
    assert_eq!(rows[1].expires_at, None);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        collected
            .records
            .iter()
            .map(|(p, _)| (p.record, p.line))
            .collect::<Vec<_>>(),
        [(1, Some(2)), (2, Some(3))]
    );
    assert_eq!(
        collected.malformed(),
        [
            (
                3,
                Some(4),
                "missing value for required column \"owner_team\""
            ),
            (4, Some(5), "the row has 3 fields where the header has 12"),
        ]
    );
}

#[test]
fn discovery_inventory_csv_refuses_unknown_and_missing_columns() {
    let (collected, result) = read_bytes(
        Format::InventoryCsv,
        b"name,kind,platform,owner_team,purpose,colour\na,b,c,d,e,f\n",
    );
    let (position, reason) = unreadable(result);
    assert_eq!(
        position,
        Position {
            record: 0,
            line: Some(1)
        }
    );
    assert!(reason.starts_with("unknown column \"colour\""), "{reason}");
    assert!(collected.records.is_empty());

    let (_, result) = read_bytes(Format::InventoryCsv, b"name,kind,platform,purpose\n");
    assert_eq!(
        unreadable(result).1,
        "missing required column \"owner_team\""
    );
    let (_, result) = read_bytes(Format::InventoryCsv, b"");
    assert_eq!(
        unreadable(result).1,
        "the input is empty: expected a header row"
    );
    // Only the required columns, with a byte order mark.
    let (collected, result) = read_bytes(
        Format::InventoryCsv,
        b"\xEF\xBB\xBFname,kind,platform,owner_team,purpose\r\nbot,ai_agent,custom,support,triage\r\n",
    );
    result.unwrap();
    assert_eq!(collected.records.len(), 1);
}

#[test]
fn discovery_inventory_json_lines_go_on_after_a_bad_line() {
    let collected = read_fixture(Format::InventoryJson, "inventory.jsonl");
    let names: Vec<(u64, Option<u64>, String)> = collected
        .records
        .iter()
        .map(|(p, r)| match r {
            Record::Inventory(row) => (p.record, p.line, row.name.clone()),
            Record::Sighting(_) => unreachable!(),
        })
        .collect();
    assert_eq!(
        names,
        [
            (1, Some(1), "ci-deployer".to_owned()),
            (4, Some(4), "support-agent".to_owned())
        ]
    );
    let malformed = collected.malformed();
    assert_eq!(malformed.len(), 2);
    assert_eq!((malformed[0].0, malformed[0].1), (2, Some(2)));
    assert!(
        malformed[0].2.contains("unknown field `scope_celing`"),
        "{}",
        malformed[0].2
    );
    assert_eq!((malformed[1].0, malformed[1].1), (3, Some(3)));
    assert!(
        malformed[1].2.starts_with("invalid json at column 2"),
        "{}",
        malformed[1].2
    );
}

#[test]
fn discovery_inventory_json_array_reports_bad_elements_by_number() {
    let text = br#"[
        {"name":"a","kind":"api_key","platform":"github","owner":{"team":"t"},"purpose":"p"},
        42,
        {"name":"b","kind":"api_key","platform":"github","owner":{"team":"t"}},
        {"name":"c","kind":"api_key","platform":"github","owner":{"team":"t"},"purpose":"p"}
    ]"#;
    let (collected, result) = read_bytes(Format::InventoryJson, text);
    result.unwrap();
    assert_eq!(
        collected
            .records
            .iter()
            .map(|(p, _)| p.record)
            .collect::<Vec<_>>(),
        [1, 4]
    );
    let malformed = collected.malformed();
    assert_eq!(malformed[0], (2, None, "expected a json object"));
    assert_eq!(malformed[1].0, 3);
    assert!(
        malformed[1].2.starts_with("missing field `purpose`"),
        "{}",
        malformed[1].2
    );
}

#[test]
fn discovery_truncated_json_is_unreadable_after_the_records_before_it() {
    let text = std::fs::read(format!("{FIXTURES}/cloudtrail.json")).unwrap();
    // Cut inside the third record.
    let third = text
        .windows(20)
        .position(|w| w.starts_with(b"AWSReservedSSO_Admin"))
        .unwrap();
    let (collected, result) = read_bytes(Format::CloudTrail, &text[..third]);
    let (position, reason) = unreadable(result);
    assert_eq!(position.record, 3);
    assert_eq!(reason, "the json ends in the middle of record 3");
    assert_eq!(collected.records.len(), 2);

    let (collected, result) = read_bytes(Format::CloudTrail, b"[{\"eventTime\": 1}, {\"a\": ");
    assert_eq!(unreadable(result).0.record, 2);
    assert_eq!(collected.malformed().len(), 1);

    let (_, result) = read_bytes(Format::OktaSystemLog, b"<html>rate limited</html>");
    let (position, reason) = unreadable(result);
    assert_eq!(
        position,
        Position {
            record: 1,
            line: Some(1)
        }
    );
    assert!(reason.starts_with("not json"), "{reason}");

    let (_, result) = read_bytes(Format::CloudTrail, b"{\"Records\": [] } trailing");
    assert!(unreadable(result).1.starts_with("invalid json"));
    // Nothing at all is an empty log, not an error.
    let (collected, result) = read_bytes(Format::GithubAudit, b"  \n");
    result.unwrap();
    assert!(collected.records.is_empty() && collected.malformed.is_empty());
}

#[test]
fn discovery_aws_credential_report() {
    let collected = read_fixture(Format::AwsIamCredentialReport, "credential-report.csv");
    assert_eq!(
        collected.lines(),
        [
            "aws arn:aws:iam::123456789012:root | <root_account> | Human (the root account) | 2026-10-02T08:15:00Z",
            "aws arn:aws:iam::123456789012:user/alice | alice | Human (console password enabled) | 2026-11-25T10:00:00Z",
            "aws arn:aws:iam::123456789012:user/ci/ci-deployer | ci-deployer | NonHuman (active keys or certificates and no password) | 2026-11-28T23:59:00Z",
            "aws arn:aws:iam::123456789012:user/legacy-signer | legacy-signer | NonHuman (active keys or certificates and no password) | -",
            "aws arn:aws:iam::123456789012:user/old-batch | old-batch | NonHuman (no password and no active credentials) | -",
        ]
    );
    let ci = collected.sightings()[2].facts.clone();
    assert_eq!(ci["access_key_2_last_used_service"], "s3");
    assert_eq!(ci["access_key_1_last_rotated"], "2024-02-02T02:02:02+00:00");
    assert_eq!(ci["user_creation_time"], "2022-02-02T02:02:02+00:00");
    assert_eq!(ci["mfa_active"], "false");
    assert_eq!(
        collected.sightings()[3].facts["cert_1_last_rotated"],
        "2018-01-01T00:00:00+00:00"
    );
    assert_eq!(
        collected.malformed(),
        [(
            6,
            Some(7),
            "access_key_1_last_used_date: not a time: \"last tuesday\""
        )]
    );
    let (_, result) = read_bytes(Format::AwsIamCredentialReport, b"name,kind\nx,y\n");
    assert!(
        unreadable(result)
            .1
            .contains("not an iam credential report")
    );
}

#[test]
fn discovery_k8s_serviceaccounts() {
    let collected = read_fixture(Format::KubernetesServiceAccounts, "serviceaccounts.json");
    assert_eq!(
        collected.lines(),
        [
            "kubernetes system:serviceaccount:billing:billing-exporter | billing/billing-exporter | NonHuman (a service account) | -",
            "kubernetes system:serviceaccount:tools:ci-legacy | tools/ci-legacy | NonHuman (a service account) | -",
            "kubernetes system:serviceaccount:kube-system:replicaset-controller | kube-system/replicaset-controller | Platform (a control-plane namespace's service account) | -",
        ]
    );
    let facts = &collected.sightings()[0].facts;
    assert_eq!(
        facts["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/billing-exporter"
    );
    assert_eq!(facts["created"], "2026-03-04T05:06:07Z");
    assert_eq!(collected.sightings()[1].facts["secrets"], "1");
    assert_eq!(
        collected.malformed(),
        [(4, None, "missing metadata.namespace")]
    );

    // `kubectl get sa NAME -o json`: one object.
    let one = br#"{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default","namespace":"shop"}}"#;
    let (collected, result) = read_bytes(Format::KubernetesServiceAccounts, one);
    result.unwrap();
    assert_eq!(
        collected.sightings()[0].principal,
        "system:serviceaccount:shop:default"
    );
}

#[test]
fn discovery_cloudtrail_classes_and_activities() {
    let collected = read_fixture(Format::CloudTrail, "cloudtrail.json");
    assert_eq!(
        collected.lines(),
        [
            "aws arn:aws:sts::123456789012:assumed-role/billing-exporter/i-0abc | billing-exporter/i-0abc | NonHuman (a programmatic call) | 2026-11-29T09:01:02Z | s3 GetObject \"billing-exports\" Allowed 10.0.3.7 aws-sdk-go-v2/1.30.0",
            "aws arn:aws:iam::123456789012:user/alice | alice | Human (console sign-in) | 2026-11-29T09:02:00Z | signin ConsoleLogin \"\" Allowed 203.0.113.50 Mozilla/5.0 (X11; Linux x86_64) Firefox/132.0",
            "aws arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Admin_0123456789abcdef/alice@example.com | AWSReservedSSO_Admin_0123456789abcdef/alice@example.com | Human (an sso session) | 2026-11-29T09:03:00Z | iam DeleteRole \"old-role\" Denied 203.0.113.50 aws-cli/2.17.0",
            "aws ec2.amazonaws.com | ec2.amazonaws.com | Platform (an aws service acting for itself) | 2026-11-29T09:04:00Z | sts AssumeRole \"\" Allowed - ec2.amazonaws.com",
            "aws arn:aws:iam::123456789012:user/ci/ci-deployer | ci-deployer | NonHuman (a programmatic call) | 2026-11-29T09:05:00Z | ec2 TerminateInstances \"i-0def\" Denied 192.0.2.10 Boto3/1.35.0 Python/3.12.0",
            "aws arn:aws:iam::123456789012:user/ci/ci-deployer | ci-deployer | NonHuman (a programmatic call) | 2026-11-29T09:06:00Z | sts GetCallerIdentity \"\" Refused 192.0.2.10 Boto3/1.35.0",
            "aws arn:aws:iam::123456789012:root | arn:aws:iam::123456789012:root | Human (the root user) | 2026-11-29T09:07:00Z | iam CreateAccessKey \"ci-deployer\" Allowed 203.0.113.51 aws-cli/2.17.0",
        ]
    );
    let role = &collected.sightings()[0].facts;
    assert_eq!(
        role["role_arn"],
        "arn:aws:iam::123456789012:role/billing-exporter"
    );
    assert_eq!(role["user_identity_type"], "AssumedRole");
    assert_eq!(collected.malformed(), [(8, None, "missing userIdentity")]);

    // The same records as JSON lines, and as a bare array, read the same.
    let file: Value =
        serde_json::from_slice(&std::fs::read(format!("{FIXTURES}/cloudtrail.json")).unwrap())
            .unwrap();
    let records = file["Records"].as_array().unwrap();
    let lines: String = records.iter().map(|r| format!("{r}\n")).collect();
    let (as_lines, result) = read_bytes(Format::CloudTrail, lines.as_bytes());
    result.unwrap();
    assert_eq!(as_lines.lines(), collected.lines());
    assert_eq!(as_lines.malformed(), [(8, Some(8), "missing userIdentity")]);
    let (as_array, result) = read_bytes(
        Format::CloudTrail,
        serde_json::to_string(records).unwrap().as_bytes(),
    );
    result.unwrap();
    assert_eq!(as_array.lines(), collected.lines());
}

/// The person an identity acted for: an IAM Identity Center user a service acted for
/// (`onBehalfOf`), or the source identity an assumed role's session carries; none for a
/// role on its own.
#[test]
fn discovery_cloudtrail_names_the_person_acted_for() {
    let records = serde_json::json!({"Records": [
        {"eventTime": "2026-11-29T09:00:00Z", "eventSource": "s3.amazonaws.com",
         "eventName": "GetObject",
         "userIdentity": {"type": "IdentityCenterUser", "accountId": "123456789012",
            "onBehalfOf": {"userId": "544894e8-80c1-707f-60e3-3ba6510dfac1",
                "identityStoreArn": "arn:aws:identitystore::123456789012:identitystore/d-9067642ac7"}}},
        {"eventTime": "2026-11-29T09:01:00Z", "eventSource": "dynamodb.amazonaws.com",
         "eventName": "Query",
         "userIdentity": {"type": "AssumedRole",
            "arn": "arn:aws:sts::123456789012:assumed-role/assistant/s1",
            "sessionContext": {"sourceIdentity": "ann@example.com",
                "sessionIssuer": {"type": "Role", "arn": "arn:aws:iam::123456789012:role/assistant"}}}},
        {"eventTime": "2026-11-29T09:02:00Z", "eventSource": "dynamodb.amazonaws.com",
         "eventName": "Query",
         "userIdentity": {"type": "AssumedRole",
            "arn": "arn:aws:sts::123456789012:assumed-role/assistant/s2",
            "sessionContext": {"sessionIssuer": {"type": "Role",
                "arn": "arn:aws:iam::123456789012:role/assistant"}}}}
    ]});
    let (collected, result) = read_bytes(Format::CloudTrail, records.to_string().as_bytes());
    result.unwrap();
    let people: Vec<Option<&str>> = collected
        .sightings()
        .iter()
        .map(|s| s.activity.as_ref().unwrap().on_behalf_of.as_deref())
        .collect();
    assert_eq!(
        people,
        [
            Some("544894e8-80c1-707f-60e3-3ba6510dfac1"),
            Some("ann@example.com"),
            None
        ]
    );
}

#[test]
fn discovery_k8s_audit() {
    let collected = read_fixture(Format::KubernetesAudit, "k8s-audit.jsonl");
    assert_eq!(
        collected.lines(),
        [
            "kubernetes system:serviceaccount:billing:billing-exporter | billing/billing-exporter | NonHuman (a service account) | 2026-11-29T10:00:00.004Z | core/secrets get \"billing/db\" Allowed 10.0.3.7 exporter/1.2",
            "kubernetes alice@example.com | alice@example.com | Human (a user) | 2026-11-29T10:01:00.002Z | apps/deployments update \"shop/web/scale\" Denied 203.0.113.9 kubectl/v1.31.0 (linux/amd64) kubernetes/abc",
            "kubernetes system:node:node-1 | system:node:node-1 | Platform (a node) | 2026-11-29T10:02:00.001Z | core/nodes patch \"node-1/status\" Allowed 10.0.0.11 kubelet/v1.31.0",
            "kubernetes system:serviceaccount:billing:billing-exporter | billing/billing-exporter | NonHuman (a service account) | 2026-11-29T10:03:00.001Z | core/pods list \"billing\" Allowed 203.0.113.9 kubectl/v1.31.0",
            "kubernetes system:anonymous | system:anonymous | Platform (a control-plane user) | 2026-11-29T10:04:00Z | nonresource get \"/version\" Refused 198.51.100.4 curl/8.5.0",
        ]
    );
    assert_eq!(
        collected.sightings()[3].facts["impersonated_by"],
        "alice@example.com"
    );
    // The RequestReceived stage of the first request is found but yields nothing.
    assert_eq!(
        collected
            .records
            .iter()
            .map(|(p, _)| p.record)
            .collect::<Vec<_>>(),
        [2, 3, 4, 5, 6]
    );
    assert_eq!(
        collected.malformed(),
        [(7, Some(7), "missing user.username")]
    );
}

#[test]
fn discovery_github_audit() {
    let collected = read_fixture(Format::GithubAudit, "github-audit.json");
    assert_eq!(
        collected.lines(),
        [
            "github octocat | octocat | Human (a user without a token) | 2025-11-29T10:00:00Z | repo repo.create \"acme/new-service\" Allowed 203.0.113.20 Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) Firefox/132.0",
            "github octocat/token:91234567 | octocat | NonHuman (a personal access token) | 2025-11-29T10:01:00Z | git git.clone \"acme/infra\" Allowed 198.51.100.30 git/2.43.0",
            "github dependabot[bot] | dependabot[bot] | NonHuman (a bot account) | 2025-11-29T10:02:00Z | pull_request pull_request.create \"acme/web\" Allowed - -",
            "github release-bot-app | release-bot-app | NonHuman (a github app installation token) | 2025-11-29T10:03:00Z | workflows workflows.created_workflow_run \"acme/web\" Allowed - -",
            "github acme/web/deploy_key:ZGVwbG95LWtleQ== | acme/web/deploy_key:ZGVwbG95LWtleQ== | NonHuman (a deploy key) | 2025-11-29T10:04:00Z | git git.push \"acme/web\" Allowed 192.0.2.44 -",
            "github octocat/oauth:Triage Helper | octocat | NonHuman (an app acting for a user) | 2025-11-29T10:05:00Z | issue_comment issue_comment.update \"acme/web\" Allowed - -",
        ]
    );
    assert_eq!(collected.sightings()[1].facts["human_owner"], "octocat");
    assert_eq!(collected.sightings()[5].facts["human_owner"], "octocat");
    assert!(!collected.sightings()[0].facts.contains_key("human_owner"));
    assert_eq!(collected.malformed(), [(7, None, "missing action")]);
}

#[test]
fn discovery_okta_system_log() {
    let collected = read_fixture(Format::OktaSystemLog, "okta-system-log.json");
    assert_eq!(
        collected.lines(),
        [
            "okta 00u1qw1mqitPHM8AJ0g7 | Ada Admin | Human (actor.type User) | 2026-11-29T09:00:00Z | user user.session.start \"\" Allowed 203.0.113.50 Mozilla/5.0 (Macintosh) Chrome/131.0",
            "okta 00u1qw1mqitPHM8AJ0g7/token:00T94e3cn9kSEO3c51s5 | Ada Admin | NonHuman (an api token) | 2026-11-29T09:05:00Z | user user.lifecycle.deactivate \"leaver@example.com\" Allowed 198.51.100.7 okta-sdk-python/2.9.0",
            "okta 0oa8sync1 | HR Sync | NonHuman (an application or oauth client) | 2026-11-29T09:10:00Z | app app.oauth2.as.token.grant \"default\" Denied 198.51.100.8 -",
            "okta 0oa1system | Okta System | Platform (okta acting for itself) | 2026-11-29T09:15:00Z | system system.agent.ad.update \"\" Allowed - -",
        ]
    );
    assert_eq!(
        collected.sightings()[1].facts["human_owner"],
        "admin@example.com"
    );
    assert_eq!(collected.malformed(), [(5, None, "missing actor.id")]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the bytes, every reader returns, and what it delivered is numbered in order.
    #[test]
    fn discovery_arbitrary_bytes_never_panic(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..400),
            "[\\[\\]{}\":,a-z0-9 \n.@]{0,200}".prop_map(String::into_bytes),
        ],
    ) {
        for format in Format::ALL {
            let (collected, _) = read_bytes(format, &bytes);
            let mut numbers: Vec<u64> = collected.records.iter().map(|(p, _)| p.record).collect();
            numbers.extend(collected.malformed.iter().map(|m| m.position.record));
            let unique: BTreeSet<u64> = numbers.iter().copied().collect();
            prop_assert_eq!(unique.len(), numbers.len());
        }
    }
}

/// Every raw file of the Invictus capture: every principal the records name is found, console
/// sign-ins and console sessions are people, AWS services are the platform, and nothing is
/// malformed. The expectation is computed from `serde_json::Value` here, not by the reader.
#[test]
fn discovery_cloudtrail_invictus_capture() {
    let mut files: Vec<_> = std::fs::read_dir(INVICTUS_RAW)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 55);
    let mut records = 0;
    for path in &files {
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        let file: Value = serde_json::from_slice(&bytes).unwrap();
        let expected: Vec<&Value> = file["Records"].as_array().unwrap().iter().collect();
        let (collected, result) = read_bytes(Format::CloudTrail, &bytes);
        result.unwrap();
        assert!(collected.malformed.is_empty(), "{:?}", collected.malformed);
        let sightings = collected.sightings();
        assert_eq!(sightings.len(), expected.len(), "{}", path.display());
        records += expected.len();
        for (record, sighting) in expected.iter().zip(sightings) {
            let identity = &record["userIdentity"];
            let arn = identity["arn"].as_str();
            if let Some(arn) = arn {
                assert_eq!(sighting.principal, arn);
            } else if let Some(service) = identity["invokedBy"].as_str() {
                assert_eq!(sighting.principal, service);
            }
            let agent = record["userAgent"].as_str().unwrap_or("");
            if record["eventName"] == "ConsoleLogin"
                || record["eventSource"] == "signin.amazonaws.com"
                || agent.starts_with("Mozilla/")
                || agent.contains("Console")
            {
                assert_eq!(sighting.class, IdentityClass::Human, "{record}");
            }
            if identity["type"] == "AWSService" || (arn.is_none() && identity["type"].is_null()) {
                assert_eq!(sighting.class, IdentityClass::Platform, "{record}");
            }
            if agent.starts_with("stratus-red-team") && record["eventName"] != "ConsoleLogin" {
                assert_eq!(sighting.class, IdentityClass::NonHuman, "{record}");
            }
            let activity = sighting.activity.as_ref().unwrap();
            assert_eq!(activity.operation, record["eventName"].as_str().unwrap());
        }
    }

    // The committed, gzipped capture reads the same.
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(INVICTUS).unwrap())
        .read_to_end(&mut text)
        .unwrap();
    let (collected, result) = read_bytes(Format::CloudTrail, &text);
    result.unwrap();
    assert!(collected.malformed.is_empty());
    assert_eq!(collected.records.len(), records);
}
