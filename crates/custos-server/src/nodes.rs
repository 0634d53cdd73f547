//! Several nodes on one PostgreSQL store: keeping this node's in-memory state as current as
//! the store, and knowing how current it is.
//!
//! Each node listens for the changes every node commits ([`custos_store::feed`]): a
//! transaction that appends a decision-changing event also sends a notice, delivered when it
//! commits. On each notice this node drops what it holds in memory (the next check reads the
//! store again) and catches up by reading the trail's state-changing events after the newest
//! it has seen, which also loads a new guardrail policy version. When the listening
//! connection is lost, notices are lost with it: the node drops everything, polls the trail
//! often until it listens again, then catches up once more. A slow poll runs even while
//! listening, a safety net under the notices.
//!
//! How current the node is, it learns from its own heartbeats: every few tens of milliseconds
//! it sends a notice only it listens to, and remembers when the newest one it heard back was
//! sent. PostgreSQL delivers notices to a listener in commit order, so hearing a heartbeat
//! sent at `t` means every change committed before `t` was heard, and handled, before it. The
//! node's lag is the time since then. In strict mode ([`Freshness::refuses`]) a node whose lag
//! is over the bound, or that is not listening, refuses every access decision with
//! `state_unconfirmed` rather than risk allowing what another node revoked.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use custos_core::EventKind;
use custos_store::feed::{ChangeFeed, Echo, FeedEvent};

use crate::service::AppState;

/// How often the trail is read for changes while the node listens: only a safety net, since
/// every change is also announced.
const SAFETY_POLL: Duration = Duration::from_secs(1);
/// How often it is read while the node does not listen, and notices may be missed.
const FALLBACK_POLL: Duration = Duration::from_millis(100);
/// How far below the newest change seen a catch-up looks again: on PostgreSQL a transaction
/// that took a lower `seq` can commit after a higher one.
const LOOK_BACK: i64 = 10_000;
/// Events read per page of a catch-up.
const CATCH_UP_PAGE: u32 = 1_000;
/// How many notices are taken together before the state is dropped once for all of them.
const MAX_BATCH: usize = 1_024;
/// Heartbeats sent and not yet heard back that are remembered; older ones are forgotten (a
/// heartbeat that old would not confirm anything useful).
const MAX_OUTSTANDING: usize = 256;

/// Whether this node's in-memory state is known to be current, and what strict mode makes
/// of it. Read on every access decision: two atomic loads and a clock read.
pub struct Freshness {
    /// This process's name among the nodes (its heartbeat channel and listener's name).
    node: String,
    /// Whether other nodes may change the store (PostgreSQL). A node alone on SQLite sees
    /// every write itself, and is always current.
    shared: bool,
    strict: bool,
    max_lag: Duration,
    /// The instant the timestamps below count from.
    origin: Instant,
    /// Listening for notices, and caught up since it last started to.
    listening: AtomicBool,
    /// When the newest heartbeat heard back was sent, in nanoseconds after `origin`, plus one;
    /// 0 while none has come back.
    confirmed: AtomicU64,
    /// Heartbeats sent and not heard back yet: their number and when they were sent.
    outstanding: Mutex<VecDeque<(u64, u64)>>,
}

impl Freshness {
    /// A node that shares its store with others (`shared`) and, if `strict`, refuses when it
    /// cannot confirm that its state lags the store by at most `max_lag`.
    pub fn new(node: String, shared: bool, strict: bool, max_lag: Duration) -> Self {
        Self {
            node,
            shared,
            strict,
            max_lag,
            origin: Instant::now(),
            listening: AtomicBool::new(false),
            confirmed: AtomicU64::new(0),
            outstanding: Mutex::new(VecDeque::new()),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn strict(&self) -> bool {
        self.strict
    }

    fn elapsed_nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// How far behind the store this node may be: the time since the newest heartbeat it
    /// heard back was sent. `None` before any came back.
    pub fn lag(&self) -> Option<Duration> {
        match self.confirmed.load(Ordering::Acquire) {
            0 => None,
            sent => Some(Duration::from_nanos(
                self.elapsed_nanos().saturating_sub(sent - 1),
            )),
        }
    }

    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Whether the node knows its state lags the store by at most the bound.
    pub fn is_current(&self) -> bool {
        !self.shared || (self.listening() && self.lag().is_some_and(|lag| lag <= self.max_lag))
    }

    /// Strict mode, and the node cannot confirm it is current: every decision is refused.
    pub fn refuses(&self) -> bool {
        self.strict && !self.is_current()
    }

    fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
        metrics::gauge!("custos_node_listening").set(if listening { 1.0 } else { 0.0 });
    }

    /// Notes heartbeat `n` as sent now.
    fn sent(&self, n: u64) {
        let at = self.elapsed_nanos();
        let mut outstanding = self.outstanding.lock().unwrap_or_else(|e| e.into_inner());
        outstanding.push_back((n, at));
        while outstanding.len() > MAX_OUTSTANDING {
            outstanding.pop_front();
        }
    }

    /// The node stopped listening: notices may have been missed, and no heartbeat sent
    /// before it listens again can confirm anything. From here on only a heartbeat sent and
    /// heard back after it listens again makes it current.
    fn forget(&self) {
        self.set_listening(false);
        self.confirmed.store(0, Ordering::Release);
        self.outstanding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Heartbeat `n` came back, after every notice committed before it was sent had been
    /// handled: the node is current as of its sending.
    fn heard(&self, n: u64) {
        let mut outstanding = self.outstanding.lock().unwrap_or_else(|e| e.into_inner());
        let mut sent = None;
        while let Some(&(m, at)) = outstanding.front() {
            if m > n {
                break;
            }
            if m == n {
                sent = Some(at);
            }
            outstanding.pop_front();
        }
        if let Some(at) = sent {
            self.confirmed.fetch_max(at + 1, Ordering::AcqRel);
        }
    }
}

/// Starts following the other nodes on the PostgreSQL store at `url`: the listener and its
/// catch-ups, and the heartbeats. The tasks run until aborted.
pub fn follow(state: &AppState, url: &str) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let (feed, echo) = ChangeFeed::start(url, state.freshness.node())?;
    tracing::info!(
        node = state.freshness.node(),
        strict = state.freshness.strict(),
        "following the other nodes' changes"
    );
    Ok(vec![
        tokio::spawn(follow_changes(state.clone(), feed)),
        tokio::spawn(send_heartbeats(state.clone(), echo)),
    ])
}

/// How often a node sends a heartbeat: a fifth of the lag it may have, so that a lost
/// heartbeat or two does not yet make it refuse; between 10 ms and 1 s.
fn heartbeat_interval(max_lag: Duration) -> Duration {
    (max_lag / 5).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Sends heartbeats, and keeps the lag gauge current (it grows while none come back).
async fn send_heartbeats(state: AppState, echo: Echo) {
    let freshness = &state.freshness;
    let interval = heartbeat_interval(freshness.max_lag);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 1u64.. {
        ticks.tick().await;
        let lag = freshness
            .lag()
            .unwrap_or_else(|| freshness.origin.elapsed())
            .as_secs_f64();
        metrics::gauge!("custos_node_state_lag_seconds").set(lag);
        freshness.sent(n);
        // A heartbeat that cannot be sent in time is as good as lost: the lag shows it.
        match tokio::time::timeout(freshness.max_lag.max(interval), echo.send(n)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "cannot send a heartbeat"),
            Err(_) => tracing::debug!("a heartbeat took too long to send"),
        }
    }
}

/// Reads the state-changing events committed after the newest seen, again a little below it.
struct CatchUp {
    kinds: Vec<String>,
    newest: i64,
    /// The events seen within the look-back, so a late commit below `newest` is told apart.
    seen: BTreeSet<i64>,
}

/// What a catch-up found.
#[derive(Default)]
struct Found {
    changes: usize,
    policies: bool,
}

impl CatchUp {
    async fn new(state: &AppState) -> Self {
        Self {
            kinds: EventKind::ALL
                .into_iter()
                .filter(|k| k.changes_decisions())
                .map(|k| k.as_str().to_owned())
                .collect(),
            // Changes committed before the node started cannot matter: nothing was in memory
            // yet. (Should the trail not answer, the first catch-up reads all of it, once.)
            newest: state
                .store
                .list_events(&custos_store::EventQuery {
                    limit: 1,
                    newest_first: true,
                    ..Default::default()
                })
                .await
                .ok()
                .and_then(|events| events.first().map(|e| e.seq))
                .unwrap_or(0),
            seen: BTreeSet::new(),
        }
    }

    /// Reads what is new, page by page, so that a burst of changes larger than a page within
    /// the look-back cannot hide the newest ones.
    async fn run(&mut self, state: &AppState) -> Result<Found, custos_store::StoreError> {
        let mut found = Found::default();
        let mut after = (self.newest - LOOK_BACK).max(0);
        loop {
            let query = custos_store::EventQuery {
                after_seq: after,
                limit: CATCH_UP_PAGE,
                kinds: self.kinds.clone(),
                ..Default::default()
            };
            let page = state.store.list_events(&query).await?;
            for event in &page {
                if self.seen.insert(event.seq) {
                    found.changes += 1;
                    found.policies |= event.event.kind == EventKind::PoliciesUpdated;
                    self.newest = self.newest.max(event.seq);
                }
            }
            match page.last() {
                Some(last) if page.len() == CATCH_UP_PAGE as usize => after = last.seq,
                _ => break,
            }
        }
        let floor = self.newest - LOOK_BACK;
        self.seen.retain(|seq| *seq > floor);
        Ok(found)
    }
}

/// Catches up and applies what it found: drops the state if anything is new (or `dropped`
/// says it is dropped already) and loads a new policy version. `false` if the trail or the
/// policies could not be read: nothing is known to be current.
async fn catch_up(state: &AppState, catch_up: &mut CatchUp, dropped: bool) -> bool {
    match catch_up.run(state).await {
        Ok(found) => {
            if found.changes > 0 && !dropped {
                state.live.invalidate_all();
            }
            if found.policies {
                match crate::policies::load(state.store.as_ref()).await {
                    Ok((version, guardrails)) => state.live.set_guardrails(version, guardrails),
                    Err(error) => {
                        tracing::error!(%error, "cannot load the new guardrail policies");
                        return false;
                    }
                }
            }
            true
        }
        Err(error) => {
            // Nothing is known to be current: forget it all, and read again.
            tracing::warn!(%error, "cannot read the other nodes' changes");
            state.live.invalidate_all();
            false
        }
    }
}

/// Follows the feed: drops the in-memory state on every notice, catches up, and confirms
/// heartbeats only once everything heard before them is handled.
async fn follow_changes(state: AppState, mut feed: ChangeFeed) {
    let freshness = state.freshness.clone();
    let mut reader = CatchUp::new(&state).await;
    let mut connected = false;
    // Whether the node must catch up before it counts as listening: at the start, after a
    // lost connection, and after a catch-up that failed.
    let mut resync = true;
    let mut said_lost = false;
    freshness.set_listening(false);
    // A deadline, not a sleep restarted on every notice: heartbeats come more often than the
    // safety poll is due.
    let mut next_poll = tokio::time::Instant::now() + FALLBACK_POLL;
    loop {
        let first = tokio::select! {
            heard = feed.recv() => match heard {
                Some(heard) => Some(heard),
                None => return,
            },
            () = tokio::time::sleep_until(next_poll) => None,
        };
        let Some(first) = first else {
            // The safety net while listening, the fallback while not.
            let ok = catch_up(&state, &mut reader, false).await;
            if !ok {
                resync = true;
                freshness.set_listening(false);
            } else if resync && connected {
                resync = false;
                freshness.set_listening(true);
            }
            next_poll = tokio::time::Instant::now()
                + if connected {
                    SAFETY_POLL
                } else {
                    FALLBACK_POLL
                };
            continue;
        };
        // Take whatever else has come, so one drop and one read serve a burst of notices.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH
            && let Some(heard) = feed.try_recv()
        {
            batch.push(heard);
        }
        let mut changed = false;
        let mut echoes = Vec::new();
        for heard in batch {
            match heard {
                FeedEvent::Listening => {
                    connected = true;
                    resync = true;
                    said_lost = false;
                    tracing::info!("listening for the other nodes' changes");
                }
                FeedEvent::Lost(why) => {
                    if !said_lost {
                        tracing::warn!(%why, "not hearing the other nodes' changes; polling until listening again");
                        said_lost = true;
                    }
                    connected = false;
                    resync = true;
                    // Heartbeats heard before the loss confirm nothing after it.
                    echoes.clear();
                    freshness.forget();
                    next_poll = next_poll.min(tokio::time::Instant::now() + FALLBACK_POLL);
                }
                FeedEvent::Changed(_) => changed = true,
                FeedEvent::Echo(n) => echoes.push(n),
            }
        }
        if changed || resync {
            // Dropped at once, before the trail is read: the next check reads the store,
            // which holds the change, since its notice came after its commit.
            state.live.invalidate_all();
            let ok = catch_up(&state, &mut reader, true).await;
            if !ok {
                resync = true;
                freshness.set_listening(false);
            } else if resync && connected {
                resync = false;
                freshness.set_listening(true);
            }
        }
        // Only now that every notice before them is handled do the heartbeats count.
        for n in echoes {
            freshness.heard(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_heard_back_confirms_the_time_it_was_sent() {
        let freshness = Freshness::new("n".into(), true, true, Duration::from_millis(500));
        assert!(freshness.refuses(), "nothing confirmed yet");
        freshness.set_listening(true);
        assert!(freshness.refuses(), "listening, but no heartbeat back yet");
        freshness.sent(1);
        freshness.sent(2);
        freshness.heard(2);
        assert!(freshness.lag().unwrap() < Duration::from_millis(500));
        assert!(!freshness.refuses());
        // Heard out of order or twice: the older one confirms nothing newer.
        freshness.heard(1);
        freshness.heard(2);
        assert!(freshness.outstanding.lock().unwrap().is_empty());
        freshness.set_listening(false);
        assert!(freshness.refuses(), "not listening");
        // Listening again does not bring back what was confirmed before the loss.
        freshness.forget();
        freshness.set_listening(true);
        assert!(freshness.lag().is_none() && freshness.refuses());
        freshness.sent(3);
        freshness.heard(3);
        assert!(!freshness.refuses());
    }

    #[test]
    fn an_old_confirmation_lapses() {
        let freshness = Freshness::new("n".into(), true, true, Duration::from_millis(20));
        freshness.set_listening(true);
        freshness.sent(1);
        freshness.heard(1);
        assert!(!freshness.refuses());
        std::thread::sleep(Duration::from_millis(30));
        assert!(freshness.refuses());
    }

    #[test]
    fn a_lone_node_or_a_lenient_one_never_refuses() {
        let alone = Freshness::new("n".into(), false, true, Duration::from_millis(500));
        assert!(alone.is_current() && !alone.refuses());
        let lenient = Freshness::new("n".into(), true, false, Duration::from_millis(500));
        assert!(!lenient.is_current() && !lenient.refuses());
    }

    #[test]
    fn heartbeats_are_a_fifth_of_the_bound() {
        assert_eq!(
            heartbeat_interval(Duration::from_millis(500)),
            Duration::from_millis(100)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_millis(20)),
            Duration::from_millis(10)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
    }
}
