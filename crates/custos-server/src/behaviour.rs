//! Behaviour baselining in the server: each NHI's profile in memory, fed by every decision
//! and delegation (and by imported observations), scored by the pure
//! [`custos_core::baseline`]; a departure becomes a finding, and by the response policy
//! that applies to the NHI, an alert, a step-up approval or a suspension.
//!
//! Profiles are read from the store on an NHI's first event after start and written back,
//! changed ones only, every few seconds and at shutdown, like last-used times: they are
//! derived state, and losing the last seconds of learning to a crash costs nothing a few more
//! events do not restore.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use custos_core::baseline::{
    Assessment, BaselineSummary, Feature, Fleet, Observation, ObservationKind, Outcome, Profile,
    Settings,
};
use custos_core::decision::Reason;
use custos_core::finding::{
    Finding, FindingFilter, FindingState, Noticed, ResponseAction, ResponsePolicy, ResponseTarget,
    Severity,
};
use custos_core::issuance::ApprovalKind;
use custos_core::{Actor, EventKind, Nhi, Page, Role, Timestamp};
use custos_store::{FindingOpened, Revocation, Store, StoreError};
use dashmap::DashMap;
use serde_json::{Value, json};

use crate::api::{
    FindingList, NewResponsePolicy, ObservationBatch, ObservationsAccepted, ResolveFinding,
    ResponsePolicyList,
};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::service::{AppState, new_id};

/// How often changed profiles are written to the store.
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// A finding is written at most once per key in this many milliseconds: a burst of departures
/// (an exfiltration is thousands of events) folds in memory instead of writing each.
const FOLD_WRITE_INTERVAL_MS: i64 = 10_000;

/// What the server's behaviour engine holds.
pub struct Behaviour {
    pub settings: Settings,
    /// The response when no policy names the NHI, its team or its kind.
    pub default_action: ResponseAction,
    fleet: Fleet,
    profiles: DashMap<String, Profile>,
    /// NHIs whose profile changed since the last write.
    dirty: DashMap<String, ()>,
    /// Active response policies, read from the store at start and after every change.
    policies: RwLock<Arc<Vec<ResponsePolicy>>>,
    /// The finding last written per key: see [`FOLD_WRITE_INTERVAL_MS`].
    recent: DashMap<String, Recent>,
}

/// A finding written moments ago, with the NHI it is about as it was then, so that the
/// departures folding into it are answered without reading the NHI from the store again.
struct Recent {
    finding: String,
    at: Timestamp,
    nhi: Arc<Nhi>,
}

impl Behaviour {
    pub fn new(settings: Settings, default_action: ResponseAction) -> Self {
        Self {
            settings,
            default_action,
            fleet: Fleet::new(),
            profiles: DashMap::new(),
            dirty: DashMap::new(),
            policies: RwLock::new(Arc::new(Vec::new())),
            recent: DashMap::new(),
        }
    }

    /// Reads the active response policies from the store.
    pub async fn load_policies(&self, store: &dyn Store) -> Result<(), StoreError> {
        let policies = store.list_response_policies(false).await?;
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policies);
        Ok(())
    }

    /// Makes sure the NHI's profile is in memory: read back from the store, or new.
    /// `first_at` is the time of the event that asks: imported history may predate the
    /// NHI's registration, and a profile learns from its first event on.
    async fn ensure_loaded(
        &self,
        store: &dyn Store,
        nhi_id: &str,
        first_at: Timestamp,
    ) -> Result<bool, StoreError> {
        if self.profiles.contains_key(nhi_id) {
            return Ok(true);
        }
        let profile = match store.get_baseline(nhi_id).await? {
            Some((bytes, _)) => match Profile::decode(&bytes) {
                // Stored before profiles knew their peer group: learn it once.
                Ok(mut profile) if !profile.has_peer_group() => {
                    if let Some(nhi) = store.get_nhi(nhi_id).await? {
                        profile.set_peer_group(&peer_group(&nhi));
                    }
                    profile
                }
                Ok(profile) => profile,
                Err(error) => {
                    tracing::warn!(nhi = nhi_id, %error, "stored baseline unreadable; learning anew");
                    match store.get_nhi(nhi_id).await? {
                        Some(nhi) => new_profile(&nhi, first_at),
                        None => return Ok(false),
                    }
                }
            },
            None => match store.get_nhi(nhi_id).await? {
                Some(nhi) => new_profile(&nhi, first_at),
                None => return Ok(false),
            },
        };
        self.profiles.entry(nhi_id.to_owned()).or_insert_with(|| {
            profile.tell_fleet(&self.fleet);
            profile
        });
        Ok(true)
    }

    fn observe(&self, nhi_id: &str, event: &Observation<'_>) -> Option<Assessment> {
        let mut profile = self.profiles.get_mut(nhi_id)?;
        let assessment = profile.observe(event, &self.fleet, &self.settings);
        drop(profile);
        // Most decisions are of an NHI already marked: no allocation on the hot path.
        if !self.dirty.contains_key(nhi_id) {
            self.dirty.insert(nhi_id.to_owned(), ());
        }
        Some(assessment)
    }

    /// The response policy for an NHI: its own, else its team's, else its kind's, else the
    /// default one, else the configured default; `None` when the finding's severity is below
    /// what that policy acts on (then it is only recorded).
    fn action_for(&self, nhi: &Nhi, severity: Severity) -> ResponseAction {
        let policies = self
            .policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let rank = |target: &ResponseTarget| match target {
            ResponseTarget::Nhi(id) if *id == nhi.id => Some(0),
            ResponseTarget::Team(id) if *id == nhi.owner.team_id => Some(1),
            ResponseTarget::Kind(kind) if kind == nhi.kind.as_str() => Some(2),
            ResponseTarget::Default => Some(3),
            _ => None,
        };
        let chosen = policies
            .iter()
            .filter(|p| p.revoked_at.is_none())
            .filter_map(|p| rank(&p.target).map(|r| (r, p)))
            .min_by(|a, b| a.0.cmp(&b.0).then(b.1.created_at.cmp(&a.1.created_at)));
        match chosen {
            Some((_, policy)) if severity >= policy.min_severity => policy.action,
            Some(_) => ResponseAction::Record,
            None => self.default_action,
        }
    }

    /// Writes the changed profiles, and forgets the findings throttle's entries that have
    /// served their time (it would otherwise keep one entry per NHI and day forever).
    pub async fn flush(&self, store: &dyn Store, now: Timestamp) {
        self.recent.retain(|_, recent| {
            now.unix_millis() - recent.at.unix_millis() < FOLD_WRITE_INTERVAL_MS
        });
        let ids: Vec<String> = self.dirty.iter().map(|e| e.key().clone()).collect();
        if ids.is_empty() {
            return;
        }
        let mut rows = Vec::with_capacity(ids.len());
        for id in &ids {
            self.dirty.remove(id);
            if let Some(profile) = self.profiles.get(id) {
                rows.push((id.clone(), profile.encode(), now));
            }
        }
        for chunk in rows.chunks(2_000) {
            if let Err(error) = store.save_baselines(chunk).await {
                tracing::warn!(%error, profiles = chunk.len(), "cannot write baselines; retrying");
                for (id, _, _) in chunk {
                    self.dirty.insert(id.clone(), ());
                }
            }
        }
    }

    /// Forgets an NHI's in-memory findings throttle, so that the next departure is written.
    fn forget_recent(&self, key: &str) {
        self.recent.remove(key);
    }
}

/// Writes changed profiles every [`FLUSH_INTERVAL`].
pub async fn run_flusher(state: AppState) {
    loop {
        tokio::time::sleep(FLUSH_INTERVAL).await;
        state
            .behaviour
            .flush(state.store.as_ref(), state.now())
            .await;
    }
}

fn new_profile(nhi: &Nhi, first_at: Timestamp) -> Profile {
    let mut profile = Profile::new(nhi.created_at.min(first_at), Some(nhi.environment.as_str()));
    profile.set_peer_group(&peer_group(nhi));
    profile
}

/// The NHIs that take up new services together: those of one owner team and application.
fn peer_group(nhi: &Nhi) -> String {
    format!(
        "{}/{}",
        nhi.owner.team_id,
        nhi.owner.application.as_deref().unwrap_or_default()
    )
}

/// Where a decision's call came from, as the enforcement point told us.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallContext<'a> {
    pub source: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    pub environment: Option<&'a str>,
    /// The person the agent acted for, whom the enforcement point authenticated (an
    /// assistant in a person's signed-in session). As trustworthy as the enforcement point
    /// that says so, like the rest of the context.
    pub on_behalf_of: Option<&'a str>,
}

/// What the response to a departure asks of the decision being made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Answer `approval_required`, with the finding that asks for it.
    StepUp { finding: String },
    /// Refuse with `anomaly`: the NHI is being suspended.
    Suspend { finding: String },
    /// Nothing changes for the caller; the finding is recorded (and maybe alerted).
    Recorded { finding: String },
}

impl Response {
    pub fn finding(&self) -> &str {
        match self {
            Response::StepUp { finding }
            | Response::Suspend { finding }
            | Response::Recorded { finding } => finding,
        }
    }
}

fn outcome_of(reason: Reason) -> Outcome {
    match reason {
        Reason::Allowed => Outcome::Allowed,
        Reason::OutOfScope | Reason::PolicyForbid | Reason::ApprovalRequired | Reason::Anomaly => {
            Outcome::Denied
        }
        Reason::SubjectMismatch => Outcome::Misattributed,
        _ => Outcome::Refused,
    }
}

/// Feeds one decision about a known NHI to its profile and responds to a departure. Only an
/// allowed action can be stepped up or refused for it; a refusal is recorded. `pep` is the
/// enforcement point that asked: an NHI checking its own action cannot vouch for a person.
pub async fn observe_decision(
    state: &AppState,
    nhi_id: &str,
    pep: &str,
    question: &crate::access::Question<'_>,
    reason: Reason,
    now: Timestamp,
) -> ApiResult<Option<Response>> {
    let event = Observation {
        at: now,
        kind: ObservationKind::Action,
        service: question.service,
        operation: question.operation,
        resource: question.resource,
        outcome: outcome_of(reason),
        source: question.context.source,
        user_agent: question.context.user_agent,
        environment: question.context.environment,
        on_behalf_of: question.context.on_behalf_of.filter(|_| pep != nhi_id),
    };
    observe(state, nhi_id, &event, reason == Reason::Allowed).await
}

/// Feeds a delegation (a token exchange from `nhi_id` to `delegatee`) to the profile.
pub async fn observe_delegation(
    state: &AppState,
    nhi_id: &str,
    delegatee: &str,
    now: Timestamp,
) -> ApiResult<()> {
    let event = Observation {
        at: now,
        kind: ObservationKind::Delegation,
        service: "custos",
        operation: "delegate",
        resource: delegatee,
        outcome: Outcome::Allowed,
        source: None,
        user_agent: None,
        environment: None,
        on_behalf_of: None,
    };
    observe(state, nhi_id, &event, false).await.map(|_| ())
}

async fn observe(
    state: &AppState,
    nhi_id: &str,
    event: &Observation<'_>,
    enforceable: bool,
) -> ApiResult<Option<Response>> {
    let behaviour = &state.behaviour;
    // A warm profile is scored with one map lookup; a cold one is read or made first.
    let assessment = match behaviour.observe(nhi_id, event) {
        Some(assessment) => assessment,
        None => {
            if !behaviour
                .ensure_loaded(state.store.as_ref(), nhi_id, event.at)
                .await?
            {
                return Ok(None);
            }
            let Some(assessment) = behaviour.observe(nhi_id, event) else {
                return Ok(None);
            };
            assessment
        }
    };
    if !assessment.out_of_baseline {
        return Ok(None);
    }
    raise(state, nhi_id, event, &assessment, enforceable)
        .await
        .map(Some)
}

fn severity_of(assessment: &Assessment, alert_bits: f32) -> Severity {
    use custos_core::baseline::Detection;
    if assessment.in_probation {
        Severity::Low
    } else if assessment
        .detections
        .iter()
        .any(|d| matches!(d, Detection::CredentialStuffing | Detection::InteractiveUse))
        || assessment.score >= 2.0 * alert_bits
    {
        Severity::High
    } else {
        Severity::Medium
    }
}

/// A sentence a reviewer reads first.
fn summary_of(nhi: &Nhi, event: &Observation<'_>, assessment: &Assessment) -> String {
    use custos_core::baseline::Detection;
    let action = format!("{}:{}", event.service, event.operation);
    if let Some(detection) = assessment.detections.iter().next() {
        return match detection {
            Detection::CredentialStuffing => format!(
                "{} had a burst of refused calls across services (last: {action})",
                nhi.name
            ),
            Detection::EnvironmentCrossing => format!(
                "{} (of {}) was used from the {} environment",
                nhi.name,
                nhi.environment,
                event.environment.unwrap_or("another")
            ),
            Detection::InteractiveUse => format!(
                "{}'s credential was used interactively ({})",
                nhi.name,
                event.user_agent.unwrap_or("a person's client")
            ),
            Detection::DelegationFanOut => format!(
                "{} delegated to many more NHIs in an hour than ever before",
                nhi.name
            ),
        };
    }
    let parts: Vec<&str> = assessment
        .contributions()
        .iter()
        .take(3)
        .map(|(feature, _)| match feature {
            Feature::Service => "a service it never used",
            Feature::Operation => "an operation it never used",
            Feature::ResourcePrefix => "resources it never touched",
            Feature::SourceNetwork => "a network it never came from",
            Feature::UserAgent => "a client it never used",
            Feature::HourOfWeek => "an hour it is never active",
            Feature::Rate => "a rate far above its usual",
            Feature::DenialRate => "a refusal it rarely gets",
            Feature::OnBehalfOf if event.on_behalf_of.is_none() => {
                "no person, though it acts for people"
            }
            Feature::OnBehalfOf => "a person it does not act for",
        })
        .collect();
    format!("{} did {action}: {}", nhi.name, parts.join(", "))
}

/// The evidence of one event: what it was and how each feature scored.
fn evidence_event(event: &Observation<'_>, assessment: &Assessment) -> Value {
    let features: serde_json::Map<String, Value> = assessment
        .contributions()
        .into_iter()
        .map(|(feature, bits)| (feature.code().to_owned(), json!(round2(bits))))
        .collect();
    json!({
        "at": event.at,
        "kind": match event.kind { ObservationKind::Action => "action", ObservationKind::Delegation => "delegation" },
        "service": event.service,
        "operation": event.operation,
        "resource": event.resource,
        "outcome": match event.outcome {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Refused => "refused",
            Outcome::Misattributed => "misattributed",
        },
        "source": event.source.map(|s| s.to_string()),
        "user_agent": event.user_agent,
        "environment": event.environment,
        "on_behalf_of": event.on_behalf_of,
        "score": round2(assessment.score),
        "features": features,
        "detections": assessment.detections.iter().map(|d| d.code()).collect::<Vec<_>>(),
    })
}

fn round2(value: f32) -> f64 {
    (f64::from(value) * 100.0).round() / 100.0
}

/// Records a departure as a finding (or folds it into the open one) and responds.
async fn raise(
    state: &AppState,
    nhi_id: &str,
    event: &Observation<'_>,
    assessment: &Assessment,
    enforceable: bool,
) -> ApiResult<Response> {
    let behaviour = &state.behaviour;
    let key = custos_core::finding::departure_key(assessment, nhi_id, event);
    let now = event.at;
    // A repeat of a finding written moments ago is folded in memory; its response stands.
    if let Some(recent) = behaviour.recent.get(&key)
        && now.unix_millis() - recent.at.unix_millis() < FOLD_WRITE_INTERVAL_MS
    {
        let (finding, nhi) = (recent.finding.clone(), recent.nhi.clone());
        drop(recent);
        return Ok(respond_again(state, &nhi, assessment, finding, enforceable));
    }
    let Some(nhi) = state.store.get_nhi(nhi_id).await? else {
        return Ok(Response::Recorded {
            finding: String::new(),
        });
    };
    let nhi = Arc::new(nhi);
    let severity = severity_of(assessment, behaviour.settings.alert_bits);
    let action = if assessment.in_probation {
        ResponseAction::Record
    } else {
        behaviour.action_for(&nhi, severity)
    };
    let baseline = behaviour
        .profiles
        .get(nhi_id)
        .map(|p| p.summary(now, &behaviour.settings));
    let finding = Finding::opened(
        new_id(),
        Noticed {
            kind: assessment.finding_kind().to_owned(),
            nhi_id: Some(nhi_id.to_owned()),
            dedupe_key: key.clone(),
            severity,
            score: f64::from(assessment.score),
            summary: summary_of(&nhi, event, assessment),
            evidence: json!({
                "events": [evidence_event(event, assessment)],
                "baseline": baseline_evidence(baseline.as_ref()),
                "in_probation": assessment.in_probation,
            }),
            action,
        },
        now,
    );
    let opened = state
        .event(
            EventKind::FindingOpened,
            Actor::System,
            format!("finding:{}", finding.id),
        )
        .with("nhi", nhi_id)
        .with("kind", &finding.kind)
        .with("severity", finding.severity.as_str())
        .with("score", format!("{:.2}", assessment.score))
        .with("action", action.as_str())
        .with("summary", &finding.summary);
    let deliveries = if matches!(action, ResponseAction::Record) {
        Vec::new()
    } else {
        crate::notify::announce_finding(state, &finding, &nhi).await
    };
    let id = match state
        .store
        .open_finding(&finding, &opened, &deliveries)
        .await?
    {
        FindingOpened::New => finding.id.clone(),
        FindingOpened::Folded { id, .. } => {
            behaviour.recent.insert(
                key,
                Recent {
                    finding: id.clone(),
                    at: now,
                    nhi: nhi.clone(),
                },
            );
            return Ok(respond_again(state, &nhi, assessment, id, enforceable));
        }
    };
    behaviour.recent.insert(
        key,
        Recent {
            finding: id.clone(),
            at: now,
            nhi: nhi.clone(),
        },
    );
    if !enforceable {
        return Ok(Response::Recorded { finding: id });
    }
    match action {
        ResponseAction::StepUp => Ok(Response::StepUp { finding: id }),
        ResponseAction::Suspend => {
            suspend_for(state, &nhi, &finding, event).await?;
            Ok(Response::Suspend { finding: id })
        }
        ResponseAction::Record | ResponseAction::Alert => Ok(Response::Recorded { finding: id }),
    }
}

/// The response to a departure that folds into a finding already open: a step-up finding
/// steps this action up too (the next out-of-baseline action asks a human, not only the
/// first); anything else is recorded.
fn respond_again(
    state: &AppState,
    nhi: &Nhi,
    assessment: &Assessment,
    finding: String,
    enforceable: bool,
) -> Response {
    if !enforceable || assessment.in_probation {
        return Response::Recorded { finding };
    }
    let severity = severity_of(assessment, state.behaviour.settings.alert_bits);
    match state.behaviour.action_for(nhi, severity) {
        ResponseAction::StepUp => Response::StepUp { finding },
        _ => Response::Recorded { finding },
    }
}

fn baseline_evidence(summary: Option<&BaselineSummary>) -> Value {
    match summary {
        Some(s) => json!({
            "status": s.status,
            "events": s.events,
            "services": s.services,
            "operations_known": s.operations_known,
            "source_networks": s.source_networks,
            "active_hours_of_week": s.active_hours_of_week.len(),
            "refusal_rate": s.refusal_rate,
            "operations": s.operations.iter().take(5).collect::<Vec<_>>(),
        }),
        None => Value::Null,
    }
}

/// Suspends an NHI for a finding: its status first (which refuses every credential at
/// once), then its credentials revoked, then a request to resume it in its owner team's inbox.
async fn suspend_for(
    state: &AppState,
    nhi: &Nhi,
    finding: &Finding,
    event: &Observation<'_>,
) -> ApiResult<()> {
    let now = state.now();
    let cause = format!("finding {}", finding.id);
    for _ in 0..5 {
        let Some(current) = state.store.get_nhi(&nhi.id).await? else {
            return Ok(());
        };
        let Some(next) = current
            .suspend(now)
            .map_err(|e| ApiError::conflict("invalid_transition", e.to_string()))?
        else {
            break;
        };
        let suspended = state
            .event(
                EventKind::NhiSuspended,
                Actor::System,
                format!("nhi:{}", nhi.id),
            )
            .with("reason", &cause)
            .with("finding", &finding.id);
        match state
            .store
            .update_nhi(&next, current.version, &suspended)
            .await
        {
            Ok(()) => break,
            Err(StoreError::VersionMismatch { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let revoked = state
        .event(
            EventKind::CredentialRevoked,
            Actor::System,
            format!("nhi:{}", nhi.id),
        )
        .with("cause", "nhi suspended after an anomaly")
        .with("finding", &finding.id);
    state
        .store
        .revoke_credentials(Revocation::Nhi(&nhi.id), now, &revoked)
        .await?;
    let (approval, _) = crate::reviews::open(
        state,
        nhi,
        ApprovalKind::Resume,
        format!(
            "resume {}: suspended after finding {} ({})",
            nhi.name, finding.id, finding.summary
        ),
        &[format!(
            "suspended after {} {}/{} on {}",
            finding.kind, event.service, event.operation, event.resource
        )],
        None,
    )
    .await?;
    state
        .store
        .set_finding_approval(&finding.id, &approval.id)
        .await?;
    Ok(())
}

/// Resumes an NHI after a reviewer approved the request to: the decision is the authority,
/// so no admin role is asked of the reviewer. An NHI no longer suspended is left as it is.
pub async fn resume_after_review(
    state: &AppState,
    nhi_id: &str,
    approval_id: &str,
    who: &Principal,
) -> ApiResult<()> {
    crate::service::resume_on_decision(
        state,
        nhi_id,
        who.actor(),
        &format!("approval {approval_id}"),
        ("approval", approval_id),
    )
    .await
}

/// Links a step-up approval request to its finding.
pub async fn link_approval(state: &AppState, finding: &str, approval: &str) -> ApiResult<()> {
    if finding.is_empty() {
        return Ok(());
    }
    state.store.set_finding_approval(finding, approval).await?;
    Ok(())
}

// ---- what people do with findings and baselines ----

/// `GET /v1/nhis/{id}/baseline`: what the NHI's profile has learnt.
pub async fn baseline(state: &AppState, who: &Principal, nhi_id: &str) -> ApiResult<Value> {
    let nhi = crate::service::visible_nhi(state, who, nhi_id).await?;
    state
        .behaviour
        .ensure_loaded(state.store.as_ref(), &nhi.id, state.now())
        .await?;
    let now = state.now();
    let summary = state
        .behaviour
        .profiles
        .get(&nhi.id)
        .map(|p| p.summary(now, &state.behaviour.settings))
        .unwrap_or_else(|| new_profile(&nhi, now).summary(now, &state.behaviour.settings));
    let mut value = serde_json::to_value(summary).map_err(|e| ApiError::internal(e.to_string()))?;
    value["nhi_id"] = json!(nhi.id);
    value["probation"] = json!({
        "days": state.behaviour.settings.probation_days,
        "events": state.behaviour.settings.probation_events,
    });
    value["alert_bits"] = json!(state.behaviour.settings.alert_bits);
    Ok(value)
}

pub struct FindingQuery {
    pub kind: Option<String>,
    pub nhi_id: Option<String>,
    pub state: Option<FindingState>,
    pub unresolved: bool,
}

/// `GET /v1/findings`: findings about the NHIs the caller may see, newest first.
pub async fn list_findings(
    state: &AppState,
    who: &Principal,
    query: FindingQuery,
    page: Page,
) -> ApiResult<FindingList> {
    let team_ids = who.visible_teams()?;
    let limit = page.limit;
    let found = state
        .store
        .list_findings(
            &FindingFilter {
                kind: query.kind,
                nhi_id: query.nhi_id,
                state: query.state,
                unresolved_only: query.unresolved,
                team_ids,
                approval_id: None,
                dedupe_key: None,
            },
            &Page {
                after: page.after,
                limit: limit + 1,
            },
        )
        .await?;
    let (items, next_cursor) = crate::service::page_of(found, limit, |f| f.id.clone());
    Ok(FindingList { items, next_cursor })
}

/// A finding the caller may see: every one for admins and auditors; for reviewers, those
/// about their teams' NHIs. Others are "not found".
async fn visible_finding(state: &AppState, who: &Principal, id: &str) -> ApiResult<Finding> {
    let teams = who.visible_teams()?;
    let not_found = || ApiError::not_found(&format!("finding {id}")).with_code("finding_not_found");
    let finding = state.store.get_finding(id).await?.ok_or_else(not_found)?;
    if let Some(teams) = teams {
        let Some(nhi_id) = &finding.nhi_id else {
            return Err(not_found());
        };
        let nhi = state.store.get_nhi(nhi_id).await?.ok_or_else(not_found)?;
        if !teams.contains(&nhi.owner.team_id) {
            return Err(not_found());
        }
    }
    Ok(finding)
}

pub async fn get_finding(state: &AppState, who: &Principal, id: &str) -> ApiResult<Finding> {
    visible_finding(state, who, id).await
}

/// Acknowledges, dismisses or accepts ("the new normal") a finding. Accepting folds the
/// events it holds into the NHI's baseline, so that the same behaviour no longer departs.
pub async fn resolve_finding(
    state: &AppState,
    who: &Principal,
    id: &str,
    to: FindingState,
    input: ResolveFinding,
) -> ApiResult<Finding> {
    let finding = visible_finding(state, who, id).await?;
    match &finding.nhi_id {
        Some(nhi_id) => {
            let nhi = crate::service::visible_nhi(state, who, nhi_id).await?;
            who.require_admin_or_reviewer_of(&nhi.owner.team_id)?;
        }
        None => {
            who.require(&[Role::Admin])?;
        }
    }
    let mut errors = custos_core::validate::ValidationErrors::default();
    match &input.reason {
        Some(reason) => custos_core::validate::text(&mut errors, "reason", reason, 2000),
        None if to == FindingState::Dismissed => {
            errors.push("reason", "a dismissal needs a reason");
        }
        None => {}
    }
    errors.into_result()?;
    let reason = input.reason.unwrap_or_default();
    if to == FindingState::Open {
        return Err(ApiError::bad_request(
            "invalid_transition",
            "a finding cannot be reopened",
        ));
    }
    let resolved = settle_finding(
        state,
        &finding.id,
        to,
        who.actor(),
        &reason,
        finding.nhi_id.as_deref(),
    )
    .await?
    .ok_or_else(|| {
        ApiError::conflict(
            "finding_not_open",
            format!("the finding is {}, and cannot become {to}", finding.state),
        )
    })?;
    state.behaviour.forget_recent(&resolved.dedupe_key);
    if to == FindingState::Accepted {
        fold_finding(state, &resolved).await?;
    }
    Ok(resolved)
}

/// Folds the events a finding holds into its NHI's baseline.
pub async fn fold_finding(state: &AppState, finding: &Finding) -> ApiResult<()> {
    let Some(nhi_id) = &finding.nhi_id else {
        return Ok(());
    };
    let events = finding.evidence["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let fleet = &state.behaviour.fleet;
    change_profile(state, nhi_id, state.now(), |profile| {
        for sample in &events {
            let text = |name: &str| sample[name].as_str().unwrap_or("");
            let Some(at) = sample["at"]
                .as_str()
                .and_then(|t| Timestamp::parse_rfc3339(t).ok())
            else {
                continue;
            };
            let source = sample["source"].as_str().and_then(|s| s.parse().ok());
            let event = Observation {
                at,
                kind: if text("kind") == "delegation" {
                    ObservationKind::Delegation
                } else {
                    ObservationKind::Action
                },
                service: text("service"),
                operation: text("operation"),
                resource: text("resource"),
                outcome: Outcome::Allowed,
                source,
                user_agent: sample["user_agent"].as_str(),
                environment: sample["environment"].as_str(),
                on_behalf_of: sample["on_behalf_of"].as_str(),
            };
            profile.fold_in(&event, fleet);
        }
    })
    .await?;
    Ok(())
}

/// A person gave the NHI services it could not reach before: a wider scope ceiling, or a task
/// approved beyond it. The profile expects their first calls for the next weeks instead of
/// taking them for a departure (see [`Profile::expect_service`]). The grant itself is already
/// kept; a baseline that cannot be read only misses the word, so that is logged, not refused.
pub async fn granted(state: &AppState, nhi_id: &str, services: &[&str], at: Timestamp) {
    if services.is_empty() {
        return;
    }
    let told = change_profile(state, nhi_id, at, |profile| {
        for service in services {
            profile.expect_service(service, at);
        }
    });
    if let Err(error) = told.await {
        tracing::warn!(nhi = nhi_id, %error, "cannot tell the baseline of a grant");
    }
}

/// The NHI changed owner (team or application), and so peer group. Logged, not refused, like
/// a grant.
pub async fn regrouped(state: &AppState, nhi: &Nhi, at: Timestamp) {
    let told = change_profile(state, &nhi.id, at, |profile| {
        profile.set_peer_group(&peer_group(nhi));
    });
    if let Err(error) = told.await {
        tracing::warn!(nhi = nhi.id, %error, "cannot tell the baseline of a new owner");
    }
}

/// Changes an NHI's profile outside of its events (a finding accepted, a grant, a new owner),
/// and writes it at once, so that a restart does not forget what a person said.
async fn change_profile(
    state: &AppState,
    nhi_id: &str,
    at: Timestamp,
    change: impl FnOnce(&mut Profile),
) -> Result<(), StoreError> {
    let behaviour = &state.behaviour;
    if !behaviour
        .ensure_loaded(state.store.as_ref(), nhi_id, at)
        .await?
    {
        return Ok(());
    }
    let Some(mut profile) = behaviour.profiles.get_mut(nhi_id) else {
        return Ok(());
    };
    change(&mut profile);
    drop(profile);
    behaviour.dirty.insert(nhi_id.to_owned(), ());
    behaviour.flush(state.store.as_ref(), state.now()).await;
    Ok(())
}

/// After a reviewer approved a step-up request: the action is the NHI's normal now, and the
/// finding that asked is accepted by the approval.
pub async fn approved(state: &AppState, approval_id: &str, nhi_id: &str, by: &Principal) {
    let result: ApiResult<()> = async {
        let findings = state
            .store
            .list_findings(
                &FindingFilter {
                    nhi_id: Some(nhi_id.to_owned()),
                    unresolved_only: true,
                    approval_id: Some(approval_id.to_owned()),
                    ..Default::default()
                },
                &Page {
                    after: None,
                    limit: 200,
                },
            )
            .await?;
        for finding in findings {
            let event = state
                .event(
                    EventKind::FindingAccepted,
                    by.actor(),
                    format!("finding:{}", finding.id),
                )
                .with("nhi", nhi_id)
                .with("approval", approval_id)
                .with("reason", "approved in the inbox");
            if let Some(resolved) = state
                .store
                .resolve_finding(
                    &finding.id,
                    FindingState::Accepted,
                    &by.actor().to_string(),
                    &format!("approval {approval_id}"),
                    state.now(),
                    &event,
                )
                .await?
            {
                state.behaviour.forget_recent(&resolved.dedupe_key);
                fold_finding(state, &resolved).await?;
            }
        }
        Ok(())
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(approval = approval_id, error = %error.detail, "cannot fold an approved departure into the baseline");
    }
}

// ---- response policies ----

pub async fn list_response_policies(
    state: &AppState,
    who: &Principal,
) -> ApiResult<ResponsePolicyList> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let items = state.store.list_response_policies(true).await?;
    Ok(ResponsePolicyList {
        items,
        default_action: state.behaviour.default_action,
    })
}

pub async fn create_response_policy(
    state: &AppState,
    who: &Principal,
    input: NewResponsePolicy,
) -> ApiResult<ResponsePolicy> {
    who.require(&[Role::Admin])?;
    let mut errors = custos_core::validate::ValidationErrors::default();
    let action = ResponseAction::parse(&input.action);
    if action.is_none() {
        errors.push("action", "must be one of record, alert, step_up, suspend");
    }
    let min_severity = match input.min_severity.as_deref() {
        None => Some(Severity::Low),
        Some(text) => {
            let parsed = Severity::parse(text);
            if parsed.is_none() {
                errors.push("min_severity", "must be one of low, medium, high");
            }
            parsed
        }
    };
    let target = match (input.target.as_str(), input.id.as_deref()) {
        ("default", None) => Some(ResponseTarget::Default),
        ("default", Some(_)) => {
            errors.push("id", "a default policy names no id");
            None
        }
        ("nhi", Some(id)) => match state.store.get_nhi(id).await? {
            Some(nhi) => Some(ResponseTarget::Nhi(nhi.id)),
            None => {
                errors.push("id", format!("no nhi {id}"));
                None
            }
        },
        ("team", Some(id)) => crate::service::team_named(state, "id", id, &mut errors)
            .await?
            .map(ResponseTarget::Team),
        ("kind", Some(kind)) => match custos_core::NhiKind::parse(kind) {
            Some(kind) => Some(ResponseTarget::Kind(kind.as_str().to_owned())),
            None => {
                errors.push("id", format!("no nhi kind {kind:?}"));
                None
            }
        },
        ("nhi" | "team" | "kind", None) => {
            errors.push("id", "names the nhi, team or kind the policy is for");
            None
        }
        _ => {
            errors.push("target", "must be one of default, nhi, team, kind");
            None
        }
    };
    errors.into_result()?;
    let (Some(action), Some(min_severity), Some(target)) = (action, min_severity, target) else {
        return Err(ApiError::internal("validated input went missing"));
    };
    let policy = ResponsePolicy {
        id: new_id(),
        target,
        action,
        min_severity,
        created_by: who.actor().to_string(),
        created_at: state.now(),
        revoked_at: None,
    };
    let event = state
        .event(
            EventKind::ResponsePolicyCreated,
            who.actor(),
            format!("response_policy:{}", policy.id),
        )
        .with("action", action.as_str())
        .with("min_severity", min_severity.as_str())
        .with("target", target_text(&policy.target));
    state.store.create_response_policy(&policy, &event).await?;
    state.behaviour.load_policies(state.store.as_ref()).await?;
    Ok(policy)
}

fn target_text(target: &ResponseTarget) -> String {
    match target {
        ResponseTarget::Default => "default".to_owned(),
        ResponseTarget::Nhi(id) => format!("nhi:{id}"),
        ResponseTarget::Team(id) => format!("team:{id}"),
        ResponseTarget::Kind(kind) => format!("kind:{kind}"),
    }
}

pub async fn revoke_response_policy(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> ApiResult<ResponsePolicy> {
    who.require(&[Role::Admin])?;
    let event = state.event(
        EventKind::ResponsePolicyRevoked,
        who.actor(),
        format!("response_policy:{id}"),
    );
    let known = state
        .store
        .list_response_policies(true)
        .await?
        .into_iter()
        .find(|p| p.id == id)
        .ok_or_else(|| {
            ApiError::not_found(&format!("response policy {id}"))
                .with_code("response_policy_not_found")
        })?;
    if known.revoked_at.is_none() {
        state
            .store
            .revoke_response_policy(id, state.now(), &event)
            .await?;
        state.behaviour.load_policies(state.store.as_ref()).await?;
    }
    state
        .store
        .list_response_policies(true)
        .await?
        .into_iter()
        .find(|p| p.id == id)
        .ok_or_else(|| ApiError::internal("a response policy vanished"))
}

// ---- observed events from elsewhere ----

/// The most events one observations request carries.
/// (The request body limit, 256 KiB, holds about that many events of usual size.)
pub const MAX_OBSERVATIONS: usize = 1_000;

/// Moves a finding on to `to` (acknowledged, dismissed or accepted) as `actor`, with its
/// event: the one write behind every way a finding is settled, by a person or by a decision
/// or a later import. `None`, writing nothing, if it was no longer in a state it could move
/// on from. Rights are the caller's to check.
pub async fn settle_finding(
    state: &AppState,
    finding_id: &str,
    to: FindingState,
    actor: Actor,
    reason: &str,
    nhi_id: Option<&str>,
) -> ApiResult<Option<Finding>> {
    let kind = match to {
        FindingState::Acknowledged => EventKind::FindingAcknowledged,
        FindingState::Dismissed => EventKind::FindingDismissed,
        FindingState::Accepted => EventKind::FindingAccepted,
        FindingState::Open => return Ok(None),
    };
    let by = actor.to_string();
    let event = state
        .event(kind, actor, format!("finding:{finding_id}"))
        .with("reason", reason)
        .with_some("nhi", nhi_id);
    Ok(state
        .store
        .resolve_finding(finding_id, to, &by, reason, state.now(), &event)
        .await?)
}

/// `POST /v1/observations` (admin): events seen in a platform's logs for registered NHIs,
/// fed to their baselines in order. Departures become findings (recorded and alerted, never
/// enforced: these events happened elsewhere, already).
pub async fn observe_imported(
    state: &AppState,
    who: &Principal,
    input: ObservationBatch,
) -> ApiResult<ObservationsAccepted> {
    who.require(&[Role::Admin])?;
    let mut errors = custos_core::validate::ValidationErrors::default();
    if input.events.is_empty() || input.events.len() > MAX_OBSERVATIONS {
        errors.push(
            "events",
            format!("must hold between 1 and {MAX_OBSERVATIONS} events"),
        );
    }
    let mut parsed = Vec::with_capacity(input.events.len());
    for (index, event) in input.events.iter().enumerate() {
        let field = |name: &str| format!("events[{index}].{name}");
        let at = match Timestamp::parse_rfc3339(&event.at) {
            Ok(at) => Some(at),
            Err(e) => {
                errors.push(field("at"), e.to_string());
                None
            }
        };
        let outcome = match event.outcome.as_deref().unwrap_or("allowed") {
            "allowed" => Some(Outcome::Allowed),
            "denied" => Some(Outcome::Denied),
            "refused" => Some(Outcome::Refused),
            _ => {
                errors.push(field("outcome"), "must be allowed, denied or refused");
                None
            }
        };
        let source = match event.source_ip.as_deref() {
            None => None,
            Some(text) => match text.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    errors.push(field("source_ip"), "must be an IPv4 or IPv6 address");
                    None
                }
            },
        };
        for (name, value, max) in [
            ("service", event.service.as_str(), 128),
            ("operation", event.operation.as_str(), 128),
            ("resource", event.resource.as_deref().unwrap_or(""), 1024),
        ] {
            if value.len() > max || (name != "resource" && value.trim().is_empty()) {
                errors.push(field(name), format!("must be 1 to {max} bytes"));
            }
        }
        for (name, value, min, max) in [
            ("user_agent", event.user_agent.as_deref(), 0, 512),
            ("environment", event.environment.as_deref(), 0, 64),
            ("on_behalf_of", event.on_behalf_of.as_deref(), 1, 256),
        ] {
            if value.is_some_and(|v| v.len() < min || v.len() > max) {
                errors.push(field(name), format!("must be {min} to {max} bytes"));
            }
        }
        if let (Some(at), Some(outcome)) = (at, outcome) {
            parsed.push((at, outcome, source));
        }
    }
    errors.into_result()?;
    let mut findings = Vec::new();
    let mut unknown = Vec::new();
    let mut skipped = 0;
    for (event, (at, outcome, source)) in input.events.iter().zip(parsed) {
        let observation = Observation {
            at,
            kind: ObservationKind::Action,
            service: &event.service,
            operation: &event.operation,
            resource: event.resource.as_deref().unwrap_or(""),
            outcome,
            source,
            user_agent: event.user_agent.as_deref(),
            environment: event.environment.as_deref(),
            on_behalf_of: event.on_behalf_of.as_deref(),
        };
        match observe(state, &event.nhi_id, &observation, false).await? {
            Some(response) => {
                let id = response.finding().to_owned();
                if !id.is_empty() && !findings.contains(&id) {
                    findings.push(id);
                }
            }
            None if !state.behaviour.profiles.contains_key(&event.nhi_id) => {
                skipped += 1;
                if !unknown.contains(&event.nhi_id) {
                    unknown.push(event.nhi_id.clone());
                }
            }
            None => {}
        }
    }
    Ok(ObservationsAccepted {
        accepted: input.events.len() - skipped,
        findings,
        unknown_nhis: unknown,
    })
}

/// Feeds one event seen in a platform's logs (a discovery import) to a registered NHI's
/// baseline. Like `POST /v1/observations`, a departure is recorded and alerted, never
/// enforced: it happened elsewhere, already. The finding's id if it raised one.
pub async fn observe_elsewhere(
    state: &AppState,
    nhi_id: &str,
    event: &Observation<'_>,
) -> ApiResult<Option<String>> {
    Ok(observe(state, nhi_id, event, false)
        .await?
        .map(|response| response.finding().to_owned())
        .filter(|id| !id.is_empty()))
}
