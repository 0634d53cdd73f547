//! The pages: what each shows, read through the same use-case functions as the API, and the
//! forms that decide requests and suspend or resume NHIs.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, RawForm, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use custos_core::finding::{Finding, FindingState};
use custos_core::issuance::{Approval, ApprovalKind, ApprovalState, Decision, RiskLevel};
use custos_core::scope::Scope;
use custos_core::validate::ValidationErrors;
use custos_core::{NhiFilter, NhiStatus, Page, Role, Timestamp};
use custos_store::{ApprovalFilter, EventQuery};

use super::session::{Form, Session, checked_form};
use super::{UiError, render, see_other};
use crate::api::{ApprovalView, CredentialView, EventView, NhiView};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::service::{self, AppState};
use crate::tasks;

type Params = Query<HashMap<String, String>>;

/// The most requests the inbox sorts and shows at once.
const INBOX_LIMIT: u32 = 500;
/// NHIs per inventory page.
const INVENTORY_PAGE: u32 = 50;
/// Rows in each list of an NHI's page.
const DETAIL_ROWS: u32 = 20;

/// What every signed-in page shows around its content.
pub struct Nav {
    pub operator: String,
    pub roles: String,
    pub csrf: String,
    pub section: &'static str,
}

impl Nav {
    fn new(session: &Session, section: &'static str) -> Self {
        let op = session.operator();
        Nav {
            operator: op.name.clone(),
            roles: op
                .roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            csrf: session.csrf_token.clone(),
            section,
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub csrf: String,
    pub next: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub status: u16,
    pub code: &'static str,
    pub detail: String,
}

/// "3 min ago", "in 2 h": how far a time is from now, roughly, for reading at a glance.
fn relative(now: Timestamp, at: Timestamp) -> String {
    let seconds = (at.unix_millis() - now.unix_millis()) / 1000;
    let magnitude = seconds.unsigned_abs();
    if magnitude < 5 {
        return "just now".to_owned();
    }
    let amount = match magnitude {
        0..60 => format!("{magnitude} s"),
        60..3600 => format!("{} min", magnitude / 60),
        3600..86400 => format!("{} h", magnitude / 3600),
        _ => format!("{} d", magnitude / 86400),
    };
    if seconds < 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

// ---- the inbox ----

pub struct InboxRow {
    pub id: String,
    pub risk: String,
    pub kind: String,
    pub state: String,
    pub nhi_name: String,
    pub purpose: String,
    pub excess: String,
    pub asked: String,
    pub deadline: String,
    pub quorum: String,
}

pub struct Choice {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

fn choices(options: &[(&'static str, &'static str)], current: &str) -> Vec<Choice> {
    options
        .iter()
        .map(|(value, label)| Choice {
            value,
            label,
            selected: *value == current,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "inbox.html")]
pub struct InboxPage {
    pub nav: Nav,
    pub rows: Vec<InboxRow>,
    pub states: Vec<Choice>,
    pub kinds: Vec<Choice>,
    pub risks: Vec<Choice>,
    pub truncated: bool,
    /// This page's own address, which htmx polls to keep the list current.
    pub here: String,
}

/// One filter value of a query: empty means "any", anything else must be one of `parse`'s.
fn filter_value<T>(
    params: &HashMap<String, String>,
    name: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    match params.get(name).map(String::as_str) {
        None | Some("") | Some("any") => Ok(None),
        Some(text) => parse(text).map(Some).ok_or_else(|| {
            let mut errors = ValidationErrors::default();
            errors.push(name, format!("{text:?} is not a known value"));
            ApiError::validation(errors)
        }),
    }
}

/// `GET /ui/approvals`: the requests the operator may see, riskiest first, then longest
/// waiting first; pending ones unless another state is asked for.
pub async fn inbox(
    State(state): State<AppState>,
    session: Session,
    Query(params): Params,
) -> Result<Response, UiError> {
    let state_filter = match params.get("state").map(String::as_str) {
        None => Some(ApprovalState::Pending),
        Some(_) => filter_value(&params, "state", ApprovalState::parse)?,
    };
    let kind = filter_value(&params, "kind", ApprovalKind::parse)?;
    let risk = filter_value(&params, "risk", RiskLevel::parse)?;
    let found = tasks::list_approvals(
        &state,
        &session.principal,
        ApprovalFilter {
            state: state_filter,
            kind,
            risk,
            ..Default::default()
        },
        Page {
            after: None,
            limit: INBOX_LIMIT,
        },
    )
    .await?;
    let truncated = found.next_cursor.is_some();
    let mut items = found.items;
    items.sort_by(|a, b| {
        let level = |v: &ApprovalView| RiskLevel::parse(&v.risk);
        level(b)
            .cmp(&level(a))
            .then(a.created_at.cmp(&b.created_at))
    });
    let now = state.now();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut rows = Vec::with_capacity(items.len());
    for item in items {
        if !names.contains_key(&item.nhi_id) {
            let name = state
                .store
                .get_nhi(&item.nhi_id)
                .await?
                .map(|n| n.name)
                .unwrap_or_else(|| item.nhi_id.clone());
            names.insert(item.nhi_id.clone(), name);
        }
        rows.push(InboxRow {
            nhi_name: names[&item.nhi_id].clone(),
            quorum: if item.required_approvals > 1 {
                format!("{}/{}", item.approvals.len(), item.required_approvals)
            } else {
                String::new()
            },
            asked: relative(now, item.created_at),
            deadline: relative(now, item.expires_at),
            excess: item.excess.join(" "),
            id: item.id,
            risk: item.risk,
            kind: item.kind,
            state: item.state,
            purpose: item.purpose,
        });
    }
    let current = |name: &str, default: &str| {
        params
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    };
    let here = format!(
        "/ui/approvals?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("state", &current("state", "pending"))
            .append_pair("kind", &current("kind", "any"))
            .append_pair("risk", &current("risk", "any"))
            .finish()
    );
    let page = InboxPage {
        here,
        nav: Nav::new(&session, "inbox"),
        rows,
        states: choices(
            &[
                ("pending", "pending"),
                ("approved", "approved"),
                ("denied", "denied"),
                ("expired", "expired"),
                ("any", "any state"),
            ],
            &current("state", "pending"),
        ),
        kinds: choices(
            &[
                ("any", "any kind"),
                ("scope_escalation", "scope escalation"),
                ("policy_approval", "policy approval"),
            ],
            &current("kind", "any"),
        ),
        risks: choices(
            &[
                ("any", "any risk"),
                ("high", "high"),
                ("medium", "medium"),
                ("low", "low"),
            ],
            &current("risk", "any"),
        ),
        truncated,
    };
    Ok(render(StatusCode::OK, &page))
}

// ---- one request ----

#[derive(Template)]
#[template(path = "approval.html")]
pub struct ApprovalPage {
    pub nav: Nav,
    pub a: ApprovalView,
    pub asked: String,
    pub deadline: String,
    pub pending: bool,
    /// Whether this operator may decide it (admin, or reviewer of the owner team).
    pub may_decide: bool,
    /// The requested scope, one grant per line: the narrowing form starts from it.
    pub scope_lines: String,
    pub error: Option<ErrorNote>,
    pub done: Option<String>,
}

pub struct ErrorNote {
    pub code: &'static str,
    pub detail: String,
}

async fn approval_page(
    state: &AppState,
    session: &Session,
    id: &str,
    done: Option<String>,
    error: Option<ApiError>,
) -> Result<Response, UiError> {
    let view = tasks::get_approval(state, &session.principal, id).await?;
    let now = state.now();
    let team = view
        .context
        .as_ref()
        .map(|c| c.nhi.owner_team.clone())
        .unwrap_or_default();
    let may_decide =
        tasks::may_decide(&session.principal, &team, view.escalated_to.as_deref()).is_ok();
    let status = error.as_ref().map_or(StatusCode::OK, |e| e.status);
    let page = ApprovalPage {
        nav: Nav::new(session, "inbox"),
        asked: relative(now, view.created_at),
        deadline: relative(now, view.expires_at),
        pending: view.state == ApprovalState::Pending.as_str(),
        may_decide,
        scope_lines: view.requested_scope.to_strings().join("\n"),
        error: error.map(|e| ErrorNote {
            code: e.code,
            detail: e.detail,
        }),
        done,
        a: view,
    };
    Ok(render(status, &page))
}

/// `GET /ui/approvals/{id}`: the request with its whole context and the decision forms.
pub async fn approval(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Response, UiError> {
    let done = params
        .get("done")
        .filter(|d| matches!(d.as_str(), "approved" | "denied" | "counted"))
        .cloned();
    approval_page(&state, &session, &id, done, None).await
}

/// Runs a decision from a form; a refusal is shown on the request's page with its code.
async fn decide_from_form(
    state: &AppState,
    session: &Session,
    id: &str,
    decision: Result<Decision, ApiError>,
) -> Result<Response, UiError> {
    let outcome = match decision {
        Ok(decision) => tasks::decide(state, &session.principal, id, decision).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(view) => {
            let done = match view.state.as_str() {
                "approved" => "approved",
                "denied" => "denied",
                _ => "counted",
            };
            Ok(see_other(&format!("/ui/approvals/{id}?done={done}")))
        }
        // A request the operator cannot see stays a plain 404 page.
        Err(error) if error.status == StatusCode::NOT_FOUND => Err(error.into()),
        Err(error) => approval_page(state, session, id, None, Some(error)).await,
    }
}

/// The approve form: a reason, and optionally a narrower scope (one grant per line) or a
/// shorter lifetime. Left as asked, the scope and lifetime are those requested.
fn approval_from_form(form: &Form, requested: &Approval) -> Result<Decision, ApiError> {
    let mut errors = ValidationErrors::default();
    let lines: Vec<&str> = form
        .get("scope")
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let asked = requested.requested_scope.to_strings();
    let scope = if lines.is_empty() {
        errors.push("scope", "name at least one grant, or deny the request");
        None
    } else if lines.len() == asked.len() && lines.iter().all(|l| asked.iter().any(|a| a == l)) {
        None
    } else {
        match Scope::parse(&lines) {
            Ok(scope) => Some(scope),
            Err(error) => {
                errors.push("scope", error.to_string());
                None
            }
        }
    };
    let ttl_seconds = match form.get("ttl_seconds").map(str::trim) {
        None | Some("") => None,
        Some(text) => match text.parse::<u32>() {
            Ok(ttl) if ttl == requested.requested_ttl_seconds => None,
            Ok(ttl) => Some(ttl),
            Err(_) => {
                errors.push("ttl_seconds", "must be a whole number of seconds");
                None
            }
        },
    };
    errors.into_result()?;
    tasks::approve_decision(crate::api::ApproveRequest {
        reason: form.get("reason").unwrap_or("").to_owned(),
        scope,
        ttl_seconds,
    })
}

pub async fn approve(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Result<Response, UiError> {
    let form = checked_form(&headers, &body, &session.csrf_token)?;
    // Only what was asked, to tell an unchanged form from a narrowing; not the whole context.
    let (requested, _) = tasks::visible_approval(&state, &session.principal, &id).await?;
    let decision = approval_from_form(&form, &requested);
    decide_from_form(&state, &session, &id, decision).await
}

pub async fn deny(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Result<Response, UiError> {
    let form = checked_form(&headers, &body, &session.csrf_token)?;
    let decision = tasks::deny_decision(crate::api::DenyRequest {
        reason: form.get("reason").unwrap_or("").to_owned(),
    });
    decide_from_form(&state, &session, &id, decision).await
}

// ---- the inventory ----

pub struct NhiRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub environment: String,
    pub status: String,
    pub team: String,
    pub last_used: String,
}

#[derive(Template)]
#[template(path = "inventory.html")]
pub struct InventoryPage {
    pub nav: Nav,
    pub rows: Vec<NhiRow>,
    pub q: String,
    pub statuses: Vec<Choice>,
    /// The query string of the next page, if there is one.
    pub next: Option<String>,
}

/// `GET /ui/nhis`: the NHIs the operator may see, by name, filtered by name and status.
pub async fn inventory(
    State(state): State<AppState>,
    session: Session,
    Query(params): Params,
) -> Result<Response, UiError> {
    let q = params
        .get("q")
        .map(|q| q.trim().to_owned())
        .unwrap_or_default();
    let status = filter_value(&params, "status", NhiStatus::parse)?;
    let after = match params.get("after").filter(|a| !a.is_empty()) {
        Some(cursor) => Some(service::decode_cursor(cursor)?),
        None => None,
    };
    let found = service::list_nhis(
        &state,
        &session.principal,
        NhiFilter {
            status,
            name_contains: (!q.is_empty()).then(|| q.clone()),
            ..Default::default()
        },
        Page {
            after,
            limit: INVENTORY_PAGE,
        },
    )
    .await?;
    let now = state.now();
    let rows = found
        .items
        .into_iter()
        .map(|n| NhiRow {
            last_used: n
                .last_used_at
                .map_or_else(|| "never".to_owned(), |t| relative(now, t)),
            team: n.owner.team.clone(),
            kind: n.kind.as_str().to_owned(),
            status: n.status.as_str().to_owned(),
            id: n.id,
            name: n.name,
            environment: n.environment,
        })
        .collect();
    let status_text = params.get("status").cloned().unwrap_or_default();
    let next = found.next_cursor.map(|cursor| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("q", &q)
            .append_pair("status", &status_text)
            .append_pair("after", &cursor)
            .finish()
    });
    let mut statuses = vec![Choice {
        value: "any",
        label: "any status",
        selected: status.is_none(),
    }];
    statuses.extend(NhiStatus::ALL.iter().map(|s| Choice {
        value: s.as_str(),
        label: s.as_str(),
        selected: Some(*s) == status,
    }));
    let page = InventoryPage {
        nav: Nav::new(&session, "inventory"),
        rows,
        q,
        statuses,
        next,
    };
    Ok(render(StatusCode::OK, &page))
}

pub struct TaskRow {
    pub purpose: String,
    pub scope: String,
    pub state: String,
    pub created: String,
    pub approval_id: Option<String>,
}

#[derive(Template)]
#[template(path = "nhi.html")]
pub struct NhiPage {
    pub nav: Nav,
    pub nhi: NhiView,
    pub team: String,
    pub created: String,
    pub last_used: String,
    /// `None`: this operator's role may not list credentials (reviewers).
    pub credentials: Option<Vec<CredentialView>>,
    pub tasks: Vec<TaskRow>,
    pub approvals: Vec<ApprovalView>,
    /// Recent access decisions and admin changes; `None` for reviewers (no trail access).
    pub events: Option<Vec<EventView>>,
    pub may_suspend: bool,
    pub may_resume: bool,
    pub error: Option<ErrorNote>,
}

async fn nhi_page(
    state: &AppState,
    session: &Session,
    id: &str,
    error: Option<ApiError>,
) -> Result<Response, UiError> {
    let who = &session.principal;
    let nhi = service::visible_nhi(state, who, id).await?;
    let now = state.now();
    let op = session.operator();
    let sees_trail = op.has_role(Role::Admin) || op.has_role(Role::Auditor);
    let credentials = if sees_trail {
        let list = service::list_credentials(
            state,
            who,
            Some(&nhi.id),
            Page {
                after: None,
                limit: DETAIL_ROWS,
            },
        )
        .await?;
        Some(list.items)
    } else {
        None
    };
    let tasks = state
        .store
        .list_tasks(&nhi.id, DETAIL_ROWS)
        .await?
        .into_iter()
        .map(|t| TaskRow {
            state: t.state_at(now).as_str().to_owned(),
            created: relative(now, t.created_at),
            scope: t.scope.to_strings().join(" "),
            purpose: t.purpose,
            approval_id: t.approval_id,
        })
        .collect();
    let approvals = tasks::list_approvals(
        state,
        who,
        ApprovalFilter {
            nhi_id: Some(nhi.id.clone()),
            ..Default::default()
        },
        Page {
            after: None,
            limit: DETAIL_ROWS,
        },
    )
    .await?
    .items;
    let events = if sees_trail {
        let list = service::list_events(
            state,
            who,
            EventQuery {
                nhi: Some(nhi.id.clone()),
                limit: DETAIL_ROWS,
                newest_first: true,
                ..Default::default()
            },
        )
        .await?;
        Some(list.items)
    } else {
        None
    };
    let may_suspend = nhi.status == NhiStatus::Active
        && who.require_admin_or_reviewer_of(&nhi.owner.team_id).is_ok();
    let may_resume = nhi.status == NhiStatus::Suspended && op.has_role(Role::Admin);
    let view = service::view_nhi(state, nhi).await?;
    let status = error.as_ref().map_or(StatusCode::OK, |e| e.status);
    let page = NhiPage {
        nav: Nav::new(session, "inventory"),
        team: view.owner.team.clone(),
        created: relative(now, view.created_at),
        last_used: view
            .last_used_at
            .map_or_else(|| "never".to_owned(), |t| relative(now, t)),
        nhi: view,
        credentials,
        tasks,
        approvals,
        events,
        may_suspend,
        may_resume,
        error: error.map(|e| ErrorNote {
            code: e.code,
            detail: e.detail,
        }),
    };
    Ok(render(status, &page))
}

/// `GET /ui/nhis/{id}`: the NHI, its credentials, tasks, requests and recent trail.
pub async fn nhi(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    nhi_page(&state, &session, &id, None).await
}

fn optional_reason(form: &Form) -> Option<String> {
    form.get("reason")
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
}

async fn change_status(
    state: AppState,
    session: Session,
    id: String,
    headers: HeaderMap,
    body: &[u8],
    suspend: bool,
) -> Result<Response, UiError> {
    let form = checked_form(&headers, body, &session.csrf_token)?;
    let reason = optional_reason(&form);
    let who: &Principal = &session.principal;
    let outcome = if suspend {
        service::suspend_nhi(&state, who, &id, reason).await
    } else {
        service::resume_nhi(&state, who, &id, reason).await
    };
    match outcome {
        Ok(_) => Ok(see_other(&format!("/ui/nhis/{id}"))),
        Err(error) if error.status == StatusCode::NOT_FOUND => Err(error.into()),
        Err(error) => nhi_page(&state, &session, &id, Some(error)).await,
    }
}

pub async fn suspend(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Result<Response, UiError> {
    change_status(state, session, id, headers, &body, true).await
}

pub async fn resume(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Result<Response, UiError> {
    change_status(state, session, id, headers, &body, false).await
}

// ---- findings ----

pub struct FindingRow {
    pub id: String,
    pub severity: String,
    pub kind: String,
    pub nhi_id: Option<String>,
    pub nhi_name: String,
    pub summary: String,
    pub occurrences: i64,
    pub last_seen: String,
    pub state: String,
}

#[derive(Template)]
#[template(path = "findings.html")]
pub struct FindingsPage {
    pub nav: Nav,
    pub rows: Vec<FindingRow>,
    pub states: Vec<Choice>,
    pub kind: String,
    pub next: Option<String>,
}

/// An NHI's name for a page, or its id if the operator may not see it.
async fn nhi_name(state: &AppState, who: &Principal, id: &str) -> String {
    service::visible_nhi(state, who, id)
        .await
        .map_or_else(|_| id.to_owned(), |n| n.name)
}

/// `GET /ui/findings`: the findings about NHIs the operator may see, newest first; the
/// unresolved ones unless another state is chosen.
pub async fn findings(
    State(state): State<AppState>,
    session: Session,
    Query(params): Params,
) -> Result<Response, UiError> {
    let chosen = params.get("state").map_or("unresolved", String::as_str);
    let finding_state = match chosen {
        "unresolved" => None,
        _ => filter_value(&params, "state", FindingState::parse)?,
    };
    let kind = params
        .get("kind")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    let after = match params.get("after").filter(|a| !a.is_empty()) {
        Some(cursor) => Some(service::decode_cursor(cursor)?),
        None => None,
    };
    let found = crate::behaviour::list_findings(
        &state,
        &session.principal,
        crate::behaviour::FindingQuery {
            kind: (!kind.is_empty()).then(|| kind.clone()),
            nhi_id: None,
            state: finding_state,
            unresolved: chosen == "unresolved",
        },
        Page {
            after,
            limit: INVENTORY_PAGE,
        },
    )
    .await?;
    let now = state.now();
    let mut rows = Vec::with_capacity(found.items.len());
    for f in found.items {
        let nhi_name = match &f.nhi_id {
            Some(id) => nhi_name(&state, &session.principal, id).await,
            None => String::new(),
        };
        rows.push(FindingRow {
            severity: f.severity.as_str().to_owned(),
            state: f.state.as_str().to_owned(),
            last_seen: relative(now, f.last_seen),
            id: f.id,
            kind: f.kind,
            nhi_id: f.nhi_id,
            nhi_name,
            summary: f.summary,
            occurrences: f.occurrences,
        });
    }
    let next = found.next_cursor.map(|cursor| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("state", chosen)
            .append_pair("kind", &kind)
            .append_pair("after", &cursor)
            .finish()
    });
    let mut states = vec![
        Choice {
            value: "unresolved",
            label: "unresolved",
            selected: chosen == "unresolved",
        },
        Choice {
            value: "any",
            label: "any state",
            selected: chosen == "any",
        },
    ];
    states.extend(FindingState::ALL.iter().map(|s| Choice {
        value: s.as_str(),
        label: s.as_str(),
        selected: Some(*s) == finding_state,
    }));
    let page = FindingsPage {
        nav: Nav::new(&session, "findings"),
        rows,
        states,
        kind,
        next,
    };
    Ok(render(StatusCode::OK, &page))
}

pub struct ActionChoice {
    pub value: &'static str,
    pub label: &'static str,
}

#[derive(Template)]
#[template(path = "finding.html")]
pub struct FindingPage {
    pub nav: Nav,
    pub finding: Finding,
    pub nhi_name: String,
    pub last_seen: String,
    /// The evidence as indented JSON.
    pub evidence: String,
    pub may_resolve: bool,
    pub actions: Vec<ActionChoice>,
    pub error: Option<ApiError>,
}

/// What may be done with an unresolved finding: acknowledge it (only while it is open),
/// dismiss it, or accept it as the new normal.
fn finding_actions(finding: &Finding) -> Vec<ActionChoice> {
    let mut actions = Vec::new();
    if finding.state == FindingState::Open {
        actions.push(ActionChoice {
            value: "acknowledge",
            label: "Acknowledge: looking into it",
        });
    }
    actions.push(ActionChoice {
        value: "dismiss",
        label: "Dismiss: not a problem",
    });
    actions.push(ActionChoice {
        value: "accept",
        label: "Accept: the new normal",
    });
    actions
}

async fn finding_page(
    state: &AppState,
    session: &Session,
    id: &str,
    error: Option<ApiError>,
) -> Result<Response, UiError> {
    let who = &session.principal;
    let finding = crate::behaviour::get_finding(state, who, id).await?;
    let nhi_name = match &finding.nhi_id {
        Some(nhi) => nhi_name(state, who, nhi).await,
        None => String::new(),
    };
    let operator = session.operator();
    let may_resolve = !finding.state.is_resolved()
        && (operator.has_role(Role::Admin)
            || (operator.has_role(Role::Reviewer) && finding.nhi_id.is_some()));
    let status = error.as_ref().map_or(StatusCode::OK, |e| e.status);
    let page = FindingPage {
        nav: Nav::new(session, "findings"),
        last_seen: relative(state.now(), finding.last_seen),
        evidence: serde_json::to_string_pretty(&finding.evidence).unwrap_or_default(),
        actions: finding_actions(&finding),
        may_resolve,
        nhi_name,
        finding,
        error,
    };
    Ok(render(status, &page))
}

/// `GET /ui/findings/{id}`: one finding, its evidence, and what the operator may do with it.
pub async fn finding(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    finding_page(&state, &session, &id, None).await
}

/// `POST /ui/findings/{id}/{acknowledge|dismiss|accept}`, with a reason: the same use case as
/// the API's, so the same rights and the same stable codes.
pub async fn resolve_finding(
    State(state): State<AppState>,
    session: Session,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Result<Response, UiError> {
    let form = checked_form(&headers, &body, &session.csrf_token)?;
    let to = match action.as_str() {
        "acknowledge" => FindingState::Acknowledged,
        "dismiss" => FindingState::Dismissed,
        "accept" => FindingState::Accepted,
        _ => return Err(ApiError::not_found("page").into()),
    };
    let input = crate::api::ResolveFinding {
        reason: optional_reason(&form),
    };
    match crate::behaviour::resolve_finding(&state, &session.principal, &id, to, input).await {
        Ok(_) => Ok(see_other(&format!("/ui/findings/{id}"))),
        Err(error) if error.status == StatusCode::NOT_FOUND => Err(error.into()),
        Err(error) => finding_page(&state, &session, &id, Some(error)).await,
    }
}
