//! PostgreSQL's push of committed changes to every node sharing the store.
//!
//! Every transaction that appends an event whose kind [changes decisions] also runs
//! [`ANNOUNCE`]: a `NOTIFY` on [`CHANGES_CHANNEL`] whose payload is `<schema>:<seq>`, the
//! schema the store's tables live in and the newest `seq` the transaction appended.
//! PostgreSQL delivers a notice when its transaction commits and never if it rolls back, and
//! delivers the notices of one database to each listening session in commit order. So a node
//! that hears `seq` can read the change it announces, and hears nothing that did not happen.
//!
//! A [`ChangeFeed`] is one node's ear: a connection of its own that `LISTEN`s and hands on,
//! in the order they came, the changes announced in its schema (notices from other
//! deployments sharing the database under another schema are dropped), and when it starts
//! listening or loses the connection: notices sent while it was not listening are gone for
//! good, so the node must read what it missed from the trail. Beside it, an [`Echo`] sends
//! the node's own heartbeats on a channel only that node listens to: a heartbeat sent at `t`
//! and heard back proves that every change committed before `t` has been heard, since
//! PostgreSQL delivered its notice first.
//!
//! [changes decisions]: custos_core::EventKind::changes_decisions

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::mpsc;

use crate::{Result, StoreError};

/// The channel every node listens on for other nodes' changes.
pub const CHANGES_CHANNEL: &str = "custos_changes";

/// Run in a transaction right after it appended a decision-changing event (so `currval` is
/// that event's `seq`, or the last of a batch's). `current_schema()` names the deployment:
/// nodes of another one sharing the database ignore the notice.
pub(crate) const ANNOUNCE: &str = "SELECT pg_notify('custos_changes', \
     current_schema() || ':' || currval(pg_get_serial_sequence('events', 'seq')))";

/// How many heard notices wait for the node to take them before the listener stops reading
/// (PostgreSQL keeps the rest queued meanwhile).
const BUFFER: usize = 4096;
/// The first and the longest wait between attempts to listen again after a failure.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What the feed heard, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedEvent {
    /// The feed listens, on a connection opened or reopened just now: every change that
    /// commits from here on will be heard, and any before it may have been missed.
    Listening,
    /// The listening connection failed or could not be opened: changes committed from now
    /// until the next [`FeedEvent::Listening`] are not heard.
    Lost(String),
    /// A transaction committed a change that can alter decisions; its newest event's `seq`.
    Changed(i64),
    /// This node's heartbeat number `n` (see [`Echo::send`]) came back.
    Echo(u64),
}

/// One node's subscription to the changes every node commits. Dropping it stops listening.
pub struct ChangeFeed {
    events: mpsc::Receiver<FeedEvent>,
    listener: tokio::task::JoinHandle<()>,
}

/// Sends a node's heartbeats to its own [`ChangeFeed`], on a connection of its own.
#[derive(Clone)]
pub struct Echo {
    pool: PgPool,
    channel: String,
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl ChangeFeed {
    /// Starts listening for `node` (an id unique to this process) on the store at `url`, with
    /// the sender of its heartbeats. Connections are opened in the background: until the
    /// first [`FeedEvent::Listening`] nothing is heard, and a store that cannot be reached
    /// shows as [`FeedEvent::Lost`], retried with growing waits.
    pub fn start(url: &str, node: &str) -> Result<(Self, Echo)> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid postgres url: {e}")))?;
        Ok(Self::start_with(options, node))
    }

    /// [`Self::start`] with explicit options (the tests give each run its own schema).
    pub fn start_with(options: PgConnectOptions, node: &str) -> (Self, Echo) {
        let node: String = node
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(40)
            .collect::<String>()
            .to_ascii_lowercase();
        let channel = format!("custos_echo_{node}");
        // One connection each, named so that an operator (or a test) finds them in
        // pg_stat_activity. The listener's connection lives as long as it works; sqlx checks
        // a pooled connection before handing it out again, so a dead one is replaced.
        let listening = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(
                options
                    .clone()
                    .application_name(&format!("custos-listener {node}")),
            );
        let echoing = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(options.application_name(&format!("custos-heartbeat {node}")));
        let (sender, events) = mpsc::channel(BUFFER);
        let listener = tokio::spawn(listen(listening, channel.clone(), sender));
        (
            Self { events, listener },
            Echo {
                pool: echoing,
                channel,
            },
        )
    }

    /// The next thing heard; `None` once the feed has stopped. Safe to cancel (in a
    /// `select!`): nothing is lost.
    pub async fn recv(&mut self) -> Option<FeedEvent> {
        self.events.recv().await
    }

    /// What has been heard already, without waiting.
    pub fn try_recv(&mut self) -> Option<FeedEvent> {
        self.events.try_recv().ok()
    }
}

impl Echo {
    /// Sends heartbeat `n`, committed at once; the feed hands it back as
    /// [`FeedEvent::Echo`] after every change committed before it.
    pub async fn send(&self, n: u64) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.channel)
            .bind(n.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Listens until the feed is dropped, opening the connection again whenever it fails.
async fn listen(pool: PgPool, echo_channel: String, events: mpsc::Sender<FeedEvent>) {
    let mut wait = RETRY_FIRST;
    loop {
        let (mut listener, schema) = match subscribe(&pool, &echo_channel).await {
            Ok(subscribed) => subscribed,
            Err(error) => {
                if events
                    .send(FeedEvent::Lost(error.to_string()))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
                continue;
            }
        };
        wait = RETRY_FIRST;
        if events.send(FeedEvent::Listening).await.is_err() {
            return;
        }
        loop {
            let heard = match listener.try_recv().await {
                Ok(Some(notice)) => {
                    match read_notice(notice.channel(), notice.payload(), &schema, &echo_channel) {
                        Some(heard) => heard,
                        None => continue,
                    }
                }
                // The connection died and sqlx has opened another and listens on it again
                // (eager reconnection): what was sent in between is lost.
                Ok(None) => {
                    if events
                        .send(FeedEvent::Lost("the listening connection was lost".into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    FeedEvent::Listening
                }
                // Anything else (the server ended the session, reconnection failed): drop this
                // listener and start over, from a connection known to work.
                Err(error) => {
                    if events
                        .send(FeedEvent::Lost(error.to_string()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    break;
                }
            };
            if events.send(heard).await.is_err() {
                return;
            }
        }
    }
}

/// Opens a listener on both channels; with the schema its session writes to.
async fn subscribe(pool: &PgPool, echo_channel: &str) -> Result<(PgListener, String)> {
    let mut listener = PgListener::connect_with(pool).await?;
    // The pool is this listener's alone and never closed; a close would only end the wait.
    listener.ignore_pool_close_event(true);
    listener.listen_all([CHANGES_CHANNEL, echo_channel]).await?;
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&mut listener)
        .await?;
    Ok((listener, schema))
}

/// What a notice means to this node, if anything.
fn read_notice(
    channel: &str,
    payload: &str,
    schema: &str,
    echo_channel: &str,
) -> Option<FeedEvent> {
    if channel == CHANGES_CHANNEL {
        let (from, seq) = payload.rsplit_once(':')?;
        (from == schema).then(|| seq.parse().ok().map(FeedEvent::Changed))?
    } else if channel == echo_channel {
        payload.parse().ok().map(FeedEvent::Echo)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_read_for_this_schema_and_this_node_only() {
        let read = |channel, payload| read_notice(channel, payload, "t_1", "custos_echo_ab");
        assert_eq!(
            read("custos_changes", "t_1:42"),
            Some(FeedEvent::Changed(42))
        );
        assert_eq!(read("custos_changes", "t_2:42"), None, "another deployment");
        assert_eq!(read("custos_changes", "42"), None);
        assert_eq!(read("custos_changes", "t_1:x"), None);
        assert_eq!(read("custos_echo_ab", "7"), Some(FeedEvent::Echo(7)));
        assert_eq!(
            read("custos_echo_cd", "7"),
            None,
            "another node's heartbeat"
        );
    }
}
