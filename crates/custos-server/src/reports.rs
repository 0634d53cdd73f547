//! Risk and posture reports, and an NHI's blast radius: the use cases behind
//! `GET /v1/reports/risk`, `GET /v1/nhis/{id}/risk`, `GET /v1/nhis/{id}/blast-radius` and
//! `GET /v1/reports/posture`.
//!
//! The reports read the inventory a page at a time ([`PAGE`] NHIs with their credentials and
//! findings aggregated by the store in three grouped queries), so a report over a million NHIs
//! holds one page and the results (the top N, the capped lists per category), never the
//! inventory. Who sees what follows the inventory: admins and auditors every NHI, reviewers
//! their teams' only.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use custos_core::discovery::posture::{self, Hit, Tallies};
use custos_core::discovery::risk::{self, NhiFacts, OwnerStatus, RiskScore, RiskSettings};
use custos_core::finding::FindingFilter;
use custos_core::guardrails::Catalogue;
use custos_core::issuance::TaskState;
use custos_core::{Credential, Grant, Nhi, NhiFilter, NhiStatus, Page, Timestamp};
use futures_util::{Stream, StreamExt, stream};
use serde::Serialize;

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::service::{AppState, visible_nhi};

/// NHIs read per store round trip.
const PAGE: u32 = 500;
/// The most NHIs the risk report ranks in one answer.
pub const MAX_RISK_LIMIT: u32 = 1000;
/// NHIs listed per posture category in JSON and HTML (the counts are always complete; CSV
/// lists every row).
pub const POSTURE_LIST_CAP: usize = 100;
/// The most credentials a blast radius lists, of the NHI's own and of its descendants each.
const BLAST_LIMIT: u32 = 1000;

/// What the factors and rules read besides the NHI: the server's lifecycle settings, the
/// sensitive services of the resource catalogue, and who is left to own each team's NHIs.
pub struct Context {
    pub settings: RiskSettings,
    /// Team id → the team's name, for teams whose members have all been revoked.
    gone_teams: HashMap<String, String>,
    /// Lowercase names of revoked operators with no active namesake.
    removed_names: HashSet<String>,
}

impl Context {
    pub async fn load(state: &AppState) -> ApiResult<Self> {
        let policy = &state.lifecycle.policy;
        // A service is sensitive when the admin's resource catalogue tags any of its
        // resources: the same tags that raise a request's risk.
        let sensitive_services = match state.store.latest_policies().await? {
            Some(version) => serde_json::from_str::<Catalogue>(&version.catalogue)
                .map(|c| {
                    c.services
                        .into_iter()
                        .filter(|s| s.resources.iter().any(|r| !r.sensitivity.is_empty()))
                        .map(|s| s.name)
                        .collect()
                })
                .unwrap_or_default(),
            None => Vec::new(),
        };
        // The orphan job's rule: a team that had members and has no active one left is gone;
        // a contact naming a revoked operator and no active one is gone.
        let teams = state.store.list_teams().await?;
        let operators = state.store.list_operators(None).await?;
        let members = |active: bool| -> HashSet<&str> {
            operators
                .iter()
                .filter(|o| !active || o.is_active())
                .flat_map(|o| o.teams.iter().map(String::as_str))
                .collect()
        };
        let (ever, now) = (members(false), members(true));
        let gone_teams = teams
            .iter()
            .filter(|t| ever.contains(t.id.as_str()) && !now.contains(t.id.as_str()))
            .map(|t| (t.id.clone(), t.name.clone()))
            .collect();
        let active: HashSet<String> = operators
            .iter()
            .filter(|o| o.is_active())
            .map(|o| o.name.to_lowercase())
            .collect();
        let removed_names = operators
            .iter()
            .filter(|o| !o.is_active())
            .map(|o| o.name.to_lowercase())
            .filter(|n| !active.contains(n))
            .collect();
        Ok(Self {
            settings: RiskSettings {
                rotate_keys_after_days: policy.rotate_keys_after_days,
                idle_days: policy.idle_days,
                sensitive_services,
            },
            gone_teams,
            removed_names,
        })
    }

    pub fn owner(&self, nhi: &Nhi) -> OwnerStatus {
        if let Some(team) = self.gone_teams.get(&nhi.owner.team_id) {
            OwnerStatus::Gone(format!("its owner team {team} has no active member left"))
        } else if let Some(contact) = nhi
            .owner
            .contact
            .as_ref()
            .filter(|c| self.removed_names.contains(&c.to_lowercase()))
        {
            OwnerStatus::Gone(format!("its owner contact {contact} is a revoked operator"))
        } else {
            OwnerStatus::Valid
        }
    }
}

/// Every visible NHI's facts, a page at a time, in id order. It owns what it reads from, so
/// that a streamed report can hold it across the writes of its body.
struct FactPages {
    state: AppState,
    filter: NhiFilter,
    now: Timestamp,
    after: Option<String>,
    done: bool,
}

impl FactPages {
    fn new(state: &AppState, who: &Principal, now: Timestamp) -> ApiResult<Self> {
        Ok(FactPages {
            state: state.clone(),
            filter: NhiFilter {
                owner_teams: who.visible_teams()?,
                ..Default::default()
            },
            now,
            after: None,
            done: false,
        })
    }

    /// The next page, or `None` after the last.
    async fn next(&mut self) -> ApiResult<Option<Vec<NhiFacts>>> {
        if self.done {
            return Ok(None);
        }
        let page = Page {
            after: self.after.take(),
            limit: PAGE,
        };
        let nhis = self.state.store.list_nhis(&self.filter, &page).await?;
        self.done = nhis.len() < PAGE as usize;
        self.after = nhis.last().map(|n| n.id.clone());
        Ok(Some(self.state.store.nhi_facts(nhis, self.now).await?))
    }
}

/// One NHI's risk, with what it is.
#[derive(Clone, Debug, Serialize)]
pub struct NhiRisk {
    pub nhi_id: String,
    pub name: String,
    pub kind: custos_core::NhiKind,
    pub environment: String,
    pub status: NhiStatus,
    pub owner_team: String,
    #[serde(flatten)]
    pub risk: RiskScore,
}

fn nhi_risk(facts: &NhiFacts, context: &Context, now: Timestamp) -> NhiRisk {
    let nhi = &facts.nhi;
    NhiRisk {
        nhi_id: nhi.id.clone(),
        name: nhi.name.clone(),
        kind: nhi.kind,
        environment: nhi.environment.clone(),
        status: nhi.status,
        owner_team: nhi.owner.team_id.clone(),
        risk: risk::score(facts, &context.owner(nhi), &context.settings, now),
    }
}

/// The riskiest NHIs.
#[derive(Clone, Debug, Serialize)]
pub struct RiskReport {
    pub generated_at: Timestamp,
    /// NHIs scored (every visible NHI that is not a tombstone).
    pub scored: u64,
    /// The top `limit` by score, highest first (ties by id).
    pub nhis: Vec<NhiRisk>,
}

/// `GET /v1/reports/risk`: the `limit` riskiest visible NHIs with their factors.
/// Decommissioned NHIs are left out: a tombstone can do nothing (one holding live credentials
/// is what posture's NHI1 reports).
pub async fn risk_report(state: &AppState, who: &Principal, limit: u32) -> ApiResult<RiskReport> {
    let now = state.now();
    let context = Context::load(state).await?;
    let limit = limit as usize;
    let mut scored = 0;
    let mut top: Vec<NhiRisk> = Vec::with_capacity(2 * limit + 1);
    let order = |a: &NhiRisk, b: &NhiRisk| {
        b.risk
            .score
            .cmp(&a.risk.score)
            .then_with(|| a.nhi_id.cmp(&b.nhi_id))
    };
    let mut pages = FactPages::new(state, who, now)?;
    while let Some(page) = pages.next().await? {
        for facts in page
            .iter()
            .filter(|f| f.nhi.status != NhiStatus::Decommissioned)
        {
            scored += 1;
            // Keep at most twice the limit, cut back to the limit when full: the top N
            // without holding every score.
            top.push(nhi_risk(facts, &context, now));
            if top.len() > 2 * limit {
                top.sort_by(order);
                top.truncate(limit);
            }
        }
    }
    top.sort_by(order);
    top.truncate(limit);
    Ok(RiskReport {
        generated_at: now,
        scored,
        nhis: top,
    })
}

/// `GET /v1/nhis/{id}/risk`: one NHI's score and factors.
pub async fn risk_of(state: &AppState, who: &Principal, id: &str) -> ApiResult<NhiRisk> {
    let nhi = visible_nhi(state, who, id).await?;
    let now = state.now();
    let context = Context::load(state).await?;
    let facts = state.store.nhi_facts(vec![nhi], now).await?;
    let facts = facts
        .first()
        .ok_or_else(|| crate::error::ApiError::not_found("nhi"))?;
    Ok(nhi_risk(facts, &context, now))
}

/// An identity seen but not in the inventory (an unresolved `shadow_nhi` finding).
#[derive(Clone, Debug, Serialize)]
pub struct Unmanaged {
    pub finding_id: String,
    pub summary: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub evidence: serde_json::Value,
}

/// The unmanaged identities: counted in full, listed up to the cap.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UnmanagedSection {
    pub count: u64,
    pub identities: Vec<Unmanaged>,
    pub truncated: bool,
}

/// The posture report: the OWASP NHI Top 10 (2025) over the visible inventory.
#[derive(Clone, Debug, Serialize)]
pub struct PostureReport {
    pub generated_at: Timestamp,
    pub standard: &'static str,
    /// The settings the rules read.
    pub idle_days: u32,
    pub rotate_keys_after_days: u32,
    #[serde(flatten)]
    pub tallies: Tallies,
    pub unmanaged: UnmanagedSection,
}

/// `GET /v1/reports/posture`: classifies every visible NHI, listing at most `cap` per
/// category.
pub async fn posture(state: &AppState, who: &Principal, cap: usize) -> ApiResult<PostureReport> {
    let now = state.now();
    let context = Context::load(state).await?;
    let mut tallies = Tallies::new(cap);
    let mut pages = FactPages::new(state, who, now)?;
    while let Some(page) = pages.next().await? {
        for facts in &page {
            let hits = classify(facts, &context, now);
            tallies.add(&facts.nhi.id, &facts.nhi.name, &hits);
        }
    }
    let unmanaged = unmanaged(state, who, cap).await?;
    Ok(PostureReport {
        generated_at: now,
        standard: "OWASP Non-Human Identities Top 10 (2025)",
        idle_days: context.settings.idle_days,
        rotate_keys_after_days: context.settings.rotate_keys_after_days,
        tallies,
        unmanaged,
    })
}

/// Unresolved `shadow_nhi` findings that name no NHI. They belong to no team, so a reviewer's
/// report has none (as in the findings listing).
async fn unmanaged(state: &AppState, who: &Principal, cap: usize) -> ApiResult<UnmanagedSection> {
    let filter = FindingFilter {
        kind: Some("shadow_nhi".into()),
        unresolved_only: true,
        team_ids: who.visible_teams()?,
        ..Default::default()
    };
    let mut section = UnmanagedSection::default();
    let mut after = None;
    loop {
        let page = state
            .store
            .list_findings(&filter, &Page { after, limit: PAGE })
            .await?;
        let full = page.len() == PAGE as usize;
        after = page.last().map(|f| f.id.clone());
        for finding in page.into_iter().filter(|f| f.nhi_id.is_none()) {
            section.count += 1;
            if section.identities.len() < cap {
                section.identities.push(Unmanaged {
                    finding_id: finding.id,
                    summary: finding.summary,
                    first_seen: finding.first_seen,
                    last_seen: finding.last_seen,
                    evidence: finding.evidence,
                });
            } else {
                section.truncated = true;
            }
        }
        if !full {
            return Ok(section);
        }
    }
}

/// A credential in a blast radius.
#[derive(Clone, Debug, Serialize)]
pub struct Reach {
    pub credential_id: String,
    pub kind: custos_core::CredentialKind,
    /// The NHI holding it.
    pub nhi_id: String,
    pub parent_id: Option<String>,
    pub depth: u32,
    pub expires_at: Option<Timestamp>,
    /// What it may do: its own scope (access tokens), or the holder's ceiling (static and
    /// client keys, which can ask for anything within it).
    pub scope: Vec<String>,
}

/// An NHI that depends on the one asked about, and how.
#[derive(Clone, Debug, Serialize)]
pub struct Dependent {
    pub nhi_id: String,
    pub name: Option<String>,
    /// `holds_delegated_credential`: it holds a live credential delegated from this NHI's.
    /// `delegated_to_it`: this NHI holds a live credential delegated from one of its.
    pub relation: &'static str,
    pub credential_ids: Vec<String>,
}

/// `GET /v1/nhis/{id}/blast-radius`.
#[derive(Clone, Debug, Serialize)]
pub struct BlastRadius {
    pub nhi_id: String,
    pub generated_at: Timestamp,
    /// Its live credentials.
    pub credentials: Vec<Reach>,
    /// Live credentials delegated from them, directly or further down, whoever holds them.
    pub descendants: Vec<Reach>,
    /// The deepest descendant's `depth` (delegations since a directly issued credential;
    /// 0: no descendant).
    pub max_depth: u32,
    /// The union of what all of those can reach, as grants (each at most once).
    pub reach: Vec<String>,
    /// NHIs other than this one holding the descendants.
    pub dependents: Vec<Dependent>,
    /// Its active tasks: work that stops if it is cut off.
    pub active_tasks: Vec<String>,
    /// NHIs whose credentials this NHI holds delegated ones of.
    pub delegators: Vec<Dependent>,
}

/// Everything an NHI's live credentials and their delegated descendants can reach, and who
/// depends on it: the NHIs holding descendants of its credentials (they lose access when it
/// is revoked), its own active tasks, and the NHIs that delegated to it (their access flows
/// through it). Expired and revoked credentials are left out: they reach nothing.
pub async fn blast_radius(state: &AppState, who: &Principal, id: &str) -> ApiResult<BlastRadius> {
    let nhi = visible_nhi(state, who, id).await?;
    let now = state.now();
    let own: Vec<Credential> = state
        .store
        .list_credentials(
            Some(&nhi.id),
            &Page {
                after: None,
                limit: BLAST_LIMIT,
            },
        )
        .await?
        .into_iter()
        .filter(|c| c.is_live(now))
        .collect();
    let roots: Vec<String> = own.iter().map(|c| c.id.clone()).collect();
    let descendants: Vec<Credential> = state
        .store
        .credential_descendants(&roots, BLAST_LIMIT)
        .await?
        .into_iter()
        // Its own tokens hang below the key they were obtained with: they are its
        // credentials, not descendants.
        .filter(|c| c.is_live(now) && !roots.contains(&c.id))
        .collect();

    // Holders' ceilings, for keys that carry no scope of their own; and names for dependents.
    let mut holders: BTreeMap<String, Option<Nhi>> = BTreeMap::new();
    holders.insert(nhi.id.clone(), Some(nhi.clone()));
    let mut parents = BTreeMap::new();
    for c in &own {
        if let Some(parent) = &c.parent_id
            && let Some(p) = state.store.get_credential(parent).await?
            && p.nhi_id != nhi.id
        {
            parents.insert(c.id.clone(), p.nhi_id);
        }
    }
    for holder in descendants
        .iter()
        .map(|c| &c.nhi_id)
        .chain(parents.values())
    {
        if !holders.contains_key(holder) {
            holders.insert(holder.clone(), state.store.get_nhi(holder).await?);
        }
    }
    let reach_of = |c: &Credential| -> Vec<String> {
        match &c.scope {
            Some(scope) => scope.to_strings(),
            None => holders
                .get(&c.nhi_id)
                .and_then(Option::as_ref)
                .map(|n| n.scope_ceiling.to_strings())
                .unwrap_or_default(),
        }
    };
    let to_reach = |c: &Credential| Reach {
        credential_id: c.id.clone(),
        kind: c.kind,
        nhi_id: c.nhi_id.clone(),
        parent_id: c.parent_id.clone(),
        depth: c.depth,
        expires_at: c.expires_at,
        scope: reach_of(c),
    };
    let grants: BTreeSet<Grant> = own
        .iter()
        .chain(&descendants)
        .flat_map(&reach_of)
        .filter_map(|g| Grant::parse(&g).ok())
        .collect();
    // The union reduced to its maximal grants: a grant inside another adds nothing.
    let reach = grants
        .iter()
        .filter(|g| !grants.iter().any(|o| o != *g && g.is_subset_of(o)))
        .map(ToString::to_string)
        .collect();
    let max_depth = descendants.iter().map(|c| c.depth).max().unwrap_or(0);

    let name_of = |id: &str| {
        holders
            .get(id)
            .and_then(Option::as_ref)
            .map(|n| n.name.clone())
    };
    let mut by_holder: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in descendants.iter().filter(|c| c.nhi_id != nhi.id) {
        by_holder
            .entry(c.nhi_id.clone())
            .or_default()
            .push(c.id.clone());
    }
    let dependents = by_holder
        .into_iter()
        .map(|(holder, credential_ids)| Dependent {
            name: name_of(&holder),
            nhi_id: holder,
            relation: "holds_delegated_credential",
            credential_ids,
        })
        .collect();
    let mut by_delegator: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (credential, delegator) in parents {
        by_delegator.entry(delegator).or_default().push(credential);
    }
    let delegators = by_delegator
        .into_iter()
        .map(|(delegator, credential_ids)| Dependent {
            name: name_of(&delegator),
            nhi_id: delegator,
            relation: "delegated_to_it",
            credential_ids,
        })
        .collect();
    let active_tasks = state
        .store
        .list_tasks(&nhi.id, BLAST_LIMIT)
        .await?
        .into_iter()
        .filter(|t| t.state_at(now) == TaskState::Active)
        .map(|t| t.id)
        .collect();
    Ok(BlastRadius {
        nhi_id: nhi.id.clone(),
        generated_at: now,
        credentials: own.iter().map(to_reach).collect(),
        descendants: descendants.iter().map(to_reach).collect(),
        max_depth,
        reach,
        dependents,
        active_tasks,
        delegators,
    })
}

/// One CSV field, quoted when it holds a comma, quote or line break (RFC 4180). A field a
/// spreadsheet would run as a formula gets a leading `'`.
pub fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// One CSV row of the posture report.
pub fn csv_row(out: &mut String, category: &str, nhi_id: &str, name: &str, evidence: &str) {
    out.push_str(&csv_field(category));
    out.push(',');
    out.push_str(&csv_field(nhi_id));
    out.push(',');
    out.push_str(&csv_field(name));
    out.push(',');
    out.push_str(&csv_field(evidence));
    out.push_str("\r\n");
}

fn classify(facts: &NhiFacts, context: &Context, now: Timestamp) -> Vec<Hit> {
    posture::classify(facts, &context.owner(&facts.nhi), &context.settings, now)
}

/// The posture report as CSV: a header, then a row per NHI and category it falls into (every
/// one, uncapped), then a row per unmanaged identity (category `unmanaged`). Streamed a page
/// of NHIs at a time, so a report over a million NHIs never sits whole in memory; what can be
/// refused (the caller's role, the settings) is refused before the first byte.
pub async fn posture_csv(
    state: &AppState,
    who: &Principal,
) -> ApiResult<impl Stream<Item = ApiResult<String>> + Send + 'static> {
    let now = state.now();
    let context = Context::load(state).await?;
    let pages = FactPages::new(state, who, now)?;
    let header = stream::once(async { Ok("category,nhi_id,name,evidence\r\n".to_owned()) });
    let nhis = stream::try_unfold((pages, context), move |(mut pages, context)| async move {
        let Some(page) = pages.next().await? else {
            return Ok(None);
        };
        let mut out = String::new();
        for facts in &page {
            for hit in classify(facts, &context, now) {
                let evidence = hit.evidence.join("; ");
                csv_row(
                    &mut out,
                    hit.category.id(),
                    &facts.nhi.id,
                    &facts.nhi.name,
                    &evidence,
                );
            }
        }
        Ok(Some((out, (pages, context))))
    });
    let (state, who) = (state.clone(), who.clone());
    let unmanaged = stream::once(async move {
        let mut out = String::new();
        for identity in unmanaged(&state, &who, usize::MAX).await?.identities {
            let evidence = format!("finding {}", identity.finding_id);
            csv_row(&mut out, "unmanaged", "", &identity.summary, &evidence);
        }
        Ok(out)
    });
    Ok(header.chain(nhis).chain(unmanaged))
}

/// The posture report as a standalone HTML page: inline CSS and an inline SVG bar chart, no
/// script and nothing fetched; everything from the inventory is escaped by askama.
pub fn posture_html(report: &PostureReport) -> ApiResult<String> {
    use askama::Template;
    let max = report
        .tallies
        .categories
        .iter()
        .map(|c| c.count)
        .chain([report.unmanaged.count])
        .max()
        .unwrap_or(0)
        .max(1);
    let bars = report
        .tallies
        .categories
        .iter()
        .enumerate()
        .map(|(i, c)| Bar {
            y: 10 + 28 * i as u64,
            text_y: 28 + 28 * i as u64,
            width: c.count * 600 / max,
            label: format!("{} {}", c.id, c.title),
            count: c.count,
        })
        .collect();
    PostureHtml {
        report,
        bars,
        chart_height: 10 + 28 * report.tallies.categories.len() as u64 + 10,
    }
    .render()
    .map_err(|e| {
        crate::error::ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot render the report: {e}"),
        )
    })
}

struct Bar {
    y: u64,
    text_y: u64,
    width: u64,
    label: String,
    count: u64,
}

#[derive(askama::Template)]
#[template(path = "posture.html")]
struct PostureHtml<'a> {
    report: &'a PostureReport,
    bars: Vec<Bar>,
    chart_height: u64,
}
