//! PostgreSQL only: the change feed that tells every node what the others committed.

use std::time::Duration;

use custos_core::{EventKind, Nhi};
use custos_store::feed::{ChangeFeed, FeedEvent};
use custos_store::{EventQuery, PostgresStore, Store};
use sqlx::Connection;

use crate::support::{event, nhi, now, postgres_options, register, team};

/// The next thing the feed hears, within a generous bound.
async fn next(feed: &mut ChangeFeed) -> FeedEvent {
    tokio::time::timeout(Duration::from_secs(10), feed.recv())
        .await
        .expect("the feed heard nothing in 10 s")
        .expect("the feed stopped")
}

/// The `seq` the trail gave the newest event of `kind`.
async fn seq_of(store: &dyn Store, kind: EventKind) -> i64 {
    store
        .list_events(&EventQuery {
            limit: 1,
            kind: Some(kind.as_str().to_owned()),
            newest_first: true,
            ..Default::default()
        })
        .await
        .unwrap()[0]
        .seq
}

async fn suspend(store: &dyn Store, nhi: &Nhi) {
    let next = nhi.suspend(now()).unwrap().unwrap();
    store
        .update_nhi(
            &next,
            nhi.version,
            &event(EventKind::NhiSuspended, &format!("nhi:{}", nhi.id)),
        )
        .await
        .unwrap();
}

/// A committed change that can alter a decision is announced with its `seq`, before a
/// heartbeat sent after it; other events (a team, a registration, decisions) are not; a
/// batch is announced once, with its newest `seq`; and a feed on another schema of the same
/// database hears none of it.
#[tokio::test]
async fn decision_changes_are_announced_in_commit_order_and_nothing_else() {
    let options = postgres_options().await;
    let store = PostgresStore::connect_with(options.clone()).await.unwrap();
    let store: &dyn Store = &store;
    let (mut feed, echo) = ChangeFeed::start_with(options, "node-a");
    assert_eq!(next(&mut feed).await, FeedEvent::Listening);
    let (mut elsewhere, _) = ChangeFeed::start_with(postgres_options().await, "node-b");
    assert_eq!(next(&mut elsewhere).await, FeedEvent::Listening);

    let owners = team(store, "owners").await;
    let bot = nhi("bot", &owners);
    register(store, &bot).await;
    suspend(store, &bot).await;
    echo.send(1).await.unwrap();
    let suspended = seq_of(store, EventKind::NhiSuspended).await;
    assert_eq!(next(&mut feed).await, FeedEvent::Changed(suspended));
    assert_eq!(next(&mut feed).await, FeedEvent::Echo(1));

    let decided = || event(EventKind::AccessDecided, "nhi:x");
    store.append_events(&[decided(), decided()]).await.unwrap();
    store
        .append_events(&[
            decided(),
            event(EventKind::CredentialRevoked, "nhi:x"),
            decided(),
        ])
        .await
        .unwrap();
    echo.send(2).await.unwrap();
    let newest = seq_of(store, EventKind::AccessDecided).await;
    assert_eq!(next(&mut feed).await, FeedEvent::Changed(newest));
    assert_eq!(next(&mut feed).await, FeedEvent::Echo(2));

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        elsewhere.try_recv(),
        None,
        "another schema's feed heard this one"
    );
}

/// A listener whose session the server ends says so, listens again, and hears what is
/// committed after that.
#[tokio::test]
async fn a_lost_listener_says_so_and_listens_again() {
    let options = postgres_options().await;
    let store = PostgresStore::connect_with(options.clone()).await.unwrap();
    let store: &dyn Store = &store;
    let node = format!("n{}", uuid::Uuid::now_v7().simple());
    let (mut feed, echo) = ChangeFeed::start_with(options.clone(), &node);
    assert_eq!(next(&mut feed).await, FeedEvent::Listening);

    let mut admin = sqlx::PgConnection::connect_with(&options).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(format!("custos-listener {node}"))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(ended, [true], "one listener, found by its name");
    assert!(matches!(next(&mut feed).await, FeedEvent::Lost(_)));
    assert_eq!(next(&mut feed).await, FeedEvent::Listening);

    let owners = team(store, "owners").await;
    let bot = nhi("bot", &owners);
    register(store, &bot).await;
    suspend(store, &bot).await;
    echo.send(1).await.unwrap();
    let suspended = seq_of(store, EventKind::NhiSuspended).await;
    assert_eq!(next(&mut feed).await, FeedEvent::Changed(suspended));
    assert_eq!(next(&mut feed).await, FeedEvent::Echo(1));
}
