//! No secret in the clear: every kind of secret the server hands out or is shown (operator
//! tokens, static keys and their rotations, access tokens by `client_credentials`, by task, by
//! approval, by delegation and by `private_key_jwt`, client assertions) is used, and then
//! neither the store (the SQLite files, or every table of the PostgreSQL schema) nor the data
//! directory nor the debug logs of the binary hold any of them, or any distinctive part of
//! them; nor the private half of the token-signing key or of a client key. The one exception
//! is by design: `DATA_DIR/admin-token` hands the first admin's token over.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use custos_core::jose::{self, SigningAlg, SigningKey};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Connection;

use crate::both_backends;
use crate::support::{
    ADMIN_TOKEN, Backend, DebugBinary, TestServer, client, postgres_schema_url, test_config,
};

both_backends!(no_secret_is_stored_in_the_clear);

/// Names that must be found where the secrets must not: they show the search reads the data.
const NHI_NAME: &str = "secret-keeper-agent";
const TASK_PURPOSE: &str = "weekly digest of the secret keepers";

/// A secret the server issued or was shown, with the byte strings that would betray it.
struct Secret {
    label: String,
    needles: Vec<Vec<u8>>,
}

impl Secret {
    /// An opaque secret (`custos_op_…`, `custos_sk_…`, or a preset token): the whole text, its
    /// body without the prefix, and the hex of the whole (PostgreSQL shows `bytea` as hex).
    fn opaque(label: impl Into<String>, secret: &str) -> Self {
        let mut needles = vec![secret.as_bytes().to_vec(), hex::encode(secret).into_bytes()];
        if let Some(body) = secret
            .strip_prefix("custos_")
            .and_then(|rest| rest.split_once('_'))
            .map(|(_, body)| body)
        {
            assert!(body.len() >= 30, "a distinctive body");
            needles.push(body.as_bytes().to_vec());
        }
        Self {
            label: label.into(),
            needles,
        }
    }

    /// A compact JWS: the whole token, its signature segment, and the signature's bytes (raw
    /// and as hex).
    fn jwt(label: impl Into<String>, token: &str) -> Self {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "a compact jws");
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        Self {
            label: label.into(),
            needles: vec![
                token.as_bytes().to_vec(),
                parts[2].as_bytes().to_vec(),
                hex::encode(&signature).into_bytes(),
                signature,
            ],
        }
    }

    /// A private key: its PKCS#8 document (DER, and the base64 a PEM file would hold) and,
    /// for P-256, its private scalar (raw, hex, and base64url as in a JWK's `d`).
    fn private_key(label: impl Into<String>, key: &SigningKey) -> Self {
        let der = key.to_pkcs8_der().unwrap().to_vec();
        let mut needles = vec![STANDARD.encode(&der).as_bytes()[..64].to_vec()];
        let marker = [0x02, 0x01, 0x01, 0x04, 0x20];
        if key.alg() == SigningAlg::Es256 {
            let at = der
                .windows(marker.len())
                .position(|w| w == marker)
                .expect("an ECPrivateKey")
                + marker.len();
            let scalar = der[at..at + 32].to_vec();
            needles.push(hex::encode(&scalar).into_bytes());
            needles.push(URL_SAFE_NO_PAD.encode(&scalar).into_bytes());
            needles.push(scalar);
        }
        needles.push(der);
        Self {
            label: label.into(),
            needles,
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that no needle of any secret is in `haystack` (named `place`).
fn assert_none_in(place: &str, haystack: &[u8], secrets: &[Secret]) {
    for secret in secrets {
        for (i, needle) in secret.needles.iter().enumerate() {
            assert!(
                !contains(haystack, needle),
                "{place} holds {} in the clear (form {i})",
                secret.label
            );
        }
    }
}

const ADMIN_TOKEN_LABEL: &str = "the preset admin token";

/// Searches every file of a data directory for every secret; returns their bytes, joined.
/// `admin-token` is where the first admin's token is handed over (0600), by design, so the
/// admin token alone may be there.
fn scan_data_dir(dir: &Path, secrets: &[Secret]) -> Vec<u8> {
    let mut all = Vec::new();
    let files = files_under(dir);
    assert!(
        files.iter().any(|f| f.ends_with("master.key")),
        "the data directory is the server's: {files:?}"
    );
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let handover = path.file_name().is_some_and(|n| n == "admin-token");
        for secret in secrets {
            if handover && secret.label == ADMIN_TOKEN_LABEL {
                continue;
            }
            assert_none_in(
                &path.display().to_string(),
                &bytes,
                std::slice::from_ref(secret),
            );
        }
        all.extend(bytes);
    }
    all
}

/// Every file under `dir`, recursively.
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

async fn token(server: &TestServer, who: (&str, &str), extra: &[(&str, &str)]) -> String {
    let mut params = vec![("grant_type", "client_credentials")];
    params.extend_from_slice(extra);
    let (status, _, answer) = server.form("/oauth2/token", Some(who), &params).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["access_token"].as_str().unwrap().to_owned()
}

/// What [`issue_every_kind_of_secret`] issued.
struct Issued {
    secrets: Vec<Secret>,
    /// One static key, whose keyed hash must be found in the store.
    agent_key: String,
}

/// Issues and uses every kind of secret; returns them.
async fn issue_every_kind_of_secret(server: &TestServer) -> Issued {
    let mut secrets = vec![Secret::opaque(ADMIN_TOKEN_LABEL, ADMIN_TOKEN)];
    let (agent, agent_key) = client(server, NHI_NAME, &["crm:read:customers/*", "mail:send"]).await;
    let (gateway, gateway_key) = client(server, "gateway", &["custos:introspect"]).await;
    let (delegate, delegate_key) = client(server, "delegate", &["crm:read"]).await;
    secrets.push(Secret::opaque("the agent's static key", &agent_key));
    secrets.push(Secret::opaque("the gateway's static key", &gateway_key));
    secrets.push(Secret::opaque("the delegate's static key", &delegate_key));
    let gateway = (gateway.as_str(), gateway_key.as_str());

    let (_, operator) = server
        .operator("rita", &["reviewer"], &["owners-oauth"])
        .await;
    secrets.push(Secret::opaque("an operator token", &operator));

    // A second static key, rotated: the old one lives on for the grace period.
    let old = server.static_key(&agent).await;
    let old_key = old["secret"].as_str().unwrap().to_owned();
    let rotated = server
        .admin(
            Method::POST,
            &format!("/v1/credentials/{}/rotate", old["id"].as_str().unwrap()),
            None,
            StatusCode::CREATED,
        )
        .await;
    let new_key = rotated["key"]["secret"].as_str().unwrap().to_owned();
    secrets.push(Secret::opaque("a static key rotated out", &old_key));
    secrets.push(Secret::opaque("a static key rotated in", &new_key));

    // Access tokens by client_credentials: HTTP Basic, form post, with the rotated keys.
    let mut tokens = vec![
        (
            "client_credentials (basic)",
            token(server, (&agent, &agent_key), &[]).await,
        ),
        (
            "client_credentials (narrowed)",
            token(
                server,
                (&agent, &agent_key),
                &[("scope", "crm:read:customers/42")],
            )
            .await,
        ),
        (
            "client_credentials (rotated-in key)",
            token(server, (&agent, &new_key), &[]).await,
        ),
        (
            "client_credentials (rotated-out key)",
            token(server, (&agent, &old_key), &[]).await,
        ),
    ];
    let (status, _, posted) = server
        .form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &delegate),
                ("client_secret", &delegate_key),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{posted}");
    tokens.push((
        "client_credentials (client_secret_post)",
        posted["access_token"].as_str().unwrap().to_owned(),
    ));

    // A task credential at once, and one through an approval.
    let (status, task) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&agent_key),
            Some(json!({"purpose": TASK_PURPOSE, "scope": ["crm:read:customers/7"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    tokens.push((
        "a task credential",
        task["credential"]["access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
    ));
    let (status, pending) = server
        .call(
            Method::POST,
            "/v1/tasks",
            Some(&operator),
            Some(json!({"purpose": "month end", "scope": ["mail:send"], "nhi_id": agent})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{pending}");
    server
        .admin(
            Method::POST,
            &format!(
                "/v1/approvals/{}/approve",
                pending["approval_id"].as_str().unwrap()
            ),
            Some(json!({"reason": "ok"})),
            StatusCode::OK,
        )
        .await;
    let (status, collected) = server
        .call(
            Method::GET,
            &format!("/v1/tasks/{}", pending["id"].as_str().unwrap()),
            Some(&agent_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{collected}");
    tokens.push((
        "an approved task's credential",
        collected["credential"]["access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
    ));

    // Delegation: to the delegate by audience, and on by the delegate with an actor token.
    let root = tokens[0].1.clone();
    let exchange = |who: (String, String), params: Vec<(&'static str, String)>| async move {
        let mut all = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
            ),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token".to_owned(),
            ),
        ];
        all.extend(params);
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, _, answer) = server
            .form("/oauth2/token", Some((&who.0, &who.1)), &all)
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["access_token"].as_str().unwrap().to_owned()
    };
    let delegated = exchange(
        (agent.clone(), agent_key.clone()),
        vec![
            ("subject_token", root.clone()),
            ("audience", delegate.clone()),
            ("scope", "crm:read:customers/7".to_owned()),
        ],
    )
    .await;
    let actor = tokens[4].1.clone();
    let redelegated = exchange(
        (delegate.clone(), delegate_key.clone()),
        vec![
            ("subject_token", delegated.clone()),
            ("actor_token", actor),
            (
                "actor_token_type",
                "urn:ietf:params:oauth:token-type:access_token".to_owned(),
            ),
        ],
    )
    .await;
    tokens.push(("a delegated token", delegated));
    tokens.push(("a token delegated twice", redelegated));

    // A client key, and a token got with a private_key_jwt assertion.
    let (signer, _) = client(server, "signer", &["crm:read"]).await;
    let client_key = SigningKey::generate(SigningAlg::Es256, &mut rand::rng()).unwrap();
    let (status, registered) = server
        .call(
            Method::POST,
            &format!("/v1/nhis/{signer}/client-keys"),
            Some(ADMIN_TOKEN),
            Some(json!({"jwk": client_key.public_jwk()})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let assertion = jose::sign_jwt(
        &client_key,
        "JWT",
        &json!({
            "iss": signer, "sub": signer, "aud": format!("{}/oauth2/token", server.base),
            "iat": now, "exp": now + 60, "jti": uuid::Uuid::now_v7().to_string(),
        }),
    );
    let (status, _, answer) = server
        .form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &signer),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    tokens.push((
        "a token by private_key_jwt",
        answer["access_token"].as_str().unwrap().to_owned(),
    ));
    secrets.push(Secret::jwt("a client assertion", &assertion));
    secrets.push(Secret::private_key("the client's private key", &client_key));

    // Every secret goes through the request path once more: as a bearer, and each token
    // through introspection; one token is revoked by its holder.
    for bearer in [
        ADMIN_TOKEN,
        operator.as_str(),
        agent_key.as_str(),
        delegate_key.as_str(),
        new_key.as_str(),
        old_key.as_str(),
    ] {
        let (status, me) = server
            .call(Method::GET, "/v1/whoami", Some(bearer), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{me}");
    }
    for (label, token) in &tokens {
        let (status, me) = server
            .call(Method::GET, "/v1/whoami", Some(token), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{label}: {me}");
        let (_, _, seen) = server
            .form("/oauth2/introspect", Some(gateway), &[("token", token)])
            .await;
        assert_eq!(seen["active"], true, "{label}: {seen}");
    }
    let (status, _, _) = server
        .form(
            "/oauth2/revoke",
            Some((&agent, &agent_key)),
            &[("token", &tokens[1].1)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for (label, token) in tokens {
        secrets.push(Secret::jwt(label, &token));
    }
    Issued { secrets, agent_key }
}

/// An in-process server like `TestServer::start`, also returning the PostgreSQL URL.
async fn start_in_process(backend: Backend) -> (TestServer, Option<String>) {
    let data_dir = tempfile::tempdir().unwrap();
    let database_url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(postgres_schema_url().await),
    };
    let mut config = test_config(data_dir.path(), database_url.clone());
    config.static_key_rotation_grace_seconds = 3600;
    let server = custos_server::start(config).await.unwrap();
    let base = format!("http://{}", server.addr);
    (
        TestServer {
            server: Some(server),
            base,
            http: reqwest::Client::new(),
            _data_dir: data_dir,
            database_url: database_url.clone(),
        },
        database_url,
    )
}

/// Every row of every table in the URL's schema, as text (`bytea` shows as hex).
pub(crate) async fn dump_postgres(url: &str) -> Vec<u8> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(tables.len() > 3, "the schema has its tables: {tables:?}");
    let mut dump = Vec::new();
    for (table,) in tables {
        let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM \"{table}\" t"
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for (row,) in rows {
            dump.extend_from_slice(table.as_bytes());
            dump.extend_from_slice(row.as_bytes());
            dump.push(b'\n');
        }
    }
    dump
}

async fn no_secret_is_stored_in_the_clear(backend: Backend) {
    let (mut server, database_url) = start_in_process(backend).await;
    let Issued {
        mut secrets,
        agent_key,
    } = issue_every_kind_of_secret(&server).await;
    let agent_key_hash = server.state().keys.secret_hash(&agent_key);
    let signing_key = server.state().keyring.active();
    assert_eq!(signing_key.alg(), SigningAlg::Es256);
    secrets.push(Secret::private_key("the token-signing key", &signing_key));
    drop(signing_key);
    // A clean stop; the data directory outlives it. The store's last connection closes in
    // the background, checkpointing SQLite's write-ahead log into the database and removing
    // it: the files are read once that is done (or as they are after ten seconds).
    server.server.take().unwrap().stop().await.unwrap();
    let wal = server.data_dir().join("custos.db-wal");
    let deadline = Instant::now() + Duration::from_secs(10);
    while wal.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut store = scan_data_dir(server.data_dir(), &secrets);
    let mut stored_hash = agent_key_hash.to_vec();
    if let Some(url) = &database_url {
        store = dump_postgres(url).await;
        assert_none_in("the PostgreSQL schema", &store, &secrets);
        stored_hash = hex::encode(agent_key_hash).into_bytes();
    }
    // The search reads the data: what is stored by design is found, the keyed hash of a
    // static key among it (as bytes in SQLite's file, as hex in PostgreSQL's text).
    for name in [NHI_NAME, TASK_PURPOSE] {
        assert!(contains(&store, name.as_bytes()), "{name} is in the store");
    }
    assert!(
        contains(&store, &stored_hash),
        "the keyed hash of a static key is in the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_debug_logs_of_the_binary() {
    let binary = DebugBinary::start().await;
    let Issued { secrets, .. } = issue_every_kind_of_secret(&binary.server).await;
    let (server, logs) = binary.stop().await;
    assert_none_in("the server's output", &logs, &secrets);
    // The logs are at debug and hold the request log: the search reads what was logged.
    let text = String::from_utf8_lossy(&logs);
    for expected in ["DEBUG", "/oauth2/token", "/oauth2/introspect", "/v1/whoami"] {
        assert!(text.contains(expected), "{expected} in the logs:\n{text}");
    }

    let store = scan_data_dir(server.data_dir(), &secrets);
    for name in [NHI_NAME, TASK_PURPOSE] {
        assert!(contains(&store, name.as_bytes()), "{name} is in the store");
    }
}
