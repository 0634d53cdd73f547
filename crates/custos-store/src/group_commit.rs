//! Group commit for the embedded store: concurrent writes share one SQLite transaction and one
//! fsync, and each is acknowledged only once that transaction is durable.
//!
//! SQLite has one writer. With `synchronous=FULL` every commit waits for the disk, so writes
//! that each commit alone are capped by the disk's flush rate (about 1,500 a second on the
//! build machine). Here a write is a savepoint inside a shared transaction instead:
//!
//! 1. [`GroupCommit::slot`] takes the writer (a fair mutex) and opens the shared transaction if
//!    none is open. [`Slot::begin`] starts the write's own savepoint, an ordinary nested sqlx
//!    [`Transaction`]: committing it releases the savepoint, dropping it rolls the savepoint
//!    back. sqlx's connection worker runs these in order and tracks the depth itself, so a
//!    write cancelled at any await point leaves nothing of its own behind.
//! 2. [`Slot::finish`] lets the next writer in, and then waits until a transaction containing
//!    its work has committed: one waiting writer becomes the committer for everything written
//!    so far, the others find their batch already done.
//! 3. A slot dropped without finishing (an error path, a cancelled request) hands the commit of
//!    its batch to a background task, so released work never waits for a later write.
//!
//! If the shared commit fails, every write in it gets the error: nothing in it was kept, so no
//! caller is told otherwise. Writes in one batch see each other's uncommitted changes, as
//! they would one after the other; a batch commits or fails as a whole.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::{Connection, Sqlite, SqlitePool, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{Result, StoreError};

/// The shared transaction and the batch it belongs to.
struct Open {
    tx: Option<Transaction<'static, Sqlite>>,
    /// Numbers batches; a write remembers the batch its work went into.
    batch: u64,
}

struct Outcomes {
    /// Every batch up to this one has been committed or has failed.
    settled: u64,
    /// Failures of recent batches, for writers that learn of their batch late.
    failures: BTreeMap<u64, String>,
}

/// How many failed batches are remembered; a writer waits only for its own batch, which is
/// settled moments after it wrote, so a short memory suffices.
const REMEMBERED_FAILURES: usize = 1024;

struct Inner {
    pool: SqlitePool,
    open: Arc<Mutex<Open>>,
    /// One committer at a time; waiting here is what makes a batch grow.
    committing: Mutex<Outcomes>,
}

pub struct GroupCommit {
    inner: Arc<Inner>,
}

/// The writer, held for one write: its statements run in [`Slot::begin`]'s transaction.
pub struct Slot {
    inner: Arc<Inner>,
    guard: Option<OwnedMutexGuard<Open>>,
    /// The batch this slot wrote into, until it has been settled.
    unsettled: Option<u64>,
}

fn no_transaction() -> StoreError {
    StoreError::Unavailable("the shared write transaction is missing".into())
}

impl GroupCommit {
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                open: Arc::new(Mutex::new(Open { tx: None, batch: 1 })),
                committing: Mutex::new(Outcomes {
                    settled: 0,
                    failures: BTreeMap::new(),
                }),
            }),
        }
    }

    /// Takes the writer for one write, opening the shared transaction if needed.
    pub async fn slot(&self) -> Result<Slot> {
        let mut guard = self.inner.open.clone().lock_owned().await;
        if guard.tx.is_none() {
            guard.tx = Some(self.inner.pool.begin().await?);
        }
        let batch = guard.batch;
        Ok(Slot {
            inner: self.inner.clone(),
            guard: Some(guard),
            unsettled: Some(batch),
        })
    }
}

impl Inner {
    /// Waits until `batch` is settled, committing whatever is open if nobody else has.
    async fn settle(&self, batch: u64) -> Result<()> {
        let mut outcomes = self.committing.lock().await;
        if outcomes.settled < batch {
            // Taking the writer waits for the write in progress, if any, to finish.
            let (committed, tx) = {
                let mut open = self.open.lock().await;
                let committing = open.batch;
                open.batch += 1;
                (committing, open.tx.take())
            };
            let result = match tx {
                Some(tx) => tx.commit().await.map_err(|e| e.to_string()),
                None => Ok(()),
            };
            if let Err(reason) = result {
                tracing::error!(%reason, batch = committed, "group commit failed");
                outcomes.failures.insert(committed, reason);
                while outcomes.failures.len() > REMEMBERED_FAILURES {
                    outcomes.failures.pop_first();
                }
            }
            outcomes.settled = committed;
        }
        match outcomes.failures.get(&batch) {
            Some(reason) => Err(StoreError::Unavailable(format!(
                "the write was not committed: {reason}"
            ))),
            None => Ok(()),
        }
    }
}

impl Slot {
    /// The write's own savepoint in the shared transaction.
    pub async fn begin(&mut self) -> Result<Transaction<'_, Sqlite>> {
        let open = self.guard.as_deref_mut().ok_or_else(no_transaction)?;
        let outer = open.tx.as_mut().ok_or_else(no_transaction)?;
        Ok(outer.begin().await?)
    }

    /// Lets the next writer in and returns once this write is durable.
    pub async fn finish(mut self) -> Result<()> {
        drop(self.guard.take());
        let batch = self.unsettled.ok_or_else(no_transaction)?;
        let result = self.inner.settle(batch).await;
        self.unsettled = None;
        result
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Work released into the batch must be committed even if its writer is gone; a batch
        // with nothing in it commits as a no-op.
        if let Some(batch) = self.unsettled.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let inner = self.inner.clone();
            runtime.spawn(async move {
                let _ = inner.settle(batch).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    use super::*;

    async fn group() -> (GroupCommit, SqlitePool, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (v INTEGER PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        let reader = SqlitePoolOptions::new()
            .connect_with(options)
            .await
            .unwrap();
        (GroupCommit::new(pool), reader, dir)
    }

    async fn values(reader: &SqlitePool) -> Vec<i64> {
        sqlx::query("SELECT v FROM t ORDER BY v")
            .fetch_all(reader)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("v"))
            .collect()
    }

    async fn insert(tx: &mut Transaction<'_, Sqlite>, v: i64) -> Result<()> {
        sqlx::query("INSERT INTO t (v) VALUES ($1)")
            .bind(v)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// One whole write: a slot, a savepoint with one insert, committed and settled.
    async fn write(group: &GroupCommit, v: i64) -> Result<()> {
        let mut slot = group.slot().await?;
        let mut tx = slot.begin().await?;
        insert(&mut tx, v).await?;
        tx.commit().await?;
        slot.finish().await
    }

    #[tokio::test]
    async fn a_dropped_write_is_undone_and_its_neighbours_kept() {
        let (group, reader, _dir) = group().await;
        write(&group, 1).await.unwrap();
        {
            let mut slot = group.slot().await.unwrap();
            let mut tx = slot.begin().await.unwrap();
            insert(&mut tx, 2).await.unwrap();
            // Dropped here, mid-write, as a cancelled request would be.
        }
        write(&group, 3).await.unwrap();
        assert_eq!(values(&reader).await, [1, 3]);
    }

    #[tokio::test]
    async fn a_failed_statement_fails_its_write_only() {
        let (group, reader, _dir) = group().await;
        write(&group, 1).await.unwrap();
        assert!(matches!(write(&group, 1).await, Err(StoreError::Conflict)));
        write(&group, 4).await.unwrap();
        assert_eq!(values(&reader).await, [1, 4]);
    }

    #[tokio::test]
    async fn released_work_of_a_vanished_writer_is_still_committed() {
        let (group, reader, _dir) = group().await;
        let mut slot = group.slot().await.unwrap();
        let mut tx = slot.begin().await.unwrap();
        insert(&mut tx, 7).await.unwrap();
        tx.commit().await.unwrap();
        drop(slot);
        for _ in 0..100 {
            if values(&reader).await == [7] {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the released write was never committed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits() {
        let (group, reader, _dir) = group().await;
        let group = Arc::new(group);
        let mut tasks = tokio::task::JoinSet::new();
        for v in 0..200 {
            let group = group.clone();
            tasks.spawn(async move { write(&group, v).await });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap().unwrap();
        }
        assert_eq!(values(&reader).await, (0..200).collect::<Vec<_>>());
        let settled = group.inner.committing.lock().await.settled;
        assert!(
            settled < 200,
            "200 writes took {settled} commits: none were shared"
        );
    }
}
