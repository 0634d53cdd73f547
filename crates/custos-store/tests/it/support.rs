use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use custos_core::{
    Actor, DomainEvent, EventKind, Nhi, NhiKind, NhiStatus, Operator, Owner, Role, Scope, Team,
    Timestamp,
};
use custos_store::{
    DeliveryState, EventQuery, NotificationDelivery, PostgresStore, SqliteStore, Store,
};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A store under test, with whatever keeps it alive (a temp dir, a schema to drop).
pub struct Harness {
    pub store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("custos.db"))
        .await
        .unwrap();
    Harness {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

pub async fn postgres() -> Harness {
    let options = postgres_options().await;
    let store = PostgresStore::connect_with(options).await.unwrap();
    Harness {
        store: Arc::new(store),
        _dir: None,
    }
}

/// Connection options for a fresh schema of the test database.
pub async fn postgres_options() -> PgConnectOptions {
    let url = std::env::var("CUSTOS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned());
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    let mut admin = PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {url} is unreachable ({e}); the PostgreSQL half of the suite needs it"
        )
    });
    // pg_trgm is database-wide: create it once, under a lock, before schemas race to.
    sqlx::query("SELECT pg_advisory_lock(727)")
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public")
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_unlock(727)")
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", &schema)])
}

static CLOCK: AtomicI64 = AtomicI64::new(1_800_000_000_000);

/// A strictly increasing test clock, so ids and timestamps sort as they were made.
pub fn now() -> Timestamp {
    Timestamp::from_unix_millis(CLOCK.fetch_add(1, Ordering::Relaxed)).unwrap()
}

pub fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub fn event(kind: EventKind, subject: &str) -> DomainEvent {
    DomainEvent::new(id(), kind, Actor::System, subject.to_owned(), now())
}

pub async fn team(store: &dyn Store, name: &str) -> Team {
    let team = Team::new(id(), name.to_owned(), format!("{name}@example.com"), now()).unwrap();
    store
        .create_team(
            &team,
            &event(EventKind::TeamCreated, &format!("team:{}", team.id)),
        )
        .await
        .unwrap();
    team
}

pub fn operator(name: &str, roles: &[Role], teams: &[&Team]) -> Operator {
    Operator {
        id: id(),
        name: name.to_owned(),
        roles: roles.to_vec(),
        teams: teams.iter().map(|t| t.id.clone()).collect(),
        token_hint: "custos_op_abc…".to_owned(),
        created_at: now(),
        created_by: None,
        revoked_at: None,
    }
}

pub fn nhi(name: &str, team: &Team) -> Nhi {
    Nhi {
        id: id(),
        name: name.to_owned(),
        kind: NhiKind::AiAgent,
        platform: "openai".to_owned(),
        environment: "production".to_owned(),
        status: NhiStatus::Active,
        owner: Owner {
            team_id: team.id.clone(),
            application: Some("billing".into()),
            contact: None,
        },
        purpose: "test agent".to_owned(),
        scope_ceiling: Scope::parse(&["crm:read:customers/*", "mail:send"]).unwrap(),
        tags: [("tier".to_owned(), "gold".to_owned())].into(),
        external_ids: Default::default(),
        created_at: now(),
        updated_at: now(),
        expires_at: None,
        last_used_at: None,
        version: 1,
    }
}

pub async fn register(store: &dyn Store, nhi: &Nhi) {
    let ev = event(EventKind::NhiRegistered, &format!("nhi:{}", nhi.id));
    store.create_nhis(&[(nhi.clone(), ev)]).await.unwrap();
}

/// Generates `#[tokio::test]`s running one async test body against both backends.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name($crate::support::sqlite().await.store.as_ref()).await })+
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name($crate::support::postgres().await.store.as_ref()).await })+
        }
    };
}

/// A pending delivery to a callback URL (no channel), about `subject`, due at `at`.
pub fn pending_delivery(subject: &str, payload: &str, at: Timestamp) -> NotificationDelivery {
    NotificationDelivery {
        id: id(),
        channel_id: None,
        callback_url: Some("https://agent.example.com/custos/hook".into()),
        subject: subject.to_owned(),
        payload: payload.to_owned(),
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_at: at,
        last_attempt_at: None,
        last_error: None,
        created_at: at,
        delivered_at: None,
    }
}

/// How many events of `kind` the trail holds (counting up to 100).
pub async fn events_of(store: &dyn Store, kind: EventKind) -> usize {
    store
        .list_events(&EventQuery {
            limit: 100,
            kind: Some(kind.as_str().to_owned()),
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}
