//! One function per use case. Handlers parse HTTP and call these; these check the caller's
//! rights, apply the core's rules, and write through the store with the change's event.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use custos_core::issuance::IssuanceLimits;
use custos_core::token::SecretKind;
use custos_core::{
    Actor, Credential, CredentialKind, DomainEvent, EventKind, Nhi, NhiChanges, NhiDraft,
    NhiFilter, Operator, Owner, Page, Role, Team, Timestamp,
};
use custos_store::{EventQuery, Revocation, Store, StoreError};

use crate::api::*;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::keyring::Keyring;
use crate::secrets::{self, Keys};

/// The source of the current time; the only place the server reads the clock.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Timestamp::from_unix_millis(millis)
            .unwrap_or(Timestamp::from_unix_millis(0).expect("epoch"))
    }
}

/// Limits that operators configure.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest lifetime of a static key, and the default when none is asked for.
    pub static_key_max_age_seconds: i64,
    /// How long a rotated static key keeps working beside its replacement.
    pub static_key_rotation_grace_seconds: i64,
    /// Lifetimes of task credentials and the depth of delegation chains.
    pub issuance: IssuanceLimits,
    /// How long an approval request waits before it expires.
    pub approval_ttl_seconds: u32,
    /// How many reviewers must approve a high-risk request.
    pub high_risk_quorum: u32,
    /// How long a request waits before it is escalated, for a team with a fallback team but
    /// no wait of its own.
    pub escalate_after_seconds: u32,
    /// Nobody approves a request about an NHI their own team owns.
    pub separation_of_duties: bool,
    /// The largest discovery import accepted, in bytes as uploaded.
    pub import_max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            static_key_max_age_seconds: 90 * 24 * 3600,
            static_key_rotation_grace_seconds: 24 * 3600,
            issuance: IssuanceLimits::default(),
            approval_ttl_seconds: 24 * 3600,
            high_risk_quorum: 2,
            escalate_after_seconds: 3600,
            separation_of_duties: false,
            import_max_bytes: 4 << 30,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub keyring: Keyring,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    /// The OAuth issuer identifier: this server's public URL.
    pub issuer: String,
    /// Wakes long-polls of a task when its approval is decided on this node.
    pub task_updates: Arc<tokio::sync::Notify>,
    /// The tamper-evident log over the event trail.
    pub audit: Arc<crate::audit::AuditLog>,
    /// What access decisions read, in memory; kept current by the store wrapper.
    pub live: Arc<crate::live::LiveState>,
    /// Whether that memory is known to be current with the other nodes' changes, and what
    /// strict mode makes of it.
    pub freshness: Arc<crate::nodes::Freshness>,
    /// Decision events on their way to the trail.
    pub decisions: crate::access::DecisionLog,
    /// Notification settings: retry backoff, the hosts channels may send to.
    pub notify: Arc<crate::notify::Settings>,
    /// Every NHI's behaviour profile, and the response policies for departures.
    pub behaviour: Arc<crate::behaviour::Behaviour>,
    /// Decommissioning workflows: where trails are archived, and which this node drives.
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
}

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl AppState {
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) fn event(&self, kind: EventKind, actor: Actor, subject: String) -> DomainEvent {
        DomainEvent::new(new_id(), kind, actor, subject, self.now())
    }

    pub(crate) async fn team(&self, id_or_name: &str, field: &str) -> ApiResult<Team> {
        self.store.get_team(id_or_name).await?.ok_or_else(|| {
            ApiError::validation(custos_core::validate::ValidationErrors::single(
                field,
                format!("no team named or with id {id_or_name:?}"),
            ))
        })
    }
}

/// One page out of `found`, which was read with one more than `limit` to learn whether more
/// follow: the page, and the cursor of its last item if they do.
pub fn page_of<T>(
    mut found: Vec<T>,
    limit: u32,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let more = found.len() > limit as usize;
    found.truncate(limit as usize);
    let next_cursor = if more {
        found.last().map(|last| encode_cursor(&cursor_of(last)))
    } else {
        None
    };
    (found, next_cursor)
}

pub fn encode_cursor(last_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(last_id)
}

pub fn decode_cursor(cursor: &str) -> ApiResult<String> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "the cursor is not one this server issued")
        })
}

// ---- bootstrap ----

/// Creates the first admin with `token` unless the store already has one. Returns whether it
/// did.
pub async fn bootstrap_admin(state: &AppState, token: &str) -> Result<bool, StoreError> {
    let now = state.now();
    let admin = Operator {
        id: new_id(),
        name: "admin".into(),
        roles: vec![Role::Admin],
        teams: vec![],
        token_hint: custos_core::token::hint(token),
        created_at: now,
        created_by: None,
        revoked_at: None,
    };
    let event = state
        .event(
            EventKind::ServerBootstrapped,
            Actor::System,
            format!("operator:{}", admin.id),
        )
        .with("fingerprint", state.keys.fingerprint(token));
    state
        .store
        .bootstrap_admin(&admin, &state.keys.secret_hash(token), &event)
        .await
}

// ---- teams ----

fn team_view(team: Team, members: Option<Vec<MemberView>>) -> TeamView {
    TeamView {
        id: team.id,
        name: team.name,
        contact: team.contact,
        created_at: team.created_at,
        fallback_team: team.fallback_team_id,
        escalate_after_seconds: team.escalate_after_seconds,
        members,
    }
}

/// The id of the team `name_or_id` names; an unknown team is an error on `field`, added to
/// `errors` (so that every field's errors are reported together) and `None`.
pub(crate) async fn team_named(
    state: &AppState,
    field: &str,
    name_or_id: &str,
    errors: &mut custos_core::validate::ValidationErrors,
) -> ApiResult<Option<String>> {
    Ok(match state.store.get_team(name_or_id).await? {
        Some(team) => Some(team.id),
        None => {
            errors.push(field, format!("no team named or with id {name_or_id:?}"));
            None
        }
    })
}

fn team_event(state: &AppState, kind: EventKind, who: &Principal, team: &Team) -> DomainEvent {
    let mut event = state
        .event(kind, who.actor(), format!("team:{}", team.id))
        .with("name", &team.name);
    if let Some(fallback) = &team.fallback_team_id {
        event = event.with("fallback_team", fallback);
    }
    if let Some(seconds) = team.escalate_after_seconds {
        event = event.with("escalate_after_seconds", seconds.to_string());
    }
    event
}

pub async fn create_team(
    state: &AppState,
    who: &Principal,
    input: CreateTeam,
) -> ApiResult<TeamView> {
    who.require(&[Role::Admin])?;
    let mut errors = custos_core::validate::ValidationErrors::default();
    let fallback = match &input.fallback_team {
        Some(name_or_id) => team_named(state, "fallback_team", name_or_id, &mut errors).await?,
        None => None,
    };
    let team = Team::new(new_id(), input.name, input.contact, state.now());
    if let Err(invalid) = &team {
        // Every refused field at once: the team's own before the fallback's.
        errors.0.splice(0..0, invalid.0.iter().cloned());
    }
    errors.into_result()?;
    let team = team?.with_escalation(fallback, input.escalate_after_seconds)?;
    let event = team_event(state, EventKind::TeamCreated, who, &team);
    state
        .store
        .create_team(&team, &event)
        .await
        .map_err(|e| match e {
            StoreError::Conflict => ApiError::conflict(
                "team_exists",
                format!("a team named {:?} already exists", team.name),
            ),
            other => other.into(),
        })?;
    Ok(team_view(team, Some(vec![])))
}

/// `PATCH /v1/teams/{id}` (admin): sets or clears the fallback team and the escalation wait.
/// The team's requests already escalated stay with the team they went to.
pub async fn update_team(
    state: &AppState,
    who: &Principal,
    id: &str,
    input: UpdateTeam,
) -> ApiResult<TeamView> {
    who.require(&[Role::Admin])?;
    let team = state
        .store
        .get_team(id)
        .await?
        .ok_or_else(|| ApiError::not_found("team"))?;
    let mut errors = custos_core::validate::ValidationErrors::default();
    let fallback = match &input.fallback_team {
        None => team.fallback_team_id.clone(),
        Some(None) => None,
        Some(Some(name_or_id)) => {
            team_named(state, "fallback_team", name_or_id, &mut errors).await?
        }
    };
    let seconds = match input.escalate_after_seconds {
        Some(seconds) => seconds,
        // Without a fallback, a wait has nothing to wait for.
        None if fallback.is_none() => None,
        None => team.escalate_after_seconds,
    };
    errors.into_result()?;
    let team = team.with_escalation(fallback, seconds)?;
    let event = team_event(state, EventKind::TeamUpdated, who, &team);
    state
        .store
        .update_team(&team, &event)
        .await
        .map_err(|e| match e {
            StoreError::MissingReference => {
                ApiError::validation(custos_core::validate::ValidationErrors::single(
                    "fallback_team",
                    "the fallback team no longer exists",
                ))
            }
            other => other.into(),
        })?;
    get_team(state, who, &team.id).await
}

pub async fn list_teams(state: &AppState, who: &Principal) -> ApiResult<TeamList> {
    who.require(&[Role::Admin, Role::Auditor, Role::Reviewer])?;
    let items = state
        .store
        .list_teams()
        .await?
        .into_iter()
        .map(|t| team_view(t, None))
        .collect();
    Ok(TeamList { items })
}

pub async fn get_team(state: &AppState, who: &Principal, id: &str) -> ApiResult<TeamView> {
    who.require(&[Role::Admin, Role::Auditor, Role::Reviewer])?;
    let team = state
        .store
        .get_team(id)
        .await?
        .ok_or_else(|| ApiError::not_found("team"))?;
    let members = state
        .store
        .list_operators(Some(&team.id))
        .await?
        .into_iter()
        .map(|o| MemberView {
            active: o.is_active(),
            id: o.id,
            name: o.name,
            roles: o.roles,
        })
        .collect();
    Ok(team_view(team, Some(members)))
}

// ---- operators ----

fn operator_view(op: Operator) -> OperatorView {
    OperatorView {
        active: op.is_active(),
        id: op.id,
        name: op.name,
        roles: op.roles,
        teams: op.teams,
        token_hint: op.token_hint,
        created_at: op.created_at,
        created_by: op.created_by,
        revoked_at: op.revoked_at,
    }
}

pub async fn create_operator(
    state: &AppState,
    who: &Principal,
    input: CreateOperator,
) -> ApiResult<OperatorCreated> {
    let admin = who.require(&[Role::Admin])?;
    let mut roles = input.roles;
    roles.sort();
    roles.dedup();
    let mut teams = Vec::new();
    for (i, team) in input.teams.iter().enumerate() {
        teams.push(state.team(team, &format!("teams[{i}]")).await?.id);
    }
    teams.sort();
    teams.dedup();
    Operator::validate(&input.name, &roles, &teams)?;
    let token = secrets::mint(SecretKind::Operator);
    let operator = Operator {
        id: new_id(),
        name: input.name,
        roles,
        teams,
        token_hint: custos_core::token::hint(&token),
        created_at: state.now(),
        created_by: Some(admin.id.clone()),
        revoked_at: None,
    };
    let roles_text: Vec<_> = operator.roles.iter().map(|r| r.as_str()).collect();
    let event = state
        .event(
            EventKind::OperatorCreated,
            who.actor(),
            format!("operator:{}", operator.id),
        )
        .with("name", &operator.name)
        .with("roles", roles_text.join(","))
        .with("teams", operator.teams.join(","))
        .with("fingerprint", state.keys.fingerprint(&token));
    state
        .store
        .create_operator(&operator, &state.keys.secret_hash(&token), &event)
        .await?;
    Ok(OperatorCreated {
        operator: operator_view(operator),
        token,
    })
}

pub async fn list_operators(state: &AppState, who: &Principal) -> ApiResult<OperatorList> {
    who.require(&[Role::Admin])?;
    let items = state
        .store
        .list_operators(None)
        .await?
        .into_iter()
        .map(operator_view)
        .collect();
    Ok(OperatorList { items })
}

pub async fn get_operator(state: &AppState, who: &Principal, id: &str) -> ApiResult<OperatorView> {
    who.require(&[Role::Admin])?;
    let op = state
        .store
        .get_operator(id)
        .await?
        .ok_or_else(|| ApiError::not_found("operator"))?;
    Ok(operator_view(op))
}

pub async fn revoke_operator(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> ApiResult<OperatorView> {
    who.require(&[Role::Admin])?;
    let now = state.now();
    let event = state.event(
        EventKind::OperatorRevoked,
        who.actor(),
        format!("operator:{id}"),
    );
    state
        .store
        .revoke_operator(id, now, &event)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("operator"),
            other => other.into(),
        })?;
    get_operator(state, who, id).await
}

pub fn whoami(who: &Principal) -> WhoAmI {
    match who {
        Principal::Operator(op) => WhoAmI {
            kind: "operator".into(),
            id: op.id.clone(),
            name: op.name.clone(),
            roles: op.roles.clone(),
            teams: op.teams.clone(),
        },
        Principal::Nhi { nhi, .. } => WhoAmI {
            kind: "nhi".into(),
            id: nhi.id.clone(),
            name: nhi.name.clone(),
            roles: vec![],
            teams: vec![nhi.owner.team_id.clone()],
        },
    }
}

// ---- NHIs ----

async fn team_names(state: &AppState) -> ApiResult<HashMap<String, String>> {
    Ok(state
        .store
        .list_teams()
        .await?
        .into_iter()
        .map(|t| (t.id, t.name))
        .collect())
}

fn nhi_view(nhi: Nhi, teams: &HashMap<String, String>) -> NhiView {
    NhiView {
        owner: OwnerView {
            team: teams.get(&nhi.owner.team_id).cloned().unwrap_or_default(),
            team_id: nhi.owner.team_id,
            application: nhi.owner.application,
            contact: nhi.owner.contact,
        },
        id: nhi.id,
        name: nhi.name,
        kind: nhi.kind,
        platform: nhi.platform,
        environment: nhi.environment,
        status: nhi.status,
        purpose: nhi.purpose,
        scope_ceiling: nhi.scope_ceiling,
        tags: nhi.tags,
        external_ids: nhi.external_ids,
        created_at: nhi.created_at,
        updated_at: nhi.updated_at,
        expires_at: nhi.expires_at,
        last_used_at: nhi.last_used_at,
        version: nhi.version,
    }
}

pub async fn view_nhi(state: &AppState, nhi: Nhi) -> ApiResult<NhiView> {
    let team = state.store.get_team(&nhi.owner.team_id).await?;
    let names = team.into_iter().map(|t| (t.id, t.name)).collect();
    Ok(nhi_view(nhi, &names))
}

pub(crate) async fn owner(state: &AppState, input: OwnerInput) -> ApiResult<Owner> {
    let team = state.team(&input.team, "owner.team").await?;
    Ok(Owner {
        team_id: team.id,
        application: input.application,
        contact: input.contact,
    })
}

pub(crate) fn name_taken(nhi: &Nhi) -> ApiError {
    ApiError::conflict(
        "nhi_name_taken",
        format!(
            "an nhi named {:?} already exists on platform {:?}",
            nhi.name, nhi.platform
        ),
    )
}

pub async fn create_nhi(state: &AppState, who: &Principal, input: CreateNhi) -> ApiResult<NhiView> {
    who.require(&[Role::Admin])?;
    let owner = owner(state, input.owner.clone()).await?;
    let (nhi, event) = registration(state, who.actor(), input, owner)?;
    state
        .store
        .create_nhis(&[(nhi.clone(), event)])
        .await
        .map_err(|e| match e {
            StoreError::Conflict => name_taken(&nhi),
            other => other.into(),
        })?;
    view_nhi(state, nhi).await
}

/// An NHI registered from `input` by `actor`, with its event, by the rules every way of
/// registering one shares (the API, an inventory import, an adoption). `owner` is the input's
/// owner with the team resolved. Nothing is written.
pub(crate) fn registration(
    state: &AppState,
    actor: Actor,
    input: CreateNhi,
    owner: Owner,
) -> ApiResult<(Nhi, DomainEvent)> {
    let draft = NhiDraft {
        owner,
        name: input.name,
        kind: input.kind,
        platform: input.platform,
        environment: input.environment,
        purpose: input.purpose,
        scope_ceiling: input.scope_ceiling,
        tags: input.tags,
        external_ids: input.external_ids,
        expires_at: input.expires_at,
    };
    let nhi = Nhi::register(draft, new_id(), state.now())?;
    let event = state
        .event(EventKind::NhiRegistered, actor, format!("nhi:{}", nhi.id))
        .with("name", &nhi.name)
        .with("kind", nhi.kind.as_str())
        .with("platform", &nhi.platform)
        .with("owner_team", &nhi.owner.team_id)
        .with("scope_ceiling", nhi.scope_ceiling.to_strings().join(" "));
    Ok((nhi, event))
}

/// Reads an NHI the caller may see; others' NHIs are "not found" to reviewers, so a listing
/// and a direct read never disagree about what exists.
pub async fn visible_nhi(state: &AppState, who: &Principal, id: &str) -> ApiResult<Nhi> {
    let visible = who.visible_teams()?;
    let nhi = state
        .store
        .get_nhi(id)
        .await?
        .ok_or_else(|| ApiError::not_found("nhi"))?;
    match visible {
        Some(teams) if !teams.contains(&nhi.owner.team_id) => Err(ApiError::not_found("nhi")),
        _ => Ok(nhi),
    }
}

pub async fn get_nhi(state: &AppState, who: &Principal, id: &str) -> ApiResult<NhiView> {
    let nhi = visible_nhi(state, who, id).await?;
    view_nhi(state, nhi).await
}

pub async fn list_nhis(
    state: &AppState,
    who: &Principal,
    mut filter: NhiFilter,
    page: Page,
) -> ApiResult<NhiList> {
    if let Some(visible) = who.visible_teams()? {
        filter.owner_teams = Some(match filter.owner_teams.take() {
            Some(asked) => asked.into_iter().filter(|t| visible.contains(t)).collect(),
            None => visible,
        });
    }
    let limit = page.limit;
    let found = state
        .store
        .list_nhis(
            &filter,
            &Page {
                after: page.after,
                limit: limit + 1,
            },
        )
        .await?;
    let more = found.len() > limit as usize;
    let teams = team_names(state).await?;
    let items: Vec<_> = found
        .into_iter()
        .take(limit as usize)
        .map(|n| nhi_view(n, &teams))
        .collect();
    let next_cursor = if more {
        items.last().map(|n| encode_cursor(&n.id))
    } else {
        None
    };
    Ok(NhiList { items, next_cursor })
}

/// Resolves an owner team for a filter. An unknown team is an empty list, which matches
/// nothing, rather than an error: a listing never reveals which team names exist.
pub async fn team_filter(state: &AppState, id_or_name: &str) -> ApiResult<Vec<String>> {
    Ok(state
        .store
        .get_team(id_or_name)
        .await?
        .map(|t| t.id)
        .into_iter()
        .collect())
}

/// Writes a new state of an NHI, retrying on a concurrent change unless the caller pinned a
/// version with If-Match.
async fn change_nhi<F>(
    state: &AppState,
    who: &Principal,
    id: &str,
    if_match: Option<i64>,
    mut change: F,
) -> ApiResult<Nhi>
where
    F: FnMut(&Nhi) -> ApiResult<Option<(Nhi, DomainEvent)>>,
{
    for _ in 0..5 {
        let current = visible_nhi(state, who, id).await?;
        if let Some(expected) = if_match
            && expected != current.version
        {
            return Err(StoreError::VersionMismatch {
                current: current.version,
            }
            .into());
        }
        let Some((next, event)) = change(&current)? else {
            return Ok(current);
        };
        match state.store.update_nhi(&next, current.version, &event).await {
            Ok(()) => return Ok(next),
            Err(StoreError::VersionMismatch { .. }) if if_match.is_none() => continue,
            Err(StoreError::Conflict) => return Err(name_taken(&next)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(
        "concurrent_update",
        "the nhi is changing too often; try again",
    ))
}

pub async fn update_nhi(
    state: &AppState,
    who: &Principal,
    id: &str,
    if_match: Option<i64>,
    input: UpdateNhi,
) -> ApiResult<NhiView> {
    who.require(&[Role::Admin])?;
    let owner = match input.owner {
        Some(o) => Some(owner(state, o).await?),
        None => None,
    };
    let changes = NhiChanges {
        name: input.name,
        kind: input.kind,
        platform: input.platform,
        environment: input.environment,
        owner,
        purpose: input.purpose,
        scope_ceiling: input.scope_ceiling,
        tags: input.tags,
        external_ids: input.external_ids,
        expires_at: input.expires_at,
    };
    let now = state.now();
    let (mut ceiling_before, mut owner_changed) = (None, false);
    let nhi = change_nhi(state, who, id, if_match, |current| {
        let (next, changed) = current.apply(changes.clone(), now)?;
        if changed.is_empty() {
            return Ok(None);
        }
        ceiling_before = changed
            .contains(&"scope_ceiling")
            .then(|| current.scope_ceiling.clone());
        owner_changed = changed.contains(&"owner");
        let event = state
            .event(
                EventKind::NhiUpdated,
                who.actor(),
                format!("nhi:{}", current.id),
            )
            .with("fields", changed.join(","))
            .with("version", next.version.to_string());
        Ok(Some((next, event)))
    })
    .await?;
    if let Some(before) = ceiling_before {
        let added = nhi.scope_ceiling.services_added_since(&before);
        crate::behaviour::granted(state, &nhi.id, &added, now).await;
    }
    if owner_changed {
        crate::behaviour::regrouped(state, &nhi, now).await;
    }
    view_nhi(state, nhi).await
}

/// `POST /v1/nhis/{id}/transfer`: gives the NHI to another owner team (and contact), with a
/// reason, as `nhi.owner_transferred`. An admin, or a reviewer of the team that owns it now
/// (a team gives away what it owns; an orphan whose team has nobody left is an admin's to
/// place). A tombstone keeps its last owner: 422.
pub async fn transfer_nhi(
    state: &AppState,
    who: &Principal,
    id: &str,
    input: TransferNhi,
) -> ApiResult<NhiView> {
    let current = visible_nhi(state, who, id).await?;
    who.require_admin_or_reviewer_of(&current.owner.team_id)?;
    let reason = input.reason.trim().to_owned();
    let mut errors = custos_core::validate::ValidationErrors::default();
    custos_core::validate::text(&mut errors, "reason", &reason, 500);
    errors.into_result()?;
    let new_owner = owner(state, input.owner).await?;
    let now = state.now();
    let nhi = change_nhi(state, who, id, None, |current| {
        let changes = NhiChanges {
            owner: Some(new_owner.clone()),
            ..Default::default()
        };
        let (next, changed) = current.apply(changes, now)?;
        if changed.is_empty() {
            return Ok(None);
        }
        let event = state
            .event(
                EventKind::NhiOwnerTransferred,
                who.actor(),
                format!("nhi:{}", current.id),
            )
            .with("from_team", &current.owner.team_id)
            .with("to_team", &next.owner.team_id)
            .with_some("contact", next.owner.contact.as_deref())
            .with("reason", &reason)
            .with("version", next.version.to_string());
        Ok(Some((next, event)))
    })
    .await?;
    crate::behaviour::regrouped(state, &nhi, now).await;
    view_nhi(state, nhi).await
}

pub async fn suspend_nhi(
    state: &AppState,
    who: &Principal,
    id: &str,
    reason: Option<String>,
) -> ApiResult<NhiView> {
    let nhi = visible_nhi(state, who, id).await?;
    who.require_admin_or_reviewer_of(&nhi.owner.team_id)?;
    let view = change_status(
        state,
        who,
        id,
        reason,
        Nhi::suspend,
        EventKind::NhiSuspended,
    )
    .await?;
    // Every secret the NHI holds dies with the suspension, and everything delegated from
    // them. Were this step lost to a crash, the suspended status alone still refuses them.
    let event = state.event(
        EventKind::CredentialRevoked,
        who.actor(),
        format!("nhi:{id}"),
    );
    state
        .store
        .revoke_credentials(
            Revocation::Nhi(id),
            state.now(),
            &event.with("cause", "nhi suspended"),
        )
        .await?;
    Ok(view)
}

pub async fn resume_nhi(
    state: &AppState,
    who: &Principal,
    id: &str,
    reason: Option<String>,
) -> ApiResult<NhiView> {
    who.require(&[Role::Admin])?;
    let nhi = visible_nhi(state, who, id).await?;
    if crate::lifecycle::under_way(state, &nhi.id).await? {
        return Err(ApiError::conflict(
            "decommission_under_way",
            "the nhi is being decommissioned; a staged decommission is cancelled instead (POST /v1/decommissions/{id}/cancel)",
        ));
    }
    change_status(state, who, id, reason, Nhi::resume, EventKind::NhiResumed).await
}

/// Resumes a suspended NHI on a decision already taken elsewhere (a reviewer approved its
/// resumption, an operator cancelled a staged decommission): the decision is the authority,
/// so no role is asked here. `link` names it in the event. An NHI no longer suspended, or one
/// being decommissioned meanwhile (the decommission wins), is left as it is.
pub async fn resume_on_decision(
    state: &AppState,
    nhi_id: &str,
    actor: Actor,
    reason: &str,
    (link, id): (&str, &str),
) -> ApiResult<()> {
    if crate::lifecycle::under_way(state, nhi_id).await? {
        return Ok(());
    }
    for _ in 0..5 {
        let Some(current) = state.store.get_nhi(nhi_id).await? else {
            return Ok(());
        };
        let Ok(Some(next)) = current.resume(state.now()) else {
            return Ok(());
        };
        let event = state
            .event(
                EventKind::NhiResumed,
                actor.clone(),
                format!("nhi:{nhi_id}"),
            )
            .with("reason", reason)
            .with(link, id);
        match state.store.update_nhi(&next, current.version, &event).await {
            Ok(()) => return Ok(()),
            Err(StoreError::VersionMismatch { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(
        "concurrent_update",
        "the nhi is changing too often; try again",
    ))
}

/// Applies a status transition of the core, recording `kind` with the caller's reason.
async fn change_status(
    state: &AppState,
    who: &Principal,
    id: &str,
    reason: Option<String>,
    transition: fn(&Nhi, Timestamp) -> Result<Option<Nhi>, custos_core::TransitionError>,
    kind: EventKind,
) -> ApiResult<NhiView> {
    let now = state.now();
    let nhi = change_nhi(state, who, id, None, |current| {
        let next = transition(current, now)
            .map_err(|e| ApiError::conflict("invalid_transition", e.to_string()))?;
        Ok(next.map(|next| {
            let mut event = state.event(kind, who.actor(), format!("nhi:{}", current.id));
            if let Some(reason) = &reason {
                event = event.with("reason", reason);
            }
            (next, event)
        }))
    })
    .await?;
    view_nhi(state, nhi).await
}

// ---- static keys ----

pub fn credential_view(c: Credential, now: Timestamp) -> CredentialView {
    let status = if c.revoked_at.is_some() {
        "revoked"
    } else if c.is_live(now) {
        "active"
    } else {
        "expired"
    };
    CredentialView {
        status: status.into(),
        id: c.id,
        nhi_id: c.nhi_id,
        kind: c.kind.as_str().into(),
        fingerprint: c.fingerprint,
        created_at: c.created_at,
        expires_at: c.expires_at,
        revoked_at: c.revoked_at,
        created_by: c.created_by,
        last_used_at: c.last_used_at,
    }
}

pub async fn issue_static_key(
    state: &AppState,
    who: &Principal,
    nhi_id: &str,
    input: IssueStaticKey,
) -> ApiResult<StaticKeyIssued> {
    who.require(&[Role::Admin])?;
    let nhi = active_visible_nhi(state, who, nhi_id).await?;
    let max = state.limits.static_key_max_age_seconds;
    let ttl = input.ttl_seconds.unwrap_or(max);
    if !(60..=max).contains(&ttl) {
        return Err(ApiError::validation(
            custos_core::validate::ValidationErrors::single(
                "ttl_seconds",
                format!("must be between 60 and {max} seconds"),
            ),
        ));
    }
    let (secret, credential) = new_static_key(state, &who.actor(), &nhi, ttl);
    let event = issued_key_event(state, who, &credential);
    state.store.create_credential(&credential, &event).await?;
    Ok(static_key_issued(secret, credential))
}

/// An NHI the caller may see, refused unless active.
pub async fn active_visible_nhi(state: &AppState, who: &Principal, id: &str) -> ApiResult<Nhi> {
    let nhi = visible_nhi(state, who, id).await?;
    if nhi.status != custos_core::NhiStatus::Active {
        return Err(ApiError::conflict(
            "nhi_not_active",
            format!("nhi {} is {}", nhi.id, nhi.status),
        ));
    }
    Ok(nhi)
}

/// A fresh static key for `nhi`, living `ttl` seconds but never past the NHI itself.
pub fn new_static_key(
    state: &AppState,
    created_by: &Actor,
    nhi: &Nhi,
    ttl: i64,
) -> (String, Credential) {
    let now = state.now();
    let mut expires_at = now.plus_seconds(ttl);
    if let Some(nhi_expiry) = nhi.expires_at {
        expires_at = expires_at.min(nhi_expiry);
    }
    let secret = secrets::mint(SecretKind::StaticKey);
    let hash = state.keys.secret_hash(&secret);
    let credential = Credential {
        id: new_id(),
        nhi_id: nhi.id.clone(),
        kind: CredentialKind::StaticKey,
        fingerprint: secrets::fingerprint_of_hash(&hash),
        secret_hash: hash.to_vec(),
        created_at: now,
        expires_at: Some(expires_at),
        revoked_at: None,
        created_by: created_by.to_string(),
        scope: None,
        task_id: None,
        parent_id: None,
        depth: 0,
        public_jwk: None,
        last_used_at: None,
    };
    (secret, credential)
}

fn issued_key_event(state: &AppState, who: &Principal, credential: &Credential) -> DomainEvent {
    let mut event = state
        .event(
            EventKind::CredentialIssued,
            who.actor(),
            format!("nhi:{}", credential.nhi_id),
        )
        .with("credential", &credential.id)
        .with("kind", credential.kind.as_str())
        .with("fingerprint", &credential.fingerprint);
    if let Some(expires_at) = credential.expires_at {
        event = event.with("expires_at", expires_at.to_rfc3339());
    }
    event
}

pub fn static_key_issued(secret: String, credential: Credential) -> StaticKeyIssued {
    StaticKeyIssued {
        expires_at: credential.expires_at.unwrap_or(credential.created_at),
        id: credential.id,
        nhi_id: credential.nhi_id,
        secret,
        fingerprint: credential.fingerprint,
    }
}

/// Replaces a static key: the new one is returned once; the old one keeps working for the
/// configured grace period (never longer than it would have anyway), then is dead.
pub async fn rotate_static_key(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> ApiResult<StaticKeyRotated> {
    who.require(&[Role::Admin])?;
    let old = state
        .store
        .get_credential(id)
        .await?
        .ok_or_else(|| ApiError::not_found("credential"))?;
    if old.kind != CredentialKind::StaticKey {
        return Err(ApiError::conflict(
            "not_a_static_key",
            format!("a {} is not rotated; issue a new one", old.kind),
        ));
    }
    let now = state.now();
    if !old.is_live(now) {
        return Err(ApiError::conflict(
            "credential_not_live",
            "the key is revoked or expired",
        ));
    }
    let nhi = active_visible_nhi(state, who, &old.nhi_id).await?;
    let (secret, new, old_expires_at) = replace_static_key(state, &who.actor(), &nhi, &old, false)
        .await
        .map_err(|e| match e {
            StoreError::Precondition(_) => ApiError::conflict(
                "credential_not_live",
                "the key is revoked, expired or already rotated",
            ),
            other => other.into(),
        })?;
    Ok(StaticKeyRotated {
        key: static_key_issued(secret, new),
        previous_id: old.id,
        previous_expires_at: old_expires_at,
    })
}

/// Replaces `old` with a new static key of the same NHI: the new one lives the configured
/// maximum age, the old one keeps working for the grace period (never longer than it would
/// have anyway), and the rotation is recorded so the old key is replaced once. With `sealed`,
/// nobody is there to be shown the new secret (the scheduler rotating a key for its age): it
/// is kept sealed for the NHI to collect with the old key. Returns the new secret, the new key
/// and the old key's new end of life.
pub async fn replace_static_key(
    state: &AppState,
    actor: &Actor,
    nhi: &Nhi,
    old: &Credential,
    sealed: bool,
) -> Result<(String, Credential, Timestamp), StoreError> {
    let now = state.now();
    let grace_end = now.plus_seconds(state.limits.static_key_rotation_grace_seconds);
    let old_expires_at = old.expires_at.map_or(grace_end, |e| e.min(grace_end));
    let (secret, new) = new_static_key(state, actor, nhi, state.limits.static_key_max_age_seconds);
    let sealed_secret = sealed.then(|| {
        state
            .keys
            .seal(&rotated_key_context(&new.id), secret.as_bytes())
    });
    let event = state
        .event(
            EventKind::CredentialRotated,
            actor.clone(),
            format!("nhi:{}", nhi.id),
        )
        .with("credential", &new.id)
        .with("fingerprint", &new.fingerprint)
        .with("replaces", &old.id)
        .with("replaces_fingerprint", &old.fingerprint)
        .with("replaced_until", old_expires_at.to_rfc3339())
        .with("delivery", if sealed { "collect" } else { "shown" });
    state
        .store
        .rotate_credential(
            &old.id,
            old_expires_at,
            &new,
            sealed_secret.as_deref(),
            &event,
        )
        .await?;
    Ok((secret, new, old_expires_at))
}

/// What a rotated key's sealed secret is bound to: it opens for that key only.
fn rotated_key_context(credential_id: &str) -> String {
    format!("rotated-static-key:{credential_id}")
}

/// `POST /v1/credentials/rotated`: an NHI whose static key the scheduler rotated collects the
/// replacement, presenting the old key (which works until the grace period ends). Once: the
/// sealed secret is erased as it is handed out. 404 `nothing_to_collect` when no replacement
/// waits for this key.
pub async fn collect_rotated_key(state: &AppState, who: &Principal) -> ApiResult<StaticKeyRotated> {
    let Principal::Nhi { nhi, credential } = who else {
        return Err(ApiError::forbidden(
            "only the nhi whose key was rotated collects its replacement, with the old key",
        )
        .with_code("nhi_required"));
    };
    if credential.kind != CredentialKind::StaticKey {
        return Err(ApiError::forbidden(
            "present the static key that was rotated, not another credential",
        )
        .with_code("static_key_required"));
    }
    let event = state
        .event(
            EventKind::CredentialCollected,
            Actor::Nhi(nhi.id.clone()),
            format!("nhi:{}", nhi.id),
        )
        .with("replaces", &credential.id);
    let (new_id, sealed) = state
        .store
        .collect_rotated_secret(&credential.id, state.now(), &event)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "nothing_to_collect",
                "no replacement waits to be collected for this key",
            )
        })?;
    let secret = state
        .keys
        .unseal(&rotated_key_context(&new_id), &sealed)
        .map_err(|e| StoreError::Corrupt(format!("rotated key {new_id} does not unseal: {e}")))?;
    let secret = String::from_utf8(secret.to_vec())
        .map_err(|_| StoreError::Corrupt(format!("rotated key {new_id} is not text")))?;
    let new = state
        .store
        .get_credential(&new_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("rotated key {new_id} is missing")))?;
    Ok(StaticKeyRotated {
        key: static_key_issued(secret, new),
        previous_id: credential.id.clone(),
        previous_expires_at: credential.expires_at.unwrap_or(state.now()),
    })
}

/// Registers a public key the NHI signs client assertions with (`private_key_jwt`).
pub async fn register_client_key(
    state: &AppState,
    who: &Principal,
    nhi_id: &str,
    input: RegisterClientKey,
) -> ApiResult<CredentialView> {
    who.require(&[Role::Admin])?;
    let nhi = active_visible_nhi(state, who, nhi_id).await?;
    let key = custos_core::jose::PublicKey::from_jwk(&input.jwk).map_err(|e| {
        ApiError::validation(custos_core::validate::ValidationErrors::single(
            "jwk",
            e.to_string(),
        ))
    })?;
    let now = state.now();
    // A key's thumbprint names it; hashed like a secret it is unique per key and store.
    let hash = state
        .keys
        .secret_hash(&format!("client-key:{}", key.thumbprint()));
    let credential = Credential {
        id: new_id(),
        nhi_id: nhi.id.clone(),
        kind: CredentialKind::ClientKey,
        fingerprint: format!("jwk_{}", key.thumbprint()),
        secret_hash: hash.to_vec(),
        created_at: now,
        expires_at: nhi.expires_at,
        revoked_at: None,
        created_by: who.actor().to_string(),
        scope: None,
        task_id: None,
        parent_id: None,
        depth: 0,
        public_jwk: Some(key.to_jwk().to_string()),
        last_used_at: None,
    };
    let event = issued_key_event(state, who, &credential).with("kid", key.kid());
    state
        .store
        .create_credential(&credential, &event)
        .await
        .map_err(|e| match e {
            StoreError::Conflict => {
                ApiError::conflict("client_key_exists", "this public key is already registered")
            }
            other => other.into(),
        })?;
    Ok(credential_view(credential, now))
}

/// The token-signing keys, newest last (admin, auditor).
pub async fn list_signing_keys(state: &AppState, who: &Principal) -> ApiResult<SigningKeyList> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let now = state.now();
    let items = state
        .store
        .list_signing_keys()
        .await?
        .into_iter()
        .map(|k| SigningKeyView {
            status: match (k.retired_at, k.publish_until) {
                (None, _) => "active",
                (Some(_), Some(until)) if now < until => "retired_published",
                _ => "retired",
            }
            .into(),
            kid: k.kid,
            alg: k.alg,
            created_at: k.created_at,
            retired_at: k.retired_at,
            publish_until: k.publish_until,
        })
        .collect();
    Ok(SigningKeyList { items })
}

/// Replaces the active signing key (admin). The old one stays in the JWKS until the last
/// token it may have signed has expired.
pub async fn rotate_signing_key(
    state: &AppState,
    who: &Principal,
    input: RotateSigningKey,
) -> ApiResult<SigningKeyList> {
    who.require(&[Role::Admin])?;
    let alg = match input.alg.as_deref() {
        None => state.keyring.active().alg(),
        Some(text) => text.parse().map_err(|_| {
            ApiError::validation(custos_core::validate::ValidationErrors::single(
                "alg",
                "must be ES256, EdDSA or RS256",
            ))
        })?,
    };
    // A retired key verifies every token it may have signed: the longest access token
    // lifetime, plus the clock skew verifiers allow.
    let overlap = i64::from(state.limits.issuance.max_ttl_seconds) + 60;
    state
        .keyring
        .rotate(state.store.as_ref(), &state.keys, alg, overlap, state.now())
        .await
        .map_err(|e| match e {
            crate::keyring::KeyringError::Store(e) => ApiError::from(e),
            other => {
                tracing::error!(error = %other, "signing key rotation failed");
                ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        })?;
    list_signing_keys(state, who).await
}

pub async fn list_credentials(
    state: &AppState,
    who: &Principal,
    nhi_id: Option<&str>,
    page: Page,
) -> ApiResult<CredentialList> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let limit = page.limit;
    let found = state
        .store
        .list_credentials(
            nhi_id,
            &Page {
                after: page.after,
                limit: limit + 1,
            },
        )
        .await?;
    let more = found.len() > limit as usize;
    let now = state.now();
    let items: Vec<_> = found
        .into_iter()
        .take(limit as usize)
        .map(|c| credential_view(c, now))
        .collect();
    let next_cursor = if more {
        items.last().map(|c| encode_cursor(&c.id))
    } else {
        None
    };
    Ok(CredentialList { items, next_cursor })
}

pub async fn revoke_credential(
    state: &AppState,
    who: &Principal,
    id: &str,
    reason: Option<String>,
) -> ApiResult<CredentialView> {
    who.require(&[Role::Admin, Role::Reviewer])?;
    let credential = state
        .store
        .get_credential(id)
        .await?
        .ok_or_else(|| ApiError::not_found("credential"))?;
    let nhi = visible_nhi(state, who, &credential.nhi_id)
        .await
        .map_err(|_| ApiError::not_found("credential"))?;
    who.require_admin_or_reviewer_of(&nhi.owner.team_id)?;
    let now = state.now();
    let mut event = state
        .event(
            EventKind::CredentialRevoked,
            who.actor(),
            format!("nhi:{}", nhi.id),
        )
        .with("credential", &credential.id)
        .with("fingerprint", &credential.fingerprint);
    if let Some(reason) = &reason {
        event = event.with("reason", reason);
    }
    state
        .store
        .revoke_credentials(Revocation::Credential(id), now, &event)
        .await?;
    let credential = state
        .store
        .get_credential(id)
        .await?
        .ok_or_else(|| ApiError::not_found("credential"))?;
    Ok(credential_view(credential, now))
}

// ---- events ----

pub async fn list_events(
    state: &AppState,
    who: &Principal,
    query: EventQuery,
) -> ApiResult<EventList> {
    who.require(&[Role::Admin, Role::Auditor])?;
    let limit = query.limit;
    let found = state
        .store
        .list_events(&EventQuery {
            limit: limit + 1,
            ..query
        })
        .await?;
    let more = found.len() > limit as usize;
    let items: Vec<_> = found
        .into_iter()
        .take(limit as usize)
        .map(|e| EventView {
            seq: e.seq,
            id: e.event.id,
            kind: e.event.kind.as_str().into(),
            actor: e.event.actor.to_string(),
            subject: e.event.subject,
            occurred_at: e.event.occurred_at,
            details: e.event.details,
        })
        .collect();
    let next_cursor = if more {
        items.last().map(|e| encode_cursor(&e.seq.to_string()))
    } else {
        None
    };
    Ok(EventList { items, next_cursor })
}
