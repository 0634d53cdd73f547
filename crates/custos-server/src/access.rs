//! Continuous authorization: the decision point behind the AuthZEN endpoints and `custos check`.
//!
//! A check verifies the presented secret once (signature and claims of an access token, or the
//! keyed hash of a static key) and remembers the proof by the secret's keyed hash; makes sure
//! the live state holds what the decision reads; then calls the pure
//! [`custos_core::decision::decide`]. Every answer becomes an `access.decided` event, queued
//! to a background writer that appends them in batches: the check does not wait for the disk,
//! but if the queue is full (the trail cannot keep up, or cannot be written) the check refuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use custos_core::decision::{self, Ask, Decision, Presented, Reason};
use custos_core::issuance::{ApprovalKind, ApprovalState};
use custos_core::jose::JwtError;
use custos_core::token::{self, SecretKind};
use custos_core::{Actor, CredentialKind, DomainEvent, EventKind, Timestamp};
use custos_store::{Store, Use};
use dashmap::DashMap;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::behaviour::Response;
use crate::error::{ApiError, ApiResult};
use crate::live::{LiveError, Verified};
use crate::secrets::{fingerprint_of_hash, hashes_equal};
use crate::service::{AppState, new_id};

/// Decisions waiting to be written; beyond this the decision point refuses (fails closed).
const DECISION_QUEUE: usize = 65_536;
/// Events per `append_events` call of a writer.
const DECISION_BATCH: usize = 4_096;
/// Writers appending concurrently.
const DECISION_WRITERS: usize = 4;
/// How often the last-used times of credentials and NHIs are written.
const USES_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// How often one decision reads the store for what memory does not hold.
const MAX_READS: usize = 3;
/// How long an idle writer waits before looking at the queue again.
const DECISION_DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

/// The queue of decision events and its writer.
#[derive(Clone)]
pub struct DecisionLog {
    queue: mpsc::Sender<DomainEvent>,
    /// Events queued and not yet written.
    unwritten: Arc<AtomicUsize>,
    /// The latest allowed use of each credential since the last write of last-used times.
    uses: Arc<DashMap<String, (String, Timestamp)>>,
    store: Arc<dyn Store>,
}

impl DecisionLog {
    /// Starts the writer. It appends whatever has queued, in batches, and retries a failed
    /// batch until it is written: nothing is dropped, and a trail that stays unwritable fills
    /// the queue, which refuses further checks.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (queue, pending) = mpsc::channel::<DomainEvent>(DECISION_QUEUE);
        let pending = Arc::new(tokio::sync::Mutex::new(pending));
        let unwritten = Arc::new(AtomicUsize::new(0));
        // Several writers, so that a batch is being committed while the next is gathered: the
        // store's group commit makes their writes share fsyncs. They look at the queue on a
        // short interval rather than wait on it: a writer parked in `recv` would be woken by
        // every single decision, a cross-thread wake-up that cost more than the decision.
        for _ in 0..DECISION_WRITERS {
            let (pending, store, written) = (pending.clone(), store.clone(), unwritten.clone());
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(DECISION_BATCH);
                loop {
                    let closed = {
                        let mut pending = pending.lock().await;
                        loop {
                            if batch.len() == DECISION_BATCH {
                                break false;
                            }
                            match pending.try_recv() {
                                Ok(event) => batch.push(event),
                                Err(mpsc::error::TryRecvError::Empty) => break false,
                                Err(mpsc::error::TryRecvError::Disconnected) => break true,
                            }
                        }
                    };
                    if batch.is_empty() {
                        if closed {
                            return;
                        }
                        tokio::time::sleep(DECISION_DRAIN_INTERVAL).await;
                        continue;
                    }
                    let mut delay = std::time::Duration::from_millis(10);
                    while let Err(e) = store.append_events(&batch).await {
                        tracing::error!(error = %e, events = batch.len(), "cannot write decision events; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(std::time::Duration::from_secs(2));
                    }
                    written.fetch_sub(batch.len(), Ordering::SeqCst);
                    batch.clear();
                }
            });
        }
        let uses: Arc<DashMap<String, (String, Timestamp)>> = Arc::new(DashMap::new());
        let log = Self {
            queue,
            unwritten,
            uses,
            store,
        };
        let writer = log.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(USES_INTERVAL).await;
                writer.write_uses().await;
            }
        });
        log
    }

    /// Writes the last-used times gathered since the last write; on failure they are kept for
    /// the next round (a newer use of the same credential wins).
    async fn write_uses(&self) {
        let keys: Vec<String> = self.uses.iter().map(|e| e.key().clone()).collect();
        let mut uses = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some((credential_id, (nhi_id, at))) = self.uses.remove(&key) {
                uses.push(Use {
                    credential_id,
                    nhi_id,
                    at,
                });
            }
        }
        if let Err(error) = self.store.record_uses(&uses).await {
            tracing::warn!(%error, credentials = uses.len(), "cannot record last-used times; retrying");
            for used in uses {
                self.note_use(used.credential_id, used.nhi_id, used.at);
            }
        }
    }

    fn note_use(&self, credential_id: String, nhi_id: String, at: Timestamp) {
        self.uses
            .entry(credential_id)
            .and_modify(|(_, last)| *last = (*last).max(at))
            .or_insert((nhi_id, at));
    }

    /// Queues an event; `false` if the queue is full.
    fn record(&self, event: DomainEvent) -> bool {
        self.unwritten.fetch_add(1, Ordering::SeqCst);
        let queued = self.queue.try_send(event).is_ok();
        if !queued {
            self.unwritten.fetch_sub(1, Ordering::SeqCst);
        }
        queued
    }

    /// Waits until every queued event is written, or `limit` has passed, then writes the
    /// last-used times (at shutdown, and for tests).
    pub async fn flush(&self, limit: std::time::Duration) {
        let started = std::time::Instant::now();
        while self.unwritten.load(Ordering::SeqCst) > 0 && started.elapsed() < limit {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        self.write_uses().await;
    }
}

/// What was asked, as the enforcement point named it.
#[derive(Clone, Debug)]
pub struct Question<'a> {
    /// The agent's credential: an access token or a static key.
    pub secret: &'a str,
    /// The NHI the enforcement point believes it is talking to (AuthZEN `subject.id`), if any:
    /// a secret held by another NHI is refused.
    pub subject_id: Option<&'a str>,
    pub service: &'a str,
    pub operation: &'a str,
    pub resource: &'a str,
    /// Where the call came from, as far as the enforcement point says: fed to the baseline.
    pub context: crate::behaviour::CallContext<'a>,
}

/// A decision and what the answer tells the enforcement point.
#[derive(Clone, Debug)]
pub struct Answer {
    pub decision: Decision,
    /// The keyed fingerprint of the presented secret (never the secret).
    pub fingerprint: String,
    pub credential_id: Option<String>,
    /// The id of the `access.decided` event that records it.
    pub event_id: String,
    /// For `approval_required`: the approval request a reviewer decides; once approved, the
    /// agent collects a credential for exactly this action from the request's task.
    pub approval_id: Option<String>,
    /// The finding this decision's departure from the NHI's baseline was recorded in.
    pub finding_id: Option<String>,
}

impl Answer {
    pub fn allowed(&self) -> bool {
        self.decision.allowed()
    }
}

/// A compact JWS: three base64url segments, the first a JSON object (`eyJ` is `{"`).
pub fn looks_like_jwt(secret: &str) -> bool {
    secret.starts_with("eyJ") && secret.bytes().filter(|&b| b == b'.').count() == 2
}

/// Checks the proof of a presented secret, once: later presentations of the same bytes are
/// answered from memory. `Err` carries the reason it is refused.
async fn verify(
    state: &AppState,
    secret: &str,
    hash: &[u8; 32],
    now: Timestamp,
) -> Result<Arc<Verified>, Reason> {
    if let Some(verified) = state.live.verified(hash) {
        return Ok(verified);
    }
    let verified = if looks_like_jwt(secret) {
        let checked = crate::oauth::verify_access_token_jwt(state, secret, now).await;
        let claims = match checked {
            Ok(verified) => verified.claims,
            Err(JwtError::Expired) => return Err(Reason::Expired),
            Err(JwtError::NotYetValid) => return Err(Reason::NotYetValid),
            Err(_) => return Err(Reason::InvalidToken),
        };
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .ok_or(Reason::InvalidToken)?;
        let credential = state
            .store
            .get_credential(jti)
            .await
            .map_err(|_| Reason::UnknownCredential)?
            .filter(|c| c.kind == CredentialKind::AccessToken && hashes_equal(&c.secret_hash, hash))
            .ok_or(Reason::UnknownCredential)?;
        let seconds = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_i64)
                .and_then(|s| Timestamp::from_unix_millis(s.saturating_mul(1000)))
        };
        let expires_at = seconds("exp");
        Verified {
            presented: Presented {
                credential_id: credential.id,
                expires_at,
                not_before: seconds("nbf"),
                scope: credential.scope,
            },
            until: expires_at,
        }
    } else {
        match token::classify(secret) {
            Ok(SecretKind::StaticKey) => {}
            _ => return Err(Reason::InvalidToken),
        }
        let credential = state
            .store
            .find_credential_by_hash(hash)
            .await
            .map_err(|_| Reason::UnknownCredential)?
            .filter(|c| c.kind == CredentialKind::StaticKey && hashes_equal(&c.secret_hash, hash))
            .ok_or(Reason::UnknownCredential)?;
        Verified {
            presented: Presented {
                credential_id: credential.id,
                expires_at: None,
                not_before: None,
                scope: None,
            },
            until: None,
        }
    };
    let verified = Arc::new(verified);
    state.live.remember_verified(*hash, verified.clone(), now);
    Ok(verified)
}

/// Decides one question, without recording it.
async fn decide_unrecorded(
    state: &AppState,
    question: &Question<'_>,
    hash: &[u8; 32],
    now: Timestamp,
) -> ApiResult<(Decision, Option<String>)> {
    let verified = match verify(state, question.secret, hash, now).await {
        Ok(verified) => verified,
        Err(reason) => return Ok((Decision::refuse(reason), None)),
    };
    let presented = &verified.presented;
    let (hour, weekday) = decision::hour_and_weekday(now);
    let ask = Ask {
        service: question.service,
        operation: question.operation,
        resource: question.resource,
        hour,
        weekday,
    };
    let guardrails = state.live.guardrails();
    // From memory first; only if the decision looked for something memory does not hold is
    // the store read, and the decision made again. With several nodes, another node's change
    // drops the whole state, and can do so between the read and the decision: one that
    // misses again reads again, a few times, before it is made on what is held (which
    // refuses what is missing).
    let mut reads = 0;
    let mut decision = loop {
        let noting = state.live.noting_misses();
        let decision = decision::decide(presented, &noting, &guardrails, &ask, now);
        if !noting.missed() || reads == MAX_READS {
            break decision;
        }
        reads += 1;
        match state
            .live
            .hydrate(state.store.as_ref(), &presented.credential_id)
            .await
        {
            Ok(()) => {}
            Err(LiveError::Store(e)) => return Err(e.into()),
            Err(LiveError::Busy) => {
                return Err(ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "live_state_busy",
                    "the live state kept changing while it was being read; retry",
                ));
            }
        }
    };
    if let (Some(subject), Some(holder)) = (question.subject_id, &decision.nhi_id)
        && subject != holder
        && !state.live.nhi_is_named(holder, subject)
    {
        decision.reason = Reason::SubjectMismatch;
    }
    Ok((decision, Some(presented.credential_id.clone())))
}

/// Decides one question and records the decision in the trail. `pep` is the enforcement
/// point that asked.
pub async fn check(state: &AppState, pep: &str, question: &Question<'_>) -> ApiResult<Answer> {
    let now = state.now();
    let hash = state.keys.secret_hash(question.secret);
    let (decision, credential_id) = if state.freshness.refuses() {
        unconfirmed(state, &hash)
    } else {
        decide_unrecorded(state, question, &hash, now).await?
    };
    record(
        state,
        Some(pep),
        question,
        &hash,
        decision,
        credential_id,
        now,
    )
    .await
}

/// Strict mode's refusal when this node cannot confirm that its memory is current. Nothing is
/// decided and the store is not read (it may well be why the node is behind); the credential
/// and its NHI are named for the trail if memory already knows them.
fn unconfirmed(state: &AppState, hash: &[u8; 32]) -> (Decision, Option<String>) {
    use custos_core::decision::LiveView as _;
    let credential_id = state
        .live
        .verified(hash)
        .map(|v| v.presented.credential_id.clone());
    let nhi_id = credential_id
        .as_deref()
        .and_then(|id| state.live.credential(id))
        .map(|c| c.nhi_id.clone());
    let decision = Decision {
        nhi_id,
        ..Decision::refuse(Reason::StateUnconfirmed)
    };
    (decision, credential_id)
}

/// Writes a decision to the trail (queued), opens the approval request it asks for, and notes
/// the use it allowed. A decision that cannot be queued is turned into a refusal.
async fn record(
    state: &AppState,
    pep: Option<&str>,
    question: &Question<'_>,
    hash: &[u8; 32],
    decision: Decision,
    credential_id: Option<String>,
    now: Timestamp,
) -> ApiResult<Answer> {
    let fingerprint = fingerprint_of_hash(hash);
    let actor = pep.map_or(Actor::System, |id| Actor::Nhi(id.to_owned()));
    let subject = match &decision.nhi_id {
        Some(nhi) => format!("nhi:{nhi}"),
        None => format!("secret:{fingerprint}"),
    };
    let mut event = DomainEvent::new(new_id(), EventKind::AccessDecided, actor, subject, now)
        .with(
            "decision",
            if decision.allowed() { "allow" } else { "deny" },
        )
        .with("reason", decision.reason.code())
        .with("service", question.service)
        .with("operation", question.operation)
        .with("resource", question.resource)
        .with("fingerprint", &fingerprint);
    if let Some(id) = &credential_id {
        event = event.with("credential", id);
    }
    if let Some(nhi) = &decision.nhi_id {
        event = event.with("nhi", nhi);
    }
    if let Some(task) = &decision.task_id {
        event = event.with("task", task);
    }
    // Whom the agent acted for is part of the record of what it did.
    if let Some(person) = question.context.on_behalf_of {
        event = event.with("on_behalf_of", person);
    }
    if !decision.policies.is_empty() {
        event = event.with("policies", decision.policies.join(","));
    }
    let mut answer = Answer {
        decision,
        fingerprint,
        credential_id,
        event_id: event.id.clone(),
        approval_id: None,
        finding_id: None,
    };
    // The enforcement point's own check is not an action of the agent's, and a node that
    // cannot vouch for its state says nothing about how the agent behaves.
    let response = match (&answer.decision.nhi_id, pep) {
        (Some(nhi), Some(pep)) if answer.decision.reason != Reason::StateUnconfirmed => {
            crate::behaviour::observe_decision(
                state,
                nhi,
                pep,
                question,
                answer.decision.reason,
                now,
            )
            .await?
        }
        _ => None,
    };
    let mut step_up = None;
    if let Some(response) = &response {
        answer.finding_id = Some(response.finding().to_owned());
        event = event.with("finding", response.finding());
        match response {
            Response::StepUp { finding } if answer.decision.allowed() => {
                answer.decision.reason = Reason::ApprovalRequired;
                event = event.with("reason", Reason::ApprovalRequired.code());
                step_up = Some(finding.clone());
            }
            Response::Suspend { .. } if answer.decision.allowed() => {
                answer.decision.reason = Reason::Anomaly;
                event = event.with("reason", Reason::Anomaly.code());
            }
            _ => {}
        }
        if !answer.decision.allowed() {
            event = event.with("decision", "deny");
        }
    }
    if answer.decision.reason == Reason::ApprovalRequired
        && let Some(nhi) = &answer.decision.nhi_id
    {
        answer.approval_id = match &step_up {
            Some(finding) => {
                let approval = request_review(
                    state,
                    nhi,
                    (question.service, question.operation, question.resource),
                    ApprovalKind::Anomaly,
                    &format!("out of its baseline (finding {finding}); a human must allow it"),
                    &[],
                )
                .await?;
                if let Some(approval) = &approval {
                    crate::behaviour::link_approval(state, finding, approval).await?;
                }
                approval
            }
            None => {
                request_review(
                    state,
                    nhi,
                    (question.service, question.operation, question.resource),
                    ApprovalKind::PolicyApproval,
                    &format!(
                        "guardrail {} asks a human to approve",
                        answer.decision.policies.join(", ")
                    ),
                    &answer.decision.policies,
                )
                .await?
            }
        };
        if let Some(approval) = &answer.approval_id {
            event = event.with("approval", approval);
        }
    }
    if !state.decisions.record(event) {
        // The trail is not keeping up: no decision goes unrecorded, so none is given.
        answer.decision.reason = Reason::AuditUnavailable;
    }
    note_allowed_use(
        state,
        &answer.decision,
        answer.credential_id.as_deref(),
        now,
    );
    Ok(answer)
}

fn note_allowed_use(
    state: &AppState,
    decision: &Decision,
    credential: Option<&str>,
    now: Timestamp,
) {
    if decision.allowed()
        && let (Some(credential), Some(nhi)) = (credential, &decision.nhi_id)
    {
        state
            .decisions
            .note_use(credential.to_owned(), nhi.clone(), now);
    }
}

/// The enforcement point behind an AuthZEN call: an NHI whose credential may
/// `custos:evaluate`. Returns its NHI id. Its own check is decided like any other but is not
/// an `access.decided` event when it succeeds: the evaluation that follows names the
/// enforcement point as its actor, and one event per call is the trail's whole load. A refused
/// enforcement point is recorded.
///
/// Strict mode does not apply here: while this node cannot confirm it is current, every
/// evaluation is refused anyway, so letting a possibly revoked enforcement point ask gives it
/// nothing but that answer, and the answer (`state_unconfirmed`) tells it why.
pub async fn authenticate_pep(state: &AppState, secret: &str) -> ApiResult<String> {
    let now = state.now();
    let hash = state.keys.secret_hash(secret);
    let question = Question {
        secret,
        subject_id: None,
        service: "custos",
        operation: "evaluate",
        resource: "",
        context: crate::behaviour::CallContext::default(),
    };
    let (decision, credential_id) = decide_unrecorded(state, &question, &hash, now).await?;
    let decision = if decision.allowed() {
        note_allowed_use(state, &decision, credential_id.as_deref(), now);
        decision
    } else {
        record(state, None, &question, &hash, decision, credential_id, now)
            .await?
            .decision
    };
    match (decision.reason, decision.nhi_id) {
        (Reason::Allowed, Some(nhi)) => Ok(nhi),
        (
            Reason::InvalidToken
            | Reason::UnknownCredential
            | Reason::Expired
            | Reason::NotYetValid
            | Reason::Revoked
            | Reason::AncestorRevoked
            | Reason::TaskEnded,
            _,
        ) => Err(ApiError::invalid_token(format!(
            "the caller's credential is refused: {}",
            decision.reason.code()
        ))),
        (reason, _) => Err(ApiError::forbidden(format!(
            "the caller may not evaluate access: {}",
            reason.code()
        ))
        .with_code("evaluate_not_allowed")),
    }
}

/// Opens (once per NHI, action and kind) a request for a human to say yes to one action: a
/// task for exactly that action, waiting on a reviewer. `None` if the action cannot be put
/// as a grant (a service or operation name outside the scope grammar).
pub(crate) async fn request_review(
    state: &AppState,
    nhi_id: &str,
    (service, operation, resource): (&str, &str, &str),
    kind: ApprovalKind,
    why: &str,
    policies: &[String],
) -> ApiResult<Option<String>> {
    let resource = (!resource.is_empty()).then_some(resource);
    let Ok(grant) = custos_core::Grant::new(service, operation, resource) else {
        return Ok(None);
    };
    let grant_text = grant.to_string();
    let remembered = format!("{}:{grant_text}", kind.as_str());
    // The request opened before, unless it was denied or expired: then it is asked anew.
    if let Some(id) = state.live.approval_for(nhi_id, &remembered) {
        let open = state.store.get_approval(&id).await?.is_some_and(|a| {
            !matches!(
                a.state_at(state.now()),
                ApprovalState::Denied | ApprovalState::Expired
            )
        });
        if open {
            return Ok(Some(id));
        }
    }
    let Some(nhi) = state.store.get_nhi(nhi_id).await? else {
        return Ok(None);
    };
    let scope = custos_core::Scope::new([grant])
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    let requested_by = Actor::Nhi(nhi_id.to_owned());
    let mut task = custos_core::issuance::Task {
        id: new_id(),
        nhi_id: nhi_id.to_owned(),
        purpose: format!("{grant_text}: {why}"),
        scope,
        ttl_seconds: state.limits.issuance.default_ttl_seconds,
        state: custos_core::issuance::TaskState::PendingApproval,
        requested_by: requested_by.to_string(),
        created_at: state.now(),
        approval_id: None,
        activated_at: None,
        expires_at: None,
        ended_at: None,
        credential_id: None,
        callback_url: None,
    };
    let asked = crate::tasks::Asked {
        kind,
        excess: vec![grant_text.clone()],
        policies,
    };
    let approval =
        crate::tasks::file_for_approval(state, &nhi, &mut task, asked, &requested_by).await?;
    state
        .live
        .remember_approval(nhi_id, &remembered, &approval.id);
    Ok(Some(approval.id))
}
