//! Starting and stopping the server: data directory, keys, store, first admin, HTTP listener.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use custos_core::token::SecretKind;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::keyring::Keyring;
use crate::metrics::MeteredStore;
use crate::secrets::{self, Keys};
use crate::service::{self, AppState, Clock, Limits, SystemClock};

pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    sealer: JoinHandle<()>,
    /// Sends queued notifications; stopped with the server (an attempt cut short is sent again
    /// when its lease ends, by this node's successor or another).
    notifier: JoinHandle<()>,
    /// Follow the other nodes' changes (PostgreSQL); stopped with the server, which also
    /// closes their connections.
    followers: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting connections, lets requests in flight finish, and waits.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let served = (&mut self.task)
            .await
            .context("server task panicked")?
            .context("server failed");
        // Requests have drained: write their decisions, seal and checkpoint what they wrote,
        // then stop the sealer.
        self.state.decisions.flush(Duration::from_secs(10)).await;
        self.state
            .behaviour
            .flush(self.state.store.as_ref(), self.state.now())
            .await;
        self.notifier.abort();
        self.sealer.abort();
        for follower in &self.followers {
            follower.abort();
        }
        if let Err(error) = self
            .state
            .audit
            .checkpoint(self.state.store.as_ref(), self.state.now())
            .await
        {
            tracing::error!(%error, "the final checkpoint failed");
        }
        served
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))
}

/// On a store with no admin yet, creates one and writes its token to `DATA_DIR/admin-token`
/// (0600). The file is written first: a token that reached the store but not the file would
/// lock everyone out, while a file whose token lost a race to another node is removed.
async fn bootstrap(state: &AppState, config: &Config) -> anyhow::Result<()> {
    if state.store.meta_get("bootstrapped_at").await?.is_some() {
        return Ok(());
    }
    let token = config
        .admin_token
        .clone()
        .unwrap_or_else(|| secrets::mint(SecretKind::Operator));
    let path = config.data_dir.join("admin-token");
    secrets::write_private_file(&path, format!("{token}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    if service::bootstrap_admin(state, &token).await? {
        tracing::info!(path = %path.display(), "created the first admin; its token is in this file (mode 0600)");
        println!("custos: first admin token written to {}", path.display());
    } else {
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}

/// Opens everything and starts serving on `config.listen`.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// Starts the server reading time from `clock`: the real clock in production; tests pass one
/// they move, to walk an NHI through 90 days in a second.
pub async fn start_with_clock(
    config: Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<RunningServer> {
    crate::metrics::install();
    create_private_dir(&config.data_dir)?;
    let keys = Keys::load(config.master_key.as_deref(), &config.data_dir)?;
    let url = config.store_url();
    let store = custos_store::open(&url).await.with_context(|| {
        format!(
            "cannot open the store at {}",
            custos_store::redact_url(&url)
        )
    })?;
    let stored_check = store
        .meta_init("master_key_check", keys.check_value())
        .await?;
    keys.verify_check(&stored_check)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let keyring = Keyring::open(store.as_ref(), &keys, config.signing_alg, clock.now())
        .await
        .context("cannot load the token-signing keys")?;
    let issuer = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    // The origin names the log in its checkpoints: the issuer without its scheme.
    let origin = config.audit_origin.clone().unwrap_or_else(|| {
        format!(
            "{}/audit",
            issuer
                .split_once("://")
                .map_or(issuer.as_str(), |(_, rest)| rest)
        )
    });
    let witness_dir = config
        .audit_witness_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("checkpoints"));
    let audit = crate::audit::AuditLog::open(store.as_ref(), &keys, origin, Some(witness_dir))
        .await
        .context("cannot open the audit log")?;
    let guardrails = crate::policies::load(store.as_ref())
        .await
        .context("cannot load the guardrail policies")?;
    let live = Arc::new(crate::live::LiveState::new(guardrails));
    let store: Arc<dyn custos_store::Store> = Arc::new(MeteredStore {
        inner: store,
        live: live.clone(),
    });
    let decisions = crate::access::DecisionLog::start(store.clone());
    let freshness = Arc::new(crate::nodes::Freshness::new(
        service::new_id().replace('-', ""),
        store.backend() == "postgres",
        config.strict_consistency,
        Duration::from_millis(config.strict_max_lag_ms),
    ));
    let state = AppState {
        store,
        live,
        freshness,
        decisions,
        keys,
        keyring,
        clock,
        limits: Limits {
            static_key_max_age_seconds: config.static_key_max_age_seconds,
            static_key_rotation_grace_seconds: config.static_key_rotation_grace_seconds,
            issuance: config.issuance,
            approval_ttl_seconds: config.approval_ttl_seconds,
            high_risk_quorum: config.high_risk_quorum,
            escalate_after_seconds: config.escalate_after_seconds,
            separation_of_duties: config.separation_of_duties,
            import_max_bytes: config.import_max_bytes,
        },
        issuer,
        task_updates: Arc::new(tokio::sync::Notify::new()),
        audit: Arc::new(audit),
        notify: Arc::new(crate::notify::Settings::from_config(&config)),
        behaviour: Arc::new(crate::behaviour::Behaviour::new(
            config.baseline.clone(),
            config.anomaly_action,
        )),
        lifecycle: Arc::new(crate::lifecycle::Lifecycle::new(
            config
                .archive_dir
                .clone()
                .unwrap_or_else(|| config.data_dir.join("archive")),
            config.lifecycle,
            // Read here and nowhere else: the crash tests stop the server at a chosen step.
            std::env::var("CUSTOS_TEST_CRASH_AT").ok().as_deref(),
        )),
    };
    bootstrap(&state, &config).await?;
    state
        .behaviour
        .load_policies(state.store.as_ref())
        .await
        .context("cannot load the anomaly response policies")?;
    crate::lifecycle::resume_unfinished(&state)
        .await
        .context("cannot read the unfinished decommissions")?;
    tokio::spawn(crate::jobs::run_scheduler(
        state.clone(),
        Duration::from_secs(config.lifecycle_interval_seconds),
    ));
    tokio::spawn(crate::behaviour::run_flusher(state.clone()));
    tokio::spawn(sweep_live_state(state.clone()));
    tokio::spawn(expire_approval_requests(state.clone()));
    // With several nodes on PostgreSQL: hear what the others commit (see `nodes`).
    let followers = match (&config.database_url, state.store.backend()) {
        (Some(url), "postgres") => crate::nodes::follow(&state, url)?,
        _ => Vec::new(),
    };
    let notifier = tokio::spawn(crate::notify::run(state.clone()));
    let sealer = tokio::spawn(seal_and_checkpoint(
        state.clone(),
        Duration::from_secs(config.audit_checkpoint_interval_seconds),
    ));

    let (app, _) = crate::routes::router(state.clone());
    let app = app.layer(TraceLayer::new_for_http());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(%addr, store = state.store.backend(), "custos is serving");
    Ok(RunningServer {
        addr,
        state,
        shutdown: Some(tx),
        task,
        sealer,
        notifier,
        followers,
    })
}

/// How often the sealer appends committed events to the log. Events are durable before the
/// sealer sees them, and reading a checkpoint or a proof seals first, so this only sets how
/// large each sealing batch is: larger batches take less of the single SQLite writer's time
/// from the actions themselves.
const SEAL_INTERVAL: Duration = Duration::from_millis(250);

/// The audit log's background work: seal committed events into the log a few times a second,
/// and sign a checkpoint on an interval when the log has grown.
async fn seal_and_checkpoint(state: AppState, interval: Duration) {
    let mut last_checkpoint = tokio::time::Instant::now();
    let mut round = 0u64;
    loop {
        round += 1;
        let look_back = round.is_multiple_of(4);
        let sealed = state
            .audit
            .seal_pending(state.store.as_ref(), look_back)
            .await;
        if let Err(error) = &sealed {
            tracing::error!(%error, "sealing the audit log failed; retrying");
        }
        state
            .audit
            .record(sealed.map(|_| ()).map_err(|e| e.to_string()));
        if last_checkpoint.elapsed() >= interval {
            last_checkpoint = tokio::time::Instant::now();
            if let Err(error) = state
                .audit
                .checkpoint(state.store.as_ref(), state.now())
                .await
            {
                tracing::error!(%error, "signing an audit checkpoint failed; retrying");
            }
        }
        tokio::time::sleep(SEAL_INTERVAL).await;
    }
}

/// Drops from the live state, once a minute, what has expired and can no longer matter.
async fn sweep_live_state(state: AppState) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        state.live.sweep(state.now());
    }
}

/// How often overdue approval requests are expired and waiting ones escalated: an agent
/// waiting on one hears within about this long after its deadline that it was denied.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

/// Expires the approval requests past their deadline (each is denied, its task with it), and
/// escalates those that waited their owner team's time to its fallback team. Several nodes may
/// do it at once: a request is expired, or escalated, once, by whichever gets there first.
async fn expire_approval_requests(state: AppState) {
    loop {
        tokio::time::sleep(EXPIRY_INTERVAL).await;
        if let Err(e) = crate::tasks::expire_overdue(&state).await {
            tracing::warn!(code = e.code, detail = %e.detail, "expiring overdue approval requests failed; retrying");
        }
        if let Err(e) = crate::tasks::escalate_overdue(&state).await {
            tracing::warn!(code = e.code, detail = %e.detail, "escalating waiting approval requests failed; retrying");
        }
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        crate::config::LogFormat::Json => builder.json().try_init(),
        crate::config::LogFormat::Text => builder.try_init(),
    };
}

/// Waits for SIGINT or SIGTERM. The handlers are installed when this is called, not when it
/// is first awaited.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// `custos serve`: runs until SIGINT or SIGTERM, then drains and exits.
pub async fn run(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    // Before the server answers: a SIGTERM that comes as soon as it is ready (a supervisor, a
    // script) must drain it, not kill it by the signal's default action.
    let stopping = shutdown_signal().context("installing the SIGINT and SIGTERM handlers")?;
    let server = start(config).await?;
    println!("custos: listening on http://{}", server.addr);
    stopping.await;
    tracing::info!("shutting down: finishing requests in flight");
    server.stop().await
}
