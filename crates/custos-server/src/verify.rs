//! The audit export format and its verification, offline: `custos audit verify FILE` trusts
//! nothing but the file (and, if given, a verifier key or a checkpoint kept earlier).
//!
//! An export holds a signed checkpoint, the log's verifier key, and events with their leaf
//! index and sealed leaf hash. A contiguous slice also carries the subtree hashes that, with its
//! leaves, give the checkpoint's root (`merkle::range_nodes`); a selection (one NHI's events)
//! carries an inclusion proof per event. Verification recomputes every leaf from its event's
//! canonical bytes, so a changed, missing, swapped or inserted event is named by its index.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use custos_core::checkpoint::{Checkpoint, NoteVerifier};
use custos_core::merkle::{self, Hash};
use custos_core::{Actor, DomainEvent, EventKind};
use serde::{Deserialize, Serialize};

use crate::api::EventView;

pub const EXPORT_FORMAT: &str = "custos-audit-export/1";

/// A self-contained export of (part of) the audit log.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditExport {
    /// Always `custos-audit-export/1`.
    pub format: String,
    pub origin: String,
    /// The signed-note verifier key of the log.
    pub verifier_key: String,
    /// The signed checkpoint the events are proven against.
    pub checkpoint: String,
    /// For a slice: its first leaf index (inclusive)…
    pub from: Option<u64>,
    /// …and its end (exclusive).
    pub to: Option<u64>,
    /// For a selection: the NHI whose events these are.
    pub nhi: Option<String>,
    pub events: Vec<ExportedEvent>,
    /// For a slice: the subtree hashes outside it, base64, in `merkle::range_nodes` order.
    #[serde(default)]
    pub range_nodes: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExportedEvent {
    pub index: u64,
    /// The leaf hash sealed for this position, base64.
    pub leaf_hash: String,
    pub event: EventView,
    /// For a selection: the inclusion proof, base64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inclusion: Vec<String>,
}

/// Why verification failed, with the first leaf index at fault when there is one.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub index: Option<u64>,
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(index) => write!(f, "index {index}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

fn fail(index: Option<u64>, reason: impl Into<String>) -> Failure {
    Failure {
        index,
        reason: reason.into(),
    }
}

fn hash(text: &str, index: Option<u64>) -> Result<Hash, Failure> {
    STANDARD
        .decode(text)
        .ok()
        .and_then(|bytes| Hash::from_slice(&bytes).ok())
        .ok_or_else(|| fail(index, "a hash is not 32 bytes of base64"))
}

/// The domain event an exported view describes.
pub fn event_of(view: &EventView) -> Result<DomainEvent, String> {
    Ok(DomainEvent {
        id: view.id.clone(),
        kind: EventKind::parse(&view.kind)
            .ok_or_else(|| format!("unknown kind {:?}", view.kind))?,
        actor: Actor::parse(&view.actor).ok_or_else(|| format!("bad actor {:?}", view.actor))?,
        subject: view.subject.clone(),
        occurred_at: view.occurred_at,
        details: view.details.clone(),
    })
}

/// A checkpoint whose signature verified.
pub struct Verified {
    pub checkpoint: Checkpoint,
    pub events: usize,
}

/// Opens a signed checkpoint with `verifier_key`, which must be `trusted` when one is given.
pub fn open_checkpoint(
    note: &str,
    verifier_key: &str,
    trusted: Option<&str>,
) -> Result<Checkpoint, Failure> {
    if let Some(trusted) = trusted
        && trusted.trim() != verifier_key
    {
        return Err(fail(
            None,
            "the export is signed by another key than the trusted one",
        ));
    }
    let verifier = NoteVerifier::from_vkey(verifier_key)
        .map_err(|e| fail(None, format!("the verifier key is malformed: {e}")))?;
    Checkpoint::open(note.as_bytes(), &verifier)
        .map_err(|e| fail(None, format!("the checkpoint does not verify: {e}")))
}

/// Recomputes every exported event's leaf from its canonical bytes and checks it is the leaf
/// sealed at its position; from `from` on, positions must follow each other with none missing.
pub fn sealed_leaves(events: &[ExportedEvent], from: Option<u64>) -> Result<Vec<Hash>, Failure> {
    let mut leaves = Vec::with_capacity(events.len());
    for (position, exported) in events.iter().enumerate() {
        let index = exported.index;
        if let Some(from) = from
            && index != from + position as u64
        {
            let expected = from + position as u64;
            return Err(fail(Some(expected), "this position's event is missing"));
        }
        let event = event_of(&exported.event).map_err(|e| fail(Some(index), e))?;
        let recomputed = custos_core::audit::leaf_hash(&event);
        if recomputed != hash(&exported.leaf_hash, Some(index))? {
            return Err(fail(
                Some(index),
                "the event is not the one sealed at this position (changed, swapped or inserted)",
            ));
        }
        leaves.push(recomputed);
    }
    Ok(leaves)
}

/// Verifies an export: the checkpoint's signature, every event against its sealed leaf, and the
/// leaves against the checkpoint's root.
pub fn verify_export(export: &AuditExport, trusted: Option<&str>) -> Result<Verified, Failure> {
    if export.format != EXPORT_FORMAT {
        return Err(fail(
            None,
            format!("unknown export format {:?}", export.format),
        ));
    }
    let checkpoint = open_checkpoint(&export.checkpoint, &export.verifier_key, trusted)?;
    let size = checkpoint.size();
    let leaves = sealed_leaves(&export.events, export.from)?;
    if export.nhi.is_some() {
        for (exported, leaf) in export.events.iter().zip(&leaves) {
            let index = exported.index;
            let proof = exported
                .inclusion
                .iter()
                .map(|h| hash(h, Some(index)))
                .collect::<Result<Vec<_>, _>>()?;
            merkle::verify_inclusion(leaf, index, size, &proof, &checkpoint.root())
                .map_err(|e| fail(Some(index), format!("not in the checkpointed log: {e}")))?;
        }
    }
    if let (Some(from), Some(to)) = (export.from, export.to) {
        if from + leaves.len() as u64 != to {
            return Err(fail(
                Some(from + leaves.len() as u64),
                "this position's event is missing",
            ));
        }
        let nodes = export
            .range_nodes
            .iter()
            .map(|h| hash(h, None))
            .collect::<Result<Vec<_>, _>>()?;
        let root = merkle::root_from_range(&leaves, from, size, &nodes)
            .map_err(|e| fail(None, format!("the slice does not fit the checkpoint: {e}")))?;
        if root != checkpoint.root() {
            return Err(fail(
                None,
                "the sealed leaves do not give the checkpoint's root: the log was altered",
            ));
        }
    }
    Ok(Verified {
        events: leaves.len(),
        checkpoint,
    })
}

/// Checks a whole log, read back in order, against its checkpoint and against a checkpoint
/// kept earlier: the log must still contain the kept tree as its prefix.
pub fn verify_log(
    leaves: &[Hash],
    current: &Checkpoint,
    kept: Option<&Checkpoint>,
) -> Result<(), Failure> {
    if let Some(kept) = kept {
        if kept.origin() != current.origin() {
            return Err(fail(None, "the kept checkpoint is of another log"));
        }
        if (leaves.len() as u64) < kept.size() {
            return Err(fail(
                Some(leaves.len() as u64),
                format!(
                    "the log was truncated: it has {} leaves, the kept checkpoint {}",
                    leaves.len(),
                    kept.size()
                ),
            ));
        }
        if merkle::root(&leaves[..kept.size() as usize]) != kept.root() {
            return Err(fail(
                None,
                "the log's first leaves no longer give the kept checkpoint's root",
            ));
        }
    }
    if leaves.len() as u64 != current.size() {
        return Err(fail(
            Some(leaves.len().min(current.size() as usize) as u64),
            format!(
                "the log has {} leaves, its checkpoint {}",
                leaves.len(),
                current.size()
            ),
        ));
    }
    if merkle::root(leaves) != current.root() {
        return Err(fail(None, "the leaves do not give the checkpoint's root"));
    }
    Ok(())
}

/// The wire view of a stored event.
pub fn view_of(seq: i64, event: DomainEvent) -> EventView {
    EventView {
        seq,
        id: event.id,
        kind: event.kind.as_str().into(),
        actor: event.actor.to_string(),
        subject: event.subject,
        occurred_at: event.occurred_at,
        details: event.details,
    }
}
