//! Per-task credentials and the approvals that gate them: one function per use case.

use std::time::Duration;

use custos_core::issuance::{
    self, Approval, ApprovalKind, ApprovalState, Decision, RiskFacts, RiskLevel, Ruling,
    StandingRule, Task, TaskPlan, TaskState, Vote,
};
use custos_core::{Actor, Credential, EventKind, Grant, Nhi, Page, Role, Timestamp};
use custos_store::{ApprovalFilter, StoreError};

use crate::api::{
    ApprovalContext, ApprovalList, ApprovalView, ApproveRequest, BatchDecision, BatchOutcome,
    BatchResult, CreateRule, CreateTask, DenyRequest, NhiSummary, PastRequest, ReachView,
    RequestHistory, RuleList, RuleView, TaskCredential, TaskView, VoteView,
};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::notify::{self, Happened};
use crate::oauth::{self, TokenSpec};
use crate::service::{AppState, encode_cursor, new_id, visible_nhi};

/// The longest a `GET /v1/tasks/{id}?wait=` holds the request open.
pub const MAX_WAIT_SECONDS: u64 = 60;

fn task_view(task: Task, credential: Option<TaskCredential>, now: Timestamp) -> TaskView {
    TaskView {
        state: task.state_at(now).as_str().to_owned(),
        id: task.id,
        nhi_id: task.nhi_id,
        purpose: task.purpose,
        scope: task.scope,
        ttl_seconds: task.ttl_seconds,
        requested_by: task.requested_by,
        created_at: task.created_at,
        approval_id: task.approval_id,
        activated_at: task.activated_at,
        expires_at: task.expires_at,
        ended_at: task.ended_at,
        credential,
        callback_url: task.callback_url,
    }
}

fn approval_view(a: Approval, votes: Vec<issuance::Vote>, now: Timestamp) -> ApprovalView {
    ApprovalView {
        state: a.state_at(now).as_str().to_owned(),
        id: a.id,
        kind: a.kind.as_str().to_owned(),
        nhi_id: a.nhi_id,
        task_id: a.task_id,
        requested_by: a.requested_by,
        purpose: a.purpose,
        requested_scope: a.requested_scope,
        excess: a.excess,
        requested_ttl_seconds: a.requested_ttl_seconds,
        policies: a.policies,
        risk: a.risk.level.as_str().to_owned(),
        risk_factors: a.risk.factors,
        required_approvals: a.required_approvals,
        approvals: votes.into_iter().map(vote_view).collect(),
        created_at: a.created_at,
        expires_at: a.expires_at,
        decided_at: a.decided_at,
        decided_by: a.decided_by,
        reason: a.reason,
        granted_scope: a.granted_scope.map(|s| s.to_strings()),
        granted_ttl_seconds: a.granted_ttl_seconds,
        escalated_to: a.escalated_to,
        escalated_at: a.escalated_at,
        context: None,
    }
}

fn vote_view(v: issuance::Vote) -> VoteView {
    VoteView {
        reviewer: v.reviewer,
        scope: v.scope.to_strings(),
        ttl_seconds: v.ttl_seconds,
        reason: v.reason,
        at: v.at,
    }
}

/// `POST /v1/tasks`: `201` with the task and its credential, or `202` with the task waiting
/// on an approval request.
pub async fn create_task(
    state: &AppState,
    who: &Principal,
    input: CreateTask,
) -> ApiResult<(bool, TaskView)> {
    let now = state.now();
    let limits = &state.limits.issuance;
    // A token is the child of the key or token the agent asked with, so revoking a leaked
    // key also revokes what was obtained with it.
    let presented = match who {
        Principal::Nhi { credential, .. } => Some(credential.as_ref()),
        Principal::Operator(_) => None,
    };
    let (nhi, plan) = match who {
        Principal::Nhi { nhi, .. } => {
            if input.nhi_id.as_deref().is_some_and(|id| id != nhi.id) {
                return Err(ApiError::forbidden("an nhi asks for tasks for itself only")
                    .with_code("not_own_nhi"));
            }
            let plan = issuance::plan_task(nhi, &input.scope, input.ttl_seconds, limits, now)?;
            ((**nhi).clone(), plan)
        }
        Principal::Operator(_) => {
            let nhi_id = input.nhi_id.as_deref().ok_or_else(|| {
                ApiError::validation(custos_core::validate::ValidationErrors::single(
                    "nhi_id",
                    "an operator must name the nhi the task is for",
                ))
            })?;
            let nhi = visible_nhi(state, who, nhi_id).await?;
            who.require_admin_or_reviewer_of(&nhi.owner.team_id)?;
            let plan = issuance::plan_requested_by_operator(
                &nhi,
                &input.scope,
                input.ttl_seconds,
                limits,
                now,
            )?;
            (nhi, plan)
        }
    };
    let purpose = input.purpose.trim().to_owned();
    let mut errors = custos_core::validate::ValidationErrors::default();
    custos_core::validate::text(&mut errors, "purpose", &purpose, 2000);
    let callback_url = input
        .callback_url
        .as_deref()
        .and_then(|url| notify::callback_url(&state.notify, url, &mut errors));
    errors.into_result()?;
    let actor = who.actor();
    let mut task = Task {
        id: new_id(),
        nhi_id: nhi.id.clone(),
        purpose,
        scope: input.scope,
        ttl_seconds: 0,
        state: TaskState::PendingApproval,
        requested_by: actor.to_string(),
        created_at: now,
        approval_id: None,
        activated_at: None,
        expires_at: None,
        ended_at: None,
        credential_id: None,
        callback_url,
    };
    match plan {
        TaskPlan::Issue { ttl_seconds } => {
            task.ttl_seconds = ttl_seconds;
            task.state = TaskState::Active;
            task.activated_at = Some(now);
            let expires_at = issuance::expiry(&nhi, now, ttl_seconds);
            task.expires_at = Some(expires_at);
            let (token, credential) = oauth::access_token(
                state,
                TokenSpec {
                    holder: &nhi,
                    subject: &nhi.id,
                    scope: task.scope.clone(),
                    expires_at,
                    task_id: Some(task.id.clone()),
                    parent: presented,
                    depth: 0,
                    act: None,
                    created_by: actor.to_string(),
                },
            );
            task.credential_id = Some(credential.id.clone());
            let issued = oauth::issued_event(state, &credential);
            let requested = requested_event(state, &actor, &task);
            state
                .store
                .create_task(&task, None, Some(&credential), &[requested, issued], &[])
                .await?;
            let credential = TaskCredential {
                access_token: Some(token),
                jti: credential.id,
                expires_at,
            };
            Ok((true, task_view(task, Some(credential), now)))
        }
        TaskPlan::NeedsApproval {
            ttl_seconds,
            excess,
        } => {
            task.ttl_seconds = ttl_seconds;
            let asked = Asked {
                kind: ApprovalKind::ScopeEscalation,
                excess: excess.iter().map(ToString::to_string).collect(),
                policies: &[],
            };
            file_for_approval(state, &nhi, &mut task, asked, &actor).await?;
            Ok((false, task_view(task, None, now)))
        }
    }
}

fn requested_event(state: &AppState, actor: &Actor, task: &Task) -> custos_core::DomainEvent {
    state
        .event(
            EventKind::TaskRequested,
            actor.clone(),
            format!("task:{}", task.id),
        )
        .with("nhi", &task.nhi_id)
        .with("scope", task.scope.to_strings().join(" "))
        .with("purpose", &task.purpose)
}

/// What a human is asked, beyond the task itself.
pub(crate) struct Asked<'a> {
    pub kind: ApprovalKind,
    /// The grants beyond the NHI's ceiling, or the one action a guardrail holds back; empty
    /// when all of the task's scope is asked (an operator's request).
    pub excess: Vec<String>,
    /// The guardrails that raised it.
    pub policies: &'a [String],
}

/// Files a task that waits for a human, with its approval request and both events, in one
/// write: the request's risk is judged from what is asked and the NHI, a high-risk request
/// needs a quorum, and every request has a deadline. Sets the task's `approval_id`.
pub(crate) async fn file_for_approval(
    state: &AppState,
    nhi: &Nhi,
    task: &mut Task,
    asked: Asked<'_>,
    actor: &Actor,
) -> ApiResult<Approval> {
    let grants: Vec<Grant> = if asked.excess.is_empty() {
        task.scope.grants().to_vec()
    } else {
        asked
            .excess
            .iter()
            .filter_map(|g| Grant::parse(g).ok())
            .collect()
    };
    let guardrails = state.live.guardrails();
    let mut sensitivity: Vec<String> = grants
        .iter()
        .filter_map(|g| Some(guardrails.sensitivity(g.service(), g.resource()?)))
        .flatten()
        .cloned()
        .collect();
    sensitivity.sort();
    sensitivity.dedup();
    let risk = issuance::assess_risk(RiskFacts {
        environment: &nhi.environment,
        nhi_risk: crate::live::risk_tag(nhi),
        asked: &grants,
        sensitivity: &sensitivity,
        ttl_seconds: task.ttl_seconds,
    });
    let required_approvals = if risk.level == RiskLevel::High {
        state.limits.high_risk_quorum
    } else {
        1
    };
    let approval = Approval {
        id: new_id(),
        kind: asked.kind,
        nhi_id: task.nhi_id.clone(),
        task_id: Some(task.id.clone()),
        requested_by: task.requested_by.clone(),
        purpose: task.purpose.clone(),
        requested_scope: task.scope.clone(),
        excess: asked.excess,
        requested_ttl_seconds: task.ttl_seconds,
        policies: asked.policies.to_vec(),
        risk,
        required_approvals,
        state: ApprovalState::Pending,
        created_at: task.created_at,
        expires_at: task
            .created_at
            .plus_seconds(i64::from(state.limits.approval_ttl_seconds)),
        decided_at: None,
        decided_by: None,
        reason: None,
        granted_scope: None,
        granted_ttl_seconds: None,
        escalated_to: None,
        escalated_at: None,
    };
    // A standing rule that covers what is asked approves at once, unless the request is high
    // risk: the agent collects its credential as after a reviewer's approval.
    let now = state.now();
    let rule = if approval.risk.level == RiskLevel::High {
        None
    } else {
        state
            .store
            .list_rules(Some(&nhi.id), Some(now))
            .await?
            .into_iter()
            .find(|r| r.approves(&approval, &grants, now))
    };
    let approval = match &rule {
        Some(rule) => {
            task.state = TaskState::Active;
            task.activated_at = Some(now);
            task.expires_at = Some(issuance::expiry(nhi, now, task.ttl_seconds));
            approval.approved_by_rule(rule, now)
        }
        None => approval,
    };
    let fallback = match &rule {
        None => separation_fallback(state, nhi).await?,
        Some(_) => None,
    };
    let approval = match &fallback {
        Some(to_team) => approval.escalated(to_team, approval.created_at),
        None => approval,
    };
    task.approval_id = Some(approval.id.clone());
    let requested = requested_event(state, actor, task);
    let mut events = vec![requested, approval_requested_event(state, actor, &approval)];
    let mut deliveries = Vec::new();
    if let Some(rule) = &rule {
        events.push(
            state
                .event(
                    EventKind::ApprovalDecided,
                    Actor::System,
                    format!("approval:{}", approval.id),
                )
                .with("decision", approval.state.as_str())
                .with("task", &task.id)
                .with("nhi", &nhi.id)
                .with("rule", &rule.id)
                .with("reason", approval.reason.clone().unwrap_or_default()),
        );
        // Nobody needs to look: the agent is told, reviewers are not.
        deliveries.extend(notify::task_decided(state, task, &approval));
    } else {
        deliveries.extend(notify::announce(state, &approval, Happened::Requested).await);
    }
    if let Some(to_team) = &fallback {
        escalate_at_once(state, &approval, nhi, to_team, &mut events, &mut deliveries).await;
    }
    state
        .store
        .create_task(task, Some(&approval), None, &events, &deliveries)
        .await?;
    if rule.is_some() {
        state.task_updates.notify_waiters();
    }
    Ok(approval)
}

/// Separation of duties: the owner team may not approve, so a request it could only deny goes
/// to its fallback team at once, for someone who may approve to see it. The team, if so.
pub(crate) async fn separation_fallback(state: &AppState, nhi: &Nhi) -> ApiResult<Option<String>> {
    if !state.limits.separation_of_duties {
        return Ok(None);
    }
    Ok(state
        .store
        .get_team(&nhi.owner.team_id)
        .await?
        .and_then(|team| team.fallback_team_id))
}

/// `approval.requested`: what a human is asked and how risky it is.
pub(crate) fn approval_requested_event(
    state: &AppState,
    actor: &Actor,
    approval: &Approval,
) -> custos_core::DomainEvent {
    let mut event = state
        .event(
            EventKind::ApprovalRequested,
            actor.clone(),
            format!("approval:{}", approval.id),
        )
        .with("nhi", &approval.nhi_id)
        .with_some("task", approval.task_id.as_deref())
        .with("kind", approval.kind.as_str())
        .with("excess", approval.excess.join(" "))
        .with("risk", approval.risk.level.as_str())
        .with(
            "required_approvals",
            approval.required_approvals.to_string(),
        );
    if !approval.policies.is_empty() {
        event = event.with("policies", approval.policies.join(","));
    }
    event
}

/// The event and messages of a request that goes to the fallback team as soon as it is filed.
pub(crate) async fn escalate_at_once(
    state: &AppState,
    approval: &Approval,
    nhi: &Nhi,
    to_team: &str,
    events: &mut Vec<custos_core::DomainEvent>,
    deliveries: &mut Vec<custos_store::NotificationDelivery>,
) {
    let why = "separation of duties: the owner team's members may not approve it";
    events.push(escalated_event(
        state,
        approval,
        &nhi.owner.team_id,
        to_team,
        why,
    ));
    deliveries.extend(
        notify::announce(
            state,
            approval,
            Happened::Escalated {
                by: "system",
                to_team,
                why,
            },
        )
        .await,
    );
}

/// `approval.escalated`: the request went from its owner team to the fallback team too.
fn escalated_event(
    state: &AppState,
    approval: &Approval,
    from_team: &str,
    to_team: &str,
    why: &str,
) -> custos_core::DomainEvent {
    state
        .event(
            EventKind::ApprovalEscalated,
            Actor::System,
            format!("approval:{}", approval.id),
        )
        .with("nhi", &approval.nhi_id)
        .with_some("task", approval.task_id.as_deref())
        .with("from_team", from_team)
        .with("to_team", to_team)
        .with("reason", why)
}

/// The longest a standing rule may last, and its default.
const MAX_RULE_SECONDS: u32 = 90 * 24 * 3600;
const DEFAULT_RULE_SECONDS: u32 = 7 * 24 * 3600;

fn rule_view(rule: StandingRule, now: Timestamp) -> RuleView {
    RuleView {
        active: rule.is_active(now),
        id: rule.id,
        nhi_id: rule.nhi_id,
        scope: rule.scope.to_strings(),
        reason: rule.reason,
        created_by: rule.created_by,
        created_at: rule.created_at,
        expires_at: rule.expires_at,
        revoked_at: rule.revoked_at,
    }
}

/// Sets a standing rule (admin): the NHI's requests within the scope are approved without a
/// reviewer until it expires or is revoked, unless they are high risk.
pub async fn create_rule(
    state: &AppState,
    who: &Principal,
    input: CreateRule,
) -> ApiResult<RuleView> {
    who.require(&[Role::Admin])?;
    let ttl = input.ttl_seconds.unwrap_or(DEFAULT_RULE_SECONDS);
    let mut errors = custos_core::validate::ValidationErrors::default();
    if !(60..=MAX_RULE_SECONDS).contains(&ttl) {
        errors.push(
            "ttl_seconds",
            format!("must be between 60 and {MAX_RULE_SECONDS}"),
        );
    }
    if input.scope.is_empty() {
        errors.push("scope", "a rule approves at least one grant");
    }
    errors.into_result()?;
    let reason = reason(input.reason)?;
    let nhi = visible_nhi(state, who, &input.nhi_id).await?;
    let now = state.now();
    let rule = StandingRule {
        id: new_id(),
        nhi_id: nhi.id.clone(),
        scope: input.scope,
        reason,
        created_by: who.actor().to_string(),
        created_at: now,
        expires_at: now.plus_seconds(i64::from(ttl)),
        revoked_at: None,
    };
    let event = state
        .event(
            EventKind::ApprovalRuleCreated,
            who.actor(),
            format!("approval_rule:{}", rule.id),
        )
        .with("nhi", &nhi.id)
        .with("scope", rule.scope.to_strings().join(" "))
        .with("expires_at", rule.expires_at.to_string())
        .with("reason", &rule.reason);
    state.store.create_rule(&rule, &event).await?;
    Ok(rule_view(rule, now))
}

/// The standing rules (admin, auditor), of one NHI or all, newest first.
pub async fn list_rules(
    state: &AppState,
    who: &Principal,
    nhi_id: Option<&str>,
) -> ApiResult<RuleList> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let now = state.now();
    let items = state
        .store
        .list_rules(nhi_id, None)
        .await?
        .into_iter()
        .map(|r| rule_view(r, now))
        .collect();
    Ok(RuleList { items })
}

/// Revokes a standing rule (admin); revoking it again changes nothing.
pub async fn revoke_rule(state: &AppState, who: &Principal, id: &str) -> ApiResult<RuleView> {
    who.require(&[Role::Admin])?;
    let now = state.now();
    let rule = state
        .store
        .get_rule(id)
        .await?
        .ok_or_else(|| ApiError::not_found("rule"))?;
    let event = state
        .event(
            EventKind::ApprovalRuleRevoked,
            who.actor(),
            format!("approval_rule:{id}"),
        )
        .with("nhi", &rule.nhi_id);
    state.store.revoke_rule(id, now, &event).await?;
    let rule = state
        .store
        .get_rule(id)
        .await?
        .ok_or_else(|| ApiError::not_found("rule"))?;
    Ok(rule_view(rule, now))
}

/// Expires the pending requests past their deadline: each is denied, its task with it, and
/// the agent waiting on the task is told. Returns how many expired.
pub async fn expire_overdue(state: &AppState) -> ApiResult<usize> {
    let now = state.now();
    let overdue = state
        .store
        .list_approvals(
            &ApprovalFilter {
                pending_past: Some(now),
                ..Default::default()
            },
            &Page {
                after: None,
                limit: 500,
            },
        )
        .await?;
    let mut expired = 0;
    for approval in &overdue {
        let event = state
            .event(
                EventKind::ApprovalExpired,
                Actor::System,
                format!("approval:{}", approval.id),
            )
            .with("nhi", &approval.nhi_id)
            .with_some("task", approval.task_id.as_deref())
            .with("deadline", approval.expires_at.to_string());
        // The request and its task as the store will make them, for the messages.
        let as_expired = Approval {
            state: ApprovalState::Expired,
            decided_at: Some(now),
            reason: Some("expired unanswered".into()),
            ..approval.clone()
        };
        let mut deliveries = notify::announce(state, &as_expired, Happened::Expired).await;
        if let Some(task_id) = &approval.task_id
            && let Some(mut task) = state.store.get_task(task_id).await?
            && task.state == TaskState::PendingApproval
        {
            task.state = TaskState::Denied;
            task.ended_at = Some(now);
            deliveries.extend(notify::task_decided(state, &task, &as_expired));
        }
        if state
            .store
            .expire_approval(approval, now, &event, &deliveries)
            .await?
        {
            expired += 1;
        }
    }
    if expired > 0 {
        state.task_updates.notify_waiters();
    }
    Ok(expired)
}

/// Escalates the pending requests that waited their owner team's time unanswered: each goes to
/// the team's fallback team as well, whose reviewers may then see and decide it, and both
/// teams' channels hear of it. Returns how many were escalated.
pub async fn escalate_overdue(state: &AppState) -> ApiResult<usize> {
    let now = state.now();
    let due = state
        .store
        .due_escalations(now, state.limits.escalate_after_seconds, 500)
        .await?;
    let mut escalated = 0;
    for due in &due {
        let approval = due.approval.escalated(&due.to_team, now);
        let waited = (now.unix_millis() - approval.created_at.unix_millis()).max(0) / 1000;
        let why = format!("unanswered by the owner team for {waited} s");
        let event = escalated_event(state, &approval, &due.from_team, &due.to_team, &why);
        let deliveries = notify::announce(
            state,
            &approval,
            Happened::Escalated {
                by: "system",
                to_team: &due.to_team,
                why: &why,
            },
        )
        .await;
        if state
            .store
            .escalate_approval(&approval.id, &due.to_team, now, &event, &deliveries)
            .await?
        {
            escalated += 1;
        }
    }
    Ok(escalated)
}

/// Who may read a task: the NHI it belongs to, and operators who may see that NHI.
async fn visible_task(state: &AppState, who: &Principal, id: &str) -> ApiResult<Task> {
    let task = state
        .store
        .get_task(id)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    match who {
        Principal::Nhi { nhi, .. } if nhi.id == task.nhi_id => Ok(task),
        Principal::Nhi { .. } => Err(ApiError::not_found("task")),
        Principal::Operator(_) => {
            visible_nhi(state, who, &task.nhi_id)
                .await
                .map_err(|_| ApiError::not_found("task"))?;
            Ok(task)
        }
    }
}

/// `GET /v1/tasks/{id}[?wait=SECONDS]`. A pending task is waited on up to `wait` seconds. The
/// NHI collects an approved task's credential here: it is minted on that first collection,
/// with the lifetime that started at approval, and never shown again.
pub async fn get_task(
    state: &AppState,
    who: &Principal,
    id: &str,
    wait_seconds: u64,
) -> ApiResult<TaskView> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(wait_seconds.min(MAX_WAIT_SECONDS));
    let mut task = loop {
        // Registered before the read, so that a decision landing between the read and the
        // wait still wakes it (`notify_waiters` reaches every `Notified` already created).
        let notified = state.task_updates.notified();
        let task = visible_task(state, who, id).await?;
        if task.state != TaskState::PendingApproval || tokio::time::Instant::now() >= deadline {
            break task;
        }
        // Decisions on this node wake the wait at once; a decision on another node sharing
        // the store is seen by the next poll, at most a second later.
        let tick = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            () = notified => {}
            () = tick => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    };
    let now = state.now();
    let credential = match (&task.credential_id, who) {
        (Some(jti), _) => state
            .store
            .get_credential(jti)
            .await?
            .and_then(|c| c.expires_at.map(|e| (c.id, e)))
            .map(|(jti, expires_at)| TaskCredential {
                access_token: None,
                jti,
                expires_at,
            }),
        (None, Principal::Nhi { nhi, credential }) if task.state_at(now) == TaskState::Active => {
            Some(collect_credential(state, nhi, credential, &mut task).await?)
        }
        (None, _) => None,
    };
    Ok(task_view(task, credential, now))
}

/// Mints an approved task's one credential for the NHI collecting it.
async fn collect_credential(
    state: &AppState,
    nhi: &Nhi,
    presented: &Credential,
    task: &mut Task,
) -> ApiResult<TaskCredential> {
    issuance::ensure_usable(nhi, state.now())?;
    let expires_at = task
        .expires_at
        .ok_or_else(|| ApiError::conflict("task_not_active", "the task has no lifetime"))?;
    let (token, credential) = oauth::access_token(
        state,
        TokenSpec {
            holder: nhi,
            subject: &nhi.id,
            scope: task.scope.clone(),
            expires_at,
            task_id: Some(task.id.clone()),
            parent: Some(presented),
            depth: 0,
            act: None,
            created_by: task.approval_id.as_ref().map_or_else(
                || Actor::Nhi(nhi.id.clone()).to_string(),
                |a| format!("approval:{a}"),
            ),
        },
    );
    let event = oauth::issued_event(state, &credential);
    if !state
        .store
        .mint_task_credential(&task.id, &credential, &event)
        .await?
    {
        return Err(ApiError::conflict(
            "credential_already_issued",
            "this task's credential was already collected; an approval mints one credential",
        ));
    }
    task.credential_id = Some(credential.id.clone());
    Ok(TaskCredential {
        access_token: Some(token),
        jti: credential.id,
        expires_at,
    })
}

/// `POST /v1/tasks/{id}/end`: revokes every credential of the task, and what was delegated
/// from them. By the NHI itself, or an admin or reviewer of its owner team.
pub async fn end_task(state: &AppState, who: &Principal, id: &str) -> ApiResult<TaskView> {
    let task = visible_task(state, who, id).await?;
    if let Principal::Operator(_) = who {
        let nhi = visible_nhi(state, who, &task.nhi_id).await?;
        who.require_admin_or_reviewer_of(&nhi.owner.team_id)?;
    }
    let now = state.now();
    let event = state.event(
        EventKind::TaskEnded,
        who.actor(),
        format!("task:{}", task.id),
    );
    state.store.end_task(&task.id, now, &event).await?;
    state.task_updates.notify_waiters();
    let task = visible_task(state, who, id).await?;
    Ok(task_view(task, None, now))
}

/// Approval requests the caller may see, matching `filter` (whose team restriction is set
/// here from the caller's rights).
pub async fn list_approvals(
    state: &AppState,
    who: &Principal,
    filter: ApprovalFilter,
    page: Page,
) -> ApiResult<ApprovalList> {
    let owner_teams = who.visible_teams()?;
    let limit = page.limit;
    let now = state.now();
    let found = state
        .store
        .list_approvals(
            &ApprovalFilter {
                owner_teams,
                ..filter
            },
            &Page {
                after: page.after,
                limit: limit + 1,
            },
        )
        .await?;
    let more = found.len() > limit as usize;
    let shown: Vec<Approval> = found.into_iter().take(limit as usize).collect();
    // The votes of every quorum request on the page, in one read.
    let quorum: Vec<&str> = shown
        .iter()
        .filter(|a| a.required_approvals > 1)
        .map(|a| a.id.as_str())
        .collect();
    let mut votes = state.store.list_votes(&quorum).await?;
    let items: Vec<ApprovalView> = shown
        .into_iter()
        .map(|approval| {
            let counted = votes.remove(&approval.id).unwrap_or_default();
            approval_view(approval, counted, now)
        })
        .collect();
    let next_cursor = if more {
        items.last().map(|a| encode_cursor(&a.id))
    } else {
        None
    };
    Ok(ApprovalList { items, next_cursor })
}

/// An approval the caller may see, with the NHI it is about: every request for admins and
/// auditors; for reviewers, those about their teams' NHIs and those escalated to their teams.
pub(crate) async fn visible_approval(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> ApiResult<(Approval, Nhi)> {
    let visible = who.visible_teams()?;
    let approval = state
        .store
        .get_approval(id)
        .await?
        .ok_or_else(|| ApiError::not_found("approval"))?;
    let nhi = state
        .store
        .get_nhi(&approval.nhi_id)
        .await?
        .ok_or_else(|| ApiError::not_found("approval"))?;
    if let Some(teams) = visible {
        let routed = teams.contains(&nhi.owner.team_id)
            || approval
                .escalated_to
                .as_ref()
                .is_some_and(|to| teams.contains(to));
        if !routed {
            return Err(ApiError::not_found("approval"));
        }
    }
    Ok((approval, nhi))
}

/// Who may decide a request: an admin, or a reviewer of the NHI's owner team or of the team
/// the request was escalated to.
/// Who may decide a request: an admin, or a reviewer of the NHI's owner team or of the team
/// the request was escalated to. The web UI asks the same to know whether to offer the forms.
pub fn may_decide<'p>(
    who: &'p Principal,
    owner_team: &str,
    escalated_to: Option<&str>,
) -> ApiResult<&'p custos_core::Operator> {
    let op = who.require(&[Role::Admin, Role::Reviewer])?;
    let reviews = |team: &str| op.teams.iter().any(|t| t == team);
    if op.has_role(Role::Admin) || reviews(owner_team) || escalated_to.is_some_and(reviews) {
        Ok(op)
    } else {
        Err(ApiError::forbidden(
            "only an admin, or a reviewer of the owner team or of the team the request was escalated to, may do this",
        ))
    }
}

/// How many earlier requests of the same NHI are looked through for the history.
const HISTORY_WINDOW: u32 = 500;
/// How many of them are listed.
const HISTORY_SHOWN: usize = 5;

pub async fn get_approval(state: &AppState, who: &Principal, id: &str) -> ApiResult<ApprovalView> {
    let (approval, nhi) = visible_approval(state, who, id).await?;
    let context = approval_context(state, &approval, &nhi).await?;
    let mut view = with_votes(state, approval, state.now()).await?;
    view.context = Some(context);
    Ok(view)
}

async fn approval_context(
    state: &AppState,
    approval: &Approval,
    nhi: &Nhi,
) -> ApiResult<ApprovalContext> {
    let team = state.store.get_team(&nhi.owner.team_id).await?;
    let within_ceiling = approval
        .requested_scope
        .to_strings()
        .into_iter()
        .filter(|g| !approval.excess.contains(g))
        .collect();
    let guardrails = state.live.guardrails();
    let reach = approval
        .excess
        .iter()
        .map(|text| {
            let sensitivity = Grant::parse(text)
                .ok()
                .and_then(|g| Some(guardrails.sensitivity(g.service(), g.resource()?).to_vec()))
                .unwrap_or_default();
            ReachView {
                grant: text.clone(),
                sensitivity,
            }
        })
        .collect();
    // The same NHI asking for the same grants beyond its ceiling: how did that go before?
    let earlier = state
        .store
        .list_approvals(
            &ApprovalFilter {
                nhi_id: Some(nhi.id.clone()),
                ..Default::default()
            },
            &Page {
                after: None,
                limit: HISTORY_WINDOW,
            },
        )
        .await?;
    let now = state.now();
    let mut similar: Vec<&Approval> = earlier
        .iter()
        .filter(|a| a.id != approval.id && a.excess == approval.excess)
        .collect();
    similar.sort_by_key(|a| std::cmp::Reverse(a.created_at));
    let count = |wanted: ApprovalState| {
        let n = similar.iter().filter(|a| a.state_at(now) == wanted).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    };
    let history = RequestHistory {
        approved: count(ApprovalState::Approved),
        denied: count(ApprovalState::Denied),
        expired: count(ApprovalState::Expired),
        recent: similar
            .iter()
            .take(HISTORY_SHOWN)
            .map(|a| PastRequest {
                id: a.id.clone(),
                state: a.state_at(now).as_str().to_owned(),
                decided_by: a.decided_by.clone(),
                reason: a.reason.clone(),
                created_at: a.created_at,
            })
            .collect(),
    };
    Ok(ApprovalContext {
        nhi: NhiSummary {
            id: nhi.id.clone(),
            name: nhi.name.clone(),
            kind: nhi.kind.as_str().to_owned(),
            environment: nhi.environment.clone(),
            status: nhi.status.as_str().to_owned(),
            owner_team: nhi.owner.team_id.clone(),
            owner_team_name: team.map(|t| t.name),
            owner_contact: nhi.owner.contact.clone(),
        },
        ceiling: nhi.scope_ceiling.to_strings(),
        within_ceiling,
        reach,
        history,
    })
}

/// The view of a request, with the approvals counted towards its quorum (only a request that
/// needs more than one can have any).
async fn with_votes(
    state: &AppState,
    approval: Approval,
    now: Timestamp,
) -> ApiResult<ApprovalView> {
    let votes = if approval.required_approvals > 1 {
        votes_of(state, &approval.id).await?
    } else {
        Vec::new()
    };
    Ok(approval_view(approval, votes, now))
}

/// The approvals counted towards one request's quorum.
async fn votes_of(state: &AppState, approval_id: &str) -> ApiResult<Vec<Vote>> {
    Ok(state
        .store
        .list_votes(&[approval_id])
        .await?
        .remove(approval_id)
        .unwrap_or_default())
}

/// Approves or denies: an admin or a reviewer of the NHI's owner team (or of the team the
/// request was escalated to), never an NHI and never whoever asked; under separation of duties,
/// never approved by a member of the owner team. An approval starts the task's lifetime now;
/// the NHI collects the credential with `GET /v1/tasks/{id}`, and hears of the decision at its
/// `callback_url` if it gave one.
pub async fn decide(
    state: &AppState,
    who: &Principal,
    id: &str,
    decision: Decision,
) -> ApiResult<ApprovalView> {
    let (approval, nhi) = visible_approval(state, who, id).await?;
    let operator = may_decide(who, &nhi.owner.team_id, approval.escalated_to.as_deref())?;
    // Admins are bound too, if they are members of the owner team.
    let separate = issuance::ensure_separate(
        &decision,
        operator.teams.contains(&nhi.owner.team_id),
        state.limits.separation_of_duties,
    );
    let now = state.now();
    let votes = votes_of(state, &approval.id).await?;
    let ruling = approval.decide(decision, &who.actor().to_string(), &votes, now)?;
    separate?;
    let decided = match ruling {
        Ruling::Decided(decided) => *decided,
        Ruling::Voted { vote, remaining } => {
            let event = state
                .event(
                    EventKind::ApprovalVoted,
                    who.actor(),
                    format!("approval:{}", approval.id),
                )
                .with("nhi", &nhi.id)
                .with_some("task", approval.task_id.as_deref())
                .with("scope", vote.scope.to_strings().join(" "))
                .with("remaining", remaining.to_string())
                .with("reason", &vote.reason);
            let deliveries = notify::announce(
                state,
                &approval,
                Happened::Voted {
                    by: &vote.reviewer,
                    reason: &vote.reason,
                    remaining,
                },
            )
            .await;
            state
                .store
                .record_vote(&approval.id, &vote, &event, &deliveries)
                .await
                .map_err(|e| match e {
                    StoreError::Precondition(_) => ApiError::conflict(
                        "approval_not_pending",
                        "the approval request was decided meanwhile",
                    ),
                    StoreError::Conflict => ApiError::conflict(
                        "already_voted",
                        "this reviewer has already approved the request",
                    ),
                    other => other.into(),
                })?;
            let mut votes = votes;
            votes.push(vote);
            return Ok(approval_view(approval, votes, now));
        }
    };
    let task = match &approval.task_id {
        Some(task_id) => Some(settle_task(state, &approval, &decided, &nhi, task_id, now).await?),
        None => None,
    };
    let mut event = state
        .event(
            EventKind::ApprovalDecided,
            who.actor(),
            format!("approval:{}", approval.id),
        )
        .with("decision", decided.state.as_str())
        .with_some("task", task.as_ref().map(|t| t.id.as_str()))
        .with("nhi", &nhi.id)
        .with("reason", decided.reason.clone().unwrap_or_default());
    if let Some(scope) = &decided.granted_scope {
        event = event.with("granted_scope", scope.to_strings().join(" "));
    }
    let mut deliveries = notify::announce(state, &decided, Happened::Decided).await;
    if let Some(task) = &task {
        deliveries.extend(notify::task_decided(state, task, &decided));
    }
    state
        .store
        .decide_approval(&decided, task.as_ref(), &event, &deliveries)
        .await
        .map_err(|e| match e {
            // Another reviewer decided it between our read and our write.
            StoreError::Precondition(_) => ApiError::conflict(
                "approval_not_pending",
                "the approval request was decided meanwhile",
            ),
            other => other.into(),
        })?;
    state.task_updates.notify_waiters();
    if decided.state == ApprovalState::Approved {
        match approval.kind {
            ApprovalKind::Resume => {
                crate::behaviour::resume_after_review(state, &nhi.id, &approval.id, who).await?;
            }
            ApprovalKind::Anomaly => {
                crate::behaviour::approved(state, &approval.id, &nhi.id, who).await;
            }
            ApprovalKind::Decommission => {
                crate::reviews::decommission_approved(state, &nhi, &decided, who).await?;
            }
            ApprovalKind::Ownership => {
                crate::reviews::owner_attested(state, &nhi, &decided, who).await?;
            }
            ApprovalKind::Adoption => {
                crate::discovery::adoption_approved(state, &nhi, &decided, who).await?;
            }
            ApprovalKind::ScopeEscalation => {
                if let Some(scope) = &decided.granted_scope {
                    let added = scope.services_added_since(&nhi.scope_ceiling);
                    crate::behaviour::granted(state, &nhi.id, &added, now).await;
                }
            }
            ApprovalKind::PolicyApproval => {}
        }
    }
    if decided.state == ApprovalState::Denied && approval.kind == ApprovalKind::Ownership {
        crate::reviews::ownership_denied(state, &nhi, &decided).await?;
    }
    if decided.state == ApprovalState::Denied && approval.kind == ApprovalKind::Adoption {
        crate::discovery::adoption_denied(state, &nhi, &decided, who).await?;
    }
    Ok(approval_view(decided, votes, now))
}

/// The task a decided request changes: active from now if approved, denied otherwise. A review
/// of the NHI filed before reviews had no task has one that simply ends.
async fn settle_task(
    state: &AppState,
    approval: &Approval,
    decided: &Approval,
    nhi: &Nhi,
    task_id: &str,
    now: Timestamp,
) -> ApiResult<Task> {
    let mut task = state
        .store
        .get_task(task_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("approval {} has no task", approval.id)))?;
    if task.state != TaskState::PendingApproval {
        return Err(ApiError::conflict(
            "approval_not_pending",
            format!("the task is {}", task.state),
        ));
    }
    match decided.state {
        ApprovalState::Approved if approval.kind.is_nhi_review() => {
            task.state = TaskState::Ended;
            task.ended_at = Some(now);
        }
        ApprovalState::Approved => {
            issuance::ensure_usable(nhi, now)?;
            let ttl = decided
                .granted_ttl_seconds
                .unwrap_or(approval.requested_ttl_seconds);
            task.state = TaskState::Active;
            task.scope = decided
                .granted_scope
                .clone()
                .unwrap_or_else(|| approval.requested_scope.clone());
            task.ttl_seconds = ttl;
            task.activated_at = Some(now);
            task.expires_at = Some(issuance::expiry(nhi, now, ttl));
        }
        _ => {
            task.state = TaskState::Denied;
            task.ended_at = Some(now);
        }
    }
    Ok(task)
}

fn reason(text: String) -> ApiResult<String> {
    let text = text.trim().to_owned();
    let mut errors = custos_core::validate::ValidationErrors::default();
    custos_core::validate::text(&mut errors, "reason", &text, 2000);
    errors.into_result()?;
    Ok(text)
}

/// The most requests one batch decides.
pub const MAX_BATCH: usize = 100;

/// Decides several requests alike, each on its own (rights, quorum, deadline, narrowing), and
/// says how each went. High-risk requests are refused here: each needs a look of its own.
pub async fn decide_batch(
    state: &AppState,
    who: &Principal,
    input: BatchDecision,
) -> ApiResult<BatchResult> {
    who.require(&[Role::Admin, Role::Reviewer])?;
    let mut errors = custos_core::validate::ValidationErrors::default();
    if input.ids.is_empty() || input.ids.len() > MAX_BATCH {
        errors.push("ids", format!("name 1 to {MAX_BATCH} approval requests"));
    }
    let mut seen = std::collections::HashSet::new();
    if input.ids.iter().any(|id| !seen.insert(id)) {
        errors.push("ids", "each request may be named once");
    }
    if !matches!(input.decision.as_str(), "approve" | "deny") {
        errors.push("decision", "must be approve or deny");
    }
    errors.into_result()?;
    let reason = reason(input.reason)?;
    let decision = if input.decision == "approve" {
        Decision::Approve {
            reason,
            scope: None,
            ttl_seconds: None,
        }
    } else {
        Decision::Deny { reason }
    };
    let mut items = Vec::with_capacity(input.ids.len());
    for id in input.ids {
        let outcome = match batch_one(state, who, &id, decision.clone()).await {
            Ok(view) => BatchOutcome {
                outcome: if view.state == "pending" {
                    "counted"
                } else {
                    "decided"
                }
                .to_owned(),
                id,
                approval: Some(view),
                code: None,
                detail: None,
            },
            Err(problem) => BatchOutcome {
                id,
                outcome: "refused".to_owned(),
                approval: None,
                code: Some(problem.code.to_owned()),
                detail: Some(problem.detail),
            },
        };
        items.push(outcome);
    }
    Ok(BatchResult { items })
}

async fn batch_one(
    state: &AppState,
    who: &Principal,
    id: &str,
    decision: Decision,
) -> ApiResult<ApprovalView> {
    let (approval, _) = visible_approval(state, who, id).await?;
    if approval.risk.level == RiskLevel::High {
        return Err(ApiError::conflict(
            "high_risk_not_batched",
            "a high-risk request is decided on its own, after a look at its context",
        ));
    }
    decide(state, who, id, decision).await
}

pub fn approve_decision(input: ApproveRequest) -> ApiResult<Decision> {
    Ok(Decision::Approve {
        reason: reason(input.reason)?,
        scope: input.scope,
        ttl_seconds: input.ttl_seconds,
    })
}

pub fn deny_decision(input: DenyRequest) -> ApiResult<Decision> {
    Ok(Decision::Deny {
        reason: reason(input.reason)?,
    })
}
