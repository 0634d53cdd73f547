//! Upgrades carry existing data forward: a store created by an older version, with rows in
//! it, is opened by this one and everything is still there and still linked.

use std::borrow::Cow;

use custos_store::{SqliteStore, Store};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

/// Migration 17 rebuilds `approvals` (SQLite cannot drop a NOT NULL) while the votes and
/// findings that point at its rows stay in place, with foreign keys enforced.
#[tokio::test]
async fn rebuilding_approvals_keeps_their_votes_and_findings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custos.db");
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .foreign_keys(true),
        )
        .await
        .unwrap();
    let mut before = sqlx::migrate!("./migrations/sqlite");
    before.migrations = Cow::Owned(
        before
            .migrations
            .iter()
            .filter(|m| m.version < 17)
            .cloned()
            .collect(),
    );
    before.run(&pool).await.unwrap();
    for statement in [
        "INSERT INTO teams (id, name, contact, created_at) VALUES ('t1', 'owners', 'c', 0)",
        "INSERT INTO nhis (id, name, kind, platform, environment, status, owner_team_id, purpose, \
         scope_ceiling, tags, external_ids, created_at, updated_at, version, search_key) \
         VALUES ('n1', 'bot', 'ai_agent', 'custom', 'prod', 'suspended', 't1', 'p', '[]', '{}', \
         '{}', 0, 0, 1, 'bot')",
        "INSERT INTO tasks (id, nhi_id, purpose, scope, ttl_seconds, state, requested_by, \
         created_at) VALUES ('k1', 'n1', 'resume', '[\"crm:read\"]', 60, 'pending_approval', \
         'nhi:n1', 0)",
        "INSERT INTO approvals (id, nhi_id, task_id, requested_by, purpose, requested_scope, \
         excess, requested_ttl_seconds, state, created_at, kind, required_approvals, expires_at) \
         VALUES ('a1', 'n1', 'k1', 'nhi:n1', 'resume bot', '[\"crm:read\"]', '[]', 60, \
         'pending', 0, 'resume', 2, 86400000)",
        "INSERT INTO approval_votes (approval_id, reviewer, scope, ttl_seconds, reason, at) \
         VALUES ('a1', 'operator:r', '[\"crm:read\"]', 60, 'fine', 1)",
        "INSERT INTO findings (id, kind, nhi_id, dedupe_key, state, severity, score, summary, \
         evidence, action, approval_id, occurrences, first_seen, last_seen, created_at) \
         VALUES ('f1', 'anomaly', 'n1', 'anomaly:n1:0', 'open', 'high', 9.5, 'odd', '{}', \
         'suspend', 'a1', 1, 0, 0, 0)",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    let approval = store.get_approval("a1").await.unwrap().unwrap();
    assert_eq!(approval.task_id.as_deref(), Some("k1"));
    assert_eq!(approval.required_approvals, 2);
    let votes = store.list_votes(&["a1"]).await.unwrap();
    assert_eq!(votes["a1"].len(), 1);
    let finding = store.get_finding("f1").await.unwrap().unwrap();
    assert_eq!(finding.approval_id.as_deref(), Some("a1"));
}
