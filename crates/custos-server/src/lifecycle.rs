//! Decommissioning in the server: starting a workflow, driving it step by step to the end,
//! and resuming the unfinished ones when the server starts. The steps and what they record are
//! [`custos_core::lifecycle`]'s; here they are done.
//!
//! Every step is done, then recorded by moving the workflow on from that step only
//! (`Store::advance_decommission`). A crash between the two leaves the step to be done again,
//! and each step is harmless to repeat: revoking what is revoked revokes nothing, a tombstone
//! stays one, the archive is rewritten whole, and the owner's notifications are queued in the
//! same transaction as the record, so they are queued once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use custos_core::lifecycle::{
    ArchivedFile, ArchivedTrail, Decommission, DecommissionStep, DecommissionTrigger,
    LifecyclePolicy, MAX_WATCH_DAYS, RECEIPT_TYPE, Watch, archive_file_name,
};
use custos_core::{Actor, DomainEvent, EventKind, Nhi, NhiStatus, Page, Timestamp};
use custos_store::{DecommissionFilter, Revocation, StoreError};
use dashmap::DashSet;
use sha2::{Digest, Sha256};

use crate::api::DecommissionList;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::service::{AppState, new_id};

/// The longest wait between two attempts at a step that keeps failing.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// What the server keeps for decommissioning.
pub struct Lifecycle {
    /// Where decommissioned NHIs' trails are written.
    pub archive_dir: PathBuf,
    /// What the scheduler's jobs do.
    pub policy: LifecyclePolicy,
    /// The workflows this node is driving now, so that it drives each once.
    running: DashSet<String>,
    /// When this node last scanned the inventory for idle, orphaned and unattested NHIs.
    last_scan: std::sync::Mutex<Option<Timestamp>>,
    /// A step after whose work, before its record, the process aborts: set only by the crash
    /// tests (`CUSTOS_TEST_CRASH_AT=decommission:<step>`), to stop the server exactly there.
    crash_at: Option<DecommissionStep>,
}

impl Lifecycle {
    pub fn new(archive_dir: PathBuf, policy: LifecyclePolicy, crash_at: Option<&str>) -> Self {
        let crash_at = crash_at
            .and_then(|point| point.strip_prefix("decommission:"))
            .and_then(DecommissionStep::parse);
        Self {
            archive_dir,
            policy,
            running: DashSet::new(),
            last_scan: std::sync::Mutex::new(None),
            crash_at,
        }
    }

    /// Whether the inventory is due a scan: never scanned by this node, or `every_seconds`
    /// ago (a clock moved back counts as due).
    pub fn scan_due(&self, now: Timestamp, every_seconds: i64) -> bool {
        let last = *self.last_scan.lock().unwrap_or_else(|e| e.into_inner());
        last.is_none_or(|at| {
            let since = now.unix_millis() - at.unix_millis();
            !(0..every_seconds * 1000).contains(&since)
        })
    }

    pub fn scanned(&self, now: Timestamp) {
        *self.last_scan.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
    }

    fn crash_point(&self, step: DecommissionStep) {
        if self.crash_at == Some(step) {
            tracing::error!(%step, "crashing on purpose (CUSTOS_TEST_CRASH_AT)");
            std::process::abort();
        }
    }
}

/// `POST /v1/nhis/{id}/decommission` and `custos nhi decommission`: starts the NHI's workflow
/// (admin, or a reviewer of its owner team), or returns the one it already has. `true` when
/// this call started it. With `staged_days`, it first watches that many days (1 to 90) with
/// the NHI suspended and its credentials kept.
pub async fn decommission(
    state: &AppState,
    who: &Principal,
    nhi_id: &str,
    reason: Option<String>,
    staged_days: Option<u32>,
) -> ApiResult<(Decommission, bool)> {
    let nhi = crate::service::visible_nhi(state, who, nhi_id).await?;
    who.require_admin_or_reviewer_of(&nhi.owner.team_id)?;
    if let Some(days) = staged_days
        && !(1..=MAX_WATCH_DAYS).contains(&days)
    {
        return Err(ApiError::validation(
            custos_core::validate::ValidationErrors::single(
                "staged_days",
                format!("must be between 1 and {MAX_WATCH_DAYS}"),
            ),
        ));
    }
    let reason = reason.unwrap_or_else(|| "requested by an operator".to_owned());
    let watch_until = staged_days.map(|days| state.now().plus_seconds(i64::from(days) * 86_400));
    start(
        state,
        &nhi,
        DecommissionTrigger::Request,
        who.actor(),
        None,
        reason,
        watch_until,
    )
    .await
}

/// Starts an NHI's workflow for any trigger, or returns the one it has; drives it either way
/// (a workflow found unfinished is picked up again).
/// `requested_by` is who asked when that is not the event's actor (a deployment hook is
/// `deployment_hook:<id>`, acting as the system).
pub async fn start(
    state: &AppState,
    nhi: &Nhi,
    trigger: DecommissionTrigger,
    actor: Actor,
    requested_by: Option<String>,
    reason: String,
    watch_until: Option<Timestamp>,
) -> ApiResult<(Decommission, bool)> {
    let now = state.now();
    let workflow = Decommission::start(
        new_id(),
        nhi.id.clone(),
        trigger,
        requested_by.unwrap_or_else(|| actor.to_string()),
        reason,
        now,
        watch_until,
    );
    let event = state
        .event(
            EventKind::DecommissionStarted,
            actor,
            format!("nhi:{}", nhi.id),
        )
        .with("requested_by", &workflow.requested_by)
        .with("decommission", &workflow.id)
        .with("trigger", trigger.as_str())
        .with_some("watch_until", watch_until.map(|at| at.to_rfc3339()))
        .with("reason", &workflow.reason);
    let (workflow, started) = match state.store.start_decommission(&workflow, &event).await? {
        None => (workflow, true),
        Some(existing) => (existing, false),
    };
    if !workflow.is_done() {
        drive(state, &workflow.id);
    }
    Ok((workflow, started))
}

/// Drives a workflow to its end in the background, unless this node is driving it already.
pub fn drive(state: &AppState, id: &str) {
    if !state.lifecycle.running.insert(id.to_owned()) {
        return;
    }
    let state = state.clone();
    let id = id.to_owned();
    tokio::spawn(async move {
        run(&state, &id).await;
        state.lifecycle.running.remove(&id);
    });
}

/// Every workflow not yet finished, a page at a time: the running ones are few.
async fn unfinished(state: &AppState) -> Result<Vec<Decommission>, StoreError> {
    let filter = DecommissionFilter {
        finished: Some(false),
        ..Default::default()
    };
    let mut page = Page {
        after: None,
        limit: 500,
    };
    let mut all = Vec::new();
    loop {
        let batch = state.store.list_decommissions(&filter, &page).await?;
        let Some(last) = batch.last() else {
            return Ok(all);
        };
        page.after = Some(last.id.clone());
        all.extend(batch);
    }
}

/// Picks up every workflow left unfinished, by a crash or by a stop: run at start.
pub async fn resume_unfinished(state: &AppState) -> Result<usize, StoreError> {
    let workflows = unfinished(state).await?;
    for workflow in &workflows {
        tracing::info!(decommission = %workflow.id, nhi = %workflow.nhi_id, step = %workflow.step, "resuming a decommission");
        drive(state, &workflow.id);
    }
    Ok(workflows.len())
}

/// Does the workflow's steps until it is done; a failing step is counted, said, and tried
/// again later, waiting longer each time.
async fn run(state: &AppState, id: &str) {
    let mut wait = Duration::from_millis(500);
    loop {
        let workflow = match state.store.get_decommission(id).await {
            Ok(Some(workflow)) => workflow,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(decommission = id, %error, "cannot read a decommission; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY_WAIT);
                continue;
            }
        };
        if workflow.is_done() {
            return;
        }
        match step(state, &workflow).await {
            // A staged workflow watches on its own: the scheduler drives it again when the
            // watch ends.
            Ok(()) if workflow.watching(state.now()) => return,
            Ok(()) => wait = Duration::from_millis(500),
            Err(error) => {
                tracing::warn!(decommission = id, step = %workflow.step, error = %error.detail, "a decommission step failed; retrying");
                if let Err(error) = state
                    .store
                    .record_decommission_failure(id, &error.detail, state.now())
                    .await
                {
                    tracing::warn!(decommission = id, %error, "cannot record a decommission failure");
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY_WAIT);
            }
        }
    }
}

/// Does the workflow's current step and records it.
async fn step(state: &AppState, workflow: &Decommission) -> ApiResult<()> {
    let nhi_id = workflow.nhi_id.as_str();
    let mut teardown = workflow.teardown.clone();
    let mut deliveries = Vec::new();
    match workflow.step {
        DecommissionStep::Watch => {
            suspend(state, workflow).await?;
            if workflow.watching(state.now()) {
                return Ok(());
            }
            teardown.watch = Some(watched(state, workflow).await?);
        }
        DecommissionStep::Revoke => {
            let started = Instant::now();
            suspend(state, workflow).await?;
            let revoked_now = revoke(state, workflow).await?;
            teardown.revoked_credentials = revoked_since(state, workflow).await?;
            teardown.revoked_at = Some(state.now());
            teardown.last_refused_after_ms = refused_after(state, &revoked_now, started);
        }
        DecommissionStep::Tombstone => tombstone(state, workflow).await?,
        DecommissionStep::Archive => {
            teardown.archive = Some(archive(state, nhi_id).await?);
        }
        DecommissionStep::Notify => {
            let nhi = state
                .store
                .get_nhi(nhi_id)
                .await?
                .ok_or_else(|| ApiError::internal(format!("nhi {nhi_id} is gone")))?;
            deliveries = crate::notify::announce_decommission(state, workflow, &nhi).await?;
            teardown.notifications = u32::try_from(deliveries.len()).unwrap_or(u32::MAX);
        }
        DecommissionStep::Done | DecommissionStep::Cancelled => return Ok(()),
    }
    state.lifecycle.crash_point(workflow.step);
    let now = state.now();
    let mut next = workflow.advanced(teardown, now);
    let mut events = vec![progressed(state, workflow)];
    if next.is_done() {
        let claims = next.receipt_claims(&state.issuer, now);
        next.receipt = Some(custos_core::jose::sign_jwt(
            &state.keyring.active(),
            RECEIPT_TYPE,
            &claims,
        ));
        events.push(
            state
                .event(
                    EventKind::DecommissionCompleted,
                    Actor::System,
                    format!("nhi:{nhi_id}"),
                )
                .with("decommission", &workflow.id)
                .with(
                    "revoked",
                    next.teardown.revoked_credentials.len().to_string(),
                ),
        );
    }
    let moved = state
        .store
        .advance_decommission(workflow.step, &next, &events, &deliveries)
        .await?;
    if !moved {
        tracing::info!(decommission = %workflow.id, step = %workflow.step, "the step was recorded by another runner");
    }
    Ok(())
}

fn progressed(state: &AppState, workflow: &Decommission) -> DomainEvent {
    state
        .event(
            EventKind::DecommissionProgressed,
            Actor::System,
            format!("nhi:{}", workflow.nhi_id),
        )
        .with("decommission", &workflow.id)
        .with("step", workflow.step.as_str())
}

/// What a staged workflow's watch saw: every call the decision point refused the NHI's
/// credentials between the start and the end of the watch, read back from the trail.
async fn watched(state: &AppState, workflow: &Decommission) -> ApiResult<Watch> {
    let mut watch = workflow
        .teardown
        .watch
        .clone()
        .ok_or_else(|| ApiError::internal(format!("{workflow} watches without a watch")))?;
    let mut query = custos_store::EventQuery {
        limit: 1_000,
        kinds: vec![EventKind::AccessDecided.as_str().to_owned()],
        nhi: Some(workflow.nhi_id.clone()),
        since: Some(workflow.started_at),
        until: Some(watch.until),
        ..Default::default()
    };
    // Decisions reach the trail in batches a moment after they are made: the last ones of the
    // watch are written before they are counted.
    state.decisions.flush(Duration::from_secs(5)).await;
    let mut refused = 0_u64;
    let mut services = BTreeSet::new();
    loop {
        let events = state.store.list_events(&query).await?;
        let Some(last) = events.last() else { break };
        query.after_seq = last.seq;
        for stored in &events {
            let event = &stored.event;
            if event.details.get("decision").map(String::as_str) != Some("deny") {
                continue;
            }
            refused += 1;
            watch.last_refused_at = Some(event.occurred_at);
            if let Some(service) = event.details.get("service")
                && services.len() < 20
            {
                services.insert(service.clone());
            }
        }
    }
    watch.refused_calls = Some(refused);
    watch.services = services.into_iter().collect();
    Ok(watch)
}

/// `POST /v1/decommissions/{id}/cancel`: stops a staged workflow during its watch (admin, or
/// a reviewer of the owner team): the workflow is `cancelled` first, so that nothing revokes
/// after this, then the NHI is resumed. 409 `decommission_not_watching` once the watch is
/// over: a revocation is not undone.
pub async fn cancel(
    state: &AppState,
    who: &Principal,
    id: &str,
    reason: Option<String>,
) -> ApiResult<Decommission> {
    let workflow = get(state, who, id).await?;
    let nhi = crate::service::visible_nhi(state, who, &workflow.nhi_id).await?;
    who.require_admin_or_reviewer_of(&nhi.owner.team_id)?;
    if workflow.step != DecommissionStep::Watch {
        return Err(ApiError::conflict(
            "decommission_not_watching",
            format!(
                "the decommission is at {}; only a staged one still watching is cancelled",
                workflow.step
            ),
        ));
    }
    let now = state.now();
    let cancelled = workflow.cancelled(now);
    let event = state
        .event(
            EventKind::DecommissionCancelled,
            who.actor(),
            format!("nhi:{}", workflow.nhi_id),
        )
        .with("decommission", &workflow.id)
        .with(
            "reason",
            reason.as_deref().unwrap_or("cancelled during the watch"),
        );
    if !state
        .store
        .advance_decommission(DecommissionStep::Watch, &cancelled, &[event], &[])
        .await?
    {
        return Err(ApiError::conflict(
            "decommission_not_watching",
            "the watch ended meanwhile; a revocation is not undone",
        ));
    }
    crate::service::resume_on_decision(
        state,
        &nhi.id,
        who.actor(),
        "staged decommission cancelled",
        ("decommission", &workflow.id),
    )
    .await?;
    Ok(cancelled)
}

/// Whether the NHI has a decommission under way: it may not be resumed meanwhile (a staged
/// one is cancelled instead).
pub async fn under_way(state: &AppState, nhi_id: &str) -> Result<bool, StoreError> {
    let running = state
        .store
        .list_decommissions(
            &DecommissionFilter {
                nhi_id: Some(nhi_id.to_owned()),
                finished: Some(false),
                ..Default::default()
            },
            &Page {
                after: None,
                limit: 1,
            },
        )
        .await?;
    Ok(!running.is_empty())
}

/// Drives every staged workflow whose watch has ended: what is left of it follows.
pub async fn end_watches(state: &AppState) -> Result<usize, StoreError> {
    let now = state.now();
    let mut ended = 0;
    for workflow in unfinished(state).await? {
        if workflow.step == DecommissionStep::Watch && !workflow.watching(now) {
            drive(state, &workflow.id);
            ended += 1;
        }
    }
    Ok(ended)
}

/// Suspends the NHI first, so that nothing new is issued to it while its credentials are
/// revoked: the decision point refuses a suspended NHI's every credential at once.
async fn suspend(state: &AppState, workflow: &Decommission) -> ApiResult<()> {
    for _ in 0..5 {
        let Some(current) = state.store.get_nhi(&workflow.nhi_id).await? else {
            return Err(ApiError::internal(format!(
                "nhi {} is gone",
                workflow.nhi_id
            )));
        };
        if current.status != NhiStatus::Active {
            return Ok(());
        }
        let Ok(Some(next)) = current.suspend(state.now()) else {
            return Ok(());
        };
        let event = state
            .event(
                EventKind::NhiSuspended,
                Actor::System,
                format!("nhi:{}", current.id),
            )
            .with("reason", "being decommissioned")
            .with("decommission", &workflow.id);
        match state.store.update_nhi(&next, current.version, &event).await {
            Ok(()) => return Ok(()),
            Err(StoreError::VersionMismatch { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(busy())
}

/// Revokes every credential of the NHI, its client keys too, and everything delegated from
/// them; the ids this call revoked (none if an interrupted run had revoked them already).
async fn revoke(state: &AppState, workflow: &Decommission) -> ApiResult<Vec<String>> {
    let event = state
        .event(
            EventKind::CredentialRevoked,
            Actor::System,
            format!("nhi:{}", workflow.nhi_id),
        )
        .with("cause", "nhi decommissioned")
        .with("decommission", &workflow.id);
    state
        .store
        .revoke_credentials(
            Revocation::Everything(&workflow.nhi_id),
            state.now(),
            &event,
        )
        .await
        .map_err(Into::into)
}

/// The NHI's credentials revoked since the workflow started: what it revoked, found again
/// from the store so that a step repeated after a crash reports the first run's work too.
/// Delegated descendants held by other NHIs are found through the revocation's events.
async fn revoked_since(state: &AppState, workflow: &Decommission) -> ApiResult<Vec<String>> {
    let mut revoked = BTreeSet::new();
    let mut page = Page {
        after: None,
        limit: 500,
    };
    loop {
        let batch = state
            .store
            .list_credentials(Some(&workflow.nhi_id), &page)
            .await?;
        let Some(last) = batch.last() else { break };
        page.after = Some(last.id.clone());
        revoked.extend(
            batch
                .iter()
                .filter(|c| c.revoked_at.is_some_and(|at| at >= workflow.started_at))
                .map(|c| c.id.clone()),
        );
    }
    let events = state
        .store
        .list_events(&custos_store::EventQuery {
            subject: Some(format!("nhi:{}", workflow.nhi_id)),
            kind: Some(EventKind::CredentialRevoked.as_str().to_owned()),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    for stored in events {
        let event = stored.event;
        if event.details.get("decommission") == Some(&workflow.id)
            && let Some(ids) = event.details.get("revoked")
        {
            revoked.extend(ids.split(',').map(str::to_owned));
        }
    }
    Ok(revoked.into_iter().collect())
}

/// How long after `started` this node's decision point refused every credential `revoked`
/// names, in milliseconds. The live state learns of a revocation before the store call
/// returns (the store wrapper reports it), so this is read once, right after. `None` when this
/// run revoked nothing (the NHI had no credential, or a run interrupted before its record
/// revoked them and its timing was lost with it), or if a revoked id were still accepted.
fn refused_after(state: &AppState, revoked: &[String], started: Instant) -> Option<f64> {
    use custos_core::decision::LiveView as _;
    if revoked.is_empty() {
        return None;
    }
    if !revoked.iter().all(|id| state.live.is_revoked(id)) {
        tracing::error!("the decision point still accepts a credential the store revoked");
        return None;
    }
    Some(started.elapsed().as_secs_f64() * 1000.0)
}

/// Makes the NHI a tombstone, with its event; an NHI that is one already is left alone.
async fn tombstone(state: &AppState, workflow: &Decommission) -> ApiResult<()> {
    for _ in 0..5 {
        let Some(current) = state.store.get_nhi(&workflow.nhi_id).await? else {
            return Err(ApiError::internal(format!(
                "nhi {} is gone",
                workflow.nhi_id
            )));
        };
        let Some(next) = current.tombstone(state.now()) else {
            return Ok(());
        };
        let event = state
            .event(
                EventKind::NhiDecommissioned,
                Actor::System,
                format!("nhi:{}", current.id),
            )
            .with("decommission", &workflow.id)
            .with("reason", &workflow.reason);
        match state.store.update_nhi(&next, current.version, &event).await {
            Ok(()) => return Ok(()),
            Err(StoreError::VersionMismatch { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(busy())
}

/// Writes the NHI's trail, every event with its inclusion proof against a signed
/// checkpoint, to the archive directory: files of at most one export's events, each
/// a self-contained export that `custos audit verify FILE` checks offline. Each is written to a
/// temporary file, synced, then renamed, so the archive holds whole files only.
async fn archive(state: &AppState, nhi_id: &str) -> ApiResult<ArchivedTrail> {
    let mut trail = ArchivedTrail::default();
    let mut from = 0;
    loop {
        let export = crate::audit::api::build_export(
            state,
            crate::audit::api::ExportOf::Nhi {
                id: nhi_id.to_owned(),
                from,
            },
        )
        .await?;
        let bytes = serde_json::to_vec_pretty(&export)
            .map_err(|e| ApiError::internal(format!("cannot encode the trail: {e}")))?;
        let file = archive_file_name(nhi_id, trail.files.len() + 1);
        let dir = state.lifecycle.archive_dir.clone();
        let path = dir.join(&file);
        let written = bytes.clone();
        tokio::task::spawn_blocking(move || write_whole(&dir, &path, &written))
            .await
            .map_err(|e| ApiError::internal(format!("the archive writer stopped: {e}")))?
            .map_err(|e| ApiError::internal(format!("cannot write the archive: {e}")))?;
        let events = export.events.len() as u64;
        trail.files.push(ArchivedFile {
            file,
            sha256: hex::encode(Sha256::digest(&bytes)),
            events,
        });
        trail.events += events;
        trail.tree_size =
            crate::verify::open_checkpoint(&export.checkpoint, &export.verifier_key, None)
                .map(|c| c.size())
                .unwrap_or_default();
        match export.events.last() {
            Some(last) if events >= crate::audit::api::MAX_EXPORT_EVENTS => from = last.index + 1,
            _ => return Ok(trail),
        }
    }
}

fn write_whole(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let mut temp_name = path.as_os_str().to_owned();
    temp_name.push(format!(".{}.partial", std::process::id()));
    let temp = PathBuf::from(temp_name);
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

// ---- reading workflows ----

/// A workflow the caller may see: every one for admins and auditors; for reviewers, those
/// about their teams' NHIs.
pub async fn get(state: &AppState, who: &Principal, id: &str) -> ApiResult<Decommission> {
    let teams = who.visible_teams()?;
    let not_found =
        || ApiError::not_found(&format!("decommission {id}")).with_code("decommission_not_found");
    let workflow = state
        .store
        .get_decommission(id)
        .await?
        .ok_or_else(not_found)?;
    if let Some(teams) = teams {
        let nhi = state.store.get_nhi(&workflow.nhi_id).await?;
        if !nhi.is_some_and(|n| teams.contains(&n.owner.team_id)) {
            return Err(not_found());
        }
    }
    Ok(workflow)
}

/// Workflows, newest first, the running ones only if asked.
pub async fn list(
    state: &AppState,
    who: &Principal,
    nhi_id: Option<String>,
    finished: Option<bool>,
    page: Page,
) -> ApiResult<DecommissionList> {
    let limit = page.limit;
    let found = state
        .store
        .list_decommissions(
            &DecommissionFilter {
                nhi_id,
                finished,
                team_ids: who.visible_teams()?,
            },
            &Page {
                after: page.after,
                limit: limit + 1,
            },
        )
        .await?;
    let (items, next_cursor) = crate::service::page_of(found, limit, |w| w.id.clone());
    Ok(DecommissionList { items, next_cursor })
}

fn busy() -> ApiError {
    ApiError::conflict(
        "concurrent_update",
        "the nhi is changing too often; try again",
    )
}

// ---- deployment hooks: "agent X was shut down" ----

/// How far a hook call's signed time may be from ours: a captured call cannot be replayed
/// later than this (and a replay within it finds the workflow already started).
const HOOK_TOLERANCE_SECONDS: i64 = 300;
/// The largest body a hook call may have.
pub const MAX_HOOK_BODY: usize = 16 * 1024;

/// A new deployment hook.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeploymentHook {
    /// Unique among hooks: the deployment system's name.
    #[schema(schema_with = crate::api::text_100)]
    pub name: String,
    /// Only NHIs of this team (a name or id) may be reported; any team's when left out.
    pub team: Option<String>,
}

/// A deployment hook as shown: never its secret.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DeploymentHookView {
    pub id: String,
    pub name: String,
    pub team_id: Option<String>,
    pub enabled: bool,
    pub created_by: String,
    #[schema(value_type = String)]
    pub created_at: custos_core::Timestamp,
    #[schema(value_type = Option<String>)]
    pub disabled_at: Option<custos_core::Timestamp>,
    /// Where the deployment system posts: `POST {url}` with `Custos-Signature`.
    pub url: String,
}

/// A new hook with its secret, shown this once.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DeploymentHookCreated {
    #[serde(flatten)]
    pub hook: DeploymentHookView,
    /// The HMAC-SHA256 key of `Custos-Signature: t=<unix seconds>,v1=<hex HMAC(secret,
    /// "<t>.<body>")>`, the same scheme as Custos's own webhooks.
    pub secret: String,
}

/// What a deployment system says.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HookEvent {
    /// `agent.shut_down`: the agent will not run again, so its NHI is decommissioned.
    #[schema(pattern = "^agent\\.shut_down$")]
    pub event: String,
    /// The NHI's id: the `client_id` the agent was deployed with.
    pub nhi_id: String,
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

fn hook_view(state: &AppState, hook: custos_store::DeploymentHook) -> DeploymentHookView {
    DeploymentHookView {
        url: format!("{}/v1/deployment-hooks/{}/events", state.issuer, hook.id),
        id: hook.id,
        name: hook.name,
        team_id: hook.team_id,
        enabled: hook.disabled_at.is_none(),
        created_by: hook.created_by,
        created_at: hook.created_at,
        disabled_at: hook.disabled_at,
    }
}

fn hook_context(id: &str) -> String {
    format!("deployment-hook:{id}")
}

/// `POST /v1/deployment-hooks` (admin): a deployment system may now report its agents shut
/// down, signing with the secret returned here once.
pub async fn create_hook(
    state: &AppState,
    who: &Principal,
    input: NewDeploymentHook,
) -> ApiResult<DeploymentHookCreated> {
    who.require(&[custos_core::Role::Admin])?;
    let mut errors = custos_core::validate::ValidationErrors::default();
    let name = input.name.trim().to_owned();
    custos_core::validate::text(&mut errors, "name", &name, 100);
    let team_id = match &input.team {
        None => None,
        Some(team) => crate::service::team_named(state, "team", team, &mut errors).await?,
    };
    errors.into_result()?;
    let id = new_id();
    let secret = crate::secrets::mint_hmac_secret("custos_hksec_");
    let hook = custos_store::DeploymentHook {
        sealed_secret: state.keys.seal(&hook_context(&id), secret.as_bytes()),
        id,
        name,
        team_id,
        created_by: who.actor().to_string(),
        created_at: state.now(),
        disabled_at: None,
    };
    let mut event = state
        .event(
            EventKind::DeploymentHookCreated,
            who.actor(),
            format!("deployment_hook:{}", hook.id),
        )
        .with("name", &hook.name);
    if let Some(team) = &hook.team_id {
        event = event.with("team", team);
    }
    state
        .store
        .create_deployment_hook(&hook, &event)
        .await
        .map_err(|e| match e {
            StoreError::Conflict => ApiError::conflict(
                "hook_exists",
                format!("a deployment hook is already named {:?}", hook.name),
            ),
            e => e.into(),
        })?;
    Ok(DeploymentHookCreated {
        hook: hook_view(state, hook),
        secret,
    })
}

/// `GET /v1/deployment-hooks` (admin, auditor).
pub async fn list_hooks(state: &AppState, who: &Principal) -> ApiResult<Vec<DeploymentHookView>> {
    who.require(&[custos_core::Role::Admin, custos_core::Role::Auditor])?;
    Ok(state
        .store
        .list_deployment_hooks()
        .await?
        .into_iter()
        .map(|h| hook_view(state, h))
        .collect())
}

/// `POST /v1/deployment-hooks/{id}/disable` (admin): its calls are refused from now on.
pub async fn disable_hook(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> ApiResult<DeploymentHookView> {
    who.require(&[custos_core::Role::Admin])?;
    let not_found =
        || ApiError::not_found(&format!("deployment hook {id}")).with_code("hook_not_found");
    let hook = state
        .store
        .get_deployment_hook(id)
        .await?
        .ok_or_else(not_found)?;
    let event = state.event(
        EventKind::DeploymentHookDisabled,
        who.actor(),
        format!("deployment_hook:{id}"),
    );
    state
        .store
        .disable_deployment_hook(id, state.now(), &event)
        .await?;
    let hook = state
        .store
        .get_deployment_hook(&hook.id)
        .await?
        .ok_or_else(not_found)?;
    Ok(hook_view(state, hook))
}

/// `POST /v1/deployment-hooks/{id}/events`: a deployment system, proven by the signature of
/// the exact body with its hook's secret, says an agent was shut down; its NHI is
/// decommissioned (trigger `webhook`). Every failure to prove who is calling is the same
/// `401`, so a caller learns nothing about which hooks exist.
pub async fn hook_event(
    state: &AppState,
    hook_id: &str,
    signature: Option<&str>,
    body: &[u8],
) -> ApiResult<(Decommission, bool)> {
    let unauthorized = || {
        ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "the call is not signed by an enabled deployment hook's secret",
        )
    };
    let hook = state
        .store
        .get_deployment_hook(hook_id)
        .await?
        .filter(|h| h.disabled_at.is_none())
        .ok_or_else(unauthorized)?;
    let secret = state
        .keys
        .unseal(&hook_context(&hook.id), &hook.sealed_secret)
        .map_err(|_| ApiError::internal("a deployment hook's secret does not open"))?;
    let secret = std::str::from_utf8(&secret).map_err(|_| unauthorized())?;
    let (signed_at, offered) =
        parse_signature(signature.ok_or_else(unauthorized)?).ok_or_else(unauthorized)?;
    let now_seconds = state.now().unix_millis().div_euclid(1000);
    if (now_seconds - signed_at).abs() > HOOK_TOLERANCE_SECONDS {
        return Err(unauthorized());
    }
    let expected = crate::notify::signature_mac(secret, signed_at, body);
    if !offered
        .iter()
        .any(|mac| crate::secrets::hashes_equal(mac.as_bytes(), expected.as_bytes()))
    {
        return Err(unauthorized());
    }
    let event: HookEvent = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not a hook event: {e}"))
    })?;
    let mut errors = custos_core::validate::ValidationErrors::default();
    if event.event != "agent.shut_down" {
        errors.push("event", "must be agent.shut_down");
    }
    if let Some(reason) = &event.reason {
        custos_core::validate::text(&mut errors, "reason", reason, 500);
    }
    errors.into_result()?;
    let not_found =
        || ApiError::not_found(&format!("nhi {}", event.nhi_id)).with_code("nhi_not_found");
    let nhi = state
        .store
        .get_nhi(&event.nhi_id)
        .await?
        .ok_or_else(not_found)?;
    if hook
        .team_id
        .as_ref()
        .is_some_and(|team| *team != nhi.owner.team_id)
    {
        return Err(not_found());
    }
    let reason = event
        .reason
        .unwrap_or_else(|| format!("{} reported the agent shut down", hook.name));
    start(
        state,
        &nhi,
        DecommissionTrigger::Webhook,
        Actor::System,
        Some(format!("deployment_hook:{}", hook.id)),
        reason,
        None,
    )
    .await
}

/// `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`: the time and every offered MAC.
fn parse_signature(header: &str) -> Option<(i64, Vec<&str>)> {
    let mut signed_at = None;
    let mut macs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=')? {
            ("t", value) => signed_at = Some(value.parse().ok()?),
            ("v1", value) => macs.push(value),
            _ => {}
        }
    }
    Some((signed_at?, macs)).filter(|(_, macs)| !macs.is_empty())
}

// ---- what is coming up ----

/// The most NHIs of each kind `upcoming` reads before it sorts them.
const UPCOMING_SCAN: u32 = 1_000;

/// What the lifecycle has coming: NHIs that expire within the window (soonest first), NHIs
/// unused for `idle_days` (candidates for a decommission review, longest idle first), and the
/// workflows still running (those with failures are stuck on a step and say why).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Upcoming {
    pub within_days: u32,
    pub idle_days: u32,
    pub expiring: Vec<crate::api::NhiView>,
    pub unused: Vec<crate::api::NhiView>,
    #[schema(value_type = Vec<Object>)]
    pub running: Vec<Decommission>,
    /// More matched than are listed: narrow the window or the team.
    pub truncated: bool,
}

/// `GET /v1/lifecycle/upcoming` (admin, auditor; reviewers see their teams').
pub async fn upcoming(
    state: &AppState,
    who: &Principal,
    within_days: u32,
    idle_days: u32,
    limit: u32,
) -> ApiResult<Upcoming> {
    let now = state.now();
    let scan = |filter: custos_core::NhiFilter| async move {
        crate::service::list_nhis(
            state,
            who,
            filter,
            Page {
                after: None,
                limit: UPCOMING_SCAN,
            },
        )
        .await
    };
    let mut truncated = false;
    let mut expiring = Vec::new();
    for status in [NhiStatus::Active, NhiStatus::Suspended] {
        let page = scan(custos_core::NhiFilter {
            status: Some(status),
            expires_before: Some(now.plus_seconds(i64::from(within_days) * 86_400)),
            ..Default::default()
        })
        .await?;
        truncated |= page.next_cursor.is_some();
        expiring.extend(page.items);
    }
    expiring.sort_by_key(|n| n.expires_at);
    let idle_since = now.plus_seconds(-i64::from(idle_days) * 86_400);
    let unused = scan(custos_core::NhiFilter {
        status: Some(NhiStatus::Active),
        unused_since: Some(idle_since),
        ..Default::default()
    })
    .await?;
    truncated |= unused.next_cursor.is_some();
    let mut unused = unused.items;
    // A never-used NHI is idle since it was registered, not forever: one registered today
    // is not due a review.
    unused.retain(|n| n.last_used_at.unwrap_or(n.created_at) < idle_since);
    // Never used sorts first: it has been idle since it was registered.
    unused.sort_by_key(|n| n.last_used_at.unwrap_or(n.created_at));
    let running = list(state, who, None, Some(false), Page { after: None, limit }).await?;
    truncated |= expiring.len() > limit as usize
        || unused.len() > limit as usize
        || running.next_cursor.is_some();
    expiring.truncate(limit as usize);
    unused.truncate(limit as usize);
    Ok(Upcoming {
        within_days,
        idle_days,
        expiring,
        unused,
        running: running.items,
        truncated,
    })
}
