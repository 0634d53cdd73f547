//! The SQL behind both backends. One macro expands the same statements for SQLite and for
//! PostgreSQL so the two cannot drift apart; the few dialect differences are parameters.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use custos_core::event::StoredEvent;
use custos_core::{
    Actor, Credential, CredentialKind, DomainEvent, EventKind, Nhi, NhiFilter, NhiKind, NhiStatus,
    Operator, Owner, Page, Role, Team, Timestamp,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Row};

use crate::{EventQuery, Result, Store, StoreError};

/// The embedded store: one SQLite file in WAL mode. Writes go through a single connection, so
/// they never contend for SQLite's write lock; reads use a small pool beside it.
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
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
        Ok(Self { read, write })
    }

    fn reader(&self) -> &SqlitePool {
        &self.read
    }

    fn writer(&self) -> &SqlitePool {
        &self.write
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

    fn writer(&self) -> &PgPool {
        &self.pool
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

/// How many rows that pass a listing's other filters a name search looks at before it falls
/// back to searching them all.
const SEARCH_WINDOW: i64 = 2000;

const NHI_COLUMNS: &str = "id, name, kind, platform, environment, status, owner_team_id, \
    owner_application, owner_contact, purpose, scope_ceiling, tags, external_ids, created_at, \
    updated_at, expires_at, last_used_at, version";
const OPERATOR_COLUMNS: &str =
    "id, name, roles, token_hash, token_hint, created_at, created_by, revoked_at";
const CREDENTIAL_COLUMNS: &str =
    "id, nhi_id, kind, secret_hash, fingerprint, created_at, expires_at, revoked_at, created_by";
const TEAM_COLUMNS: &str = "id, name, contact, created_at";
const EVENT_COLUMNS: &str = "seq, id, kind, actor, subject, occurred_at, details";

macro_rules! sql_store {
    ($store:ty, $db:ty, $row:ty, name = $name:literal, lock_operators = $lock_operators:expr) => {
        impl $store {
            fn team_from_row(row: &$row) -> Result<Team> {
                Ok(Team {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    contact: row.try_get("contact")?,
                    created_at: ts(row.try_get("created_at")?)?,
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
                })
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

            async fn append_event(
                tx: &mut sqlx::Transaction<'_, $db>,
                event: &DomainEvent,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO events (id, kind, actor, subject, occurred_at, details) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&event.id)
                .bind(event.kind.as_str())
                .bind(event.actor.to_string())
                .bind(&event.subject)
                .bind(event.occurred_at.unix_millis())
                .bind(to_json(&event.details))
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn insert_operator(
                tx: &mut sqlx::Transaction<'_, $db>,
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
                .execute(&mut **tx)
                .await?;
                for team in &operator.teams {
                    sqlx::query("INSERT INTO operator_teams (operator_id, team_id) VALUES ($1, $2)")
                        .bind(&operator.id)
                        .bind(team)
                        .execute(&mut **tx)
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

            async fn write_tags(tx: &mut sqlx::Transaction<'_, $db>, nhi: &Nhi) -> Result<()> {
                sqlx::query("DELETE FROM nhi_tags WHERE nhi_id = $1")
                    .bind(&nhi.id)
                    .execute(&mut **tx)
                    .await?;
                for (key, value) in &nhi.tags {
                    sqlx::query("INSERT INTO nhi_tags (nhi_id, key, value) VALUES ($1, $2, $3)")
                        .bind(&nhi.id)
                        .bind(key)
                        .bind(value)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
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
                sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .execute(self.writer())
                    .await?;
                let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
                    .bind(key)
                    .fetch_one(self.writer())
                    .await?;
                Ok(row.try_get("value")?)
            }

            async fn bootstrap_admin(
                &self,
                admin: &Operator,
                token_hash: &[u8],
                event: &DomainEvent,
            ) -> Result<bool> {
                let mut tx = self.writer().begin().await?;
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
                Self::insert_operator(&mut tx, admin, token_hash).await?;
                Self::append_event(&mut tx, event).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn create_team(&self, team: &Team, event: &DomainEvent) -> Result<()> {
                let mut tx = self.writer().begin().await?;
                sqlx::query("INSERT INTO teams (id, name, contact, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&team.id)
                    .bind(&team.name)
                    .bind(&team.contact)
                    .bind(team.created_at.unix_millis())
                    .execute(&mut *tx)
                    .await?;
                Self::append_event(&mut tx, event).await?;
                tx.commit().await?;
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
                let mut tx = self.writer().begin().await?;
                Self::insert_operator(&mut tx, operator, token_hash).await?;
                Self::append_event(&mut tx, event).await?;
                tx.commit().await?;
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
                let mut tx = self.writer().begin().await?;
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
                Self::append_event(&mut tx, event).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn create_nhis(&self, nhis: &[(Nhi, DomainEvent)]) -> Result<()> {
                let mut tx = self.writer().begin().await?;
                for (nhi, event) in nhis {
                    let insert = sqlx::query(
                        "INSERT INTO nhis (name, kind, platform, environment, status, owner_team_id, \
                         owner_application, owner_contact, purpose, scope_ceiling, tags, external_ids, \
                         updated_at, expires_at, last_used_at, version, id, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
                    );
                    Self::bind_nhi(insert, nhi)
                        .bind(&nhi.id)
                        .bind(nhi.created_at.unix_millis())
                        .execute(&mut *tx)
                        .await?;
                    Self::write_tags(&mut tx, nhi).await?;
                    Self::append_event(&mut tx, event).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn get_nhi(&self, id: &str) -> Result<Option<Nhi>> {
                let sql = format!("SELECT {NHI_COLUMNS} FROM nhis WHERE id = $1");
                let row = sqlx::query(AssertSqlSafe(sql.clone())).bind(id).fetch_optional(self.reader()).await?;
                row.as_ref().map(Self::nhi_from_row).transpose()
            }

            async fn update_nhi(&self, nhi: &Nhi, expected_version: i64, event: &DomainEvent) -> Result<()> {
                let mut tx = self.writer().begin().await?;
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
                Self::write_tags(&mut tx, nhi).await?;
                Self::append_event(&mut tx, event).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_nhis(&self, filter: &NhiFilter, page: &Page) -> Result<Vec<Nhi>> {
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

            async fn create_credential(&self, credential: &Credential, event: &DomainEvent) -> Result<()> {
                let mut tx = self.writer().begin().await?;
                sqlx::query(
                    "INSERT INTO credentials (id, nhi_id, kind, secret_hash, fingerprint, created_at, \
                     expires_at, revoked_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
                .execute(&mut *tx)
                .await?;
                Self::append_event(&mut tx, event).await?;
                tx.commit().await?;
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

            async fn revoke_credential(&self, id: &str, at: Timestamp, event: &DomainEvent) -> Result<bool> {
                let mut tx = self.writer().begin().await?;
                let updated = sqlx::query(
                    "UPDATE credentials SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(at.unix_millis())
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    let exists = sqlx::query("SELECT 1 AS one FROM credentials WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?
                        .is_some();
                    tx.rollback().await?;
                    return if exists { Ok(false) } else { Err(StoreError::NotFound) };
                }
                Self::append_event(&mut tx, event).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn list_events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>> {
                let mut q = QueryBuilder::<$db>::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > "));
                q.push_bind(query.after_seq);
                if let Some(subject) = &query.subject {
                    q.push(" AND subject = ").push_bind(subject.clone());
                }
                if let Some(kind) = &query.kind {
                    q.push(" AND kind = ").push_bind(kind.clone());
                }
                if let Some(actor) = &query.actor {
                    q.push(" AND actor = ").push_bind(actor.clone());
                }
                q.push(" ORDER BY seq LIMIT ").push_bind(i64::from(query.limit));
                let rows = q.build().fetch_all(self.reader()).await?;
                rows.iter().map(Self::event_from_row).collect()
            }
        }
    };
}

sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    name = "sqlite",
    lock_operators = ""
);
sql_store!(
    PostgresStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    name = "postgres",
    // Two admins revoking each other at once must not leave the store with none.
    lock_operators = "LOCK TABLE operators IN SHARE ROW EXCLUSIVE MODE"
);
