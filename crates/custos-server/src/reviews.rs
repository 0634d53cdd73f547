//! Reviews of an NHI itself, and the lifecycle findings that go with them.
//!
//! Most approval requests ask a human to let an NHI do something (a task's scope, one action a
//! guardrail holds back), and wait on a task. A review asks about the NHI itself: resume it
//! after an anomaly, decommission it (unused too long, or past its expiry under the `review`
//! policy), confirm who owns it (an orphan, or a high-risk NHI due its periodic attestation).
//! It is the same approval request in the same inbox, with no task and no scope, and deciding
//! it acts on the NHI.

use custos_core::finding::FindingFilter;
use custos_core::finding::{Finding, FindingState, Noticed, ResponseAction, Severity};
use custos_core::issuance::{self, Approval, ApprovalKind, ApprovalState, RiskLevel};
use custos_core::lifecycle::DecommissionTrigger;
use custos_core::{Actor, EventKind, Nhi, Page, Scope, Timestamp};
use custos_store::{ApprovalFilter, FindingOpened};
use serde_json::Value;

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::notify::{self, Happened};
use crate::service::{AppState, new_id};

/// How long a review waits for an answer. Nothing is held up while it waits (unlike an agent's
/// request), so it gets a reviewer's fortnight rather than `approval_ttl_seconds`; unanswered,
/// it expires and the scheduler opens it again if the NHI is still due one.
const REVIEW_DAYS: i64 = 14;

/// Opens a review of `nhi` in its owner team's inbox, or returns the one of this kind still
/// pending; `true` if this call opened it. `reasons` are what the reviewer reads first.
/// `route_to` sends it to another team at once as well (an orphan's owner team may have
/// nobody left to answer).
pub async fn open(
    state: &AppState,
    nhi: &Nhi,
    kind: ApprovalKind,
    purpose: String,
    reasons: &[String],
    route_to: Option<&str>,
) -> ApiResult<(Approval, bool)> {
    open_as(state, nhi, kind, purpose, reasons, route_to, Actor::System).await
}

/// [`open`], for a review a person asked for (an admin adopting a shadow NHI): they are its
/// requester, so they can never approve it themselves.
pub async fn open_as(
    state: &AppState,
    nhi: &Nhi,
    kind: ApprovalKind,
    purpose: String,
    reasons: &[String],
    route_to: Option<&str>,
    requested_by: Actor,
) -> ApiResult<(Approval, bool)> {
    debug_assert!(kind.is_nhi_review(), "{kind} is not a review of an nhi");
    let now = state.now();
    if let Some(pending) = latest(state, &nhi.id, kind)
        .await?
        .filter(|a| a.state_at(now) == ApprovalState::Pending)
    {
        return Ok((pending, false));
    }
    let risk = issuance::review_risk(kind, &nhi.environment, crate::live::risk_tag(nhi), reasons);
    let required_approvals = if risk.level == RiskLevel::High {
        state.limits.high_risk_quorum
    } else {
        1
    };
    let approval = Approval {
        id: new_id(),
        kind,
        nhi_id: nhi.id.clone(),
        task_id: None,
        requested_by: requested_by.to_string(),
        purpose,
        requested_scope: Scope::default(),
        excess: Vec::new(),
        requested_ttl_seconds: 0,
        policies: Vec::new(),
        risk,
        required_approvals,
        state: ApprovalState::Pending,
        created_at: now,
        expires_at: now.plus_seconds(REVIEW_DAYS * 86_400),
        decided_at: None,
        decided_by: None,
        reason: None,
        granted_scope: None,
        granted_ttl_seconds: None,
        escalated_to: None,
        escalated_at: None,
    };
    let fallback = match route_to {
        Some(team) => Some(team.to_owned()),
        None => crate::tasks::separation_fallback(state, nhi).await?,
    };
    let approval = match &fallback {
        Some(to_team) => approval.escalated(to_team, now),
        None => approval,
    };
    let mut events = vec![crate::tasks::approval_requested_event(
        state,
        &requested_by,
        &approval,
    )];
    let mut deliveries = notify::announce(state, &approval, Happened::Requested).await;
    if let Some(to_team) = &fallback {
        crate::tasks::escalate_at_once(
            state,
            &approval,
            nhi,
            to_team,
            &mut events,
            &mut deliveries,
        )
        .await;
    }
    state
        .store
        .file_review(&approval, &events, &deliveries)
        .await?;
    Ok((approval, true))
}

/// The NHI's newest review of this kind, in whatever state.
pub async fn latest(
    state: &AppState,
    nhi_id: &str,
    kind: ApprovalKind,
) -> ApiResult<Option<Approval>> {
    let filter = ApprovalFilter {
        nhi_id: Some(nhi_id.to_owned()),
        kind: Some(kind),
        ..Default::default()
    };
    let mut page = Page {
        after: None,
        limit: 200,
    };
    let mut newest: Option<Approval> = None;
    loop {
        let batch = state.store.list_approvals(&filter, &page).await?;
        let Some(last) = batch.last() else {
            return Ok(newest);
        };
        page.after = Some(last.id.clone());
        for approval in batch {
            if newest
                .as_ref()
                .is_none_or(|n| approval.created_at >= n.created_at)
            {
                newest = Some(approval);
            }
        }
    }
}

/// A reviewer approved decommissioning the NHI: its workflow starts (trigger `review`).
pub async fn decommission_approved(
    state: &AppState,
    nhi: &Nhi,
    decided: &Approval,
    who: &Principal,
) -> ApiResult<()> {
    let reason = format!(
        "approval {}: {}",
        decided.id,
        decided.reason.as_deref().unwrap_or("approved")
    );
    crate::lifecycle::start(
        state,
        nhi,
        DecommissionTrigger::Review,
        who.actor(),
        None,
        reason,
        None,
    )
    .await?;
    Ok(())
}

/// A reviewer confirmed who owns the NHI: the attestation is recorded, and an orphan finding
/// about it is settled by the same decision.
pub async fn owner_attested(
    state: &AppState,
    nhi: &Nhi,
    decided: &Approval,
    who: &Principal,
) -> ApiResult<()> {
    let event = state
        .event(
            EventKind::NhiOwnerAttested,
            who.actor(),
            format!("nhi:{}", nhi.id),
        )
        .with("approval", &decided.id)
        .with("team", &nhi.owner.team_id)
        .with("reason", decided.reason.clone().unwrap_or_default());
    state.store.append_events(&[event]).await?;
    let orphaned = state
        .store
        .list_findings(
            &FindingFilter {
                kind: Some(ORPHANED.to_owned()),
                nhi_id: Some(nhi.id.clone()),
                unresolved_only: true,
                ..Default::default()
            },
            &Page {
                after: None,
                limit: 10,
            },
        )
        .await?;
    for finding in orphaned {
        crate::behaviour::settle_finding(
            state,
            &finding.id,
            FindingState::Accepted,
            who.actor(),
            &format!("owner attested by approval {}", decided.id),
            Some(&nhi.id),
        )
        .await?;
    }
    Ok(())
}

/// A reviewer denied an ownership review: the owner team says it no longer owns or needs the
/// NHI, so the next question is whether to decommission it.
pub async fn ownership_denied(state: &AppState, nhi: &Nhi, decided: &Approval) -> ApiResult<()> {
    open(
        state,
        nhi,
        ApprovalKind::Decommission,
        format!("decommission {}: its owner review was denied", nhi.name),
        &[format!(
            "ownership review {} was denied: {}",
            decided.id,
            decided.reason.as_deref().unwrap_or("no reason given")
        )],
        None,
    )
    .await?;
    Ok(())
}

/// The finding kind of an NHI whose owner is gone.
pub const ORPHANED: &str = "orphaned";
/// The finding kind of a static key due a rotation under the `flag` policy.
pub const STALE_KEY: &str = "stale_key";

/// Opens a lifecycle finding about an NHI and tells its owner team's channels, unless one with
/// the same key is unresolved (then it is left as it is: a job that sees the same thing every
/// round must not fold it in every round). `true` if it opened one.
pub async fn lifecycle_finding(
    state: &AppState,
    nhi: &Nhi,
    kind: &str,
    dedupe_key: String,
    severity: Severity,
    summary: String,
    evidence: Value,
) -> ApiResult<bool> {
    let unresolved = state
        .store
        .list_findings(
            &FindingFilter {
                kind: Some(kind.to_owned()),
                nhi_id: Some(nhi.id.clone()),
                unresolved_only: true,
                ..Default::default()
            },
            &Page {
                after: None,
                limit: 100,
            },
        )
        .await?;
    if unresolved.iter().any(|f| f.dedupe_key == dedupe_key) {
        return Ok(false);
    }
    let now: Timestamp = state.now();
    let finding = Finding::opened(
        new_id(),
        Noticed {
            kind: kind.to_owned(),
            nhi_id: Some(nhi.id.clone()),
            dedupe_key,
            severity,
            score: 0.0,
            summary,
            evidence,
            action: ResponseAction::Alert,
        },
        now,
    );
    let event = state
        .event(
            EventKind::FindingOpened,
            Actor::System,
            format!("finding:{}", finding.id),
        )
        .with("nhi", &nhi.id)
        .with("kind", &finding.kind)
        .with("severity", finding.severity.as_str())
        .with("action", finding.action.as_str())
        .with("summary", &finding.summary);
    let deliveries = notify::announce_finding(state, &finding, nhi).await;
    let opened = state
        .store
        .open_finding(&finding, &event, &deliveries)
        .await?;
    Ok(matches!(opened, FindingOpened::New))
}
