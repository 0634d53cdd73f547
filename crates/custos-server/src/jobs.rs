//! The lifecycle scheduler: NHIs have no HR events, so Custos makes its own. Every
//! `lifecycle_interval_seconds`, on the one node holding the job lock, a round:
//!
//! - starts the decommissioning of NHIs past their `expires_at` (or, under the `review`
//!   policy, opens a decommission review),
//! - rotates (or flags) static keys past their rotation age,
//! - closes active tasks past their lifetime,
//! - carries staged decommissions whose watch has ended on to the revocation,
//!
//! and, at most once an hour, scans the inventory for what needs a human:
//!
//! - NHIs unused for `lifecycle_idle_days` get a decommission review,
//! - orphans (an owner team whose members have all been revoked, or an owner contact whose
//!   operator was revoked) get a finding and an ownership review,
//! - high-risk NHIs (risk tag 70 or more) get an ownership attestation every
//!   `ownership_attest_every_days`.
//!
//! Every time is the server's clock (`AppState::now`), so the tests walk an NHI through 90
//! days by moving an injected clock, not by waiting.

use std::collections::HashSet;
use std::time::Duration;

use custos_core::finding::Severity;
use custos_core::issuance::{ApprovalKind, ApprovalState};
use custos_core::lifecycle::{DecommissionTrigger, ExpiryAction, KeyAgeAction};
use custos_core::{Actor, Credential, EventKind, Nhi, NhiFilter, NhiStatus, Page, Timestamp};
use custos_store::StoreError;
use serde::Serialize;
use serde_json::json;

use crate::error::{ApiError, ApiResult};
use crate::reviews;
use crate::service::AppState;

/// The name of the scheduler's job lock.
const SCHEDULER_JOB: &str = "lifecycle";
/// How often the inventory is scanned for idle, orphaned and unattested NHIs: each scan reads
/// every NHI that could be due, which is too much for every round of a large inventory.
const INVENTORY_SCAN_SECONDS: i64 = 3600;
/// How many NHIs, keys or tasks one listing reads at a time.
const BATCH: u32 = 500;
/// The risk tag from which an NHI's owner attests it periodically.
const ATTESTED_RISK: i64 = 70;

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RoundReport {
    /// Decommissioning workflows started (expired NHIs under the `decommission` policy).
    pub decommissions_started: usize,
    /// Decommission reviews opened: idle NHIs, and expired ones under the `review` policy.
    pub decommission_reviews: usize,
    pub keys_rotated: usize,
    pub keys_flagged: usize,
    /// Active tasks past their lifetime, closed.
    pub tasks_closed: usize,
    /// Staged decommissions whose watch ended: the revocation and the rest follow.
    pub watches_ended: usize,
    /// NHIs found orphaned (each gets a finding and an ownership review).
    pub orphans: usize,
    /// Ownership attestations asked of high-risk NHIs' owners.
    pub attestations: usize,
    /// Whether this round scanned the inventory (idle, orphaned, unattested NHIs).
    pub scanned_inventory: bool,
}

/// Runs a round every `interval` on whichever node holds the job lock.
pub async fn run_scheduler(state: AppState, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        match run_locked(&state, false).await {
            Ok(Some(report)) if report != RoundReport::default() => {
                tracing::info!(?report, "lifecycle round");
            }
            Ok(Some(_)) => {}
            Ok(None) => tracing::debug!("another node runs the lifecycle jobs"),
            Err(error) => {
                tracing::warn!(code = error.code, detail = %error.detail, "the lifecycle round failed; retrying");
            }
        }
    }
}

/// One round under the job lock; `None` if another node holds it. `scan_now` scans the
/// inventory whatever the time since the last scan (an operator's `custos lifecycle run`).
pub async fn run_locked(state: &AppState, scan_now: bool) -> ApiResult<Option<RoundReport>> {
    let Some(_held) = state.store.lock_job(SCHEDULER_JOB).await? else {
        return Ok(None);
    };
    run_round(state, scan_now).await.map(Some)
}

/// `POST /v1/lifecycle/run` (admin): runs a round now, inventory scan included, and says what
/// it did. 409 `job_busy` while another node runs one.
pub async fn run_now(state: &AppState, who: &crate::auth::Principal) -> ApiResult<RoundReport> {
    who.require(&[custos_core::Role::Admin])?;
    run_locked(state, true).await?.ok_or_else(|| {
        ApiError::conflict(
            "job_busy",
            "another node is running the lifecycle jobs; try again shortly",
        )
    })
}

async fn run_round(state: &AppState, scan_now: bool) -> ApiResult<RoundReport> {
    let now = state.now();
    let scan = scan_now || state.lifecycle.scan_due(now, INVENTORY_SCAN_SECONDS);
    let mut report = RoundReport::default();
    expired(state, now, &mut report).await?;
    aging_keys(state, now, scan, &mut report).await?;
    report.tasks_closed = close_expired_tasks(state, now).await?;
    report.watches_ended = crate::lifecycle::end_watches(state).await?;
    if scan {
        report.scanned_inventory = true;
        idle(state, now, &mut report).await?;
        orphans_and_attestations(state, now, &mut report).await?;
        state.lifecycle.scanned(now);
    }
    Ok(report)
}

/// Every NHI matching `filter`, a batch at a time.
async fn each_nhi(state: &AppState, filter: &NhiFilter) -> ApiResult<Vec<Nhi>> {
    let mut page = Page {
        after: None,
        limit: BATCH,
    };
    let mut all = Vec::new();
    loop {
        let batch = state.store.list_nhis(filter, &page).await?;
        let Some(last) = batch.last() else {
            return Ok(all);
        };
        page.after = Some(last.id.clone());
        all.extend(batch);
    }
}

/// NHIs past `expires_at`, not yet tombstones: decommissioned (trigger `timeout`), or under
/// the `review` policy given a decommission review, unless one was answered since it expired
/// (a reviewer who said no keeps it; extending `expires_at` is how to say why).
async fn expired(state: &AppState, now: Timestamp, report: &mut RoundReport) -> ApiResult<()> {
    let policy = state.lifecycle.policy;
    for status in [NhiStatus::Active, NhiStatus::Suspended] {
        let filter = NhiFilter {
            status: Some(status),
            expires_before: Some(now),
            ..Default::default()
        };
        for nhi in each_nhi(state, &filter).await? {
            let expired_at = nhi.expires_at.unwrap_or(now);
            let why = format!("expired at {}", expired_at.to_rfc3339());
            match policy.on_expiry_for(&nhi.tags) {
                ExpiryAction::Decommission => {
                    let (_, started) = crate::lifecycle::start(
                        state,
                        &nhi,
                        DecommissionTrigger::Timeout,
                        Actor::System,
                        None,
                        why,
                        None,
                    )
                    .await?;
                    report.decommissions_started += usize::from(started);
                }
                ExpiryAction::Review => {
                    let latest =
                        reviews::latest(state, &nhi.id, ApprovalKind::Decommission).await?;
                    if latest.is_some_and(|a| a.decided_at.is_some_and(|d| d >= expired_at)) {
                        continue;
                    }
                    let (_, opened) = reviews::open(
                        state,
                        &nhi,
                        ApprovalKind::Decommission,
                        format!("decommission {}: it {why}", nhi.name),
                        &[format!("the nhi {why}")],
                        None,
                    )
                    .await?;
                    report.decommission_reviews += usize::from(opened);
                }
            }
        }
    }
    Ok(())
}

/// Active NHIs unused for `idle_days` (a never-used one counted from its registration) get a
/// decommission review, unless one is pending or was answered within the last `idle_days`:
/// a reviewer who keeps an idle NHI is asked again after another idle period, not daily.
async fn idle(state: &AppState, now: Timestamp, report: &mut RoundReport) -> ApiResult<()> {
    let idle_days = state.lifecycle.policy.idle_days;
    let idle_since = now.plus_seconds(-i64::from(idle_days) * 86_400);
    let filter = NhiFilter {
        status: Some(NhiStatus::Active),
        unused_since: Some(idle_since),
        ..Default::default()
    };
    for nhi in each_nhi(state, &filter).await? {
        let last_use = nhi.last_used_at.unwrap_or(nhi.created_at);
        if last_use >= idle_since {
            continue;
        }
        if reviews::latest(state, &nhi.id, ApprovalKind::Decommission)
            .await?
            .is_some_and(|a| {
                a.state_at(now) == ApprovalState::Pending
                    || a.decided_at.is_some_and(|d| d >= idle_since)
            })
        {
            continue;
        }
        let days = (now.unix_millis() - last_use.unix_millis()) / 86_400_000;
        let used = match nhi.last_used_at {
            Some(at) => format!("last used {} ({days} days ago)", at.to_rfc3339()),
            None => format!("never used since it was registered {days} days ago"),
        };
        let (_, opened) = reviews::open(
            state,
            &nhi,
            ApprovalKind::Decommission,
            format!("decommission {}: unused for {days} days", nhi.name),
            &[format!("the nhi was {used}")],
            None,
        )
        .await?;
        report.decommission_reviews += usize::from(opened);
    }
    Ok(())
}

/// Static keys past the rotation age, never rotated: replaced (the new secret kept sealed for
/// the NHI to collect with the old key during the grace period, and the owner told through a
/// finding), or only flagged (when the inventory is scanned), per the NHI's policy. Keys of an NHI that is not active are left:
/// nothing may be issued to it, and its decommissioning revokes them.
async fn aging_keys(
    state: &AppState,
    now: Timestamp,
    scan: bool,
    report: &mut RoundReport,
) -> ApiResult<()> {
    let policy = state.lifecycle.policy;
    if policy.rotate_keys_after_days == 0 {
        return Ok(());
    }
    let issued_before = now.plus_seconds(-i64::from(policy.rotate_keys_after_days) * 86_400);
    let mut page = Page {
        after: None,
        limit: BATCH,
    };
    loop {
        let keys = state
            .store
            .aging_static_keys(issued_before, now, &page)
            .await?;
        let Some(last) = keys.last() else {
            return Ok(());
        };
        page.after = Some(last.id.clone());
        for key in &keys {
            let Some(nhi) = state.store.get_nhi(&key.nhi_id).await? else {
                continue;
            };
            if nhi.status != NhiStatus::Active {
                continue;
            }
            match policy.on_key_age_for(&nhi.tags) {
                KeyAgeAction::Rotate => match rotate_for_age(state, &nhi, key, now).await {
                    Ok(()) => report.keys_rotated += 1,
                    // Rotated, revoked or expired by someone else meanwhile.
                    Err(StoreErrorOr::Store(StoreError::Precondition(_))) => {}
                    Err(StoreErrorOr::Store(e)) => return Err(e.into()),
                    Err(StoreErrorOr::Api(e)) => return Err(e),
                },
                // A flagged key stays due round after round: it is looked at with the
                // inventory, not every round.
                KeyAgeAction::Flag if scan => {
                    if flag_key(state, &nhi, key, now).await? {
                        report.keys_flagged += 1;
                    }
                }
                KeyAgeAction::Flag => {}
            }
        }
    }
}

enum StoreErrorOr {
    Store(StoreError),
    Api(ApiError),
}

async fn rotate_for_age(
    state: &AppState,
    nhi: &Nhi,
    key: &Credential,
    now: Timestamp,
) -> Result<(), StoreErrorOr> {
    let (_, new, old_until) =
        crate::service::replace_static_key(state, &Actor::System, nhi, key, true)
            .await
            .map_err(StoreErrorOr::Store)?;
    let age_days = (now.unix_millis() - key.created_at.unix_millis()) / 86_400_000;
    reviews::lifecycle_finding(
        state,
        nhi,
        "key_rotated",
        format!("key_rotated:{}", key.id),
        Severity::Low,
        format!(
            "static key {} of {} was rotated at {age_days} days old; the nhi collects the new key with POST /v1/credentials/rotated before {}",
            key.fingerprint,
            nhi.name,
            old_until.to_rfc3339()
        ),
        json!({
            "credential_id": key.id,
            "replaced_by": new.id,
            "old_key_works_until": old_until,
            "issued_at": key.created_at,
        }),
    )
    .await
    .map_err(StoreErrorOr::Api)?;
    Ok(())
}

/// Flags a key due a rotation under the `flag` policy: one finding per key, told to the owner.
async fn flag_key(
    state: &AppState,
    nhi: &Nhi,
    key: &Credential,
    now: Timestamp,
) -> ApiResult<bool> {
    let age_days = (now.unix_millis() - key.created_at.unix_millis()) / 86_400_000;
    reviews::lifecycle_finding(
        state,
        nhi,
        reviews::STALE_KEY,
        format!("{}:{}", reviews::STALE_KEY, key.id),
        Severity::Medium,
        format!(
            "static key {} of {} is {age_days} days old and due a rotation (POST /v1/credentials/{}/rotate)",
            key.fingerprint, nhi.name, key.id
        ),
        json!({
            "credential_id": key.id,
            "issued_at": key.created_at,
            "expires_at": key.expires_at,
            "rotate_after_days": state.lifecycle.policy.rotate_keys_after_days,
        }),
    )
    .await
}

/// Closes active tasks past their lifetime: `ended` as of their expiry, one `task.expired`
/// event each. Their credentials expired with them and are refused already; this keeps the
/// task listing true and the live state from remembering them.
async fn close_expired_tasks(state: &AppState, now: Timestamp) -> ApiResult<usize> {
    let mut closed = 0;
    loop {
        let tasks = state.store.expired_tasks(now, BATCH).await?;
        let full = tasks.len() == BATCH as usize;
        for task in &tasks {
            let event = state
                .event(
                    EventKind::TaskExpired,
                    Actor::System,
                    format!("task:{}", task.id),
                )
                .with("nhi", &task.nhi_id)
                .with_some("expired_at", task.expires_at.map(|at| at.to_rfc3339()));
            if state
                .store
                .close_expired_task(&task.id, now, &event)
                .await?
            {
                closed += 1;
            }
        }
        if !full {
            return Ok(closed);
        }
    }
}

/// Orphans and attestations. A team is gone when it had members and none is active any more;
/// a contact is gone when it names a revoked operator and no active one. An orphan gets a
/// finding and an ownership review, routed to its team's fallback team as well (its own team
/// may have nobody left to answer; admins see every review). A high-risk NHI not attested
/// within `attest_every_days` gets an ownership review.
async fn orphans_and_attestations(
    state: &AppState,
    now: Timestamp,
    report: &mut RoundReport,
) -> ApiResult<()> {
    let teams = state.store.list_teams().await?;
    let operators = state.store.list_operators(None).await?;
    let members = |active: bool| -> HashSet<&str> {
        operators
            .iter()
            .filter(|o| !active || o.is_active())
            .flat_map(|o| o.teams.iter().map(String::as_str))
            .collect()
    };
    let (ever_staffed, staffed) = (members(false), members(true));
    let active_names: HashSet<String> = operators
        .iter()
        .filter(|o| o.is_active())
        .map(|o| o.name.to_lowercase())
        .collect();
    let removed_names: HashSet<String> = operators
        .iter()
        .filter(|o| !o.is_active())
        .map(|o| o.name.to_lowercase())
        .filter(|name| !active_names.contains(name))
        .collect();
    let attest_before =
        now.plus_seconds(-i64::from(state.lifecycle.policy.attest_every_days) * 86_400);
    for team in &teams {
        // A team that never had members is run by the admins; one whose members have all
        // been revoked is gone.
        let team_gone =
            ever_staffed.contains(team.id.as_str()) && !staffed.contains(team.id.as_str());
        for status in [NhiStatus::Active, NhiStatus::Suspended] {
            let filter = NhiFilter {
                status: Some(status),
                owner_teams: Some(vec![team.id.clone()]),
                ..Default::default()
            };
            for nhi in each_nhi(state, &filter).await? {
                let contact_gone = nhi
                    .owner
                    .contact
                    .as_ref()
                    .is_some_and(|c| removed_names.contains(&c.to_lowercase()));
                if team_gone || contact_gone {
                    let why = if team_gone {
                        format!("its owner team {} has no active member left", team.name)
                    } else {
                        format!(
                            "its owner contact {} is a revoked operator",
                            nhi.owner.contact.as_deref().unwrap_or_default()
                        )
                    };
                    if orphaned(state, &nhi, &why, team.fallback_team_id.as_deref()).await? {
                        report.orphans += 1;
                    }
                } else if crate::live::risk_tag(&nhi) >= ATTESTED_RISK
                    && nhi.created_at < attest_before
                {
                    let attested = reviews::latest(state, &nhi.id, ApprovalKind::Ownership)
                        .await?
                        .is_some_and(|a| {
                            a.state_at(now) == ApprovalState::Pending
                                || a.decided_at.is_some_and(|d| d >= attest_before)
                        });
                    if !attested {
                        let (_, opened) = reviews::open(
                            state,
                            &nhi,
                            ApprovalKind::Ownership,
                            format!(
                                "attest that team {} still owns and needs {}",
                                team.name, nhi.name
                            ),
                            &[format!(
                                "high-risk nhis are attested every {} days",
                                state.lifecycle.policy.attest_every_days
                            )],
                            None,
                        )
                        .await?;
                        report.attestations += usize::from(opened);
                    }
                }
            }
        }
    }
    Ok(())
}

/// An orphan's finding and ownership review; `true` if the finding is new.
async fn orphaned(
    state: &AppState,
    nhi: &Nhi,
    why: &str,
    fallback_team: Option<&str>,
) -> ApiResult<bool> {
    let opened = reviews::lifecycle_finding(
        state,
        nhi,
        reviews::ORPHANED,
        format!("{}:{}", reviews::ORPHANED, nhi.id),
        Severity::Medium,
        format!("{} is orphaned: {why}", nhi.name),
        json!({
            "owner_team": nhi.owner.team_id,
            "owner_contact": nhi.owner.contact,
            "why": why,
        }),
    )
    .await?;
    reviews::open(
        state,
        nhi,
        ApprovalKind::Ownership,
        format!(
            "{} is orphaned ({why}): transfer it to a team that owns it (POST /v1/nhis/{}/transfer), then approve; or deny to review its decommissioning",
            nhi.name, nhi.id
        ),
        &[why.to_owned()],
        fallback_team,
    )
    .await?;
    Ok(opened)
}
