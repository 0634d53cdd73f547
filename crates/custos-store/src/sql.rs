//! The SQL behind both backends. One macro expands the same statements for SQLite and for
//! PostgreSQL so the two cannot drift apart; the few dialect differences are parameters.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use custos_core::discovery::IdentityClass;
use custos_core::discovery::logical::{LogicalAgent, Member};
use custos_core::discovery::observed::{ObservedFilter, ObservedIdentity};
use custos_core::discovery::risk::{CredentialSummary, FindingTally, NhiFacts};
use custos_core::event::StoredEvent;
use custos_core::finding::{
    Finding, FindingFilter, FindingState, ResponseAction, ResponsePolicy, ResponseTarget, Severity,
};
use custos_core::issuance::{
    Approval, ApprovalKind, ApprovalState, Risk, RiskLevel, StandingRule, Task, TaskState, Vote,
};
use custos_core::lifecycle::{Decommission, DecommissionStep, DecommissionTrigger};
use custos_core::{
    Actor, Credential, CredentialKind, DomainEvent, EventKind, Nhi, NhiFilter, NhiKind, NhiStatus,
    Operator, Owner, Page, Role, Team, Timestamp,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Row};

use crate::group_commit::{GroupCommit, Slot};
use crate::{
    ApprovalFilter, AuditHead, DecommissionFilter, DeploymentHook, EventQuery, JobLock,
    PolicyVersion, Result, Retirement, Revocation, SigningKeyRecord, Store, StoreError,
    StoredCheckpoint, UiSession, Use,
};
use crate::{
    DeliveryFilter, DeliveryOutcome, DeliveryState, DueEscalation, NotificationChannel,
    NotificationDelivery,
};
use crate::{FindingOpened, MAX_BASELINE_BYTES};

/// The embedded store: one SQLite file in WAL mode. Writes go through a single connection, so
/// they never contend for SQLite's write lock; reads use a small pool beside it.
pub struct SqliteStore {
    read: SqlitePool,
    write: GroupCommit,
}

/// The scale-out store, shared by several `custos serve` nodes.
pub struct PostgresStore {
    pool: PgPool,
}

impl SqliteStore {
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged write survives power loss, not only a killed process.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Ok(Self {
            read,
            write: GroupCommit::new(write),
        })
    }

    fn reader(&self) -> &SqlitePool {
        &self.read
    }

    /// Every write is a savepoint in a transaction shared with concurrent writes, committed
    /// (one fsync) before any of them returns: see [`GroupCommit`].
    async fn begin_write(&self) -> Result<Slot> {
        self.write.slot().await
    }
}

/// A name search term that matches at most this many NHIs is answered from the SQLite trigram
/// index; a more common one is cheaper to answer by walking the other filters' index in id order.
const INDEXED_SEARCH_MAX_MATCHES: i64 = 10_000;

impl SqliteStore {
    /// The page of a name search answered from the trigram index, or `None` when the index
    /// cannot help: terms shorter than a trigram, and terms so common that the walk in id order
    /// finds a page sooner.
    async fn indexed_name_matches(
        &self,
        needle: &str,
        filter: &NhiFilter,
        page: &Page,
    ) -> Result<Option<Vec<String>>> {
        if needle.chars().count() < 3 {
            return Ok(None);
        }
        // A quoted FTS5 string is matched as a substring by the trigram tokenizer; quotes in
        // the term are doubled, so the user's text is never parsed as query syntax.
        let phrase = format!("\"{}\"", needle.replace('"', "\"\""));
        let matches: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT rowid FROM nhi_name_search \
             WHERE nhi_name_search MATCH $1 LIMIT $2)",
        )
        .bind(&phrase)
        .bind(INDEXED_SEARCH_MAX_MATCHES + 1)
        .fetch_one(self.reader())
        .await?;
        if matches > INDEXED_SEARCH_MAX_MATCHES {
            return Ok(None);
        }
        // The index finds candidates; the same LIKE as the other paths then decides, so every
        // path gives the same answer (the index folds case more widely than LOWER does).
        // CROSS JOIN makes the few index matches the outer loop; left to itself, the planner
        // may walk a filter's index over most of the table and test each row against them.
        let mut q = QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT id FROM (SELECT rowid AS search_key FROM nhi_name_search \
             WHERE nhi_name_search MATCH ",
        );
        q.push_bind(phrase)
            .push(") m CROSS JOIN nhis ON nhis.search_key = m.search_key WHERE 1 = 1");
        Self::push_filters(&mut q, filter, page.after.as_ref());
        q.push(" AND LOWER(name) LIKE ")
            .push_bind(like_pattern(needle))
            .push(" ESCAPE '\\' ORDER BY id LIMIT ")
            .push_bind(i64::from(page.limit));
        Self::fetch_ids(q, self.reader()).await.map(Some)
    }
}

impl PostgresStore {
    /// PostgreSQL answers every name search from its trigram index (`pg_trgm`), in the plan of
    /// the ordinary query; no separate path is needed.
    async fn indexed_name_matches(
        &self,
        _needle: &str,
        _filter: &NhiFilter,
        _page: &Page,
    ) -> Result<Option<Vec<String>>> {
        Ok(None)
    }

    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid postgres url: {e}")))?;
        Self::connect_with(options).await
    }

    /// Connects with explicit options (the tests use this to give each run its own schema).
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        // sqlx serialises concurrent migrations from several nodes with an advisory lock.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<PgSlot> {
        Ok(PgSlot(self.pool.acquire().await?))
    }
}

impl SqliteStore {
    /// One node uses a SQLite store: it always holds every job's lock.
    async fn take_job_lock(&self, _job: &str) -> Result<Option<JobLock>> {
        Ok(Some(JobLock { _held: None }))
    }
}

impl PostgresStore {
    /// A transaction-scoped advisory lock, held by a transaction on a connection of its own
    /// until the lock is dropped (which rolls it back). Advisory locks are per database, so
    /// the key is a hash of the schema as well as the job: deployments that share a database
    /// in separate schemas do not hold each other's jobs.
    async fn take_job_lock(&self, job: &str) -> Result<Option<JobLock>> {
        let mut tx = self.pool.begin().await?;
        let held: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock(\
             hashtextextended('custos-job:' || current_schema() || ':' || $1, 0))",
        )
        .bind(job)
        .fetch_one(&mut *tx)
        .await?;
        if !held {
            tx.rollback().await?;
            return Ok(None);
        }
        Ok(Some(JobLock {
            _held: Some(Box::new(tx)),
        }))
    }
}

impl SqliteStore {
    /// One node uses a SQLite store: no other node holds its state in memory, so no change
    /// is announced.
    async fn announce(_tx: &mut sqlx::SqliteConnection, _events: &[DomainEvent]) -> Result<()> {
        Ok(())
    }
}

impl PostgresStore {
    /// Announces, in the transaction that appends them, events that can change a decision
    /// other nodes answer from memory: PostgreSQL delivers the notice only when (and if) the
    /// transaction commits, so no node hears of a change before it can read it. See
    /// [`crate::feed`] for the payload.
    async fn announce(tx: &mut sqlx::PgConnection, events: &[DomainEvent]) -> Result<()> {
        if events.iter().any(|e| e.kind.changes_decisions()) {
            sqlx::query(crate::feed::ANNOUNCE).execute(&mut *tx).await?;
        }
        Ok(())
    }
}

/// PostgreSQL needs no group commit: its own WAL writer batches concurrent commits. A slot is
/// a pooled connection, so both stores write with the same code.
struct PgSlot(sqlx::pool::PoolConnection<sqlx::Postgres>);

impl PgSlot {
    async fn begin(&mut self) -> Result<sqlx::Transaction<'_, sqlx::Postgres>> {
        Ok(sqlx::Connection::begin(&mut *self.0).await?)
    }

    async fn finish(self) -> Result<()> {
        Ok(())
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn ts(millis: i64) -> Result<Timestamp> {
    Timestamp::from_unix_millis(millis).ok_or_else(|| corrupt(format!("timestamp {millis}")))
}

fn opt_ts(millis: Option<i64>) -> Result<Option<Timestamp>> {
    millis.map(ts).transpose()
}

fn parse_enum<T>(parse: fn(&str) -> Option<T>, text: String) -> Result<T> {
    parse(&text).ok_or_else(|| corrupt(format!("unknown value {text:?}")))
}

fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(corrupt)
}

fn small(value: i64, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| corrupt(format!("{what} {value}")))
}

fn opt_json<T: serde::de::DeserializeOwned>(text: Option<String>) -> Result<Option<T>> {
    text.as_deref().map(json).transpose()
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn roles_column(roles: &[Role]) -> String {
    let mut text = String::from(",");
    for role in roles {
        text.push_str(role.as_str());
        text.push(',');
    }
    text
}

fn parse_roles(text: &str) -> Result<Vec<Role>> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| parse_enum(Role::parse, s.to_owned()))
        .collect()
}

/// Whether any text of a listing's filter holds a NUL character. PostgreSQL refuses one in
/// text and SQLite's full-text query parser fails on one; both stores refuse it alike.
fn filter_holds_nul(filter: &NhiFilter) -> bool {
    let nul = |text: &String| text.contains('\0');
    filter.platform.iter().any(nul)
        || filter.environment.iter().any(nul)
        || filter.name_contains.iter().any(nul)
        || filter.owner_teams.iter().flatten().any(nul)
        || filter
            .tags
            .iter()
            .any(|(key, value)| nul(key) || value.iter().any(nul))
}

/// `%`, `_` and `\` in a user's search text are literals, not wildcards.
fn like_pattern(needle: &str) -> String {
    let mut pattern = String::from("%");
    for c in needle.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A LIKE pattern matching the JSON text of an event's details that holds `key` with exactly
/// `value` (details are stored as a JSON object of strings, serialised by serde_json).
fn detail_pattern(key: &str, value: &str) -> String {
    let json = format!("{}:{}", to_json(&key), to_json(&value));
    let mut pattern = String::from("%");
    for c in json.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// How many rows that pass a listing's other filters a name search looks at before it falls
/// back to searching them all.
const SEARCH_WINDOW: i64 = 2000;

/// Bound parameters per multi-row `INSERT` (rows = this / columns): well under both
/// databases' limits (32,766 in SQLite, 65,535 in PostgreSQL), and a statement big enough that
/// a batch of a few hundred rows takes one round trip.
const BINDS_PER_INSERT: usize = 8_000;

const NHI_COLUMNS: &str = "id, name, kind, platform, environment, status, owner_team_id, \
    owner_application, owner_contact, purpose, scope_ceiling, tags, external_ids, created_at, \
    updated_at, expires_at, last_used_at, version";
const OBSERVED_COLUMNS: &str = "platform, principal, display_name, class, class_reason, nhi_id, \
    first_seen, last_seen, events, evidence, first_imported_at, updated_at";
const OPERATOR_COLUMNS: &str =
    "id, name, roles, token_hash, token_hint, created_at, created_by, revoked_at";
const CREDENTIAL_COLUMNS: &str = "id, nhi_id, kind, secret_hash, fingerprint, created_at, \
    expires_at, revoked_at, created_by, scope, task_id, parent_id, depth, public_jwk, last_used_at";
const TASK_COLUMNS: &str = "id, nhi_id, purpose, scope, ttl_seconds, state, requested_by, \
    created_at, approval_id, activated_at, expires_at, ended_at, credential_id, callback_url";
const APPROVAL_COLUMNS: &str = "id, nhi_id, task_id, requested_by, purpose, requested_scope, \
    excess, requested_ttl_seconds, state, created_at, decided_at, decided_by, reason, \
    granted_scope, granted_ttl_seconds, kind, policies, risk, risk_factors, required_approvals, \
    expires_at, escalated_to, escalated_at";
const RULE_COLUMNS: &str =
    "id, nhi_id, scope, reason, created_by, created_at, expires_at, revoked_at";
const SIGNING_KEY_COLUMNS: &str =
    "kid, alg, public_jwk, sealed_key, created_at, retired_at, publish_until";
const TEAM_COLUMNS: &str =
    "id, name, contact, created_at, fallback_team_id, escalate_after_seconds";
const CHANNEL_COLUMNS: &str =
    "id, name, kind, team_id, target, format, sealed_secret, created_at, disabled_at";
const DELIVERY_COLUMNS: &str = "id, channel_id, callback_url, subject, payload, state, attempts, \
    next_attempt_at, last_attempt_at, last_error, created_at, delivered_at";
const FINDING_COLUMNS: &str = "id, kind, nhi_id, dedupe_key, state, severity, score, summary, \
    evidence, action, approval_id, occurrences, first_seen, last_seen, created_at, \
    acknowledged_at, acknowledged_by, resolved_at, resolved_by, resolution";
const RESPONSE_POLICY_COLUMNS: &str =
    "id, target_type, target, action, min_severity, created_by, created_at, revoked_at";
/// How many rounds `open_finding` tries to either insert or fold before giving up. A round is
/// lost only when the unresolved finding it collided with was resolved before it could be read
/// (PostgreSQL); on SQLite the single writer settles it in the first.
const OPEN_FINDING_ROUNDS: usize = 8;
const DECOMMISSION_COLUMNS: &str = "id, nhi_id, step, trigger_kind, requested_by, reason, \
    teardown, receipt, failures, last_error, started_at, updated_at, finished_at";
const HOOK_COLUMNS: &str = "id, name, team_id, sealed_secret, created_by, created_at, disabled_at";
const EVENT_COLUMNS: &str = "seq, id, kind, actor, subject, occurred_at, details";
/// The subject index is partitioned into eras of `1 << SUBJECT_ERA_SHIFT` events (migration
/// 0006), and a query reaches it only through exactly this expression (`e.seq >> 14` where
/// `events` is joined as `e`).
const SUBJECT_ERA_SHIFT: i64 = 14;
const SUBJECT_ERA: &str = "(seq >> 14)";
/// The same columns when `events` is joined as `e`.
const JOINED_EVENT_COLUMNS: &str =
    "e.seq, e.id, e.kind, e.actor, e.subject, e.occurred_at, e.details";

macro_rules! sql_store {
    ($store:ty, $db:ty, $row:ty, name = $name:literal, lock_operators = $lock_operators:expr, lock_row = $lock_row:expr, claim_lock = $claim_lock:expr) => {
        impl $store {
            fn team_from_row(row: &$row) -> Result<Team> {
                Ok(Team {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    contact: row.try_get("contact")?,
                    created_at: ts(row.try_get("created_at")?)?,
                    fallback_team_id: row.try_get("fallback_team_id")?,
                    escalate_after_seconds: row
                        .try_get::<Option<i64>, _>("escalate_after_seconds")?
                        .map(|s| small(s, "escalate_after_seconds"))
                        .transpose()?,
                })
            }

            fn operator_from_row(row: &$row, teams: Vec<String>) -> Result<(Operator, Vec<u8>)> {
                let roles: String = row.try_get("roles")?;
                Ok((
                    Operator {
                        id: row.try_get("id")?,
                        name: row.try_get("name")?,
                        roles: parse_roles(&roles)?,
                        teams,
                        token_hint: row.try_get("token_hint")?,
                        created_at: ts(row.try_get("created_at")?)?,
                        created_by: row.try_get("created_by")?,
                        revoked_at: opt_ts(row.try_get("revoked_at")?)?,
                    },
                    row.try_get("token_hash")?,
                ))
            }

            fn nhi_from_row(row: &$row) -> Result<Nhi> {
                let scope: String = row.try_get("scope_ceiling")?;
                let tags: String = row.try_get("tags")?;
                let external_ids: String = row.try_get("external_ids")?;
                Ok(Nhi {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    kind: parse_enum(NhiKind::parse, row.try_get("kind")?)?,
                    platform: row.try_get("platform")?,
                    environment: row.try_get("environment")?,
                    status: parse_enum(NhiStatus::parse, row.try_get("status")?)?,
                    owner: Owner {
                        team_id: row.try_get("owner_team_id")?,
                        application: row.try_get("owner_application")?,
                        contact: row.try_get("owner_contact")?,
                    },
                    purpose: row.try_get("purpose")?,
                    scope_ceiling: json(&scope)?,
                    tags: json(&tags)?,
                    external_ids: json(&external_ids)?,
                    created_at: ts(row.try_get("created_at")?)?,
                    updated_at: ts(row.try_get("updated_at")?)?,
                    expires_at: opt_ts(row.try_get("expires_at")?)?,
                    last_used_at: opt_ts(row.try_get("last_used_at")?)?,
                    version: row.try_get("version")?,
                })
            }

            fn credential_from_row(row: &$row) -> Result<Credential> {
                Ok(Credential {
                    id: row.try_get("id")?,
                    nhi_id: row.try_get("nhi_id")?,
                    kind: parse_enum(CredentialKind::parse, row.try_get("kind")?)?,
                    secret_hash: row.try_get("secret_hash")?,
                    fingerprint: row.try_get("fingerprint")?,
                    created_at: ts(row.try_get("created_at")?)?,
                    expires_at: opt_ts(row.try_get("expires_at")?)?,
                    revoked_at: opt_ts(row.try_get("revoked_at")?)?,
                    created_by: row.try_get("created_by")?,
                    scope: opt_json(row.try_get("scope")?)?,
                    task_id: row.try_get("task_id")?,
                    parent_id: row.try_get("parent_id")?,
                    depth: small(row.try_get("depth")?, "depth")?,
                    public_jwk: row.try_get("public_jwk")?,
                    last_used_at: opt_ts(row.try_get("last_used_at")?)?,
                })
            }

            fn task_from_row(row: &$row) -> Result<Task> {
                Ok(Task {
                    id: row.try_get("id")?,
                    nhi_id: row.try_get("nhi_id")?,
                    purpose: row.try_get("purpose")?,
                    scope: json(&row.try_get::<String, _>("scope")?)?,
                    ttl_seconds: small(row.try_get("ttl_seconds")?, "ttl")?,
                    state: parse_enum(TaskState::parse, row.try_get("state")?)?,
                    requested_by: row.try_get("requested_by")?,
                    created_at: ts(row.try_get("created_at")?)?,
                    approval_id: row.try_get("approval_id")?,
                    activated_at: opt_ts(row.try_get("activated_at")?)?,
                    expires_at: opt_ts(row.try_get("expires_at")?)?,
                    ended_at: opt_ts(row.try_get("ended_at")?)?,
                    credential_id: row.try_get("credential_id")?,
                    callback_url: row.try_get("callback_url")?,
                })
            }

            fn approval_from_row(row: &$row) -> Result<Approval> {
                Ok(Approval {
                    id: row.try_get("id")?,
                    kind: parse_enum(ApprovalKind::parse, row.try_get("kind")?)?,
                    policies: json(&row.try_get::<String, _>("policies")?)?,
                    risk: Risk {
                        level: parse_enum(RiskLevel::parse, row.try_get("risk")?)?,
                        factors: json(&row.try_get::<String, _>("risk_factors")?)?,
                    },
                    required_approvals: small(row.try_get("required_approvals")?, "required_approvals")?,
                    expires_at: ts(row.try_get("expires_at")?)?,
                    nhi_id: row.try_get("nhi_id")?,
                    task_id: row.try_get("task_id")?,
                    requested_by: row.try_get("requested_by")?,
                    purpose: row.try_get("purpose")?,
                    requested_scope: json(&row.try_get::<String, _>("requested_scope")?)?,
                    excess: json(&row.try_get::<String, _>("excess")?)?,
                    requested_ttl_seconds: small(row.try_get("requested_ttl_seconds")?, "ttl")?,
                    state: parse_enum(ApprovalState::parse, row.try_get("state")?)?,
                    created_at: ts(row.try_get("created_at")?)?,
                    decided_at: opt_ts(row.try_get("decided_at")?)?,
                    decided_by: row.try_get("decided_by")?,
                    reason: row.try_get("reason")?,
                    granted_scope: opt_json(row.try_get("granted_scope")?)?,
                    granted_ttl_seconds: row
                        .try_get::<Option<i64>, _>("granted_ttl_seconds")?
                        .map(|t| small(t, "ttl"))
                        .transpose()?,
                    escalated_to: row.try_get("escalated_to")?,
                    escalated_at: opt_ts(row.try_get("escalated_at")?)?,
                })
            }

            fn channel_from_row(row: &$row) -> Result<NotificationChannel> {
                Ok(NotificationChannel {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    kind: row.try_get("kind")?,
                    team_id: row.try_get("team_id")?,
                    target: row.try_get("target")?,
                    format: row.try_get("format")?,
                    sealed_secret: row.try_get("sealed_secret")?,
                    created_at: ts(row.try_get("created_at")?)?,
                    disabled_at: opt_ts(row.try_get("disabled_at")?)?,
                })
            }

            fn delivery_from_row(row: &$row) -> Result<NotificationDelivery> {
                Ok(NotificationDelivery {
                    id: row.try_get("id")?,
                    channel_id: row.try_get("channel_id")?,
                    callback_url: row.try_get("callback_url")?,
                    subject: row.try_get("subject")?,
                    payload: row.try_get("payload")?,
                    state: parse_enum(DeliveryState::parse, row.try_get("state")?)?,
                    attempts: small(row.try_get("attempts")?, "attempts")?,
                    next_attempt_at: ts(row.try_get("next_attempt_at")?)?,
                    last_attempt_at: opt_ts(row.try_get("last_attempt_at")?)?,
                    last_error: row.try_get("last_error")?,
                    created_at: ts(row.try_get("created_at")?)?,
                    delivered_at: opt_ts(row.try_get("delivered_at")?)?,
                })
            }

            fn rule_from_row(row: &$row) -> Result<StandingRule> {
                Ok(StandingRule {
                    id: row.try_get("id")?,
                    nhi_id: row.try_get("nhi_id")?,
                    scope: json(&row.try_get::<String, _>("scope")?)?,
                    reason: row.try_get("reason")?,
                    created_by: row.try_get("created_by")?,
                    created_at: ts(row.try_get("created_at")?)?,
                    expires_at: ts(row.try_get("expires_at")?)?,
                    revoked_at: opt_ts(row.try_get("revoked_at")?)?,
                })
            }

            fn signing_key_from_row(row: &$row) -> Result<SigningKeyRecord> {
                Ok(SigningKeyRecord {
                    kid: row.try_get("kid")?,
                    alg: row.try_get("alg")?,
                    public_jwk: row.try_get("public_jwk")?,
                    sealed_key: row.try_get("sealed_key")?,
                    created_at: ts(row.try_get("created_at")?)?,
                    retired_at: opt_ts(row.try_get("retired_at")?)?,
                    publish_until: opt_ts(row.try_get("publish_until")?)?,
                })
            }

            fn finding_from_row(row: &$row) -> Result<Finding> {
                Ok(Finding {
                    id: row.try_get("id")?,
                    kind: row.try_get("kind")?,
                    nhi_id: row.try_get("nhi_id")?,
                    dedupe_key: row.try_get("dedupe_key")?,
                    state: parse_enum(FindingState::parse, row.try_get("state")?)?,
                    severity: parse_enum(Severity::parse, row.try_get("severity")?)?,
                    score: row.try_get("score")?,
                    summary: row.try_get("summary")?,
                    evidence: json(&row.try_get::<String, _>("evidence")?)?,
                    action: parse_enum(ResponseAction::parse, row.try_get("action")?)?,
                    approval_id: row.try_get("approval_id")?,
                    occurrences: row.try_get("occurrences")?,
                    first_seen: ts(row.try_get("first_seen")?)?,
                    last_seen: ts(row.try_get("last_seen")?)?,
                    created_at: ts(row.try_get("created_at")?)?,
                    acknowledged_at: opt_ts(row.try_get("acknowledged_at")?)?,
                    acknowledged_by: row.try_get("acknowledged_by")?,
                    resolved_at: opt_ts(row.try_get("resolved_at")?)?,
                    resolved_by: row.try_get("resolved_by")?,
                    resolution: row.try_get("resolution")?,
                })
            }

            fn hook_from_row(row: &$row) -> Result<DeploymentHook> {
                Ok(DeploymentHook {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    team_id: row.try_get("team_id")?,
                    sealed_secret: row.try_get("sealed_secret")?,
                    created_by: row.try_get("created_by")?,
                    created_at: ts(row.try_get("created_at")?)?,
                    disabled_at: opt_ts(row.try_get("disabled_at")?)?,
                })
            }

            fn decommission_from_row(row: &$row) -> Result<Decommission> {
                let teardown: String = row.try_get("teardown")?;
                Ok(Decommission {
                    id: row.try_get("id")?,
                    nhi_id: row.try_get("nhi_id")?,
                    step: parse_enum(DecommissionStep::parse, row.try_get("step")?)?,
                    trigger: parse_enum(DecommissionTrigger::parse, row.try_get("trigger_kind")?)?,
                    requested_by: row.try_get("requested_by")?,
                    reason: row.try_get("reason")?,
                    teardown: serde_json::from_str(&teardown)
                        .map_err(|e| corrupt(format!("decommission teardown: {e}")))?,
                    receipt: row.try_get("receipt")?,
                    failures: u32::try_from(row.try_get::<i64, _>("failures")?)
                        .map_err(|_| corrupt("decommission failures".to_owned()))?,
                    last_error: row.try_get("last_error")?,
                    started_at: ts(row.try_get("started_at")?)?,
                    updated_at: ts(row.try_get("updated_at")?)?,
                    finished_at: opt_ts(row.try_get("finished_at")?)?,
                })
            }

            fn response_policy_from_row(row: &$row) -> Result<ResponsePolicy> {
                let target_type: String = row.try_get("target_type")?;
                let target: Option<String> = row.try_get("target")?;
                Ok(ResponsePolicy {
                    id: row.try_get("id")?,
                    target: ResponseTarget::from_parts(&target_type, target.clone()).ok_or_else(|| {
                        corrupt(format!("response policy target {target_type:?} {target:?}"))
                    })?,
                    action: parse_enum(ResponseAction::parse, row.try_get("action")?)?,
                    min_severity: parse_enum(Severity::parse, row.try_get("min_severity")?)?,
                    created_by: row.try_get("created_by")?,
                    created_at: ts(row.try_get("created_at")?)?,
                    revoked_at: opt_ts(row.try_get("revoked_at")?)?,
                })
            }

            /// Inserts a finding unless an unresolved one holds its dedupe key; `false` then,
            /// with nothing written. On PostgreSQL an insert that meets a concurrent
            /// transaction's uncommitted finding with the same key waits for it, so of two
            /// racing opens exactly one inserts.
            async fn insert_finding(
                tx: &mut <$db as sqlx::Database>::Connection,
                f: &Finding,
            ) -> Result<bool> {
                let inserted = sqlx::query(
                    "INSERT INTO findings (id, kind, nhi_id, dedupe_key, state, severity, score, \
                     summary, evidence, action, approval_id, occurrences, first_seen, last_seen, \
                     created_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by, resolution) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                     $17, $18, $19, $20) \
                     ON CONFLICT (dedupe_key) WHERE resolved_at IS NULL DO NOTHING",
                )
                .bind(&f.id)
                .bind(&f.kind)
                .bind(&f.nhi_id)
                .bind(&f.dedupe_key)
                .bind(f.state.as_str())
                .bind(f.severity.as_str())
                .bind(f.score)
                .bind(&f.summary)
                .bind(to_json(&f.evidence))
                .bind(f.action.as_str())
                .bind(&f.approval_id)
                .bind(f.occurrences)
                .bind(f.first_seen.unix_millis())
                .bind(f.last_seen.unix_millis())
                .bind(f.created_at.unix_millis())
                .bind(f.acknowledged_at.map(Timestamp::unix_millis))
                .bind(&f.acknowledged_by)
                .bind(f.resolved_at.map(Timestamp::unix_millis))
                .bind(&f.resolved_by)
                .bind(&f.resolution)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                Ok(inserted == 1)
            }

            /// Folds `repeat` into the unresolved finding holding its dedupe key, locked
            /// (PostgreSQL) while the merge is worked out in Rust. `None` if there is none: it
            /// was resolved since the insert collided with it.
            async fn fold_finding(
                tx: &mut <$db as sqlx::Database>::Connection,
                repeat: &Finding,
            ) -> Result<Option<Finding>> {
                let lock: &'static str = $lock_row;
                let sql = format!(
                    "SELECT {FINDING_COLUMNS} FROM findings \
                     WHERE dedupe_key = $1 AND resolved_at IS NULL{lock}"
                );
                let row = sqlx::query(AssertSqlSafe(sql))
                    .bind(&repeat.dedupe_key)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let mut stored = Self::finding_from_row(&row)?;
                stored.fold(repeat);
                sqlx::query(
                    "UPDATE findings SET occurrences = $1, first_seen = $2, last_seen = $3, \
                     score = $4, severity = $5, evidence = $6 WHERE id = $7",
                )
                .bind(stored.occurrences)
                .bind(stored.first_seen.unix_millis())
                .bind(stored.last_seen.unix_millis())
                .bind(stored.score)
                .bind(stored.severity.as_str())
                .bind(to_json(&stored.evidence))
                .bind(&stored.id)
                .execute(&mut *tx)
                .await?;
                Ok(Some(stored))
            }

            /// Inserts a credential; a delegated one only while its parent is unrevoked. The
            /// parent row is locked (PostgreSQL) so a concurrent revocation either sees the
            /// child or makes this insert fail.
            async fn insert_credential(
                tx: &mut <$db as sqlx::Database>::Connection,
                credential: &Credential,
            ) -> Result<()> {
                if let Some(parent) = &credential.parent_id {
                    let lock: &'static str = $lock_row;
                    let sql = format!("SELECT revoked_at FROM credentials WHERE id = $1{lock}");
                    let row = sqlx::query(AssertSqlSafe(sql)).bind(parent).fetch_optional(&mut *tx).await?;
                    let live = match row {
                        Some(row) => row.try_get::<Option<i64>, _>("revoked_at")?.is_none(),
                        None => false,
                    };
                    if !live {
                        return Err(StoreError::Precondition("the parent credential is revoked"));
                    }
                }
                sqlx::query(
                    "INSERT INTO credentials (id, nhi_id, kind, secret_hash, fingerprint, created_at, \
                     expires_at, revoked_at, created_by, scope, task_id, parent_id, depth, public_jwk) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                )
                .bind(&credential.id)
                .bind(&credential.nhi_id)
                .bind(credential.kind.as_str())
                .bind(&credential.secret_hash)
                .bind(&credential.fingerprint)
                .bind(credential.created_at.unix_millis())
                .bind(credential.expires_at.map(Timestamp::unix_millis))
                .bind(credential.revoked_at.map(Timestamp::unix_millis))
                .bind(&credential.created_by)
                .bind(credential.scope.as_ref().map(to_json))
                .bind(&credential.task_id)
                .bind(&credential.parent_id)
                .bind(i64::from(credential.depth))
                .bind(&credential.public_jwk)
                .execute(&mut *tx)
                .await?;
                Ok(())
            }

            /// Revokes the credentials `roots` selects and all their descendants. Repeated
            /// until nothing changes: on PostgreSQL a child committed while the statement ran
            /// is outside its snapshot, and the next round catches it.
            async fn revoke_cascade(
                tx: &mut <$db as sqlx::Database>::Connection,
                roots: &str,
                key: &str,
                at: Timestamp,
            ) -> Result<Vec<String>> {
                let sql = format!(
                    "WITH RECURSIVE doomed(id) AS (SELECT id FROM credentials WHERE {roots} \
                     UNION SELECT c.id FROM credentials c JOIN doomed d ON c.parent_id = d.id) \
                     UPDATE credentials SET revoked_at = $2 \
                     WHERE id IN (SELECT id FROM doomed) AND revoked_at IS NULL RETURNING id"
                );
                let mut revoked = Vec::new();
                loop {
                    let rows = sqlx::query(AssertSqlSafe(sql.clone()))
                        .bind(key)
                        .bind(at.unix_millis())
                        .fetch_all(&mut *tx)
                        .await?;
                    if rows.is_empty() {
                        break;
                    }
                    for row in &rows {
                        revoked.push(row.try_get("id")?);
                    }
                }
                revoked.sort();
                Ok(revoked)
            }

            async fn insert_approval(conn: &mut <$db as sqlx::Database>::Connection, approval: &Approval) -> Result<()> {
                sqlx::query(
                    "INSERT INTO approvals (id, nhi_id, task_id, requested_by, purpose, \
                     requested_scope, excess, requested_ttl_seconds, state, created_at, kind, \
                     policies, risk, risk_factors, required_approvals, expires_at, decided_at, \
                     decided_by, reason, granted_scope, granted_ttl_seconds, escalated_to, \
                     escalated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                     $16, $17, $18, $19, $20, $21, $22, $23)",
                )
                .bind(&approval.id)
                .bind(&approval.nhi_id)
                .bind(&approval.task_id)
                .bind(&approval.requested_by)
                .bind(&approval.purpose)
                .bind(to_json(&approval.requested_scope))
                .bind(to_json(&approval.excess))
                .bind(i64::from(approval.requested_ttl_seconds))
                .bind(approval.state.as_str())
                .bind(approval.created_at.unix_millis())
                .bind(approval.kind.as_str())
                .bind(to_json(&approval.policies))
                .bind(approval.risk.level.as_str())
                .bind(to_json(&approval.risk.factors))
                .bind(i64::from(approval.required_approvals))
                .bind(approval.expires_at.unix_millis())
                .bind(approval.decided_at.map(Timestamp::unix_millis))
                .bind(&approval.decided_by)
                .bind(&approval.reason)
                .bind(approval.granted_scope.as_ref().map(to_json))
                .bind(approval.granted_ttl_seconds.map(i64::from))
                .bind(&approval.escalated_to)
                .bind(approval.escalated_at.map(Timestamp::unix_millis))
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            async fn write_task(tx: &mut <$db as sqlx::Database>::Connection, task: &Task, insert: bool) -> Result<u64> {
                let sql = if insert {
                    "INSERT INTO tasks (nhi_id, purpose, scope, ttl_seconds, state, requested_by, \
                     created_at, approval_id, activated_at, expires_at, ended_at, credential_id, \
                     callback_url, id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                } else {
                    "UPDATE tasks SET nhi_id = $1, purpose = $2, scope = $3, ttl_seconds = $4, \
                     state = $5, requested_by = $6, created_at = $7, approval_id = $8, \
                     activated_at = $9, expires_at = $10, ended_at = $11, credential_id = $12, \
                     callback_url = $13 WHERE id = $14"
                };
                Ok(sqlx::query(sql)
                    .bind(&task.nhi_id)
                    .bind(&task.purpose)
                    .bind(to_json(&task.scope))
                    .bind(i64::from(task.ttl_seconds))
                    .bind(task.state.as_str())
                    .bind(&task.requested_by)
                    .bind(task.created_at.unix_millis())
                    .bind(&task.approval_id)
                    .bind(task.activated_at.map(Timestamp::unix_millis))
                    .bind(task.expires_at.map(Timestamp::unix_millis))
                    .bind(task.ended_at.map(Timestamp::unix_millis))
                    .bind(&task.credential_id)
                    .bind(&task.callback_url)
                    .bind(&task.id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected())
            }

            /// Queues deliveries in the caller's transaction: a change and the notifications
            /// that announce it are written together, or not at all.
            async fn insert_deliveries(
                tx: &mut <$db as sqlx::Database>::Connection,
                deliveries: &[NotificationDelivery],
            ) -> Result<()> {
                for d in deliveries {
                    sqlx::query(
                        "INSERT INTO notification_deliveries (id, channel_id, callback_url, subject, \
                         payload, state, attempts, next_attempt_at, last_attempt_at, last_error, \
                         created_at, delivered_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    )
                    .bind(&d.id)
                    .bind(&d.channel_id)
                    .bind(&d.callback_url)
                    .bind(&d.subject)
                    .bind(&d.payload)
                    .bind(d.state.as_str())
                    .bind(i64::from(d.attempts))
                    .bind(d.next_attempt_at.unix_millis())
                    .bind(d.last_attempt_at.map(Timestamp::unix_millis))
                    .bind(&d.last_error)
                    .bind(d.created_at.unix_millis())
                    .bind(d.delivered_at.map(Timestamp::unix_millis))
                    .execute(&mut *tx)
                    .await?;
                }
                Ok(())
            }

            fn event_from_row(row: &$row) -> Result<StoredEvent> {
                let kind: String = row.try_get("kind")?;
                let actor: String = row.try_get("actor")?;
                let details: String = row.try_get("details")?;
                Ok(StoredEvent {
                    seq: row.try_get("seq")?,
                    event: DomainEvent {
                        id: row.try_get("id")?,
                        kind: parse_enum(EventKind::parse, kind)?,
                        actor: parse_enum(Actor::parse, actor)?,
                        subject: row.try_get("subject")?,
                        occurred_at: ts(row.try_get("occurred_at")?)?,
                        details: json(&details)?,
                    },
                })
            }

            /// The highest `seq` ever given to an event; 0 on an empty trail.
            async fn last_seq(&self) -> Result<i64> {
                let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS last FROM events")
                    .fetch_one(self.reader())
                    .await?;
                Ok(row.try_get("last")?)
            }

            /// One `list_events` query; `era` confines it to one era of the subject index.
            async fn events_matching(
                &self,
                query: &EventQuery,
                era: Option<i64>,
                limit: u32,
            ) -> Result<Vec<StoredEvent>> {
                let mut q = QueryBuilder::<$db>::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > "));
                q.push_bind(query.after_seq);
                if let Some(era) = era {
                    q.push(" AND ").push(SUBJECT_ERA).push(" = ").push_bind(era);
                }
                if let Some(subject) = &query.subject {
                    q.push(" AND subject = ").push_bind(subject.clone());
                }
                if let Some(kind) = &query.kind {
                    q.push(" AND kind = ").push_bind(kind.clone());
                }
                if !query.kinds.is_empty() {
                    q.push(" AND kind IN (");
                    let mut kinds = q.separated(", ");
                    for kind in &query.kinds {
                        kinds.push_bind(kind.clone());
                    }
                    q.push(")");
                }
                if let Some(actor) = &query.actor {
                    q.push(" AND actor = ").push_bind(actor.clone());
                }
                if let Some(nhi) = &query.nhi {
                    q.push(" AND (subject = ")
                        .push_bind(format!("nhi:{nhi}"))
                        .push(" OR details LIKE ")
                        .push_bind(detail_pattern("nhi", nhi))
                        .push(" ESCAPE '\\')");
                }
                if let Some(fingerprint) = &query.fingerprint {
                    q.push(" AND details LIKE ")
                        .push_bind(detail_pattern("fingerprint", fingerprint))
                        .push(" ESCAPE '\\'");
                }
                if let Some(since) = query.since {
                    q.push(" AND occurred_at >= ").push_bind(since.unix_millis());
                }
                if let Some(until) = query.until {
                    q.push(" AND occurred_at < ").push_bind(until.unix_millis());
                }
                let order = if query.newest_first { " ORDER BY seq DESC LIMIT " } else { " ORDER BY seq LIMIT " };
                q.push(order).push_bind(i64::from(limit));
                let rows = q.build().fetch_all(self.reader()).await?;
                rows.iter().map(Self::event_from_row).collect()
            }

            /// Appends events and announces them, in multi-row inserts: one statement per few
            /// hundred events, not one per event.
            async fn insert_events(
                tx: &mut <$db as sqlx::Database>::Connection,
                events: &[DomainEvent],
            ) -> Result<()> {
                for chunk in events.chunks(BINDS_PER_INSERT / 6) {
                    let mut q = QueryBuilder::<$db>::new(
                        "INSERT INTO events (id, kind, actor, subject, occurred_at, details) ",
                    );
                    q.push_values(chunk, |mut row, event| {
                        row.push_bind(event.id.clone())
                            .push_bind(event.kind.as_str())
                            .push_bind(event.actor.to_string())
                            .push_bind(event.subject.clone())
                            .push_bind(event.occurred_at.unix_millis())
                            .push_bind(to_json(&event.details));
                    });
                    q.build().execute(&mut *tx).await?;
                }
                Self::announce(&mut *tx, events).await
            }

            async fn append_event(
                tx: &mut <$db as sqlx::Database>::Connection,
                event: &DomainEvent,
            ) -> Result<()> {
                Self::insert_events(tx, std::slice::from_ref(event)).await
            }

            async fn insert_operator(
                tx: &mut <$db as sqlx::Database>::Connection,
                operator: &Operator,
                token_hash: &[u8],
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO operators (id, name, roles, token_hash, token_hint, created_at, \
                     created_by, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&operator.id)
                .bind(&operator.name)
                .bind(roles_column(&operator.roles))
                .bind(token_hash)
                .bind(&operator.token_hint)
                .bind(operator.created_at.unix_millis())
                .bind(&operator.created_by)
                .bind(operator.revoked_at.map(Timestamp::unix_millis))
                .execute(&mut *tx)
                .await?;
                for team in &operator.teams {
                    sqlx::query("INSERT INTO operator_teams (operator_id, team_id) VALUES ($1, $2)")
                        .bind(&operator.id)
                        .bind(team)
                        .execute(&mut *tx)
                        .await?;
                }
                Ok(())
            }

            async fn operator_teams(&self, operator_id: &str) -> Result<Vec<String>> {
                let rows = sqlx::query(
                    "SELECT team_id FROM operator_teams WHERE operator_id = $1 ORDER BY team_id",
                )
                .bind(operator_id)
                .fetch_all(self.reader())
                .await?;
                rows.iter().map(|r| r.try_get("team_id").map_err(StoreError::from)).collect()
            }

            /// Binds the sixteen NHI columns that registration and update both write, as $1-$16.
            fn bind_nhi<'q>(
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>,
                nhi: &'q Nhi,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
                query
                    .bind(&nhi.name)
                    .bind(nhi.kind.as_str())
                    .bind(&nhi.platform)
                    .bind(&nhi.environment)
                    .bind(nhi.status.as_str())
                    .bind(&nhi.owner.team_id)
                    .bind(&nhi.owner.application)
                    .bind(&nhi.owner.contact)
                    .bind(&nhi.purpose)
                    .bind(to_json(&nhi.scope_ceiling))
                    .bind(to_json(&nhi.tags))
                    .bind(to_json(&nhi.external_ids))
                    .bind(nhi.updated_at.unix_millis())
                    .bind(nhi.expires_at.map(Timestamp::unix_millis))
                    .bind(nhi.last_used_at.map(Timestamp::unix_millis))
                    .bind(nhi.version)
            }

            /// The filters of a listing, except the name search, and the page's cursor.
            fn push_filters(q: &mut QueryBuilder<$db>, filter: &NhiFilter, after: Option<&String>) {
                if let Some(status) = filter.status {
                    q.push(" AND status = ").push_bind(status.as_str());
                }
                if let Some(kind) = filter.kind {
                    q.push(" AND kind = ").push_bind(kind.as_str());
                }
                if let Some(platform) = &filter.platform {
                    q.push(" AND platform = ").push_bind(platform.clone());
                }
                if let Some(environment) = &filter.environment {
                    q.push(" AND environment = ").push_bind(environment.clone());
                }
                if let Some(teams) = &filter.owner_teams {
                    q.push(" AND owner_team_id IN (");
                    let mut list = q.separated(", ");
                    for team in teams {
                        list.push_bind(team.clone());
                    }
                    q.push(")");
                }
                for (key, value) in &filter.tags {
                    q.push(" AND EXISTS (SELECT 1 FROM nhi_tags t WHERE t.nhi_id = nhis.id AND t.key = ")
                        .push_bind(key.clone());
                    if let Some(value) = value {
                        q.push(" AND t.value = ").push_bind(value.clone());
                    }
                    q.push(")");
                }
                if let Some(before) = filter.expires_before {
                    q.push(" AND expires_at < ").push_bind(before.unix_millis());
                }
                if let Some(since) = filter.unused_since {
                    q.push(" AND (last_used_at IS NULL OR last_used_at < ")
                        .push_bind(since.unix_millis())
                        .push(")");
                }
                if let Some(after) = after {
                    q.push(" AND id > ").push_bind(after.clone());
                }
            }

            async fn fetch_ids(mut q: QueryBuilder<$db>, pool: &sqlx::Pool<$db>) -> Result<Vec<String>> {
                let rows = q.build().fetch_all(pool).await?;
                rows.iter().map(|r| r.try_get("id").map_err(StoreError::from)).collect()
            }

            async fn write_tags(tx: &mut <$db as sqlx::Database>::Connection, nhi: &Nhi) -> Result<()> {
                sqlx::query("DELETE FROM nhi_tags WHERE nhi_id = $1")
                    .bind(&nhi.id)
                    .execute(&mut *tx)
                    .await?;
                for (key, value) in &nhi.tags {
                    sqlx::query("INSERT INTO nhi_tags (nhi_id, key, value) VALUES ($1, $2, $3)")
                        .bind(&nhi.id)
                        .bind(key)
                        .bind(value)
                        .execute(&mut *tx)
                        .await?;
                }
                // The external ids' index rows live and die with the NHI's row, like its tags.
                sqlx::query("DELETE FROM nhi_external_ids WHERE nhi_id = $1")
                    .bind(&nhi.id)
                    .execute(&mut *tx)
                    .await?;
                for (platform, external_id) in &nhi.external_ids {
                    sqlx::query(
                        "INSERT INTO nhi_external_ids (platform, external_id, nhi_id) VALUES ($1, $2, $3)",
                    )
                    .bind(platform)
                    .bind(external_id)
                    .bind(&nhi.id)
                    .execute(&mut *tx)
                    .await?;
                }
                Ok(())
            }

            fn observed_from_row(row: &$row) -> Result<ObservedIdentity> {
                Ok(ObservedIdentity {
                    platform: row.try_get("platform")?,
                    principal: row.try_get("principal")?,
                    display_name: row.try_get("display_name")?,
                    class: parse_enum(IdentityClass::parse, row.try_get("class")?)?,
                    class_reason: row.try_get("class_reason")?,
                    nhi_id: row.try_get("nhi_id")?,
                    first_seen: opt_ts(row.try_get("first_seen")?)?,
                    last_seen: opt_ts(row.try_get("last_seen")?)?,
                    events: row.try_get("events")?,
                    evidence: json(&row.try_get::<String, _>("evidence")?)?,
                    first_imported_at: ts(row.try_get("first_imported_at")?)?,
                    updated_at: ts(row.try_get("updated_at")?)?,
                })
            }

            /// Reads logical agents' members and attaches them, keeping `agents`' order.
            async fn with_members<'e, E>(executor: E, mut agents: Vec<LogicalAgent>) -> Result<Vec<LogicalAgent>>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                if agents.is_empty() {
                    return Ok(agents);
                }
                let mut q = QueryBuilder::<$db>::new(
                    "SELECT agent_id, nhi_id, linked_at, linked_by FROM logical_agent_members WHERE agent_id IN (",
                );
                let mut list = q.separated(", ");
                for agent in &agents {
                    list.push_bind(agent.id.clone());
                }
                q.push(") ORDER BY linked_at, nhi_id");
                let rows = q.build().fetch_all(executor).await?;
                for row in &rows {
                    let agent_id: String = row.try_get("agent_id")?;
                    if let Some(agent) = agents.iter_mut().find(|a| a.id == agent_id) {
                        agent.members.push(Member {
                            nhi_id: row.try_get("nhi_id")?,
                            linked_at: ts(row.try_get("linked_at")?)?,
                            linked_by: row.try_get("linked_by")?,
                        });
                    }
                }
                Ok(agents)
            }

            async fn insert_member(tx: &mut <$db as sqlx::Database>::Connection, agent_id: &str, member: &Member) -> Result<()> {
                sqlx::query(
                    "INSERT INTO logical_agent_members (nhi_id, agent_id, linked_at, linked_by) VALUES ($1, $2, $3, $4)",
                )
                .bind(&member.nhi_id)
                .bind(agent_id)
                .bind(member.linked_at.unix_millis())
                .bind(&member.linked_by)
                .execute(&mut *tx)
                .await?;
                Ok(())
            }

            fn logical_agent_from_row(row: &$row) -> Result<LogicalAgent> {
                Ok(LogicalAgent {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    team_id: row.try_get("team_id")?,
                    description: row.try_get("description")?,
                    created_at: ts(row.try_get("created_at")?)?,
                    created_by: row.try_get("created_by")?,
                    members: Vec::new(),
                })
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $name
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(self.reader()).await?;
                Ok(())
            }

            async fn meta_get(&self, key: &str) -> Result<Option<String>> {
                let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
                    .bind(key)
                    .fetch_optional(self.reader())
                    .await?;
                Ok(row.map(|r| r.try_get("value")).transpose()?)
            }

            async fn meta_init(&self, key: &str, value: &str) -> Result<String> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
                let stored = row.try_get("value")?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(stored)
            }

            async fn bootstrap_admin(
                &self,
                admin: &Operator,
                token_hash: &[u8],
                event: &DomainEvent,
            ) -> Result<bool> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let claimed = sqlx::query(
                    "INSERT INTO meta (key, value) VALUES ('bootstrapped_at', $1) \
                     ON CONFLICT (key) DO NOTHING",
                )
                .bind(admin.created_at.to_rfc3339())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if claimed == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                Self::insert_operator(&mut *tx, admin, token_hash).await?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(true)
            }

            async fn create_team(&self, team: &Team, event: &DomainEvent) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                sqlx::query(
                    "INSERT INTO teams (id, name, contact, created_at, fallback_team_id, \
                     escalate_after_seconds) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&team.id)
                .bind(&team.name)
                .bind(&team.contact)
                .bind(team.created_at.unix_millis())
                .bind(&team.fallback_team_id)
                .bind(team.escalate_after_seconds.map(i64::from))
                .execute(&mut *tx)
                .await?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn update_team(&self, team: &Team, event: &DomainEvent) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let updated = sqlx::query(
                    "UPDATE teams SET fallback_team_id = $1, escalate_after_seconds = $2 WHERE id = $3",
                )
                .bind(&team.fallback_team_id)
                .bind(team.escalate_after_seconds.map(i64::from))
                .bind(&team.id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    tx.rollback().await?;
                    return Err(StoreError::NotFound);
                }
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn get_team(&self, id_or_name: &str) -> Result<Option<Team>> {
                let sql = format!(
                    "SELECT {TEAM_COLUMNS} FROM teams WHERE id = $1 \
                     UNION ALL SELECT {TEAM_COLUMNS} FROM teams WHERE name = $1 AND id <> $1"
                );
                let row = sqlx::query(AssertSqlSafe(sql.clone())).bind(id_or_name).fetch_optional(self.reader()).await?;
                row.as_ref().map(Self::team_from_row).transpose()
            }

            async fn list_teams(&self) -> Result<Vec<Team>> {
                let sql = format!("SELECT {TEAM_COLUMNS} FROM teams ORDER BY name");
                let rows = sqlx::query(AssertSqlSafe(sql.clone())).fetch_all(self.reader()).await?;
                rows.iter().map(Self::team_from_row).collect()
            }

            async fn create_operator(
                &self,
                operator: &Operator,
                token_hash: &[u8],
                event: &DomainEvent,
            ) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                Self::insert_operator(&mut *tx, operator, token_hash).await?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn get_operator(&self, id: &str) -> Result<Option<Operator>> {
                let sql = format!("SELECT {OPERATOR_COLUMNS} FROM operators WHERE id = $1");
                let Some(row) = sqlx::query(AssertSqlSafe(sql.clone())).bind(id).fetch_optional(self.reader()).await? else {
                    return Ok(None);
                };
                let teams = self.operator_teams(id).await?;
                Ok(Some(Self::operator_from_row(&row, teams)?.0))
            }

            async fn find_operator_by_token(&self, token_hash: &[u8]) -> Result<Option<(Operator, Vec<u8>)>> {
                let sql = format!("SELECT {OPERATOR_COLUMNS} FROM operators WHERE token_hash = $1");
                let Some(row) = sqlx::query(AssertSqlSafe(sql.clone())).bind(token_hash).fetch_optional(self.reader()).await? else {
                    return Ok(None);
                };
                let id: String = row.try_get("id")?;
                let teams = self.operator_teams(&id).await?;
                Ok(Some(Self::operator_from_row(&row, teams)?))
            }

            async fn list_operators(&self, team_id: Option<&str>) -> Result<Vec<Operator>> {
                let rows = match team_id {
                    Some(team) => {
                        let sql = format!(
                            "SELECT {OPERATOR_COLUMNS} FROM operators WHERE id IN \
                             (SELECT operator_id FROM operator_teams WHERE team_id = $1) ORDER BY id"
                        );
                        sqlx::query(AssertSqlSafe(sql.clone())).bind(team).fetch_all(self.reader()).await?
                    }
                    None => {
                        let sql = format!("SELECT {OPERATOR_COLUMNS} FROM operators ORDER BY id");
                        sqlx::query(AssertSqlSafe(sql.clone())).fetch_all(self.reader()).await?
                    }
                };
                let memberships = sqlx::query("SELECT operator_id, team_id FROM operator_teams ORDER BY team_id")
                    .fetch_all(self.reader())
                    .await?;
                let mut teams_of = std::collections::HashMap::<String, Vec<String>>::new();
                for m in &memberships {
                    teams_of.entry(m.try_get("operator_id")?).or_default().push(m.try_get("team_id")?);
                }
                rows.iter()
                    .map(|row| {
                        let id: String = row.try_get("id")?;
                        let teams = teams_of.remove(&id).unwrap_or_default();
                        Ok(Self::operator_from_row(row, teams)?.0)
                    })
                    .collect()
            }

            async fn revoke_operator(&self, id: &str, at: Timestamp, event: &DomainEvent) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let lock: &'static str = $lock_operators;
                if !lock.is_empty() {
                    sqlx::query(lock).execute(&mut *tx).await?;
                }
                let row = sqlx::query("SELECT roles, revoked_at FROM operators WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                let revoked_at: Option<i64> = row.try_get("revoked_at")?;
                if revoked_at.is_some() {
                    tx.rollback().await?;
                    return Ok(());
                }
                let roles: String = row.try_get("roles")?;
                if parse_roles(&roles)?.contains(&Role::Admin) {
                    let others: i64 = sqlx::query(
                        "SELECT COUNT(*) AS n FROM operators \
                         WHERE revoked_at IS NULL AND roles LIKE '%,admin,%' AND id <> $1",
                    )
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
                    if others == 0 {
                        tx.rollback().await?;
                        return Err(StoreError::LastAdmin);
                    }
                }
                sqlx::query("UPDATE operators SET revoked_at = $1 WHERE id = $2")
                    .bind(at.unix_millis())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn create_ui_session(&self, session: &UiSession, event: &DomainEvent) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1 OR ended_at IS NOT NULL")
                    .bind(session.created_at.unix_millis())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO ui_sessions (id_hash, operator_id, csrf_token, created_at, \
                     expires_at, ended_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&session.id_hash)
                .bind(&session.operator_id)
                .bind(&session.csrf_token)
                .bind(session.created_at.unix_millis())
                .bind(session.expires_at.unix_millis())
                .bind(session.ended_at.map(Timestamp::unix_millis))
                .execute(&mut *tx)
                .await?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn get_ui_session(&self, id_hash: &[u8]) -> Result<Option<UiSession>> {
                let row = sqlx::query(
                    "SELECT id_hash, operator_id, csrf_token, created_at, expires_at, ended_at \
                     FROM ui_sessions WHERE id_hash = $1",
                )
                .bind(id_hash)
                .fetch_optional(self.reader())
                .await?;
                row.map(|row| {
                    Ok(UiSession {
                        id_hash: row.try_get("id_hash")?,
                        operator_id: row.try_get("operator_id")?,
                        csrf_token: row.try_get("csrf_token")?,
                        created_at: ts(row.try_get("created_at")?)?,
                        expires_at: ts(row.try_get("expires_at")?)?,
                        ended_at: opt_ts(row.try_get("ended_at")?)?,
                    })
                })
                .transpose()
            }

            async fn end_ui_session(&self, id_hash: &[u8], at: Timestamp, event: &DomainEvent) -> Result<bool> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let ended = sqlx::query(
                    "UPDATE ui_sessions SET ended_at = $1 WHERE id_hash = $2 AND ended_at IS NULL",
                )
                .bind(at.unix_millis())
                .bind(id_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if ended == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(true)
            }

            async fn create_nhis(&self, nhis: &[(Nhi, DomainEvent)]) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                // Multi-row inserts, a few hundred rows a statement: an import registers NHIs a
                // thousand at a time, and one statement per row, tag and id was most of its cost.
                for chunk in nhis.chunks(BINDS_PER_INSERT / 18) {
                    let mut q = QueryBuilder::<$db>::new(
                        "INSERT INTO nhis (name, kind, platform, environment, status, owner_team_id, \
                         owner_application, owner_contact, purpose, scope_ceiling, tags, external_ids, \
                         updated_at, expires_at, last_used_at, version, id, created_at) ",
                    );
                    q.push_values(chunk, |mut row, (nhi, _)| {
                        row.push_bind(nhi.name.clone())
                            .push_bind(nhi.kind.as_str())
                            .push_bind(nhi.platform.clone())
                            .push_bind(nhi.environment.clone())
                            .push_bind(nhi.status.as_str())
                            .push_bind(nhi.owner.team_id.clone())
                            .push_bind(nhi.owner.application.clone())
                            .push_bind(nhi.owner.contact.clone())
                            .push_bind(nhi.purpose.clone())
                            .push_bind(to_json(&nhi.scope_ceiling))
                            .push_bind(to_json(&nhi.tags))
                            .push_bind(to_json(&nhi.external_ids))
                            .push_bind(nhi.updated_at.unix_millis())
                            .push_bind(nhi.expires_at.map(Timestamp::unix_millis))
                            .push_bind(nhi.last_used_at.map(Timestamp::unix_millis))
                            .push_bind(nhi.version)
                            .push_bind(nhi.id.clone())
                            .push_bind(nhi.created_at.unix_millis());
                    });
                    q.build().execute(&mut *tx).await?;
                }
                // A new NHI has no index rows yet, so unlike an update nothing is deleted first.
                let tags: Vec<(&str, &str, &str)> = nhis
                    .iter()
                    .flat_map(|(nhi, _)| nhi.tags.iter().map(|(k, v)| (nhi.id.as_str(), k.as_str(), v.as_str())))
                    .collect();
                for chunk in tags.chunks(BINDS_PER_INSERT / 3) {
                    let mut q = QueryBuilder::<$db>::new("INSERT INTO nhi_tags (nhi_id, key, value) ");
                    q.push_values(chunk, |mut row, (id, key, value)| {
                        row.push_bind(id.to_string()).push_bind(key.to_string()).push_bind(value.to_string());
                    });
                    q.build().execute(&mut *tx).await?;
                }
                let external_ids: Vec<(&str, &str, &str)> = nhis
                    .iter()
                    .flat_map(|(nhi, _)| {
                        nhi.external_ids.iter().map(|(p, e)| (p.as_str(), e.as_str(), nhi.id.as_str()))
                    })
                    .collect();
                for chunk in external_ids.chunks(BINDS_PER_INSERT / 3) {
                    let mut q = QueryBuilder::<$db>::new(
                        "INSERT INTO nhi_external_ids (platform, external_id, nhi_id) ",
                    );
                    q.push_values(chunk, |mut row, (platform, external_id, id)| {
                        row.push_bind(platform.to_string())
                            .push_bind(external_id.to_string())
                            .push_bind(id.to_string());
                    });
                    q.build().execute(&mut *tx).await?;
                }
                let events: Vec<DomainEvent> = nhis.iter().map(|(_, event)| event.clone()).collect();
                Self::insert_events(&mut *tx, &events).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn get_nhi(&self, id: &str) -> Result<Option<Nhi>> {
                let sql = format!("SELECT {NHI_COLUMNS} FROM nhis WHERE id = $1");
                let row = sqlx::query(AssertSqlSafe(sql.clone())).bind(id).fetch_optional(self.reader()).await?;
                row.as_ref().map(Self::nhi_from_row).transpose()
            }

            async fn update_nhi(&self, nhi: &Nhi, expected_version: i64, event: &DomainEvent) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let update = sqlx::query(
                    "UPDATE nhis SET name = $1, kind = $2, platform = $3, environment = $4, \
                     status = $5, owner_team_id = $6, owner_application = $7, owner_contact = $8, \
                     purpose = $9, scope_ceiling = $10, tags = $11, external_ids = $12, \
                     updated_at = $13, expires_at = $14, last_used_at = $15, version = $16 \
                     WHERE id = $17 AND version = $18",
                );
                let updated = Self::bind_nhi(update, nhi)
                    .bind(&nhi.id)
                    .bind(expected_version)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    let current = sqlx::query("SELECT version FROM nhis WHERE id = $1")
                        .bind(&nhi.id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    tx.rollback().await?;
                    return match current {
                        None => Err(StoreError::NotFound),
                        Some(row) => Err(StoreError::VersionMismatch { current: row.try_get("version")? }),
                    };
                }
                Self::write_tags(&mut *tx, nhi).await?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn list_nhis(&self, filter: &NhiFilter, page: &Page) -> Result<Vec<Nhi>> {
                if filter_holds_nul(filter) {
                    return Err(StoreError::InvalidText);
                }
                if filter.owner_teams.as_ref().is_some_and(Vec::is_empty) {
                    return Ok(Vec::new());
                }
                let limit = i64::from(page.limit);
                let mut ids = Vec::new();
                if let Some(needle) = &filter.name_contains {
                    // First the term within the first rows that pass the other filters, in id
                    // order: a full page there is exactly the answer, found by a bounded scan
                    // whatever the planner guesses about how the term and the filters correlate.
                    let mut q = QueryBuilder::<$db>::new("SELECT id FROM (SELECT id, name FROM nhis WHERE 1 = 1");
                    Self::push_filters(&mut q, filter, page.after.as_ref());
                    q.push(" ORDER BY id LIMIT ").push_bind(SEARCH_WINDOW);
                    q.push(") w WHERE LOWER(name) LIKE ")
                        .push_bind(like_pattern(needle))
                        .push(" ESCAPE '\\' ORDER BY id LIMIT ")
                        .push_bind(limit);
                    ids = Self::fetch_ids(q, self.reader()).await?;
                }
                if let Some(needle) = &filter.name_contains
                    && (ids.len() as i64) < limit
                    && let Some(matches) = self.indexed_name_matches(needle, filter, page).await?
                {
                    ids = matches;
                } else if filter.name_contains.is_none() || (ids.len() as i64) < limit {
                    let mut q = QueryBuilder::<$db>::new("SELECT id FROM nhis WHERE 1 = 1");
                    Self::push_filters(&mut q, filter, page.after.as_ref());
                    if let Some(needle) = &filter.name_contains {
                        q.push(" AND LOWER(name) LIKE ").push_bind(like_pattern(needle)).push(" ESCAPE '\\'");
                    }
                    q.push(" ORDER BY id LIMIT ").push_bind(limit);
                    ids = Self::fetch_ids(q, self.reader()).await?;
                }
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                // Whole rows only for the page: the queries above can then be answered from
                // indexes, without reading and sorting every matching row.
                let mut q = QueryBuilder::<$db>::new(format!("SELECT {NHI_COLUMNS} FROM nhis WHERE id IN ("));
                let mut list = q.separated(", ");
                for id in ids {
                    list.push_bind(id);
                }
                q.push(") ORDER BY id");
                let rows = q.build().fetch_all(self.reader()).await?;
                rows.iter().map(Self::nhi_from_row).collect()
            }

            async fn registered_names(&self, names: &[(String, String)]) -> Result<Vec<(String, String)>> {
                // By platform, so that the (platform, name) unique index answers each query;
                // a name alone is not indexed for equality.
                let mut by_platform: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
                for (platform, name) in names {
                    by_platform.entry(platform.as_str()).or_default().push(name.as_str());
                }
                let mut found = Vec::new();
                for (platform, names) in by_platform {
                    for chunk in names.chunks(500) {
                        let mut q = QueryBuilder::<$db>::new("SELECT name FROM nhis WHERE platform = ");
                        q.push_bind(platform.to_owned()).push(" AND name IN (");
                        let mut list = q.separated(", ");
                        for name in chunk {
                            list.push_bind((*name).to_owned());
                        }
                        q.push(")");
                        for row in q.build().fetch_all(self.reader()).await? {
                            found.push((platform.to_owned(), row.try_get("name")?));
                        }
                    }
                }
                Ok(found)
            }

            async fn find_nhi_by_external_id(&self, platform: &str, external_id: &str) -> Result<Option<Nhi>> {
                let sql = format!(
                    "SELECT {NHI_COLUMNS} FROM nhis WHERE id = (SELECT x.nhi_id FROM nhi_external_ids x \
                     JOIN nhis n ON n.id = x.nhi_id WHERE x.platform = $1 AND x.external_id = $2 \
                     ORDER BY n.created_at, n.id LIMIT 1)"
                );
                let row = sqlx::query(AssertSqlSafe(sql))
                    .bind(platform)
                    .bind(external_id)
                    .fetch_optional(self.reader())
                    .await?;
                row.as_ref().map(Self::nhi_from_row).transpose()
            }

            async fn record_observed(
                &self,
                identities: &[ObservedIdentity],
                event: &DomainEvent,
            ) -> Result<Vec<ObservedIdentity>> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let mut stored = Vec::with_capacity(identities.len());
                for identity in identities {
                    let sql = format!("SELECT {OBSERVED_COLUMNS} FROM observed_identities WHERE platform = $1 AND principal = $2");
                    let existing = sqlx::query(AssertSqlSafe(sql))
                        .bind(&identity.platform)
                        .bind(&identity.principal)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let merged = match existing.as_ref().map(Self::observed_from_row).transpose()? {
                        Some(mut earlier) => {
                            earlier.merge(identity);
                            earlier
                        }
                        None => identity.clone(),
                    };
                    sqlx::query(
                        "INSERT INTO observed_identities (display_name, class, class_reason, nhi_id, \
                         first_seen, last_seen, events, evidence, first_imported_at, updated_at, \
                         platform, principal) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                         ON CONFLICT (platform, principal) DO UPDATE SET display_name = excluded.display_name, \
                         class = excluded.class, class_reason = excluded.class_reason, nhi_id = excluded.nhi_id, \
                         first_seen = excluded.first_seen, last_seen = excluded.last_seen, \
                         events = excluded.events, evidence = excluded.evidence, \
                         first_imported_at = excluded.first_imported_at, updated_at = excluded.updated_at",
                    )
                    .bind(&merged.display_name)
                    .bind(merged.class.as_str())
                    .bind(&merged.class_reason)
                    .bind(&merged.nhi_id)
                    .bind(merged.first_seen.map(Timestamp::unix_millis))
                    .bind(merged.last_seen.map(Timestamp::unix_millis))
                    .bind(merged.events)
                    .bind(to_json(&merged.evidence))
                    .bind(merged.first_imported_at.unix_millis())
                    .bind(merged.updated_at.unix_millis())
                    .bind(&merged.platform)
                    .bind(&merged.principal)
                    .execute(&mut *tx)
                    .await?;
                    stored.push(merged);
                }
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(stored)
            }

            async fn get_observed(&self, platform: &str, principal: &str) -> Result<Option<ObservedIdentity>> {
                let sql = format!("SELECT {OBSERVED_COLUMNS} FROM observed_identities WHERE platform = $1 AND principal = $2");
                let row = sqlx::query(AssertSqlSafe(sql))
                    .bind(platform)
                    .bind(principal)
                    .fetch_optional(self.reader())
                    .await?;
                row.as_ref().map(Self::observed_from_row).transpose()
            }

            async fn list_observed(&self, filter: &ObservedFilter, page: &Page) -> Result<Vec<ObservedIdentity>> {
                let mut q = QueryBuilder::<$db>::new(format!("SELECT {OBSERVED_COLUMNS} FROM observed_identities WHERE 1 = 1"));
                if let Some(platform) = &filter.platform {
                    q.push(" AND platform = ").push_bind(platform.clone());
                }
                if let Some(class) = filter.class {
                    q.push(" AND class = ").push_bind(class.as_str());
                }
                if filter.shadow_only {
                    q.push(" AND class = 'non_human' AND nhi_id IS NULL");
                }
                if let Some(nhi_id) = &filter.nhi_id {
                    q.push(" AND nhi_id = ").push_bind(nhi_id.clone());
                }
                // The cursor is `platform:principal`; platforms never hold a colon.
                if let Some((platform, principal)) = page.after.as_deref().and_then(|after| after.split_once(':')) {
                    q.push(" AND (platform > ")
                        .push_bind(platform.to_owned())
                        .push(" OR (platform = ")
                        .push_bind(platform.to_owned())
                        .push(" AND principal > ")
                        .push_bind(principal.to_owned())
                        .push("))");
                }
                q.push(" ORDER BY platform, principal LIMIT ").push_bind(i64::from(page.limit));
                let rows = q.build().fetch_all(self.reader()).await?;
                rows.iter().map(Self::observed_from_row).collect()
            }

            async fn create_logical_agent(&self, agent: &LogicalAgent, event: &DomainEvent) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                sqlx::query(
                    "INSERT INTO logical_agents (id, name, team_id, description, created_at, created_by) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&agent.id)
                .bind(&agent.name)
                .bind(&agent.team_id)
                .bind(&agent.description)
                .bind(agent.created_at.unix_millis())
                .bind(&agent.created_by)
                .execute(&mut *tx)
                .await?;
                for member in &agent.members {
                    Self::insert_member(&mut *tx, &agent.id, member).await?;
                }
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn get_logical_agent(&self, id: &str) -> Result<Option<LogicalAgent>> {
                let row = sqlx::query("SELECT id, name, team_id, description, created_at, created_by FROM logical_agents WHERE id = $1")
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?;
                let Some(agent) = row.as_ref().map(Self::logical_agent_from_row).transpose()? else {
                    return Ok(None);
                };
                Ok(Self::with_members(self.reader(), vec![agent]).await?.pop())
            }

            async fn list_logical_agents(&self, page: &Page) -> Result<Vec<LogicalAgent>> {
                let mut q = QueryBuilder::<$db>::new(
                    "SELECT id, name, team_id, description, created_at, created_by FROM logical_agents WHERE 1 = 1",
                );
                if let Some(after) = &page.after {
                    q.push(" AND id > ").push_bind(after.clone());
                }
                q.push(" ORDER BY id LIMIT ").push_bind(i64::from(page.limit));
                let rows = q.build().fetch_all(self.reader()).await?;
                let agents = rows.iter().map(Self::logical_agent_from_row).collect::<Result<Vec<_>>>()?;
                Self::with_members(self.reader(), agents).await
            }

            async fn link_logical_agent(&self, agent_id: &str, member: &Member, event: &DomainEvent) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                Self::insert_member(&mut *tx, agent_id, member).await?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn unlink_logical_agent(&self, agent_id: &str, nhi_id: &str, event: &DomainEvent) -> Result<bool> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let removed = sqlx::query("DELETE FROM logical_agent_members WHERE agent_id = $1 AND nhi_id = $2")
                    .bind(agent_id)
                    .bind(nhi_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if removed == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(true)
            }

            async fn linked_nhis(&self) -> Result<Vec<String>> {
                let rows = sqlx::query("SELECT nhi_id FROM logical_agent_members ORDER BY nhi_id")
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(|row| Ok(row.try_get("nhi_id")?)).collect()
            }

            async fn create_credential(&self, credential: &Credential, event: &DomainEvent) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                Self::insert_credential(&mut *tx, credential).await?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn get_credential(&self, id: &str) -> Result<Option<Credential>> {
                let sql = format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE id = $1");
                let row = sqlx::query(AssertSqlSafe(sql.clone())).bind(id).fetch_optional(self.reader()).await?;
                row.as_ref().map(Self::credential_from_row).transpose()
            }

            async fn find_credential_by_hash(&self, secret_hash: &[u8]) -> Result<Option<Credential>> {
                let sql = format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE secret_hash = $1");
                let row = sqlx::query(AssertSqlSafe(sql.clone())).bind(secret_hash).fetch_optional(self.reader()).await?;
                row.as_ref().map(Self::credential_from_row).transpose()
            }

            async fn list_credentials(&self, nhi_id: Option<&str>, page: &Page) -> Result<Vec<Credential>> {
                let mut q = QueryBuilder::<$db>::new(format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE 1 = 1"));
                if let Some(nhi_id) = nhi_id {
                    q.push(" AND nhi_id = ").push_bind(nhi_id.to_owned());
                }
                if let Some(after) = &page.after {
                    q.push(" AND id > ").push_bind(after.clone());
                }
                q.push(" ORDER BY id LIMIT ").push_bind(i64::from(page.limit));
                let rows = q.build().fetch_all(self.reader()).await?;
                rows.iter().map(Self::credential_from_row).collect()
            }

            async fn credential_chain(&self, id: &str) -> Result<Vec<Credential>> {
                let mut chain = Vec::new();
                let mut next = Some(id.to_owned());
                // Bounded by the depth cap in practice; the bound here guards a corrupt cycle.
                while let Some(id) = next.take() {
                    if chain.len() > 64 {
                        return Err(corrupt(format!("delegation chain of {id} does not end")));
                    }
                    match self.get_credential(&id).await? {
                        Some(credential) => {
                            next = credential.parent_id.clone();
                            chain.push(credential);
                        }
                        None if chain.is_empty() => return Ok(chain),
                        None => return Err(corrupt(format!("credential {id} is missing"))),
                    }
                }
                Ok(chain)
            }

            async fn revoke_credentials(
                &self,
                target: Revocation<'_>,
                at: Timestamp,
                event: &DomainEvent,
            ) -> Result<Vec<String>> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let (roots, key, exists) = match target {
                    Revocation::Credential(id) => ("id = $1", id, "SELECT 1 AS one FROM credentials WHERE id = $1"),
                    Revocation::Task(id) => ("task_id = $1", id, "SELECT 1 AS one FROM tasks WHERE id = $1"),
                    Revocation::Nhi(id) => ("nhi_id = $1 AND kind <> 'client_key'", id, "SELECT 1 AS one FROM nhis WHERE id = $1"),
                    Revocation::Everything(id) => ("nhi_id = $1", id, "SELECT 1 AS one FROM nhis WHERE id = $1"),
                };
                if sqlx::query(exists).bind(key).fetch_optional(&mut *tx).await?.is_none() {
                    tx.rollback().await?;
                    return Err(StoreError::NotFound);
                }
                let revoked = Self::revoke_cascade(&mut *tx, roots, key, at).await?;
                if revoked.is_empty() {
                    tx.rollback().await?;
                    return Ok(revoked);
                }
                let mut event = event.clone();
                event.details.insert("revoked".into(), revoked.join(","));
                Self::append_event(&mut *tx, &event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(revoked)
            }

            async fn rotate_credential(
                &self,
                old_id: &str,
                old_expires_at: Timestamp,
                new: &Credential,
                sealed_secret: Option<&[u8]>,
                event: &DomainEvent,
            ) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let updated = sqlx::query(
                    "UPDATE credentials SET expires_at = $1 WHERE id = $2 AND revoked_at IS NULL \
                     AND (expires_at IS NULL OR expires_at > $1) \
                     AND NOT EXISTS (SELECT 1 FROM key_rotations WHERE old_credential_id = $2)",
                )
                .bind(old_expires_at.unix_millis())
                .bind(old_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    tx.rollback().await?;
                    return Err(StoreError::Precondition("the credential is revoked, expired or already rotated"));
                }
                Self::insert_credential(&mut *tx, new).await?;
                sqlx::query(
                    "INSERT INTO key_rotations (old_credential_id, new_credential_id, nhi_id, \
                     rotated_by, sealed_secret, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(old_id)
                .bind(&new.id)
                .bind(&new.nhi_id)
                .bind(&new.created_by)
                .bind(sealed_secret)
                .bind(new.created_at.unix_millis())
                .execute(&mut *tx)
                .await?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn aging_static_keys(
                &self,
                issued_before: Timestamp,
                now: Timestamp,
                page: &Page,
            ) -> Result<Vec<Credential>> {
                let sql = format!(
                    "SELECT {CREDENTIAL_COLUMNS} FROM credentials c \
                     WHERE kind = 'static_key' AND revoked_at IS NULL AND created_at <= $1 \
                     AND (expires_at IS NULL OR expires_at > $2) AND id > $3 \
                     AND NOT EXISTS (SELECT 1 FROM key_rotations r WHERE r.old_credential_id = c.id) \
                     ORDER BY id LIMIT $4"
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(issued_before.unix_millis())
                    .bind(now.unix_millis())
                    .bind(page.after.clone().unwrap_or_default())
                    .bind(i64::from(page.limit))
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(Self::credential_from_row).collect()
            }

            async fn collect_rotated_secret(
                &self,
                old_id: &str,
                at: Timestamp,
                event: &DomainEvent,
            ) -> Result<Option<(String, Vec<u8>)>> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let waiting = sqlx::query(
                    "SELECT new_credential_id, sealed_secret FROM key_rotations \
                     WHERE old_credential_id = $1 AND sealed_secret IS NOT NULL",
                )
                .bind(old_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = waiting else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                let new_id: String = row.try_get("new_credential_id")?;
                let sealed: Vec<u8> = row.try_get("sealed_secret")?;
                let taken = sqlx::query(
                    "UPDATE key_rotations SET sealed_secret = NULL, collected_at = $1 \
                     WHERE old_credential_id = $2 AND sealed_secret IS NOT NULL",
                )
                .bind(at.unix_millis())
                .bind(old_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if taken == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(Some((new_id, sealed)))
            }

            async fn create_task(
                &self,
                task: &Task,
                approval: Option<&Approval>,
                credential: Option<&Credential>,
                events: &[DomainEvent],
                deliveries: &[NotificationDelivery],
            ) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                Self::write_task(&mut *tx, task, true).await?;
                if let Some(approval) = approval {
                    Self::insert_approval(&mut *tx, approval).await?;
                }
                if let Some(credential) = credential {
                    Self::insert_credential(&mut *tx, credential).await?;
                }
                for event in events {
                    Self::append_event(&mut *tx, event).await?;
                }
                Self::insert_deliveries(&mut *tx, deliveries).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn file_review(
                &self,
                approval: &Approval,
                events: &[DomainEvent],
                deliveries: &[NotificationDelivery],
            ) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                Self::insert_approval(&mut *tx, approval).await?;
                for event in events {
                    Self::append_event(&mut *tx, event).await?;
                }
                Self::insert_deliveries(&mut *tx, deliveries).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn get_task(&self, id: &str) -> Result<Option<Task>> {
                let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
                let row = sqlx::query(AssertSqlSafe(sql)).bind(id).fetch_optional(self.reader()).await?;
                row.as_ref().map(Self::task_from_row).transpose()
            }

            async fn list_tasks(&self, nhi_id: &str, limit: u32) -> Result<Vec<Task>> {
                let sql = format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE nhi_id = $1 ORDER BY id DESC LIMIT $2"
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(nhi_id)
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(Self::task_from_row).collect()
            }

            async fn mint_task_credential(
                &self,
                task_id: &str,
                credential: &Credential,
                event: &DomainEvent,
            ) -> Result<bool> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let claimed = sqlx::query(
                    "UPDATE tasks SET credential_id = $1 WHERE id = $2 AND credential_id IS NULL \
                     AND state = 'active'",
                )
                .bind(&credential.id)
                .bind(task_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if claimed == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                Self::insert_credential(&mut *tx, credential).await?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(true)
            }

            async fn expired_tasks(&self, now: Timestamp, limit: u32) -> Result<Vec<Task>> {
                let sql = format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE state = 'active' AND expires_at <= $1 \
                     ORDER BY expires_at, id LIMIT $2"
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(now.unix_millis())
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(Self::task_from_row).collect()
            }

            async fn close_expired_task(&self, task_id: &str, now: Timestamp, event: &DomainEvent) -> Result<bool> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let closed = sqlx::query(
                    "UPDATE tasks SET state = 'ended', ended_at = expires_at \
                     WHERE id = $1 AND state = 'active' AND expires_at <= $2",
                )
                .bind(task_id)
                .bind(now.unix_millis())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if closed == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(true)
            }

            async fn end_task(&self, task_id: &str, at: Timestamp, event: &DomainEvent) -> Result<Vec<String>> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let ended = sqlx::query(
                    "UPDATE tasks SET state = 'ended', ended_at = $1 \
                     WHERE id = $2 AND state IN ('active', 'pending_approval')",
                )
                .bind(at.unix_millis())
                .bind(task_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if ended == 1 {
                    // A pending request for an ended task has nothing left to decide.
                    sqlx::query(
                        "UPDATE approvals SET state = 'expired', decided_at = $1, reason = 'task ended' \
                         WHERE task_id = $2 AND state = 'pending'",
                    )
                    .bind(at.unix_millis())
                    .bind(task_id)
                    .execute(&mut *tx)
                    .await?;
                } else if sqlx::query("SELECT 1 AS one FROM tasks WHERE id = $1")
                    .bind(task_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_none()
                {
                    tx.rollback().await?;
                    return Err(StoreError::NotFound);
                }
                let revoked = Self::revoke_cascade(&mut *tx, "task_id = $1", task_id, at).await?;
                if ended == 0 && revoked.is_empty() {
                    tx.rollback().await?;
                    return Ok(revoked);
                }
                let mut event = event.clone();
                event.details.insert("revoked".into(), revoked.join(","));
                Self::append_event(&mut *tx, &event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(revoked)
            }

            async fn get_approval(&self, id: &str) -> Result<Option<Approval>> {
                let sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1");
                let row = sqlx::query(AssertSqlSafe(sql)).bind(id).fetch_optional(self.reader()).await?;
                row.as_ref().map(Self::approval_from_row).transpose()
            }

            async fn list_approvals(&self, filter: &ApprovalFilter, page: &Page) -> Result<Vec<Approval>> {
                if filter.owner_teams.as_ref().is_some_and(Vec::is_empty) {
                    return Ok(Vec::new());
                }
                let mut q = QueryBuilder::<$db>::new(format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE 1 = 1"));
                if let Some(state) = filter.state {
                    q.push(" AND state = ").push_bind(state.as_str());
                }
                if let Some(nhi_id) = &filter.nhi_id {
                    q.push(" AND nhi_id = ").push_bind(nhi_id.clone());
                }
                if let Some(kind) = filter.kind {
                    q.push(" AND kind = ").push_bind(kind.as_str());
                }
                if let Some(risk) = filter.risk {
                    q.push(" AND risk = ").push_bind(risk.as_str());
                }
                if let Some(deadline) = filter.pending_past {
                    q.push(" AND state = 'pending' AND expires_at <= ").push_bind(deadline.unix_millis());
                }
                if let Some(teams) = &filter.owner_teams {
                    q.push(" AND (nhi_id IN (SELECT id FROM nhis WHERE owner_team_id IN (");
                    let mut list = q.separated(", ");
                    for team in teams {
                        list.push_bind(team.clone());
                    }
                    q.push(")) OR escalated_to IN (");
                    let mut list = q.separated(", ");
                    for team in teams {
                        list.push_bind(team.clone());
                    }
                    q.push("))");
                }
                if let Some(after) = &page.after {
                    q.push(" AND id > ").push_bind(after.clone());
                }
                q.push(" ORDER BY id LIMIT ").push_bind(i64::from(page.limit));
                let rows = q.build().fetch_all(self.reader()).await?;
                rows.iter().map(Self::approval_from_row).collect()
            }

            async fn decide_approval(
                &self,
                approval: &Approval,
                task: Option<&Task>,
                event: &DomainEvent,
                deliveries: &[NotificationDelivery],
            ) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let decided = sqlx::query(
                    "UPDATE approvals SET state = $1, decided_at = $2, decided_by = $3, reason = $4, \
                     granted_scope = $5, granted_ttl_seconds = $6 WHERE id = $7 AND state = 'pending'",
                )
                .bind(approval.state.as_str())
                .bind(approval.decided_at.map(Timestamp::unix_millis))
                .bind(&approval.decided_by)
                .bind(&approval.reason)
                .bind(approval.granted_scope.as_ref().map(to_json))
                .bind(approval.granted_ttl_seconds.map(i64::from))
                .bind(&approval.id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if decided == 0 {
                    tx.rollback().await?;
                    return Err(StoreError::Precondition("the approval request is no longer pending"));
                }
                if let Some(task) = task {
                    Self::write_task(&mut *tx, task, false).await?;
                }
                Self::append_event(&mut *tx, event).await?;
                Self::insert_deliveries(&mut *tx, deliveries).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn record_vote(
                &self,
                approval_id: &str,
                vote: &Vote,
                event: &DomainEvent,
                deliveries: &[NotificationDelivery],
            ) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let pending = sqlx::query("SELECT 1 AS one FROM approvals WHERE id = $1 AND state = 'pending'")
                    .bind(approval_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
                if !pending {
                    tx.rollback().await?;
                    return Err(StoreError::Precondition("the approval request is no longer pending"));
                }
                let inserted = sqlx::query(
                    "INSERT INTO approval_votes (approval_id, reviewer, scope, ttl_seconds, reason, at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(approval_id)
                .bind(&vote.reviewer)
                .bind(to_json(&vote.scope))
                .bind(i64::from(vote.ttl_seconds))
                .bind(&vote.reason)
                .bind(vote.at.unix_millis())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    tx.rollback().await?;
                    return Err(StoreError::Conflict);
                }
                Self::append_event(&mut *tx, event).await?;
                Self::insert_deliveries(&mut *tx, deliveries).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn list_votes(
                &self,
                approval_ids: &[&str],
            ) -> Result<std::collections::BTreeMap<String, Vec<Vote>>> {
                let mut votes: std::collections::BTreeMap<String, Vec<Vote>> = Default::default();
                if approval_ids.is_empty() {
                    return Ok(votes);
                }
                let mut q = QueryBuilder::<$db>::new(
                    "SELECT approval_id, reviewer, scope, ttl_seconds, reason, at FROM approval_votes \
                     WHERE approval_id IN (",
                );
                let mut ids = q.separated(", ");
                for id in approval_ids {
                    ids.push_bind(id.to_string());
                }
                q.push(") ORDER BY approval_id, at, reviewer");
                for row in q.build().fetch_all(self.reader()).await? {
                    votes.entry(row.try_get("approval_id")?).or_default().push(Vote {
                        reviewer: row.try_get("reviewer")?,
                        scope: json(&row.try_get::<String, _>("scope")?)?,
                        ttl_seconds: small(row.try_get("ttl_seconds")?, "ttl")?,
                        reason: row.try_get("reason")?,
                        at: ts(row.try_get("at")?)?,
                    });
                }
                Ok(votes)
            }

            async fn expire_approval(
                &self,
                approval: &Approval,
                at: Timestamp,
                event: &DomainEvent,
                deliveries: &[NotificationDelivery],
            ) -> Result<bool> {
                let approval_id = &approval.id;
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let expired = sqlx::query(
                    "UPDATE approvals SET state = 'expired', decided_at = $1, reason = 'expired unanswered' \
                     WHERE id = $2 AND state = 'pending' AND expires_at <= $1",
                )
                .bind(at.unix_millis())
                .bind(approval_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if expired == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                sqlx::query(
                    "UPDATE tasks SET state = 'denied', ended_at = $1 \
                     WHERE approval_id = $2 AND state = 'pending_approval'",
                )
                .bind(at.unix_millis())
                .bind(approval_id)
                .execute(&mut *tx)
                .await?;
                Self::append_event(&mut *tx, event).await?;
                Self::insert_deliveries(&mut *tx, deliveries).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(true)
            }

            async fn due_escalations(
                &self,
                now: Timestamp,
                default_after_seconds: u32,
                limit: u32,
            ) -> Result<Vec<DueEscalation>> {
                let columns = APPROVAL_COLUMNS
                    .split(", ")
                    .map(|c| format!("a.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "SELECT {columns}, t.id AS from_team, t.fallback_team_id AS to_team \
                     FROM approvals a JOIN nhis n ON n.id = a.nhi_id \
                     JOIN teams t ON t.id = n.owner_team_id \
                     WHERE a.state = 'pending' AND a.escalated_at IS NULL AND a.expires_at > $1 \
                     AND t.fallback_team_id IS NOT NULL \
                     AND a.created_at + COALESCE(t.escalate_after_seconds, $2) * 1000 <= $1 \
                     ORDER BY a.created_at, a.id LIMIT $3"
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(now.unix_millis())
                    .bind(i64::from(default_after_seconds))
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok(DueEscalation {
                            approval: Self::approval_from_row(row)?,
                            from_team: row.try_get("from_team")?,
                            to_team: row.try_get("to_team")?,
                        })
                    })
                    .collect()
            }

            async fn escalate_approval(
                &self,
                approval_id: &str,
                to_team: &str,
                at: Timestamp,
                event: &DomainEvent,
                deliveries: &[NotificationDelivery],
            ) -> Result<bool> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let escalated = sqlx::query(
                    "UPDATE approvals SET escalated_to = $1, escalated_at = $2 \
                     WHERE id = $3 AND state = 'pending' AND escalated_at IS NULL AND expires_at > $2",
                )
                .bind(to_team)
                .bind(at.unix_millis())
                .bind(approval_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if escalated == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                Self::append_event(&mut *tx, event).await?;
                Self::insert_deliveries(&mut *tx, deliveries).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(true)
            }

            async fn create_rule(&self, rule: &StandingRule, event: &DomainEvent) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                sqlx::query(
                    "INSERT INTO approval_rules (id, nhi_id, scope, reason, created_by, created_at, \
                     expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&rule.id)
                .bind(&rule.nhi_id)
                .bind(to_json(&rule.scope))
                .bind(&rule.reason)
                .bind(&rule.created_by)
                .bind(rule.created_at.unix_millis())
                .bind(rule.expires_at.unix_millis())
                .bind(rule.revoked_at.map(Timestamp::unix_millis))
                .execute(&mut *tx)
                .await?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn get_rule(&self, id: &str) -> Result<Option<StandingRule>> {
                let sql = format!("SELECT {RULE_COLUMNS} FROM approval_rules WHERE id = $1");
                let row = sqlx::query(AssertSqlSafe(sql)).bind(id).fetch_optional(self.reader()).await?;
                row.as_ref().map(Self::rule_from_row).transpose()
            }

            async fn list_rules(&self, nhi_id: Option<&str>, active_at: Option<Timestamp>) -> Result<Vec<StandingRule>> {
                let mut q = QueryBuilder::<$db>::new(format!("SELECT {RULE_COLUMNS} FROM approval_rules WHERE 1 = 1"));
                if let Some(nhi_id) = nhi_id {
                    q.push(" AND nhi_id = ").push_bind(nhi_id.to_owned());
                }
                if let Some(at) = active_at {
                    q.push(" AND revoked_at IS NULL AND expires_at > ").push_bind(at.unix_millis());
                }
                q.push(" ORDER BY created_at DESC, id DESC LIMIT 1000");
                let rows = q.build().fetch_all(self.reader()).await?;
                rows.iter().map(Self::rule_from_row).collect()
            }

            async fn revoke_rule(&self, id: &str, at: Timestamp, event: &DomainEvent) -> Result<bool> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let revoked = sqlx::query(
                    "UPDATE approval_rules SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(at.unix_millis())
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if revoked == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(true)
            }

            async fn add_signing_key(
                &self,
                key: &SigningKeyRecord,
                retire: Option<Retirement<'_>>,
                event: &DomainEvent,
            ) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                if let Some(retire) = retire {
                    sqlx::query(
                        "UPDATE signing_keys SET retired_at = $1, publish_until = $2 \
                         WHERE kid = $3 AND retired_at IS NULL",
                    )
                    .bind(retire.at.unix_millis())
                    .bind(retire.publish_until.unix_millis())
                    .bind(retire.kid)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO signing_keys (kid, alg, public_jwk, sealed_key, created_at, retired_at, \
                     publish_until) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&key.kid)
                .bind(&key.alg)
                .bind(&key.public_jwk)
                .bind(&key.sealed_key)
                .bind(key.created_at.unix_millis())
                .bind(key.retired_at.map(Timestamp::unix_millis))
                .bind(key.publish_until.map(Timestamp::unix_millis))
                .execute(&mut *tx)
                .await?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
                let sql = format!("SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys ORDER BY created_at, kid");
                let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(self.reader()).await?;
                rows.iter().map(Self::signing_key_from_row).collect()
            }

            async fn use_client_assertion(
                &self,
                client_id: &str,
                jti: &str,
                expires_at: Timestamp,
                now: Timestamp,
            ) -> Result<bool> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                sqlx::query("DELETE FROM client_assertions WHERE expires_at < $1")
                    .bind(now.unix_millis())
                    .execute(&mut *tx)
                    .await?;
                let inserted = sqlx::query(
                    "INSERT INTO client_assertions (client_id, jti, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (client_id, jti) DO NOTHING",
                )
                .bind(client_id)
                .bind(jti)
                .bind(expires_at.unix_millis())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                slot.finish().await?;
                Ok(inserted == 1)
            }

            async fn list_events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>> {
                if query.subject.is_none() {
                    return self.events_matching(query, None, query.limit).await;
                }
                // By subject: era by era through the subject index, in `seq` order (or backwards
                // from the last era for the newest first).
                let mut found = Vec::new();
                let first_era = query.after_seq.max(0) >> SUBJECT_ERA_SHIFT;
                let last_era = self.last_seq().await? >> SUBJECT_ERA_SHIFT;
                let mut eras: Vec<i64> = (first_era..=last_era).collect();
                if query.newest_first {
                    eras.reverse();
                }
                for era in eras {
                    if found.len() >= query.limit as usize {
                        break;
                    }
                    let wanted = query.limit - found.len() as u32;
                    found.extend(self.events_matching(query, Some(era), wanted).await?);
                }
                Ok(found)
            }

            async fn append_events(&self, events: &[DomainEvent]) -> Result<()> {
                if events.is_empty() {
                    return Ok(());
                }
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                Self::insert_events(&mut *tx, events).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn audit_head(&self) -> Result<AuditHead> {
                let row = sqlx::query("SELECT value FROM meta WHERE key = 'audit_head'")
                    .fetch_optional(self.reader())
                    .await?;
                match row {
                    None => Ok(AuditHead::default()),
                    Some(row) => decode_head(&row.try_get::<String, _>("value")?),
                }
            }

            async fn unsealed_events(&self, after_seq: i64, limit: u32) -> Result<Vec<StoredEvent>> {
                let columns = JOINED_EVENT_COLUMNS;
                let sql = format!(
                    "SELECT {columns} FROM events e LEFT JOIN audit_leaves l ON l.event_seq = e.seq \
                     WHERE e.seq > $1 AND l.event_seq IS NULL ORDER BY e.seq LIMIT $2"
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(after_seq)
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(Self::event_from_row).collect()
            }

            async fn seal_audit(
                &self,
                expected_size: u64,
                leaves: &[(u64, i64)],
                nodes: &[(u32, u64, Vec<u8>)],
                head: &AuditHead,
            ) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let current = sqlx::query("SELECT value FROM meta WHERE key = 'audit_head'")
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|row| row.try_get::<String, _>("value"))
                    .transpose()?
                    .map(|text| decode_head(&text))
                    .transpose()?
                    .unwrap_or_default();
                if current.size != expected_size {
                    tx.rollback().await?;
                    return Err(StoreError::Precondition("the audit log moved on"));
                }
                // Multi-row inserts: the sealer shares the single writer with every action, so
                // it must cost it a few statements per round, not a few per event.
                for chunk in leaves.chunks(1_000) {
                    let rows = chunk
                        .iter()
                        .map(|(index, seq)| Ok((to_i64(*index)?, *seq)))
                        .collect::<Result<Vec<_>>>()?;
                    let mut q = QueryBuilder::<$db>::new("INSERT INTO audit_leaves (leaf_index, event_seq) ");
                    q.push_values(rows, |mut row, (index, seq)| {
                        row.push_bind(index).push_bind(seq);
                    });
                    q.build().execute(&mut *tx).await?;
                }
                for chunk in nodes.chunks(1_000) {
                    let rows = chunk
                        .iter()
                        .map(|(level, index, hash)| Ok((i64::from(*level), to_i64(*index)?, hash.clone())))
                        .collect::<Result<Vec<_>>>()?;
                    let mut q = QueryBuilder::<$db>::new("INSERT INTO audit_nodes (level, idx, hash) ");
                    q.push_values(rows, |mut row, (level, index, hash)| {
                        row.push_bind(level).push_bind(index).push_bind(hash);
                    });
                    q.build().execute(&mut *tx).await?;
                }
                sqlx::query(
                    "INSERT INTO meta (key, value) VALUES ('audit_head', $1) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(encode_head(head))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn audit_nodes(&self, ids: &[(u32, u64)]) -> Result<Vec<Option<Vec<u8>>>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                // The asked ids as a table joined to the primary key: point lookups, however
                // many ids, instead of an OR of up to 40 conditions for the planner to weigh.
                let ids = ids
                    .iter()
                    .map(|(level, index)| Ok((i64::from(*level), to_i64(*index)?)))
                    .collect::<Result<Vec<_>>>()?;
                let mut q = QueryBuilder::<$db>::new("WITH asked(level, idx) AS (");
                q.push_values(&ids, |mut row, (level, index)| {
                    row.push_bind(*level).push_bind(*index);
                });
                q.push(
                    ") SELECT n.level, n.idx, n.hash FROM asked a \
                     JOIN audit_nodes n ON n.level = a.level AND n.idx = a.idx",
                );
                let rows = q.build().fetch_all(self.reader()).await?;
                let mut found = std::collections::HashMap::new();
                for row in &rows {
                    let level: i64 = row.try_get("level")?;
                    let index: i64 = row.try_get("idx")?;
                    found.insert((level, index), row.try_get::<Vec<u8>, _>("hash")?);
                }
                Ok(ids.iter().map(|key| found.get(key).cloned()).collect())
            }

            async fn audit_event(&self, leaf_index: u64) -> Result<Option<StoredEvent>> {
                // Its own point query: reusing the range query let PostgreSQL settle on a cached
                // parallel plan that took 6 ms for one row.
                let columns = JOINED_EVENT_COLUMNS;
                let sql = format!(
                    "SELECT {columns} FROM audit_leaves l JOIN events e ON e.seq = l.event_seq \
                     WHERE l.leaf_index = $1"
                );
                let row = sqlx::query(AssertSqlSafe(sql))
                    .bind(to_i64(leaf_index)?)
                    .fetch_optional(self.reader())
                    .await?;
                row.as_ref().map(Self::event_from_row).transpose()
            }

            async fn audit_events(&self, from: u64, to: u64) -> Result<Vec<(u64, StoredEvent)>> {
                let columns = JOINED_EVENT_COLUMNS;
                let sql = format!(
                    "SELECT l.leaf_index, {columns} FROM audit_leaves l JOIN events e ON e.seq = l.event_seq \
                     WHERE l.leaf_index >= $1 AND l.leaf_index < $2 ORDER BY l.leaf_index"
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(to_i64(from)?)
                    .bind(to_i64(to)?)
                    .fetch_all(self.reader())
                    .await?;
                rows.iter()
                    .map(|row| Ok((leaf_index(row.try_get("leaf_index")?)?, Self::event_from_row(row)?)))
                    .collect()
            }

            async fn audit_events_of(&self, subject: &str, from: u64, limit: u32) -> Result<Vec<(u64, StoredEvent)>> {
                let columns = JOINED_EVENT_COLUMNS;
                let sql = format!(
                    "SELECT l.leaf_index, {columns} FROM events e JOIN audit_leaves l ON l.event_seq = e.seq \
                     WHERE (e.seq >> 14) = $1 AND e.subject = $2 AND l.leaf_index >= $3 \
                     ORDER BY l.leaf_index LIMIT $4"
                );
                let last_era = self.last_seq().await? >> SUBJECT_ERA_SHIFT;
                let mut found = Vec::new();
                // Leaves follow sequence numbers but for the few events a PostgreSQL node
                // committed late, which the sealer appends a little after their neighbours: once
                // an era fills the page, the next era is read too, so that a page's end never
                // skips a leaf sealed across an era's boundary.
                let mut full_since = None;
                for era in 0..=last_era {
                    if full_since.is_some_and(|full| era > full + 1) {
                        break;
                    }
                    let rows = sqlx::query(AssertSqlSafe(sql.clone()))
                        .bind(era)
                        .bind(subject)
                        .bind(to_i64(from)?)
                        .bind(i64::from(limit))
                        .fetch_all(self.reader())
                        .await?;
                    for row in &rows {
                        found.push((leaf_index(row.try_get("leaf_index")?)?, Self::event_from_row(row)?));
                    }
                    if full_since.is_none() && found.len() >= limit as usize {
                        full_since = Some(era);
                    }
                }
                found.sort_by_key(|(index, _)| *index);
                found.truncate(limit as usize);
                Ok(found)
            }

            async fn audit_leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>> {
                let rows = sqlx::query(
                    "SELECT idx, hash FROM audit_nodes WHERE level = 0 AND idx >= $1 AND idx < $2 ORDER BY idx",
                )
                .bind(to_i64(from)?)
                .bind(to_i64(to)?)
                .fetch_all(self.reader())
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok((leaf_index(row.try_get("idx")?)?, row.try_get("hash")?))
                    })
                    .collect()
            }

            async fn add_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                sqlx::query(
                    "INSERT INTO audit_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (size) DO NOTHING",
                )
                .bind(to_i64(checkpoint.size)?)
                .bind(&checkpoint.root)
                .bind(&checkpoint.note)
                .bind(checkpoint.created_at.unix_millis())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn put_policies(&self, policies: &PolicyVersion, event: &DomainEvent) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS current FROM policy_versions")
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("current")?;
                if current + 1 != policies.version {
                    tx.rollback().await?;
                    return Err(StoreError::VersionMismatch { current });
                }
                sqlx::query(
                    "INSERT INTO policy_versions (version, policies, catalogue, links, created_at, created_by) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(policies.version)
                .bind(&policies.policies)
                .bind(&policies.catalogue)
                .bind(&policies.links)
                .bind(policies.created_at.unix_millis())
                .bind(&policies.created_by)
                .execute(&mut *tx)
                .await?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn latest_policies(&self) -> Result<Option<PolicyVersion>> {
                let row = sqlx::query(
                    "SELECT version, policies, catalogue, links, created_at, created_by FROM policy_versions \
                     ORDER BY version DESC LIMIT 1",
                )
                .fetch_optional(self.reader())
                .await?;
                row.map(|row| {
                    Ok(PolicyVersion {
                        version: row.try_get("version")?,
                        policies: row.try_get("policies")?,
                        catalogue: row.try_get("catalogue")?,
                        links: row.try_get("links")?,
                        created_at: ts(row.try_get("created_at")?)?,
                        created_by: row.try_get("created_by")?,
                    })
                })
                .transpose()
            }

            async fn record_uses(&self, uses: &[Use]) -> Result<()> {
                if uses.is_empty() {
                    return Ok(());
                }
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                for (table, key) in [("credentials", 0), ("nhis", 1)] {
                    for chunk in uses.chunks(500) {
                        let mut q = QueryBuilder::<$db>::new("WITH used(id, at) AS (");
                        q.push_values(chunk, |mut row, used| {
                            let id = if key == 0 { &used.credential_id } else { &used.nhi_id };
                            row.push_bind(id.clone()).push_bind(used.at.unix_millis());
                        });
                        // Never moves back: a late batch from another node keeps the newer time.
                        q.push(format!(
                            ") UPDATE {table} SET last_used_at = used.at FROM used \
                             WHERE {table}.id = used.id \
                             AND ({table}.last_used_at IS NULL OR {table}.last_used_at < used.at)"
                        ));
                        q.build().execute(&mut *tx).await?;
                    }
                }
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
                let row = sqlx::query(
                    "SELECT size, root, note, created_at FROM audit_checkpoints ORDER BY size DESC LIMIT 1",
                )
                .fetch_optional(self.reader())
                .await?;
                row.map(|row| {
                    let size: i64 = row.try_get("size")?;
                    Ok(StoredCheckpoint {
                        size: u64::try_from(size).map_err(|_| corrupt(format!("checkpoint size {size}")))?,
                        root: row.try_get("root")?,
                        note: row.try_get("note")?,
                        created_at: ts(row.try_get("created_at")?)?,
                    })
                })
                .transpose()
            }

            async fn create_notification_channel(
                &self,
                channel: &NotificationChannel,
                event: &DomainEvent,
            ) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                sqlx::query(
                    "INSERT INTO notification_channels (id, name, kind, team_id, target, format, \
                     sealed_secret, created_at, disabled_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&channel.id)
                .bind(&channel.name)
                .bind(&channel.kind)
                .bind(&channel.team_id)
                .bind(&channel.target)
                .bind(&channel.format)
                .bind(&channel.sealed_secret)
                .bind(channel.created_at.unix_millis())
                .bind(channel.disabled_at.map(Timestamp::unix_millis))
                .execute(&mut *tx)
                .await?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn get_notification_channel(&self, id: &str) -> Result<Option<NotificationChannel>> {
                let sql = format!("SELECT {CHANNEL_COLUMNS} FROM notification_channels WHERE id = $1");
                let row = sqlx::query(AssertSqlSafe(sql)).bind(id).fetch_optional(self.reader()).await?;
                row.as_ref().map(Self::channel_from_row).transpose()
            }

            async fn list_notification_channels(&self) -> Result<Vec<NotificationChannel>> {
                let sql = format!("SELECT {CHANNEL_COLUMNS} FROM notification_channels ORDER BY created_at, id");
                let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(self.reader()).await?;
                rows.iter().map(Self::channel_from_row).collect()
            }

            async fn disable_notification_channel(
                &self,
                id: &str,
                at: Timestamp,
                event: &DomainEvent,
            ) -> Result<bool> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let disabled = sqlx::query(
                    "UPDATE notification_channels SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL",
                )
                .bind(at.unix_millis())
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if disabled == 0 {
                    let exists = sqlx::query("SELECT 1 AS one FROM notification_channels WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    tx.rollback().await?;
                    return if exists.is_some() { Ok(false) } else { Err(StoreError::NotFound) };
                }
                let cancelled = sqlx::query(
                    "UPDATE notification_deliveries SET state = 'failed', \
                     last_error = 'the channel was disabled' WHERE channel_id = $1 AND state = 'pending'",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let mut event = event.clone();
                event.details.insert("cancelled".into(), cancelled.to_string());
                Self::append_event(&mut *tx, &event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(true)
            }

            async fn enqueue_notifications(&self, deliveries: &[NotificationDelivery]) -> Result<()> {
                if deliveries.is_empty() {
                    return Ok(());
                }
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                Self::insert_deliveries(&mut *tx, deliveries).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn claim_notifications(
                &self,
                now: Timestamp,
                lease_until: Timestamp,
                limit: u32,
            ) -> Result<Vec<NotificationDelivery>> {
                if limit == 0 {
                    return Ok(Vec::new());
                }
                let lock: &'static str = $claim_lock;
                // The due rows are picked and pushed out of reach (their lease) in one
                // statement; on PostgreSQL rows another node is claiming are skipped, not waited
                // for, and a row it claimed meanwhile is no longer due when re-checked.
                let sql = format!(
                    "WITH due AS (SELECT id FROM notification_deliveries \
                     WHERE state = 'pending' AND next_attempt_at <= $1 \
                     ORDER BY next_attempt_at, id LIMIT $3{lock}) \
                     UPDATE notification_deliveries SET attempts = attempts + 1, \
                     last_attempt_at = $1, next_attempt_at = $2 \
                     WHERE id IN (SELECT id FROM due) RETURNING {DELIVERY_COLUMNS}"
                );
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(now.unix_millis())
                    .bind(lease_until.unix_millis())
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                slot.finish().await?;
                let mut claimed = rows.iter().map(Self::delivery_from_row).collect::<Result<Vec<_>>>()?;
                claimed.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(claimed)
            }

            async fn finish_notification(
                &self,
                id: &str,
                attempt: u32,
                outcome: &DeliveryOutcome<'_>,
            ) -> Result<bool> {
                // Only the attempt this caller was handed: a node whose lease ran out (and whose
                // delivery another node claimed again) cannot overwrite the newer attempt.
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let still = " WHERE id = $2 AND attempts = $3 AND state = 'pending'";
                let updated = match *outcome {
                    DeliveryOutcome::Delivered { at } => sqlx::query(AssertSqlSafe(format!(
                        "UPDATE notification_deliveries SET state = 'delivered', delivered_at = $1, \
                         last_error = NULL{still}"
                    )))
                    .bind(at.unix_millis()),
                    DeliveryOutcome::Retry { next_attempt_at, .. } => sqlx::query(AssertSqlSafe(format!(
                        "UPDATE notification_deliveries SET next_attempt_at = $1, last_error = $4{still}"
                    )))
                    .bind(next_attempt_at.unix_millis()),
                    // Given up: `next_attempt_at` keeps the end of the last lease.
                    DeliveryOutcome::GiveUp { error, .. } => sqlx::query(AssertSqlSafe(format!(
                        "UPDATE notification_deliveries SET state = 'failed', last_error = $1{still}"
                    )))
                    .bind(error.to_owned()),
                }
                .bind(id)
                .bind(i64::from(attempt));
                let updated = match *outcome {
                    DeliveryOutcome::Retry { error, .. } => updated.bind(error),
                    _ => updated,
                }
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                if let DeliveryOutcome::GiveUp { event, .. } = outcome {
                    Self::append_event(&mut *tx, event).await?;
                }
                tx.commit().await?;
                slot.finish().await?;
                Ok(true)
            }

            async fn list_notification_deliveries(
                &self,
                filter: &DeliveryFilter,
                page: &Page,
            ) -> Result<Vec<NotificationDelivery>> {
                let mut q = QueryBuilder::<$db>::new(format!(
                    "SELECT {DELIVERY_COLUMNS} FROM notification_deliveries WHERE 1 = 1"
                ));
                if let Some(state) = filter.state {
                    q.push(" AND state = ").push_bind(state.as_str());
                }
                if let Some(channel) = &filter.channel_id {
                    q.push(" AND channel_id = ").push_bind(channel.clone());
                }
                if let Some(after) = &page.after {
                    q.push(" AND id > ").push_bind(after.clone());
                }
                q.push(" ORDER BY id LIMIT ").push_bind(i64::from(page.limit));
                let rows = q.build().fetch_all(self.reader()).await?;
                rows.iter().map(Self::delivery_from_row).collect()
            }

            async fn save_baselines(&self, profiles: &[(String, Vec<u8>, Timestamp)]) -> Result<()> {
                if profiles.iter().any(|(_, profile, _)| profile.len() > MAX_BASELINE_BYTES) {
                    return Err(StoreError::Precondition("a behaviour profile is longer than 2 KiB"));
                }
                // The last profile for an NHI wins; one statement may not upsert a row twice.
                // In NHI order, so that two nodes saving at once lock rows in the same order
                // (PostgreSQL) and cannot deadlock.
                let mut latest = std::collections::BTreeMap::new();
                for (nhi_id, profile, at) in profiles {
                    latest.insert(nhi_id.as_str(), (profile, *at));
                }
                if latest.is_empty() {
                    return Ok(());
                }
                let latest: Vec<_> = latest.into_iter().collect();
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                for chunk in latest.chunks(500) {
                    let mut q = QueryBuilder::<$db>::new("WITH kept(nhi_id, profile, updated_at) AS (");
                    q.push_values(chunk, |mut row, (nhi_id, (profile, at))| {
                        row.push_bind(nhi_id.to_string())
                            .push_bind(profile.to_vec())
                            .push_bind(at.unix_millis());
                    });
                    // Unknown NHIs are left out, as `record_uses` ignores unknown ids: one
                    // stray id must not cost every other profile of the batch.
                    q.push(
                        ") INSERT INTO baselines (nhi_id, profile, updated_at) \
                         SELECT nhi_id, profile, updated_at FROM kept \
                         WHERE nhi_id IN (SELECT id FROM nhis) \
                         ON CONFLICT (nhi_id) DO UPDATE SET profile = excluded.profile, \
                         updated_at = excluded.updated_at",
                    );
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn get_baseline(&self, nhi_id: &str) -> Result<Option<(Vec<u8>, Timestamp)>> {
                let row = sqlx::query("SELECT profile, updated_at FROM baselines WHERE nhi_id = $1")
                    .bind(nhi_id)
                    .fetch_optional(self.reader())
                    .await?;
                row.map(|row| Ok((row.try_get("profile")?, ts(row.try_get("updated_at")?)?)))
                    .transpose()
            }

            async fn open_finding(
                &self,
                finding: &Finding,
                event: &DomainEvent,
                deliveries: &[NotificationDelivery],
            ) -> Result<FindingOpened> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                for _ in 0..OPEN_FINDING_ROUNDS {
                    if Self::insert_finding(&mut *tx, finding).await? {
                        Self::append_event(&mut *tx, event).await?;
                        Self::insert_deliveries(&mut *tx, deliveries).await?;
                        tx.commit().await?;
                        slot.finish().await?;
                        return Ok(FindingOpened::New);
                    }
                    if let Some(folded) = Self::fold_finding(&mut *tx, finding).await? {
                        tx.commit().await?;
                        slot.finish().await?;
                        return Ok(FindingOpened::Folded { id: folded.id, occurrences: folded.occurrences });
                    }
                }
                tx.rollback().await?;
                Err(StoreError::Precondition("the finding's dedupe key kept changing hands"))
            }

            async fn set_finding_approval(&self, id: &str, approval_id: &str) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let updated = sqlx::query("UPDATE findings SET approval_id = $1 WHERE id = $2")
                    .bind(approval_id)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if updated == 0 {
                    tx.rollback().await?;
                    return Err(StoreError::NotFound);
                }
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn get_finding(&self, id: &str) -> Result<Option<Finding>> {
                let sql = format!("SELECT {FINDING_COLUMNS} FROM findings WHERE id = $1");
                let row = sqlx::query(AssertSqlSafe(sql)).bind(id).fetch_optional(self.reader()).await?;
                row.as_ref().map(Self::finding_from_row).transpose()
            }

            async fn list_findings(&self, filter: &FindingFilter, page: &Page) -> Result<Vec<Finding>> {
                if filter.team_ids.as_ref().is_some_and(Vec::is_empty) {
                    return Ok(Vec::new());
                }
                let mut q = QueryBuilder::<$db>::new(format!("SELECT {FINDING_COLUMNS} FROM findings WHERE 1 = 1"));
                if let Some(kind) = &filter.kind {
                    q.push(" AND kind = ").push_bind(kind.clone());
                }
                if let Some(nhi_id) = &filter.nhi_id {
                    q.push(" AND nhi_id = ").push_bind(nhi_id.clone());
                }
                if let Some(state) = filter.state {
                    q.push(" AND state = ").push_bind(state.as_str());
                }
                if filter.unresolved_only {
                    q.push(" AND state IN ('open', 'acknowledged')");
                }
                if let Some(approval) = &filter.approval_id {
                    q.push(" AND approval_id = ").push_bind(approval.clone());
                }
                if let Some(key) = &filter.dedupe_key {
                    q.push(" AND dedupe_key = ").push_bind(key.clone());
                }
                if let Some(teams) = &filter.team_ids {
                    q.push(" AND nhi_id IN (SELECT id FROM nhis WHERE owner_team_id IN (");
                    let mut list = q.separated(", ");
                    for team in teams {
                        list.push_bind(team.clone());
                    }
                    q.push("))");
                }
                // Newest first; the cursor is the last finding of the previous page, and the id
                // orders findings opened in the same millisecond.
                if let Some(after) = &page.after {
                    q.push(" AND (created_at, id) < (SELECT created_at, id FROM findings WHERE id = ")
                        .push_bind(after.clone())
                        .push(")");
                }
                q.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(i64::from(page.limit));
                let rows = q.build().fetch_all(self.reader()).await?;
                rows.iter().map(Self::finding_from_row).collect()
            }

            async fn resolve_finding(
                &self,
                id: &str,
                state: FindingState,
                by: &str,
                reason: &str,
                at: Timestamp,
                event: &DomainEvent,
            ) -> Result<Option<Finding>> {
                let query = match state {
                    FindingState::Open => {
                        return Err(StoreError::Precondition("a finding cannot be reopened"));
                    }
                    FindingState::Acknowledged => sqlx::query(AssertSqlSafe(format!(
                        "UPDATE findings SET state = $1, acknowledged_at = $2, acknowledged_by = $3 \
                         WHERE id = $4 AND state = 'open' RETURNING {FINDING_COLUMNS}"
                    )))
                    .bind(state.as_str())
                    .bind(at.unix_millis())
                    .bind(by.to_owned())
                    .bind(id.to_owned()),
                    FindingState::Dismissed | FindingState::Accepted => sqlx::query(AssertSqlSafe(format!(
                        "UPDATE findings SET state = $1, resolved_at = $2, resolved_by = $3, resolution = $5 \
                         WHERE id = $4 AND state IN ('open', 'acknowledged') RETURNING {FINDING_COLUMNS}"
                    )))
                    .bind(state.as_str())
                    .bind(at.unix_millis())
                    .bind(by.to_owned())
                    .bind(id.to_owned())
                    .bind(reason.to_owned()),
                };
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let row = query.fetch_optional(&mut *tx).await?;
                let Some(row) = row else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                let finding = Self::finding_from_row(&row)?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(Some(finding))
            }

            async fn create_response_policy(&self, policy: &ResponsePolicy, event: &DomainEvent) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                sqlx::query(
                    "INSERT INTO response_policies (id, target_type, target, action, min_severity, \
                     created_by, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&policy.id)
                .bind(policy.target.target_type())
                .bind(policy.target.target_id())
                .bind(policy.action.as_str())
                .bind(policy.min_severity.as_str())
                .bind(&policy.created_by)
                .bind(policy.created_at.unix_millis())
                .bind(policy.revoked_at.map(Timestamp::unix_millis))
                .execute(&mut *tx)
                .await?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn list_response_policies(&self, include_revoked: bool) -> Result<Vec<ResponsePolicy>> {
                let mut q = QueryBuilder::<$db>::new(format!(
                    "SELECT {RESPONSE_POLICY_COLUMNS} FROM response_policies WHERE 1 = 1"
                ));
                if !include_revoked {
                    q.push(" AND revoked_at IS NULL");
                }
                q.push(" ORDER BY created_at DESC, id DESC LIMIT 1000");
                let rows = q.build().fetch_all(self.reader()).await?;
                rows.iter().map(Self::response_policy_from_row).collect()
            }

            async fn revoke_response_policy(&self, id: &str, at: Timestamp, event: &DomainEvent) -> Result<bool> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let revoked = sqlx::query(
                    "UPDATE response_policies SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(at.unix_millis())
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if revoked == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(true)
            }

            async fn create_deployment_hook(&self, hook: &DeploymentHook, event: &DomainEvent) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                sqlx::query(
                    "INSERT INTO deployment_hooks (id, name, team_id, sealed_secret, created_by, \
                     created_at, disabled_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&hook.id)
                .bind(&hook.name)
                .bind(&hook.team_id)
                .bind(&hook.sealed_secret)
                .bind(&hook.created_by)
                .bind(hook.created_at.unix_millis())
                .bind(hook.disabled_at.map(Timestamp::unix_millis))
                .execute(&mut *tx)
                .await?;
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn get_deployment_hook(&self, id: &str) -> Result<Option<DeploymentHook>> {
                let sql = format!("SELECT {HOOK_COLUMNS} FROM deployment_hooks WHERE id = $1");
                let row = sqlx::query(AssertSqlSafe(sql)).bind(id).fetch_optional(self.reader()).await?;
                row.as_ref().map(Self::hook_from_row).transpose()
            }

            async fn list_deployment_hooks(&self) -> Result<Vec<DeploymentHook>> {
                let sql = format!("SELECT {HOOK_COLUMNS} FROM deployment_hooks ORDER BY created_at DESC, id DESC LIMIT 1000");
                let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(self.reader()).await?;
                rows.iter().map(Self::hook_from_row).collect()
            }

            async fn disable_deployment_hook(&self, id: &str, at: Timestamp, event: &DomainEvent) -> Result<bool> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let disabled = sqlx::query(
                    "UPDATE deployment_hooks SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL",
                )
                .bind(at.unix_millis())
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if disabled == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(true)
            }

            async fn lock_job(&self, job: &str) -> Result<Option<JobLock>> {
                self.take_job_lock(job).await
            }

            async fn start_decommission(
                &self,
                w: &Decommission,
                event: &DomainEvent,
            ) -> Result<Option<Decommission>> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let inserted = sqlx::query(
                    "INSERT INTO decommissions (id, nhi_id, step, trigger_kind, requested_by, reason, \
                     teardown, receipt, failures, last_error, started_at, updated_at, finished_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (nhi_id) WHERE step <> 'cancelled' DO NOTHING",
                )
                .bind(&w.id)
                .bind(&w.nhi_id)
                .bind(w.step.as_str())
                .bind(w.trigger.as_str())
                .bind(&w.requested_by)
                .bind(&w.reason)
                .bind(to_json(&w.teardown))
                .bind(&w.receipt)
                .bind(i64::from(w.failures))
                .bind(&w.last_error)
                .bind(w.started_at.unix_millis())
                .bind(w.updated_at.unix_millis())
                .bind(w.finished_at.map(Timestamp::unix_millis))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    let sql = format!(
                        "SELECT {DECOMMISSION_COLUMNS} FROM decommissions \
                         WHERE nhi_id = $1 AND step <> 'cancelled'"
                    );
                    let row = sqlx::query(AssertSqlSafe(sql)).bind(&w.nhi_id).fetch_one(&mut *tx).await?;
                    let existing = Self::decommission_from_row(&row)?;
                    tx.rollback().await?;
                    return Ok(Some(existing));
                }
                Self::append_event(&mut *tx, event).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(None)
            }

            async fn advance_decommission(
                &self,
                from: DecommissionStep,
                w: &Decommission,
                events: &[DomainEvent],
                deliveries: &[NotificationDelivery],
            ) -> Result<bool> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                let moved = sqlx::query(
                    "UPDATE decommissions SET step = $1, teardown = $2, receipt = $3, failures = $4, \
                     last_error = $5, updated_at = $6, finished_at = $7 WHERE id = $8 AND step = $9",
                )
                .bind(w.step.as_str())
                .bind(to_json(&w.teardown))
                .bind(&w.receipt)
                .bind(i64::from(w.failures))
                .bind(&w.last_error)
                .bind(w.updated_at.unix_millis())
                .bind(w.finished_at.map(Timestamp::unix_millis))
                .bind(&w.id)
                .bind(from.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if moved == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                for event in events {
                    Self::append_event(&mut *tx, event).await?;
                }
                Self::insert_deliveries(&mut *tx, deliveries).await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(true)
            }

            async fn record_decommission_failure(&self, id: &str, error: &str, at: Timestamp) -> Result<()> {
                let mut slot = self.begin_write().await?;
                let mut tx = slot.begin().await?;
                sqlx::query(
                    "UPDATE decommissions SET failures = failures + 1, last_error = $1, updated_at = $2 \
                     WHERE id = $3 AND step <> 'done'",
                )
                .bind(error)
                .bind(at.unix_millis())
                .bind(id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                slot.finish().await?;
                Ok(())
            }

            async fn get_decommission(&self, id: &str) -> Result<Option<Decommission>> {
                let sql = format!("SELECT {DECOMMISSION_COLUMNS} FROM decommissions WHERE id = $1");
                let row = sqlx::query(AssertSqlSafe(sql)).bind(id).fetch_optional(self.reader()).await?;
                row.as_ref().map(Self::decommission_from_row).transpose()
            }

            async fn list_decommissions(
                &self,
                filter: &DecommissionFilter,
                page: &Page,
            ) -> Result<Vec<Decommission>> {
                if filter.team_ids.as_ref().is_some_and(Vec::is_empty) {
                    return Ok(Vec::new());
                }
                let mut q = QueryBuilder::<$db>::new(format!(
                    "SELECT {DECOMMISSION_COLUMNS} FROM decommissions WHERE 1 = 1"
                ));
                if let Some(nhi_id) = &filter.nhi_id {
                    q.push(" AND nhi_id = ").push_bind(nhi_id.clone());
                }
                match filter.finished {
                    Some(true) => {
                        q.push(" AND step IN ('done', 'cancelled')");
                    }
                    Some(false) => {
                        q.push(" AND step NOT IN ('done', 'cancelled')");
                    }
                    None => {}
                }
                if let Some(teams) = &filter.team_ids {
                    q.push(" AND nhi_id IN (SELECT id FROM nhis WHERE owner_team_id IN (");
                    let mut list = q.separated(", ");
                    for team in teams {
                        list.push_bind(team.clone());
                    }
                    q.push("))");
                }
                if let Some(after) = &page.after {
                    q.push(" AND (started_at, id) < (SELECT started_at, id FROM decommissions WHERE id = ")
                        .push_bind(after.clone())
                        .push(")");
                }
                q.push(" ORDER BY started_at DESC, id DESC LIMIT ").push_bind(i64::from(page.limit));
                let rows = q.build().fetch_all(self.reader()).await?;
                rows.iter().map(Self::decommission_from_row).collect()
            }

            // ---- risk and posture reports ----

            async fn nhi_facts(&self, nhis: Vec<Nhi>, now: Timestamp) -> Result<Vec<NhiFacts>> {
                if nhis.is_empty() {
                    return Ok(Vec::new());
                }
                let mut facts: Vec<NhiFacts> = nhis
                    .into_iter()
                    .map(|nhi| NhiFacts { nhi, credentials: CredentialSummary::default(), findings: Vec::new() })
                    .collect();
                let index: std::collections::HashMap<String, usize> =
                    facts.iter().enumerate().map(|(i, f)| (f.nhi.id.clone(), i)).collect();
                let page_ids: Vec<String> = facts.iter().map(|f| f.nhi.id.clone()).collect();
                let ids = |q: &mut QueryBuilder<$db>| {
                    let mut list = q.separated(", ");
                    for id in &page_ids {
                        list.push_bind(id.clone());
                    }
                    q.push(")");
                };
                let now = now.unix_millis();
                let live = |q: &mut QueryBuilder<$db>, alias: &str| {
                    q.push(format!(" AND {alias}revoked_at IS NULL AND ({alias}expires_at IS NULL OR {alias}expires_at > "))
                        .push_bind(now)
                        .push(")");
                };

                let mut q = QueryBuilder::<$db>::new(
                    "SELECT nhi_id, COUNT(*) AS live, \
                     COUNT(CASE WHEN kind = 'static_key' THEN 1 END) AS static_keys, \
                     COUNT(CASE WHEN kind = 'static_key' AND expires_at IS NULL THEN 1 END) AS static_forever, \
                     MIN(CASE WHEN kind = 'static_key' THEN created_at END) AS oldest_static, \
                     COUNT(CASE WHEN kind = 'access_token' THEN 1 END) AS tokens, \
                     COUNT(CASE WHEN kind = 'client_key' THEN 1 END) AS client_keys, \
                     MAX(CASE WHEN kind = 'static_key' THEN expires_at - created_at END) AS longest_static, \
                     MAX(CASE WHEN kind = 'access_token' THEN expires_at - created_at END) AS longest_token, \
                     MAX(expires_at - created_at) AS longest \
                     FROM credentials WHERE nhi_id IN (",
                );
                ids(&mut q);
                live(&mut q, "");
                q.push(" GROUP BY nhi_id");
                for row in q.build().fetch_all(self.reader()).await? {
                    let id: String = row.try_get("nhi_id")?;
                    let Some(&i) = index.get(&id) else { continue };
                    let count = |name: &str| -> Result<u32> {
                        Ok(u32::try_from(row.try_get::<i64, _>(name)?).unwrap_or(u32::MAX))
                    };
                    let seconds = |name: &str| -> Result<Option<i64>> {
                        Ok(row.try_get::<Option<i64>, _>(name)?.map(|ms| ms / 1000))
                    };
                    facts[i].credentials = CredentialSummary {
                        live: count("live")?,
                        static_keys: count("static_keys")?,
                        static_keys_without_expiry: count("static_forever")?,
                        oldest_static_key: opt_ts(row.try_get("oldest_static")?)?,
                        access_tokens: count("tokens")?,
                        client_keys: count("client_keys")?,
                        longest_static_key_seconds: seconds("longest_static")?,
                        longest_token_seconds: seconds("longest_token")?,
                        longest_lifetime_seconds: seconds("longest")?,
                        delegated: 0,
                    };
                }

                let mut q = QueryBuilder::<$db>::new(
                    "SELECT p.nhi_id AS nhi_id, COUNT(*) AS delegated FROM credentials p \
                     JOIN credentials c ON c.parent_id = p.id AND c.nhi_id <> p.nhi_id WHERE p.nhi_id IN (",
                );
                ids(&mut q);
                live(&mut q, "c.");
                q.push(" GROUP BY p.nhi_id");
                for row in q.build().fetch_all(self.reader()).await? {
                    let id: String = row.try_get("nhi_id")?;
                    if let Some(&i) = index.get(&id) {
                        facts[i].credentials.delegated =
                            u32::try_from(row.try_get::<i64, _>("delegated")?).unwrap_or(u32::MAX);
                    }
                }

                let mut q = QueryBuilder::<$db>::new(
                    "SELECT nhi_id, kind, severity, COUNT(*) AS n FROM findings \
                     WHERE resolved_at IS NULL AND nhi_id IN (",
                );
                ids(&mut q);
                q.push(" GROUP BY nhi_id, kind, severity ORDER BY nhi_id, kind, severity");
                for row in q.build().fetch_all(self.reader()).await? {
                    let id: String = row.try_get("nhi_id")?;
                    if let Some(&i) = index.get(&id) {
                        facts[i].findings.push(FindingTally {
                            kind: row.try_get("kind")?,
                            severity: parse_enum(Severity::parse, row.try_get("severity")?)?,
                            count: u32::try_from(row.try_get::<i64, _>("n")?).unwrap_or(u32::MAX),
                        });
                    }
                }
                Ok(facts)
            }

            async fn credential_descendants(&self, roots: &[String], limit: u32) -> Result<Vec<Credential>> {
                if roots.is_empty() {
                    return Ok(Vec::new());
                }
                let mut q = QueryBuilder::<$db>::new(
                    "WITH RECURSIVE tree(id) AS (SELECT id FROM credentials WHERE parent_id IN (",
                );
                let mut list = q.separated(", ");
                for id in roots {
                    list.push_bind(id.clone());
                }
                q.push(format!(
                    ") UNION SELECT c.id FROM credentials c JOIN tree t ON c.parent_id = t.id) \
                     SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE id IN (SELECT id FROM tree) \
                     ORDER BY depth, id LIMIT "
                ));
                q.push_bind(i64::from(limit));
                let rows = q.build().fetch_all(self.reader()).await?;
                rows.iter().map(Self::credential_from_row).collect()
            }
        }
    };
}

/// A leaf index as stored (a signed integer column) back to what it is.
fn leaf_index(stored: i64) -> Result<u64> {
    u64::try_from(stored).map_err(|_| corrupt(format!("leaf index {stored}")))
}

fn to_i64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| StoreError::Config(format!("{n} is beyond the store's range")))
}

/// The audit head as stored in `meta`: `size,last_seq,hex(frontier)`.
fn encode_head(head: &AuditHead) -> String {
    let mut text = format!("{},{},", head.size, head.last_seq);
    for byte in &head.frontier {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

fn decode_head(text: &str) -> Result<AuditHead> {
    let bad = || corrupt(format!("audit head {text:?}"));
    let mut parts = text.splitn(3, ',');
    let size = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let last_seq = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let hex = parts.next().ok_or_else(bad)?;
    if hex.len() % 2 != 0 {
        return Err(bad());
    }
    let frontier = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad()))
        .collect::<Result<Vec<u8>>>()?;
    Ok(AuditHead {
        size,
        last_seq,
        frontier,
    })
}

sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    name = "sqlite",
    lock_operators = "",
    lock_row = "",
    // The single writer claims alone.
    claim_lock = ""
);
sql_store!(
    PostgresStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    name = "postgres",
    // Two admins revoking each other at once must not leave the store with none.
    lock_operators = "LOCK TABLE operators IN SHARE ROW EXCLUSIVE MODE",
    // A delegation locks its parent so a concurrent revocation cannot miss the new child.
    lock_row = " FOR UPDATE",
    // Nodes claiming notifications at once each take rows the others have not locked.
    claim_lock = " FOR UPDATE SKIP LOCKED"
);
