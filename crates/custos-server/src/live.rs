//! The live state the decision point reads on every check: credentials, their delegation
//! ancestors, tasks and NHIs, held in memory and kept current by every write, so that a warm
//! check makes no database round trip and no signature check.
//!
//! Entries are loaded from the store on first use. Writes go through [`LiveState::after_write`]
//! (the store wrapper in `metrics.rs` calls it for every write that can change a decision): it
//! bumps a generation and drops what the write touched, under a gate that loaders also take to
//! insert what they read. A loader whose read began before a write finished sees the generation
//! moved and reads again, so a stale copy is never cached. Revocation is permanent and is also
//! remembered in a set that only grows: a revoked credential is refused from the moment
//! `revoke` returns, whatever copy of it a concurrent check holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use custos_core::decision::{LiveCredential, LiveNhi, LiveTask, LiveView, Presented};
use custos_core::guardrails::{Guardrails, NhiFacts};
use custos_core::{Credential, Nhi, Timestamp};
use custos_store::{Store, StoreError};
use dashmap::{DashMap, DashSet};

/// How many verified tokens are remembered; beyond it, expired ones are dropped first and then
/// everything (a cold check costs one signature verification, nothing worse).
const MAX_VERIFIED: usize = 200_000;
/// How often a loader retries when writes keep moving the generation under it.
const MAX_LOAD_ATTEMPTS: usize = 16;

/// A token or static key whose proof has been checked once, remembered by its keyed hash.
#[derive(Clone, Debug)]
pub struct Verified {
    pub presented: Presented,
    /// When the proof stops counting: the token's expiry (static keys have none of their own).
    pub until: Option<Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the live state kept changing while it was being loaded")]
    Busy,
}

pub struct LiveState {
    credentials: DashMap<String, Arc<LiveCredential>>,
    nhis: DashMap<String, Arc<LiveNhi>>,
    tasks: DashMap<String, Arc<LiveTask>>,
    revoked: DashSet<String>,
    verified: DashMap<[u8; 32], Arc<Verified>>,
    /// Approval requests opened for an action a guardrail holds back, by (NHI, grant), so that
    /// an agent retrying the action is pointed at the same request instead of opening more.
    approvals: DashMap<(String, String), String>,
    generation: AtomicU64,
    /// Held by a write while it moves the generation and drops entries, and by a loader while
    /// it checks the generation and inserts.
    gate: Mutex<()>,
    /// The policy set in force, with the version it was compiled from (0: none kept yet).
    guardrails: RwLock<(i64, Arc<Guardrails>)>,
}

/// What a write changed, for [`LiveState::after_write`].
pub enum Change<'a> {
    Nhi(&'a str),
    Credential(&'a str),
    Task(&'a str),
    Revoked(&'a [String]),
}

impl Default for LiveState {
    fn default() -> Self {
        Self::new((0, Guardrails::empty()))
    }
}

impl LiveState {
    pub fn new((version, guardrails): (i64, Guardrails)) -> Self {
        Self {
            credentials: DashMap::new(),
            nhis: DashMap::new(),
            tasks: DashMap::new(),
            revoked: DashSet::new(),
            verified: DashMap::new(),
            approvals: DashMap::new(),
            generation: AtomicU64::new(0),
            gate: Mutex::new(()),
            guardrails: RwLock::new((version, Arc::new(guardrails))),
        }
    }

    pub fn guardrails(&self) -> Arc<Guardrails> {
        self.guardrails
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Installs the policy set compiled from `version`, unless a newer one is in force: a
    /// node that read the store before another write installed a newer version must not put
    /// the older one back. Every NHI's prepared principal belongs to the old set, so they are
    /// dropped with it.
    pub fn set_guardrails(&self, version: i64, guardrails: Guardrails) {
        let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        let mut current = self.guardrails.write().unwrap_or_else(|e| e.into_inner());
        if version <= current.0 && version != 0 {
            return;
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        *current = (version, Arc::new(guardrails));
        self.nhis.clear();
    }

    pub fn verified(&self, token_hash: &[u8; 32]) -> Option<Arc<Verified>> {
        self.verified.get(token_hash).map(|v| v.clone())
    }

    pub fn remember_verified(&self, token_hash: [u8; 32], verified: Arc<Verified>, now: Timestamp) {
        if self.verified.len() >= MAX_VERIFIED {
            self.verified
                .retain(|_, v| v.until.is_none_or(|until| now < until));
            if self.verified.len() >= MAX_VERIFIED {
                self.verified.clear();
            }
        }
        self.verified.insert(token_hash, verified);
    }

    /// Called by every write that can change a decision, after it committed.
    pub fn after_write(&self, change: Change<'_>) {
        let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        if let Change::Revoked(ids) = change {
            // Into the permanent set before anything else, so no check can miss it.
            for id in ids {
                self.revoked.insert(id.clone());
            }
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        match change {
            Change::Nhi(id) => {
                self.nhis.remove(id);
            }
            Change::Credential(id) => {
                self.credentials.remove(id);
            }
            Change::Task(id) => {
                self.tasks.remove(id);
            }
            Change::Revoked(ids) => {
                for id in ids {
                    self.credentials.remove(id);
                }
            }
        }
    }

    /// Forgets every credential, NHI and task held (not the revoked set, nor verified
    /// signatures): another node changed the store, and what it touched is read again.
    pub fn invalidate_all(&self) {
        let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.credentials.clear();
        self.nhis.clear();
        self.tasks.clear();
    }

    /// Reads the credential, its ancestors, their NHIs (those not held) and its task from the
    /// store into memory. Called when a decision missed something (see [`Self::noting_misses`]);
    /// a credential the store does not know stays unknown, and the decision refuses it.
    pub async fn hydrate(&self, store: &dyn Store, credential_id: &str) -> Result<(), LiveError> {
        for _ in 0..MAX_LOAD_ATTEMPTS {
            let generation = self.generation.load(Ordering::SeqCst);
            let chain = store.credential_chain(credential_id).await?;
            let mut nhis = Vec::new();
            for credential in &chain {
                if !self.nhis.contains_key(&credential.nhi_id)
                    && !nhis.iter().any(|n: &Nhi| n.id == credential.nhi_id)
                    && let Some(nhi) = store.get_nhi(&credential.nhi_id).await?
                {
                    nhis.push(nhi);
                }
            }
            let task = match chain.first().and_then(|c| c.task_id.as_deref()) {
                Some(id) if !self.tasks.contains_key(id) => store.get_task(id).await?,
                _ => None,
            };
            let guardrails = self.guardrails();
            let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
            if self.generation.load(Ordering::SeqCst) != generation {
                continue;
            }
            for credential in &chain {
                self.credentials
                    .entry(credential.id.clone())
                    .or_insert_with(|| Arc::new(live_credential(credential)));
            }
            for nhi in &nhis {
                self.nhis
                    .entry(nhi.id.clone())
                    .or_insert_with(|| Arc::new(live_nhi(nhi, &guardrails)));
            }
            if let Some(task) = task {
                self.tasks.entry(task.id.clone()).or_insert_with(|| {
                    Arc::new(LiveTask {
                        id: task.id.clone(),
                        nhi_id: task.nhi_id.clone(),
                        purpose: task.purpose.clone(),
                        state: task.state,
                        expires_at: task.expires_at,
                        approved: task.approval_id.is_some(),
                    })
                });
            }
            return Ok(());
        }
        Err(LiveError::Busy)
    }

    pub fn approval_for(&self, nhi: &str, grant: &str) -> Option<String> {
        self.approvals
            .get(&(nhi.to_owned(), grant.to_owned()))
            .map(|a| a.clone())
    }

    pub fn remember_approval(&self, nhi: &str, grant: &str, approval: &str) {
        self.approvals
            .insert((nhi.to_owned(), grant.to_owned()), approval.to_owned());
    }

    /// Whether the NHI held in memory under `id` is named `name`.
    pub fn nhi_is_named(&self, id: &str, name: &str) -> bool {
        self.nhis.get(id).is_some_and(|n| n.name == name)
    }

    /// A view of this state that remembers whether a decision asked for something it does not
    /// hold: the signal to read the store and decide again.
    pub fn noting_misses(&self) -> NotingMisses<'_> {
        NotingMisses {
            live: self,
            missed: std::cell::Cell::new(false),
        }
    }

    /// Forgets what can no longer change a decision: expired credentials and tokens, and tasks
    /// past their end. They are refused either way and would be read again if asked about.
    pub fn sweep(&self, now: Timestamp) {
        self.credentials
            .retain(|_, c| c.expires_at.is_none_or(|end| now < end));
        self.verified
            .retain(|_, v| v.until.is_none_or(|until| now < until));
        self.tasks
            .retain(|_, t| t.expires_at.is_none_or(|end| now < end));
    }
}

impl LiveView for LiveState {
    fn credential(&self, id: &str) -> Option<Arc<LiveCredential>> {
        self.credentials.get(id).map(|c| c.clone())
    }

    fn nhi(&self, id: &str) -> Option<Arc<LiveNhi>> {
        self.nhis.get(id).map(|n| n.clone())
    }

    fn task(&self, id: &str) -> Option<Arc<LiveTask>> {
        self.tasks.get(id).map(|t| t.clone())
    }

    fn is_revoked(&self, credential_id: &str) -> bool {
        self.revoked.contains(credential_id)
    }
}

/// See [`LiveState::noting_misses`].
pub struct NotingMisses<'a> {
    live: &'a LiveState,
    missed: std::cell::Cell<bool>,
}

impl NotingMisses<'_> {
    pub fn missed(&self) -> bool {
        self.missed.get()
    }

    fn note<T>(&self, found: Option<T>) -> Option<T> {
        if found.is_none() {
            self.missed.set(true);
        }
        found
    }
}

impl LiveView for NotingMisses<'_> {
    fn credential(&self, id: &str) -> Option<Arc<LiveCredential>> {
        self.note(self.live.credential(id))
    }

    fn nhi(&self, id: &str) -> Option<Arc<LiveNhi>> {
        self.note(self.live.nhi(id))
    }

    fn task(&self, id: &str) -> Option<Arc<LiveTask>> {
        self.note(self.live.task(id))
    }

    fn is_revoked(&self, credential_id: &str) -> bool {
        self.live.is_revoked(credential_id)
    }
}

fn live_credential(credential: &Credential) -> LiveCredential {
    LiveCredential {
        id: credential.id.clone(),
        nhi_id: credential.nhi_id.clone(),
        fingerprint: credential.fingerprint.clone(),
        expires_at: credential.expires_at,
        revoked: credential.revoked_at.is_some(),
        task_id: credential.task_id.clone(),
        parent_id: credential.parent_id.clone(),
    }
}

/// An NHI's `risk` tag as a number, 0 without one (or with one that is not a number).
pub fn risk_tag(nhi: &Nhi) -> i64 {
    nhi.tags
        .get("risk")
        .and_then(|r| r.parse::<i64>().ok())
        .unwrap_or(0)
}

fn live_nhi(nhi: &Nhi, guardrails: &Guardrails) -> LiveNhi {
    let risk = risk_tag(nhi);
    LiveNhi {
        id: nhi.id.clone(),
        name: nhi.name.clone(),
        status: nhi.status,
        scope_ceiling: nhi.scope_ceiling.clone(),
        principal: guardrails.principal(&NhiFacts {
            id: &nhi.id,
            name: &nhi.name,
            kind: nhi.kind.as_str(),
            platform: &nhi.platform,
            environment: &nhi.environment,
            status: nhi.status.as_str(),
            risk,
            owner_team: &nhi.owner.team_id,
        }),
    }
}
