//! The audit log, the tamper-evident trail's bars (DESIGN.md §5): "durable append ≥ 100k
//! events/s (group commit); verify 1M events ≤ 5 s; an inclusion proof ≤ 1 ms", and beside
//! them, in the same run, this machine's raw SHA-256 leaf-hashing rate: the physical limit.
//!
//! In process, with no HTTP, for each store (a fresh SQLite file, `synchronous=FULL` with group
//! commit, or a fresh PostgreSQL schema):
//!
//! 1. **durable append**: `CUSTOS_BENCH_EVENTS` events shaped like per-action decisions (4–6
//!    details, ≈ 280 canonical bytes) through `Store::append_events`, `CUSTOS_BENCH_BATCH` per
//!    call, from `CUSTOS_BENCH_WRITERS` concurrent tasks; each call returns once durable, and
//!    concurrent calls share commits (fsyncs): events/s, and per-call median and p99;
//! 2. **sealing**: the server's sealer, `AuditLog::seal_pending`, over all of them (reading the
//!    unsealed events, leaf hashing, the compact range, storing leaves and node hashes);
//! 3. **checkpoint**: `AuditLog::checkpoint`, the signed note a verifier starts from; then, on
//!    PostgreSQL, `VACUUM (ANALYZE)` of the three tables, as autovacuum would soon do;
//! 4. **full verification**: open the signed checkpoint with the log's key, read every event
//!    back in log order (`audit_events` in pages of `CUSTOS_BENCH_PAGE`), re-encode and hash
//!    each leaf (`custos_core::audit::leaf_hash`), fold them with `merkle::CompactRange` and
//!    compare the root and size: total seconds, split into reading and CPU (encoding, hashing,
//!    tree); once serially, once with `CUSTOS_BENCH_READERS` pages read at once (the reads are
//!    CPU-bound row decoding, so they spread over the cores) and hashed in order as they come;
//! 5. **inclusion proofs**: `custos_server::audit::inclusion_proof` for `CUSTOS_BENCH_PROOFS`
//!    random leaves of the whole log: median and p99 (each proof is then checked with
//!    `merkle::verify_inclusion`, untimed), and the same with the leaf's event read as well,
//!    as the HTTP handler does;
//! 6. **the physical limit**: `merkle::leaf_hash` over the same events' canonical bytes, encoded
//!    beforehand and in memory, on one thread: leaves/s and MB/s; and folding those leaf hashes
//!    into the tree (`CompactRange::push`).
//!
//! It prints one markdown table per store, ready for `docs/benchmarks.md`.
//!
//! ```text
//! export CARGO_TARGET_DIR=/var/tmp/custos-target
//! cargo bench -p custos-server --bench audit_log                            # 1,000,000 events, both stores
//! CUSTOS_BENCH_EVENTS=2000 cargo bench -p custos-server --bench audit_log   # a smoke run
//! ```
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `CUSTOS_BENCH_EVENTS` | `1_000_000` | events appended, sealed and verified (`_` separators allowed) |
//! | `CUSTOS_BENCH_BACKENDS` | `sqlite,postgres` | which stores, in order |
//! | `CUSTOS_BENCH_BATCH` | `1000` | events per `append_events` call |
//! | `CUSTOS_BENCH_WRITERS` | `4` | concurrent appending tasks |
//! | `CUSTOS_BENCH_PAGE` | `10000` | events per `audit_events` read when verifying |
//! | `CUSTOS_BENCH_READERS` | `2` | pages read at once (each on its own connection) by the parallel verification |
//! | `CUSTOS_BENCH_PROOFS` | `1000` | timed inclusion proofs |
//! | `CUSTOS_BENCH_DIR` | the system temp dir | where the SQLite file is made |
//! | `CUSTOS_BENCH_KEEP` | unset | `1` keeps the SQLite file and the PostgreSQL schema (for EXPLAIN) |
//! | `CUSTOS_TEST_DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/test` | PostgreSQL; a fresh schema per run, dropped at the end |
//!
//! The verification bar is judged at 1,000,000 events or more (the time scaled linearly to 1M);
//! a smaller run prints its time scaled to 1M but no verdict, since fixed costs dominate it.
//! `cargo test --benches` runs bench targets without `--bench`; this one then does nothing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use custos_core::checkpoint::{Checkpoint, NoteVerifier};
use custos_core::merkle::{self, CompactRange, Hash};
use custos_core::{Actor, DomainEvent, EventKind, Timestamp, audit};
use custos_server::audit::{AuditLog, inclusion_proof};
use custos_server::secrets::Keys;
use custos_server::service::{Clock, SystemClock, new_id};
use custos_store::{PostgresStore, Store};

mod common;
use common::*;

/// Durable append, events per second.
const APPEND_BAR: u64 = 100_000;
/// Full verification of `VERIFY_BAR_EVENTS` events, in seconds.
const VERIFY_BAR_SECS: f64 = 5.0;
const VERIFY_BAR_EVENTS: usize = 1_000_000;
/// One inclusion proof, in milliseconds, judged at p99.
const PROOF_BAR_MS: f64 = 1.0;
/// Distinct NHIs the decisions are about: subjects repeat, as they do in a real trail.
const NHIS: usize = 10_000;
const ORIGIN: &str = "custos.bench.example/audit";

fn main() -> ExitCode {
    bench_main("audit_log", "fills stores", run)
}

// ---- configuration ----

struct Config {
    events: usize,
    backends: Vec<Backend>,
    batch: usize,
    writers: usize,
    page: usize,
    /// Pages read at once by the parallel verification.
    readers: usize,
    proofs: usize,
    dir: PathBuf,
    pg_url: String,
    keep: bool,
}

impl Config {
    fn from_env() -> Result<Self> {
        let non_empty = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let backends = non_empty("CUSTOS_BENCH_BACKENDS")
            .unwrap_or_else(|| "sqlite,postgres".into())
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s {
                "sqlite" => Ok(Backend::Sqlite),
                "postgres" | "postgresql" => Ok(Backend::Postgres),
                other => {
                    bail!("CUSTOS_BENCH_BACKENDS: unknown backend {other:?} (sqlite, postgres)")
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let events = env_number("CUSTOS_BENCH_EVENTS", 1_000_000)?;
        ensure!(events >= 1, "CUSTOS_BENCH_EVENTS must be at least 1");
        Ok(Self {
            events,
            backends,
            batch: env_number("CUSTOS_BENCH_BATCH", 1_000)?.max(1),
            writers: env_number("CUSTOS_BENCH_WRITERS", 4)?.max(1),
            page: env_number("CUSTOS_BENCH_PAGE", 10_000)?.max(1),
            readers: env_number("CUSTOS_BENCH_READERS", 2)?.max(1),
            proofs: env_number("CUSTOS_BENCH_PROOFS", 1_000)?.max(1),
            dir: non_empty("CUSTOS_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from),
            pg_url: non_empty("CUSTOS_TEST_DATABASE_URL").unwrap_or_else(|| DEFAULT_PG_URL.into()),
            keep: non_empty("CUSTOS_BENCH_KEEP").is_some_and(|v| v.trim() != "0"),
        })
    }

    fn backend_names(&self) -> String {
        self.backends
            .iter()
            .map(|b| match b {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgres",
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

// ---- the run ----

async fn run() -> Result<()> {
    let cfg = Config::from_env()?;
    eprintln!(
        "audit_log: {} events on {:?}, {} per call from {} writers",
        thousands(cfg.events as u64),
        cfg.backends,
        thousands(cfg.batch as u64),
        cfg.writers
    );
    println!("## Audit log (tamper-evident trail)\n");
    println!("Machine: {}; {}.", machine(), sha_extensions());
    println!(
        "Command: `CUSTOS_BENCH_EVENTS={} CUSTOS_BENCH_BACKENDS={} CUSTOS_BENCH_BATCH={} \
         CUSTOS_BENCH_WRITERS={} cargo bench -p custos-server --bench audit_log`\n",
        cfg.events,
        cfg.backend_names(),
        cfg.batch,
        cfg.writers
    );
    for backend in cfg.backends.clone() {
        let report = bench_backend(&cfg, backend)
            .await
            .with_context(|| format!("{} run failed", backend.title()))?;
        println!("{}", report.markdown(&cfg));
    }
    Ok(())
}

/// Whether SHA-256 runs on the CPU's SHA extensions (the `sha2` crate detects them at run time).
fn sha_extensions() -> &'static str {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .unwrap_or_default();
    if flags.split_whitespace().any(|f| f == "sha_ni") {
        "SHA-256 on the CPU's SHA extensions (`sha_ni`)"
    } else {
        "no SHA extensions in /proc/cpuinfo: SHA-256 in software"
    }
}

async fn bench_backend(cfg: &Config, backend: Backend) -> Result<Report> {
    std::fs::create_dir_all(&cfg.dir)?;
    let work = tempfile::Builder::new()
        .prefix("custos-audit-bench-")
        .tempdir_in(&cfg.dir)
        .with_context(|| format!("cannot make a directory in {}", cfg.dir.display()))?;
    let db_path = work.path().join("custos.db");
    let schema = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(PgSchema::create(&cfg.pg_url).await?),
    };
    let result = async {
        let store: Arc<dyn Store> = match &schema {
            None => custos_store::open(&format!("sqlite://{}", db_path.display())).await?,
            Some(schema) => Arc::new(PostgresStore::connect_with(schema.options()?).await?),
        };
        let version = match &schema {
            None => sqlite_version().await?,
            Some(schema) => schema.version().await?,
        };
        let mut report = measure(cfg, backend, store, schema.as_ref()).await?;
        report.version = version;
        report.store_bytes = match &schema {
            None => sqlite_size(work.path()),
            Some(schema) => schema.size().await.ok(),
        };
        Ok::<_, anyhow::Error>(report)
    }
    .await;
    if cfg.keep {
        let path = work.keep();
        eprintln!("kept the data directory {}", path.display());
        if let Some(schema) = &schema {
            eprintln!("kept the PostgreSQL schema {}", schema.name);
        }
    } else if let Some(schema) = schema
        && let Err(e) = schema.drop().await
    {
        eprintln!("could not drop the benchmark schema: {e:#}");
    }
    result
}

async fn measure(
    cfg: &Config,
    backend: Backend,
    store: Arc<dyn Store>,
    schema: Option<&PgSchema>,
) -> Result<Report> {
    let title = backend.title();
    let load_start = loadavg();

    eprintln!(
        "[{title}] generating {} events",
        thousands(cfg.events as u64)
    );
    let batches = generate(cfg.events, cfg.batch);
    // The canonical bytes of the same events, for the raw hashing rate at the end.
    let encoded: Vec<Vec<u8>> = batches.iter().flatten().map(audit::encode).collect();
    let canonical_bytes: usize = encoded.iter().map(Vec::len).sum();

    // 1. Durable append.
    eprintln!("[{title}] appending");
    let load = loadavg();
    let append = append(cfg, title, &store, Arc::new(batches)).await?;
    let append_load = format!("{load} → {}", loadavg());

    // 2. Sealing.
    let keys = Keys::from_master(
        &hex::decode(MASTER_KEY_HEX)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("the master key is not 32 bytes"))?,
    );
    let log = AuditLog::open(store.as_ref(), &keys, ORIGIN.to_owned(), None).await?;
    let load = loadavg();
    eprintln!("[{title}] sealing");
    let watcher = watch_sealing(title, store.clone(), cfg.events as u64);
    let started = Instant::now();
    let mut sealed = 0;
    loop {
        let n = log.seal_pending(store.as_ref(), false).await?;
        if n == 0 {
            break;
        }
        sealed += n;
    }
    let seal = started.elapsed();
    watcher.abort();
    let seal_load = format!("{load} → {}", loadavg());
    ensure!(
        sealed == cfg.events as u64,
        "sealed {sealed} events, not {}",
        cfg.events
    );
    eprintln!(
        "[{title}] sealed {} events in {:.1} s = {} events/s",
        thousands(sealed),
        seal.as_secs_f64(),
        thousands(rate(cfg.events, seal))
    );

    // 3. The checkpoint a verifier starts from.
    let started = Instant::now();
    let checkpoint = log.checkpoint(store.as_ref(), SystemClock.now()).await?;
    let checkpoint_time = started.elapsed();
    ensure!(checkpoint.size == cfg.events as u64, "checkpoint size");
    let verifier = NoteVerifier::from_vkey(&log.verifier_key())?;

    // Autovacuum would analyse these freshly filled tables within a minute or so; doing it here
    // makes the plans (and so the figures) independent of its timing.
    let mut maintenance = None;
    if let Some(schema) = schema {
        let started = Instant::now();
        let mut conn = schema.connect().await?;
        sqlx::query("VACUUM (ANALYZE) events, audit_leaves, audit_nodes")
            .execute(&mut conn)
            .await?;
        maintenance = Some(started.elapsed());
    }

    // 4. Full verification, serial and pipelined.
    eprintln!("[{title}] verifying");
    let load = loadavg();
    let serial = verify(cfg, &store, &checkpoint.note, &verifier, false).await?;
    eprintln!(
        "[{title}] verified serially in {:.2} s (reading {:.2} s, CPU {:.2} s)",
        serial.total.as_secs_f64(),
        serial.read.as_secs_f64(),
        serial.cpu.as_secs_f64()
    );
    let pipelined = verify(cfg, &store, &checkpoint.note, &verifier, true).await?;
    eprintln!(
        "[{title}] verified with parallel reads in {:.2} s",
        pipelined.total.as_secs_f64()
    );
    let verify_load = format!("{load} → {}", loadavg());
    ensure!(
        pipelined.leaves == serial.leaves,
        "the two verifications read different leaves"
    );

    // 5. Inclusion proofs.
    eprintln!("[{title}] proving");
    let load = loadavg();
    let proofs = proofs(cfg, &store, &serial.leaves, &serial.root).await?;
    let proofs_load = format!("{load} → {}", loadavg());
    eprintln!(
        "[{title}] inclusion proofs: median {:.3} ms, p99 {:.3} ms",
        proofs.median_ms, proofs.p99_ms
    );

    // 6. The physical limit: leaf hashing of bytes already in memory, then the tree.
    let load = loadavg();
    let started = Instant::now();
    let mut leaves = Vec::with_capacity(encoded.len());
    for bytes in &encoded {
        leaves.push(merkle::leaf_hash(bytes));
    }
    let hash_time = started.elapsed();
    let started = Instant::now();
    let mut range = CompactRange::new();
    for leaf in &leaves {
        range.push(*leaf)?;
    }
    let tree_time = started.elapsed();
    // The store gave back exactly the events that were written: the same canonical bytes. (In
    // log order, which concurrent writers make differ from the order they were generated in.)
    let mut written = leaves;
    let mut read_back = serial.leaves.clone();
    written.sort_unstable();
    read_back.sort_unstable();
    ensure!(
        written == read_back,
        "the leaves read back differ from the events written"
    );
    let raw_load = format!("{load} → {}", loadavg());

    Ok(Report {
        backend,
        version: String::new(),
        events: cfg.events,
        canonical_bytes,
        append,
        append_load,
        seal,
        seal_load,
        checkpoint_time,
        maintenance,
        serial,
        pipelined,
        verify_load,
        proofs,
        proofs_load,
        hash_time,
        tree_time,
        raw_load,
        store_bytes: None,
        load: format!("{load_start} → {}", loadavg()),
    })
}

/// Prints the sealer's progress from the stored head while a long seal runs.
fn watch_sealing(
    title: &'static str,
    store: Arc<dyn Store>,
    total: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(15)).await;
            if let Ok(head) = store.audit_head().await {
                eprintln!(
                    "[{title}] sealed {} of {} after {:.0} s",
                    thousands(head.size),
                    thousands(total),
                    started.elapsed().as_secs_f64()
                );
            }
        }
    })
}

// ---- 1. durable append ----

struct Append {
    elapsed: Duration,
    calls: usize,
    median_ms: f64,
    p99_ms: f64,
}

async fn append(
    cfg: &Config,
    title: &'static str,
    store: &Arc<dyn Store>,
    batches: Arc<Vec<Vec<DomainEvent>>>,
) -> Result<Append> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let total = cfg.events;
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..cfg.writers {
        let (store, batches, next, done) =
            (store.clone(), batches.clone(), next.clone(), done.clone());
        writers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(batch) = batches.get(i) else {
                    return Ok::<_, anyhow::Error>(latencies);
                };
                let sent = Instant::now();
                store
                    .append_events(batch)
                    .await
                    .with_context(|| format!("append_events of batch {i}"))?;
                latencies.push(sent.elapsed());
                let before = done.fetch_add(batch.len(), Ordering::Relaxed);
                let tenth = (total / 10).max(1);
                if (before + batch.len()) / tenth > before / tenth {
                    eprintln!(
                        "[{title}] appended {} of {} in {:.1} s",
                        thousands((before + batch.len()) as u64),
                        thousands(total as u64),
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        });
    }
    let mut latencies = Vec::new();
    while let Some(result) = writers.join_next().await {
        latencies.extend(result??);
    }
    let elapsed = started.elapsed();
    let calls = latencies.len();
    let (median_ms, p99_ms) = percentiles(&mut latencies);
    eprintln!(
        "[{title}] durable append: {} events in {:.1} s = {} events/s",
        thousands(total as u64),
        elapsed.as_secs_f64(),
        thousands(rate(total, elapsed))
    );
    Ok(Append {
        elapsed,
        calls,
        median_ms,
        p99_ms,
    })
}

// ---- 4. full verification ----

struct Verification {
    total: Duration,
    /// Waiting for `audit_events` (serially: all of the reading).
    read: Duration,
    /// Encoding, leaf hashing and folding into the tree.
    cpu: Duration,
    leaves: Vec<Hash>,
    root: Hash,
}

/// Verifies the whole log against the signed checkpoint: the signature, then every leaf read
/// back in log order, re-hashed and folded into the root the checkpoint names.
async fn verify(
    cfg: &Config,
    store: &Arc<dyn Store>,
    note: &str,
    verifier: &NoteVerifier,
    pipelined: bool,
) -> Result<Verification> {
    let started = Instant::now();
    let checkpoint = Checkpoint::open(note.as_bytes(), verifier)?;
    let size = checkpoint.size();
    let page = cfg.page as u64;
    let mut range = CompactRange::new();
    let mut leaves = Vec::with_capacity(usize::try_from(size)?);
    let mut cpu = Duration::ZERO;
    let mut read = Duration::ZERO;
    if pipelined {
        // A reader task keeps `readers` pages in flight, each read on its own connection, and
        // hands them over in log order; the hashing folds them as they come.
        let (pages_tx, mut pages_rx) = tokio::sync::mpsc::channel(cfg.readers);
        let store = store.clone();
        let readers = cfg.readers;
        let reader = tokio::spawn(async move {
            let mut read = Duration::ZERO;
            let mut in_flight = std::collections::VecDeque::new();
            let mut next = 0;
            loop {
                while in_flight.len() < readers && next < size {
                    let to = (next + page).min(size);
                    let store = store.clone();
                    let from = next;
                    in_flight.push_back(tokio::spawn(async move {
                        let asked = Instant::now();
                        let events = store.audit_events(from, to).await;
                        (from, to, events, asked.elapsed())
                    }));
                    next = to;
                }
                let Some(oldest) = in_flight.pop_front() else {
                    break;
                };
                let (from, to, events, took) = oldest.await?;
                read += took;
                if pages_tx.send((from, to, events?)).await.is_err() {
                    break;
                }
            }
            Ok::<_, anyhow::Error>(read)
        });
        while let Some((from, to, events)) = pages_rx.recv().await {
            cpu += fold(from, to, &events, &mut range, &mut leaves)?;
        }
        read = reader.await??;
    } else {
        // One page at a time: read it, hash it, then read the next.
        let mut from = 0;
        while from < size {
            let to = (from + page).min(size);
            let asked = Instant::now();
            let events = store.audit_events(from, to).await?;
            read += asked.elapsed();
            cpu += fold(from, to, &events, &mut range, &mut leaves)?;
            from = to;
        }
    }
    ensure!(
        range.size() == size,
        "read {} leaves, not {size}",
        range.size()
    );
    let root = range.root();
    ensure!(
        root == checkpoint.root(),
        "the recomputed root differs from the signed checkpoint's"
    );
    Ok(Verification {
        total: started.elapsed(),
        read,
        cpu,
        leaves,
        root,
    })
}

/// Hashes one page of leaves into the tree; returns the CPU time it took.
fn fold(
    from: u64,
    to: u64,
    events: &[(u64, custos_core::event::StoredEvent)],
    range: &mut CompactRange,
    leaves: &mut Vec<Hash>,
) -> Result<Duration> {
    ensure!(
        events.len() as u64 == to - from,
        "leaves {from}..{to}: the store returned {}",
        events.len()
    );
    let started = Instant::now();
    for (index, event) in events {
        ensure!(*index == range.size(), "leaf {index} out of order");
        let leaf = audit::leaf_hash(&event.event);
        range.push(leaf)?;
        leaves.push(leaf);
    }
    Ok(started.elapsed())
}

// ---- 5. inclusion proofs ----

struct Proofs {
    n: usize,
    median_ms: f64,
    p99_ms: f64,
    hashes: usize,
    with_event_median_ms: f64,
    with_event_p99_ms: f64,
}

async fn proofs(
    cfg: &Config,
    store: &Arc<dyn Store>,
    leaves: &[Hash],
    root: &Hash,
) -> Result<Proofs> {
    let size = leaves.len() as u64;
    let mut rng = Rng(0xA0D1_7000_0000_0001);
    let mut indexes: Vec<u64> = (0..cfg.proofs + 10).map(|_| rng.next() % size).collect();
    // A few untimed first: connections, statement caches.
    for index in indexes.drain(..10) {
        inclusion_proof(store.as_ref(), index, size).await?;
    }
    let mut times = Vec::with_capacity(indexes.len());
    let mut hashes = 0;
    for &index in &indexes {
        let started = Instant::now();
        let proof = inclusion_proof(store.as_ref(), index, size).await?;
        times.push(started.elapsed());
        hashes = hashes.max(proof.len());
        let leaf = leaves[usize::try_from(index)?];
        merkle::verify_inclusion(&leaf, index, size, &proof, root)
            .map_err(|e| anyhow::anyhow!("the proof of leaf {index} does not verify: {e}"))?;
    }
    let (median_ms, p99_ms) = percentiles(&mut times);
    // As `GET /v1/audit/proof/inclusion` does it, without HTTP: the leaf's event, its hash and
    // the proof.
    let mut with_event = Vec::with_capacity(indexes.len());
    for &index in &indexes {
        let started = Instant::now();
        let event = store
            .audit_event(index)
            .await?
            .with_context(|| format!("no event at leaf {index}"))?;
        let leaf = audit::leaf_hash(&event.event);
        let proof = inclusion_proof(store.as_ref(), index, size).await?;
        with_event.push(started.elapsed());
        merkle::verify_inclusion(&leaf, index, size, &proof, root)
            .map_err(|e| anyhow::anyhow!("the proof of leaf {index} does not verify: {e}"))?;
    }
    let (with_event_median_ms, with_event_p99_ms) = percentiles(&mut with_event);
    Ok(Proofs {
        n: times.len(),
        median_ms,
        p99_ms,
        hashes,
        with_event_median_ms,
        with_event_p99_ms,
    })
}

// ---- realistic events ----

/// splitmix64: a fixed seed gives the same trail on every run and backend.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const SERVICES: [&str; 12] = [
    "crm",
    "billing",
    "ledger",
    "github",
    "s3",
    "jira",
    "slack",
    "salesforce",
    "snowflake",
    "stripe",
    "vault",
    "k8s",
];
const OPERATIONS: [&str; 5] = ["read", "write", "list", "delete", "admin"];
const RESOURCES: [&str; 8] = [
    "customers",
    "invoices",
    "repos",
    "buckets",
    "tickets",
    "accounts",
    "tables",
    "secrets",
];
const KINDS: [EventKind; 4] = [
    EventKind::CredentialIssued,
    EventKind::TaskActivated,
    EventKind::ApprovalDecided,
    EventKind::TaskEnded,
];

/// Events shaped like the per-action decisions the trail's bulk path is for: an NHI (one of
/// `NHIS`) acting, 4–6 short details. There is no decision kind yet, so they carry the kinds of
/// the issuance path in turn; the kind does not change the cost.
fn generate(events: usize, batch: usize) -> Vec<Vec<DomainEvent>> {
    let mut rng = Rng(0x00C0_5705_A0D1_7001);
    let nhis: Vec<String> = (0..NHIS).map(|_| new_id()).collect();
    let start = SystemClock.now().unix_millis();
    let mut out = Vec::with_capacity(events.div_ceil(batch));
    let mut current = Vec::with_capacity(batch);
    for i in 0..events {
        let nhi = &nhis[rng.below(NHIS)];
        let occurred_at = Timestamp::from_unix_millis(start + (i / 100) as i64)
            .unwrap_or_else(|| SystemClock.now());
        let allow = rng.below(100) < 93;
        let mut event = DomainEvent::new(
            new_id(),
            KINDS[i % KINDS.len()],
            Actor::Nhi(nhi.clone()),
            format!("nhi:{nhi}"),
            occurred_at,
        )
        .with("decision", if allow { "allow" } else { "deny" })
        .with(
            "action",
            format!("{}:{}", rng.pick(&SERVICES), rng.pick(&OPERATIONS)),
        )
        .with(
            "resource",
            format!("{}/{}", rng.pick(&RESOURCES), rng.below(100_000)),
        )
        .with("credential", format!("{:016x}", rng.next()));
        if !allow {
            event = event.with("reason", "outside_ceiling");
        }
        if rng.below(2) == 0 {
            event = event.with("latency_us", (40 + rng.below(400)).to_string());
        }
        current.push(event);
        if current.len() == batch {
            out.push(std::mem::replace(&mut current, Vec::with_capacity(batch)));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

// ---- the report ----

struct Report {
    backend: Backend,
    version: String,
    events: usize,
    canonical_bytes: usize,
    append: Append,
    append_load: String,
    seal: Duration,
    seal_load: String,
    checkpoint_time: Duration,
    maintenance: Option<Duration>,
    serial: Verification,
    pipelined: Verification,
    verify_load: String,
    proofs: Proofs,
    proofs_load: String,
    hash_time: Duration,
    tree_time: Duration,
    raw_load: String,
    store_bytes: Option<u64>,
    load: String,
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

impl Report {
    /// Seconds to verify `VERIFY_BAR_EVENTS` at this run's pace.
    fn at_bar_size(&self, d: Duration) -> f64 {
        d.as_secs_f64() * VERIFY_BAR_EVENTS as f64 / self.events as f64
    }

    fn verify_row(&self, label: &str, v: &Verification, detail: &str) -> String {
        let scaled = self.at_bar_size(v.total);
        let projection = if self.events == VERIFY_BAR_EVENTS {
            String::new()
        } else {
            format!("; {scaled:.2} s scaled to 1M")
        };
        format!(
            "| {label} | **{:.2} s** ({} events/s; {detail}{projection}) | ≤ {VERIFY_BAR_SECS} s for 1M | {} | {} |",
            v.total.as_secs_f64(),
            thousands(rate(self.events, v.total)),
            if self.events >= VERIFY_BAR_EVENTS {
                verdict(scaled <= VERIFY_BAR_SECS)
            } else {
                "not judged below 1M"
            },
            self.verify_load
        )
    }

    fn markdown(&self, cfg: &Config) -> String {
        let mb = self.canonical_bytes as f64 / 1e6;
        let store = match self.backend {
            Backend::Sqlite => "`synchronous=FULL`, group commit",
            Backend::Postgres => "`fsync` and `synchronous_commit` on",
        };
        let append_rate = rate(self.events, self.append.elapsed);
        let mut out = vec![
            format!(
                "### {} {}, {store}: {} events",
                self.backend.title(),
                self.version,
                thousands(self.events as u64)
            ),
            String::new(),
            format!(
                "Events shaped like decisions, 4–6 details, {:.0} canonical bytes on average \
                 ({:.1} MB in all).",
                self.canonical_bytes as f64 / self.events as f64,
                mb
            ),
            String::new(),
            "| measure | result | bar | | load average before → after |".to_owned(),
            "| --- | --- | --- | :---: | --- |".to_owned(),
            format!(
                "| durable append: `append_events`, {} events per call, {} concurrent writers | **{} events/s** ({} events in {:.2} s; {} calls, each median {:.2} ms, p99 {:.2} ms) | ≥ {} events/s | {} | {} |",
                thousands(cfg.batch as u64),
                cfg.writers,
                thousands(append_rate),
                thousands(self.events as u64),
                self.append.elapsed.as_secs_f64(),
                thousands(self.append.calls as u64),
                self.append.median_ms,
                self.append.p99_ms,
                thousands(APPEND_BAR),
                verdict(append_rate >= APPEND_BAR),
                self.append_load
            ),
            format!(
                "| sealing: `AuditLog::seal_pending` (read unsealed, leaf hashes, compact range, store leaves and nodes) | **{} events/s** ({:.2} s) | — | | {} |",
                thousands(rate(self.events, self.seal)),
                self.seal.as_secs_f64(),
                self.seal_load
            ),
            format!(
                "| checkpoint: `AuditLog::checkpoint` (head, root, Ed25519 signed note) | {:.2} ms | — | | |",
                millis(self.checkpoint_time)
            ),
        ];
        if let Some(maintenance) = self.maintenance {
            out.push(format!(
                "| `VACUUM (ANALYZE)` of the three tables after sealing (what autovacuum does in the background) | {:.2} s | — | | |",
                maintenance.as_secs_f64()
            ));
        }
        out.extend([
            self.verify_row(
                &format!(
                    "full verification, serial: open the signed checkpoint, `audit_events` in pages of {} in log order, re-encode + leaf hash + fold, compare the root",
                    thousands(cfg.page as u64)
                ),
                &self.serial,
                &format!(
                    "reading {:.2} s, CPU {:.2} s",
                    self.serial.read.as_secs_f64(),
                    self.serial.cpu.as_secs_f64()
                ),
            ),
            self.verify_row(
                &format!(
                    "full verification, parallel reads: {} pages read at once on their own connections, hashed in order",
                    cfg.readers
                ),
                &self.pipelined,
                &format!(
                    "CPU {:.2} s, reads {:.2} s overlapped",
                    self.pipelined.cpu.as_secs_f64(),
                    self.pipelined.read.as_secs_f64()
                ),
            ),
            format!(
                "| inclusion proof: `audit::inclusion_proof(store, i, {})`, {} random leaves, {} hashes each at most | **median {:.3} ms, p99 {:.3} ms** | ≤ {PROOF_BAR_MS} ms (p99) | {} | {} |",
                thousands(self.events as u64),
                thousands(self.proofs.n as u64),
                self.proofs.hashes,
                self.proofs.median_ms,
                self.proofs.p99_ms,
                verdict(self.proofs.p99_ms <= PROOF_BAR_MS),
                self.proofs_load
            ),
            format!(
                "| the same with the leaf's event read and hashed (what the HTTP handler does) | median {:.3} ms, p99 {:.3} ms | — | | |",
                self.proofs.with_event_median_ms, self.proofs.with_event_p99_ms
            ),
            format!(
                "| **physical limit**: raw `merkle::leaf_hash` over the canonical bytes in memory, one thread | **{} leaves/s, {:.0} MB/s** ({:.3} s) | — | | {} |",
                thousands(rate(self.events, self.hash_time)),
                mb / self.hash_time.as_secs_f64().max(1e-9),
                self.hash_time.as_secs_f64(),
                self.raw_load
            ),
            format!(
                "| tree: `CompactRange::push` of those leaf hashes, one thread | {} leaves/s ({:.3} s) | — | | |",
                thousands(rate(self.events, self.tree_time)),
                self.tree_time.as_secs_f64()
            ),
        ]);
        if let Some(bytes) = self.store_bytes {
            out.push(format!(
                "| store size (events, leaves, nodes) | {:.2} GiB | — | | |",
                bytes as f64 / (1024.0 * 1024.0 * 1024.0)
            ));
        }
        out.push(String::new());
        out.push(format!(
            "Load average (1, 5, 15 min) over the whole {} run: {}.",
            self.backend.title(),
            self.load
        ));
        out.push(String::new());
        out.join("\n")
    }
}
