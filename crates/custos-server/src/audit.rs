//! The tamper-evident audit log over the event trail: the sealer that turns committed events
//! into Merkle leaves in order, the log's Ed25519 key and signed checkpoints, and proofs.
//!
//! Events are durable with the change they describe, in the same transaction. The sealer then
//! appends them, in the order it finds them committed (`seq` order, but for a late commit on
//! PostgreSQL), as leaves of an RFC 6962 tree and stores the hash of every
//! complete subtree, so that a proof reads O(log n) node hashes in one query. One sealer runs
//! at a time per store: a seal names the log size it extends and the store refuses it if
//! another node got there first.

use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use custos_core::checkpoint::{Checkpoint, NoteSigner};
use custos_core::merkle::{self, CompactRange, Hash, NodeId, NodeSource};
use custos_core::{Timestamp, audit};
use custos_store::{AuditHead, Store, StoreError, StoredCheckpoint};
use tokio::sync::Mutex;

use crate::secrets::Keys;

/// Events sealed per store transaction.
const SEAL_BATCH: u32 = 10_000;
/// How far below its last sealed `seq` a look-back searches for events committed late (on
/// PostgreSQL, a transaction that took a lower `seq` can commit after a higher one; the pool
/// bounds how many are in flight, far below this).
const LATE_COMMIT_WINDOW: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the audit log is inconsistent: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Proof(String),
}

pub struct AuditLog {
    signer: NoteSigner,
    origin: String,
    witness_dir: Option<PathBuf>,
    /// One sealing or checkpointing at a time on this node.
    sealing: Mutex<()>,
    /// Since when, and why, sealing has been failing; `None` while it works.
    failing: std::sync::Mutex<Option<(std::time::Instant, String)>>,
}

/// The log key's seed, sealed under the key-encryption key, in `meta`.
const LOG_KEY_META: &str = "audit_log_key";

impl AuditLog {
    /// Loads the log key and origin, creating them on first start (several nodes may race:
    /// the first stored wins for all). A log keeps the origin it was created with: its
    /// checkpoints name it, and a checkpoint kept by an auditor must verify for ever after.
    pub async fn open(
        store: &dyn Store,
        keys: &Keys,
        origin: String,
        witness_dir: Option<PathBuf>,
    ) -> Result<Self, AuditError> {
        let stored_origin = store.meta_init("audit_origin", &origin).await?;
        if stored_origin != origin {
            tracing::warn!(
                configured = %origin,
                kept = %stored_origin,
                "the audit log keeps the origin it was created with"
            );
        }
        let origin = stored_origin;
        let seed: [u8; 32] = rand::random();
        let candidate = STANDARD.encode(keys.seal(LOG_KEY_META, &seed));
        let stored = store.meta_init(LOG_KEY_META, &candidate).await?;
        let sealed = STANDARD
            .decode(stored)
            .map_err(|_| AuditError::Corrupt("the log key is not base64".into()))?;
        let seed = keys
            .unseal(LOG_KEY_META, &sealed)
            .map_err(|e| AuditError::Corrupt(e.to_string()))?;
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| AuditError::Corrupt("the log key is not 32 bytes".into()))?;
        Ok(Self {
            signer: NoteSigner::from_seed(&origin, &seed)
                .map_err(|e| AuditError::Corrupt(format!("the log key: {e}")))?,
            origin,
            witness_dir,
            sealing: Mutex::new(()),
            failing: std::sync::Mutex::new(None),
        })
    }

    /// Records how the last background round went, for readiness.
    pub fn record(&self, outcome: Result<(), String>) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => *failing = None,
            Err(reason) => {
                if failing.is_none() {
                    *failing = Some((std::time::Instant::now(), reason));
                }
            }
        }
    }

    /// Why the trail cannot be sealed, if sealing has failed for longer than `grace`.
    pub fn failure(&self, grace: std::time::Duration) -> Option<String> {
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        failing
            .as_ref()
            .filter(|(since, _)| since.elapsed() >= grace)
            .map(|(_, reason)| reason.clone())
    }

    /// The verifier key of the log, in the signed-note `vkey` form.
    pub fn verifier_key(&self) -> String {
        self.signer.verifier().to_vkey()
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Seals every committed event not yet in the log, looking back for late commits when
    /// `look_back` is set (each look-back scans a window of events, so the sealer does it
    /// about once a second, not on every round). Returns how many were sealed.
    pub async fn seal_pending(
        &self,
        store: &dyn Store,
        look_back: bool,
    ) -> Result<u64, AuditError> {
        let _one = self.sealing.lock().await;
        let mut sealed = 0;
        loop {
            let head = store.audit_head().await?;
            let mut range = frontier(&head)?;
            let events = store
                .unsealed_events(
                    head.last_seq - if look_back { LATE_COMMIT_WINDOW } else { 0 },
                    SEAL_BATCH,
                )
                .await?;
            let Some(last) = events.last() else {
                return Ok(sealed);
            };
            // A late commit below the last sealed seq is appended now: the log's order is the
            // order events were sealed in, and none is left out.
            let last_seq = last.seq.max(head.last_seq);
            let mut leaves = Vec::with_capacity(events.len());
            let mut nodes = Vec::with_capacity(events.len() * 2);
            for event in &events {
                let index = range.size();
                range
                    .push_with(audit::leaf_hash(&event.event), |id, hash| {
                        nodes.push((id.level, id.index, hash.as_bytes().to_vec()));
                    })
                    .map_err(|e| AuditError::Corrupt(e.to_string()))?;
                leaves.push((index, event.seq));
            }
            let next = AuditHead {
                size: range.size(),
                last_seq,
                frontier: range.to_bytes(),
            };
            match store.seal_audit(head.size, &leaves, &nodes, &next).await {
                Ok(()) => sealed += leaves.len() as u64,
                // Another node sealed meanwhile: read its head and go on from there.
                Err(StoreError::Precondition(_)) => continue,
                Err(e) => return Err(e.into()),
            }
            if events.len() < SEAL_BATCH as usize {
                return Ok(sealed);
            }
        }
    }

    /// Seals what is pending and signs a checkpoint of the log as it then is, unless the
    /// latest one already covers it. Each new checkpoint also goes to the witness directory.
    pub async fn checkpoint(
        &self,
        store: &dyn Store,
        now: Timestamp,
    ) -> Result<StoredCheckpoint, AuditError> {
        self.seal_pending(store, true).await?;
        let _one = self.sealing.lock().await;
        let head = store.audit_head().await?;
        if let Some(latest) = store.latest_checkpoint().await?
            && latest.size == head.size
        {
            return Ok(latest);
        }
        let root = frontier(&head)?.root();
        let note = Checkpoint::new(self.origin.clone(), head.size, root)
            .map_err(|e| AuditError::Corrupt(e.to_string()))?
            .sign(&self.signer)
            .map_err(|e| AuditError::Corrupt(e.to_string()))?
            .to_string();
        let stored = StoredCheckpoint {
            size: head.size,
            root: root.as_bytes().to_vec(),
            note,
            created_at: now,
        };
        store.add_checkpoint(&stored).await?;
        self.witness(&stored);
        Ok(stored)
    }

    /// Writes a checkpoint outside the store, so that deleting the newest entries from the
    /// store is detectable against it. A failure is logged, not fatal: the store keeps it.
    fn witness(&self, checkpoint: &StoredCheckpoint) {
        let Some(dir) = &self.witness_dir else {
            return;
        };
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let path = dir.join(format!("checkpoint-{:012}", checkpoint.size));
            std::fs::write(&path, &checkpoint.note)?;
            std::fs::write(dir.join("latest"), &checkpoint.note)
        };
        if let Err(error) = write() {
            tracing::error!(%error, dir = %dir.display(), "cannot write the witness copy of a checkpoint");
        }
    }
}

fn frontier(head: &AuditHead) -> Result<CompactRange, AuditError> {
    if head.size == 0 {
        return Ok(CompactRange::new());
    }
    CompactRange::from_bytes(&head.frontier).map_err(|e| AuditError::Corrupt(e.to_string()))
}

/// Node hashes fetched ahead, answering a proof computation from memory.
struct Prefetched(HashMap<NodeId, Hash>);

impl NodeSource for Prefetched {
    type Error = NodeId;

    fn node(&self, node: NodeId) -> Result<Hash, NodeId> {
        self.0.get(&node).copied().ok_or(node)
    }
}

/// Records which nodes a proof asks for; the proof's access pattern depends only on the sizes,
/// never on the hashes, so a first pass with placeholder hashes names them all.
struct Recorder(std::cell::RefCell<Vec<NodeId>>);

impl NodeSource for Recorder {
    type Error = NodeId;

    fn node(&self, node: NodeId) -> Result<Hash, NodeId> {
        self.0.borrow_mut().push(node);
        Ok(merkle::EMPTY_ROOT)
    }
}

/// Runs `prove` against the store: once to learn the nodes it needs, then, with those nodes
/// fetched in one query, for real.
async fn prove_from_store<E: std::fmt::Display>(
    store: &dyn Store,
    prove: impl Fn(&dyn NodeSource<Error = NodeId>) -> Result<Vec<Hash>, E>,
) -> Result<Vec<Hash>, AuditError> {
    let recorder = Recorder(std::cell::RefCell::new(Vec::new()));
    prove(&recorder).map_err(|e| AuditError::Proof(e.to_string()))?;
    let source = fetch_nodes(store, recorder.0.into_inner()).await?;
    prove(&source).map_err(|e| AuditError::Proof(e.to_string()))
}

/// Reads the nodes `ids` names (duplicates allowed) in batched queries; a node the store
/// lacks is a corrupt log.
async fn fetch_nodes(store: &dyn Store, mut ids: Vec<NodeId>) -> Result<Prefetched, AuditError> {
    /// Node ids per store query.
    const BATCH: usize = 4_096;
    ids.sort_unstable_by_key(|id| (id.level, id.index));
    ids.dedup();
    let mut known = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(BATCH) {
        let keys: Vec<(u32, u64)> = chunk.iter().map(|id| (id.level, id.index)).collect();
        for (id, hash) in chunk.iter().zip(store.audit_nodes(&keys).await?) {
            let hash = hash.ok_or_else(|| {
                AuditError::Corrupt(format!("node {}/{} is missing", id.level, id.index))
            })?;
            let hash = Hash::from_slice(&hash).map_err(|e| AuditError::Corrupt(e.to_string()))?;
            known.insert(*id, hash);
        }
    }
    Ok(Prefetched(known))
}

/// An RFC 9162 inclusion proof of leaf `index` in the tree of `size` leaves.
pub async fn inclusion_proof(
    store: &dyn Store,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, AuditError> {
    prove_from_store(store, |source| {
        merkle::inclusion_proof_from(source, index, size).map_err(|e| format!("{e:?}"))
    })
    .await
}

/// The leaf hash and the RFC 9162 inclusion proof of each of `indices` in the tree of `size`
/// leaves, with every node they need read in a few batched queries instead of two per leaf.
pub async fn inclusion_proofs(
    store: &dyn Store,
    indices: &[u64],
    size: u64,
) -> Result<Vec<(Hash, Vec<Hash>)>, AuditError> {
    let recorder = Recorder(std::cell::RefCell::new(Vec::new()));
    for &index in indices {
        recorder.0.borrow_mut().push(NodeId { level: 0, index });
        merkle::inclusion_proof_from(&recorder, index, size)
            .map_err(|e| AuditError::Proof(format!("{e:?}")))?;
    }
    let source = fetch_nodes(store, recorder.0.into_inner()).await?;
    indices
        .iter()
        .map(|&index| {
            let leaf = source
                .node(NodeId { level: 0, index })
                .map_err(|_| AuditError::Corrupt(format!("leaf {index} has no sealed hash")))?;
            let proof = merkle::inclusion_proof_from(&source, index, size)
                .map_err(|e| AuditError::Proof(format!("{e:?}")))?;
            Ok((leaf, proof))
        })
        .collect()
}

/// An RFC 9162 consistency proof between the trees of `from` and `to` leaves.
pub async fn consistency_proof(
    store: &dyn Store,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, AuditError> {
    prove_from_store(store, |source| {
        merkle::consistency_proof_from(source, from, to).map_err(|e| format!("{e:?}"))
    })
    .await
}

/// Use cases behind `/v1/audit/*`: admins and auditors only.
pub mod api {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use custos_core::Role;

    use super::{AuditError, consistency_proof, inclusion_proof};
    use crate::api::{CheckpointView, ConsistencyProofView, EventView, InclusionProofView};
    use crate::auth::Principal;
    use crate::error::{ApiError, ApiResult};
    use crate::service::AppState;

    impl From<AuditError> for ApiError {
        fn from(e: AuditError) -> Self {
            match e {
                AuditError::Store(e) => e.into(),
                other => {
                    tracing::error!(error = %other, "audit log error");
                    ApiError::new(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "internal error",
                    )
                }
            }
        }
    }

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    /// The latest checkpoint, after sealing what is pending and signing a new one if the log
    /// grew: what an auditor fetches is never older than the request.
    pub async fn checkpoint(state: &AppState, who: &Principal) -> ApiResult<CheckpointView> {
        who.require(&[Role::Admin, Role::Auditor])?;
        let checkpoint = state
            .audit
            .checkpoint(state.store.as_ref(), state.now())
            .await?;
        Ok(CheckpointView {
            size: checkpoint.size,
            root: b64(&checkpoint.root),
            note: checkpoint.note,
            verifier_key: state.audit.verifier_key(),
            created_at: checkpoint.created_at,
        })
    }

    /// The log's size as sealed now, which bounds every proof.
    async fn sealed_size(state: &AppState) -> ApiResult<u64> {
        state.audit.seal_pending(state.store.as_ref(), true).await?;
        Ok(state.store.audit_head().await?.size)
    }

    fn out_of_range(detail: String) -> ApiError {
        ApiError::bad_request("invalid_parameter", detail)
    }

    pub async fn inclusion(
        state: &AppState,
        who: &Principal,
        index: u64,
        size: u64,
    ) -> ApiResult<InclusionProofView> {
        who.require(&[Role::Admin, Role::Auditor])?;
        let sealed = sealed_size(state).await?;
        if size == 0 || size > sealed {
            return Err(out_of_range(format!(
                "size: must be from 1 to the log's size, {sealed}"
            )));
        }
        if index >= size {
            return Err(out_of_range(format!("index: must be below size {size}")));
        }
        let event = state
            .store
            .audit_event(index)
            .await?
            .ok_or_else(|| ApiError::not_found("leaf"))?;
        let leaf = custos_core::audit::leaf_hash(&event.event);
        let hashes = inclusion_proof(state.store.as_ref(), index, size).await?;
        Ok(InclusionProofView {
            index,
            size,
            leaf_hash: b64(leaf.as_bytes()),
            hashes: hashes.iter().map(|h| b64(h.as_bytes())).collect(),
            event: EventView {
                seq: event.seq,
                id: event.event.id,
                kind: event.event.kind.as_str().into(),
                actor: event.event.actor.to_string(),
                subject: event.event.subject,
                occurred_at: event.event.occurred_at,
                details: event.event.details,
            },
        })
    }

    /// Most events in one export; larger ranges are exported in pages with `from`/`to`.
    pub const MAX_EXPORT_EVENTS: u64 = 10_000;

    /// Which events an export holds.
    pub enum ExportOf {
        /// Leaves `from..to` (`to` defaults to the checkpoint's size).
        Range { from: u64, to: Option<u64> },
        /// One NHI's events from leaf `from` on (the first [`MAX_EXPORT_EVENTS`] of them),
        /// each with its inclusion proof.
        Nhi { id: String, from: u64 },
    }

    /// A self-contained, offline-verifiable export against a fresh checkpoint.
    pub async fn export(
        state: &AppState,
        who: &Principal,
        of: ExportOf,
    ) -> ApiResult<crate::verify::AuditExport> {
        who.require(&[Role::Admin, Role::Auditor])?;
        build_export(state, of).await
    }

    /// The export itself, for whoever may have it: an operator's request, or the server's
    /// own archive of a decommissioned NHI's trail.
    pub async fn build_export(
        state: &AppState,
        of: ExportOf,
    ) -> ApiResult<crate::verify::AuditExport> {
        let store = state.store.as_ref();
        let checkpoint = state.audit.checkpoint(store, state.now()).await?;
        let size = checkpoint.size;
        let mut export = crate::verify::AuditExport {
            format: crate::verify::EXPORT_FORMAT.into(),
            origin: state.audit.origin().into(),
            verifier_key: state.audit.verifier_key(),
            checkpoint: checkpoint.note,
            from: None,
            to: None,
            nhi: None,
            events: Vec::new(),
            range_nodes: Vec::new(),
        };
        let leaf_of = |index: u64, hashes: &std::collections::HashMap<u64, Vec<u8>>| {
            hashes
                .get(&index)
                .map(|h| b64(h))
                .ok_or_else(|| AuditError::Corrupt(format!("leaf {index} has no sealed hash")))
        };
        match of {
            ExportOf::Range { from, to } => {
                let to = to.unwrap_or(size);
                if to > size || from >= to {
                    return Err(out_of_range(format!(
                        "from and to: need from < to <= {size}, the log's size"
                    )));
                }
                if to - from > MAX_EXPORT_EVENTS {
                    return Err(out_of_range(format!(
                        "to: export at most {MAX_EXPORT_EVENTS} events at a time; page with from and to"
                    )));
                }
                let hashes: std::collections::HashMap<u64, Vec<u8>> = store
                    .audit_leaf_hashes(from, to)
                    .await?
                    .into_iter()
                    .collect();
                for (index, event) in store.audit_events(from, to).await? {
                    export.events.push(crate::verify::ExportedEvent {
                        index,
                        leaf_hash: leaf_of(index, &hashes)?,
                        event: crate::verify::view_of(event.seq, event.event),
                        inclusion: Vec::new(),
                    });
                }
                let ids = custos_core::merkle::range_nodes(from, to, size)
                    .map_err(|e| AuditError::Proof(e.to_string()))?;
                let keys: Vec<(u32, u64)> = ids.iter().map(|id| (id.level, id.index)).collect();
                for node in store.audit_nodes(&keys).await? {
                    let node =
                        node.ok_or_else(|| AuditError::Corrupt("a range node is missing".into()))?;
                    export.range_nodes.push(b64(&node));
                }
                export.from = Some(from);
                export.to = Some(to);
            }
            ExportOf::Nhi { id, from } => {
                let events = store
                    .audit_events_of(&format!("nhi:{id}"), from, MAX_EXPORT_EVENTS as u32)
                    .await?;
                let events: Vec<_> = events
                    .into_iter()
                    .filter(|(index, _)| *index < size)
                    .collect();
                let indices: Vec<u64> = events.iter().map(|(index, _)| *index).collect();
                let proofs = super::inclusion_proofs(store, &indices, size).await?;
                for ((index, event), (leaf, proof)) in events.into_iter().zip(proofs) {
                    export.events.push(crate::verify::ExportedEvent {
                        index,
                        leaf_hash: b64(leaf.as_bytes()),
                        event: crate::verify::view_of(event.seq, event.event),
                        inclusion: proof.iter().map(|h| b64(h.as_bytes())).collect(),
                    });
                }
                export.nhi = Some(id);
            }
        }
        Ok(export)
    }

    pub async fn consistency(
        state: &AppState,
        who: &Principal,
        from: u64,
        to: u64,
    ) -> ApiResult<ConsistencyProofView> {
        who.require(&[Role::Admin, Role::Auditor])?;
        let sealed = sealed_size(state).await?;
        if to > sealed {
            return Err(out_of_range(format!(
                "to: must be at most the log's size, {sealed}"
            )));
        }
        if from > to {
            return Err(out_of_range("from: must be at most to".into()));
        }
        let hashes = consistency_proof(state.store.as_ref(), from, to).await?;
        Ok(ConsistencyProofView {
            from,
            to,
            hashes: hashes.iter().map(|h| b64(h.as_bytes())).collect(),
        })
    }
}
