//! The Merkle tree math of the tamper-evident audit trail: RFC 6962 / RFC 9162 hashing with
//! SHA-256, inclusion and consistency proofs, and the compact range a single writer keeps while
//! it appends.
//!
//! Everything here is pure. Proofs are generated from a [`NodeSource`], which answers the hash
//! of a perfect subtree; the server implements it over the node hashes it stores, so a proof
//! for a log of millions of leaves costs O(log n) node reads and never loads the leaves. A slice
//! of leaf hashes is a `NodeSource` too, for small trees and for tests.
//!
//! Verification follows the algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2 step by step, after a
//! check of the proof's length, so a malformed proof is refused with a precise error before any
//! hashing.
//!
//! Tree positions: a node is named by its `level` (0 for leaves) and its `index` within that
//! level, and covers the leaves `index · 2^level .. (index + 1) · 2^level`. Only perfect
//! subtrees (those with a power-of-two number of leaves) are ever named this way, because they
//! are the only ones that never change once the log has grown past them.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The length in bytes of a SHA-256 hash, the only hash this log uses.
pub const HASH_LEN: usize = 32;

/// The prefix of a leaf hash (RFC 6962 §2.1), which keeps a leaf from being passed off as an
/// interior node (second-preimage resistance).
const LEAF_PREFIX: u8 = 0x00;

/// The prefix of an interior node hash (RFC 6962 §2.1).
const NODE_PREFIX: u8 = 0x01;

/// The root of the empty tree: the SHA-256 of the empty string (RFC 6962 §2.1, `MTH({})`).
pub const EMPTY_ROOT: Hash = Hash([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

/// A SHA-256 hash: of a leaf, of an interior node, or of a whole tree (its root).
///
/// It is a plain value: comparing two hashes needs no constant-time care, because every hash
/// in a transparency log is public.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; HASH_LEN]);

/// Why text or bytes could not be read as a [`Hash`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HashParseError {
    #[error("a hash is {HASH_LEN} bytes, not {0}")]
    WrongLength(usize),
    #[error("a hash must be lowercase hexadecimal")]
    InvalidHex,
    #[error("a hash must be standard, padded base64")]
    InvalidBase64,
}

impl Hash {
    /// The hash's bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// Reads a hash from exactly 32 bytes, as it comes out of storage or a proof on the wire.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, HashParseError> {
        <[u8; HASH_LEN]>::try_from(bytes)
            .map(Hash)
            .map_err(|_| HashParseError::WrongLength(bytes.len()))
    }

    /// The lowercase hexadecimal form, the one logs and test vectors use.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads the lowercase hexadecimal form. Uppercase is refused so that each hash has one
    /// text form and text comparisons agree with hash comparisons.
    pub fn from_hex(text: &str) -> Result<Self, HashParseError> {
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(HashParseError::InvalidHex);
        }
        let bytes = hex::decode(text).map_err(|_| HashParseError::InvalidHex)?;
        Self::from_slice(&bytes)
    }

    /// The standard, padded base64 form (RFC 4648 §4), the one checkpoints use.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// Reads the standard, padded base64 form. Non-canonical encodings (missing padding,
    /// stray bits in the last character) are refused, so each hash has one text form.
    pub fn from_base64(text: &str) -> Result<Self, HashParseError> {
        let bytes = BASE64
            .decode(text)
            .map_err(|_| HashParseError::InvalidBase64)?;
        Self::from_slice(&bytes)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The hash of a leaf: `SHA-256(0x00 || data)` (RFC 6962 §2.1).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([LEAF_PREFIX]);
    hasher.update(data);
    Hash(hasher.finalize().into())
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)` (RFC 6962 §2.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([NODE_PREFIX]);
    hasher.update(left.0);
    hasher.update(right.0);
    Hash(hasher.finalize().into())
}

/// The Merkle Tree Hash of a list of leaf hashes, `MTH(D[n])` of RFC 6962 §2.1: the empty root
/// for no leaves, the leaf hash for one, and otherwise the node hash of the tree split at the
/// largest power of two smaller than `n`.
///
/// This costs `n - 1` node hashes; a writer that appends keeps a [`CompactRange`] instead.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => EMPTY_ROOT,
        [leaf] => *leaf,
        _ => {
            // `leaves.len()` fits in a u64 and the split is below it, so it fits in a usize.
            let k = largest_power_of_two_below(leaves.len() as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly smaller than `n`, the split point `k` of RFC 6962 §2.1.
/// Only called with `n >= 2`.
fn largest_power_of_two_below(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The position of a perfect subtree: `level` 0 is a leaf, and the node covers the leaves
/// `index · 2^level .. (index + 1) · 2^level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// The height above the leaves: the node covers `2^level` leaves.
    pub level: u32,
    /// The position among the nodes of its level, counted from the left.
    pub index: u64,
}

/// Whatever can answer the hash of a perfect subtree of the log: the server's store of node
/// hashes, or a slice of leaf hashes.
///
/// Proof generation asks only for nodes inside the tree the proof is about, and at most
/// O(log n) of them, so an implementation backed by storage answers a proof in a handful of
/// reads.
pub trait NodeSource {
    /// Why a node could not be read (a storage error, or a node the source does not have).
    type Error;

    /// The hash of the perfect subtree at `node`. For level 0 that is the leaf hash.
    fn node(&self, node: NodeId) -> Result<Hash, Self::Error>;
}

/// A node that lies beyond the leaves of the slice asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("node at level {}, index {} lies beyond the {leaves} leaves given", node.level, node.index)]
pub struct NodeOutOfRange {
    /// The node asked for.
    pub node: NodeId,
    /// How many leaves the slice holds.
    pub leaves: u64,
}

/// A slice of leaf hashes answers any perfect subtree it covers, by hashing it: O(2^level)
/// work per node, so proofs from a slice cost O(n). That suits small trees and tests; large
/// logs answer from stored node hashes.
impl NodeSource for [Hash] {
    type Error = NodeOutOfRange;

    fn node(&self, node: NodeId) -> Result<Hash, NodeOutOfRange> {
        let leaves = self.len() as u64;
        let out_of_range = NodeOutOfRange { node, leaves };
        let width = 1u64.checked_shl(node.level).ok_or(out_of_range)?;
        let start = node.index.checked_mul(width).ok_or(out_of_range)?;
        let end = start.checked_add(width).ok_or(out_of_range)?;
        if end > leaves {
            return Err(out_of_range);
        }
        // Both bounds are at most the slice's length, so they fit in a usize.
        Ok(root(&self[start as usize..end as usize]))
    }
}

/// Why a proof could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProveError<E> {
    #[error("leaf index {index} is not below the tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("the first tree size {from} is larger than the second tree size {to}")]
    SizesOutOfOrder { from: u64, to: u64 },
    #[error("reading a node hash failed: {0}")]
    Source(E),
}

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    #[error("leaf index {index} is not below the tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("the first tree size {from} is larger than the second tree size {to}")]
    SizesOutOfOrder { from: u64, to: u64 },
    #[error("the proof has {actual} hashes where {expected} are needed")]
    WrongProofLength { expected: usize, actual: usize },
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
}

/// A contiguous run of leaves, `start .. start + size`, whose Merkle Tree Hash is one proof
/// element. Every run a proof needs starts at a multiple of a power of two at least as large
/// as the run (it is a subtree of the RFC 6962 recursion), which is what lets
/// [`range_hash`] cut it into aligned perfect subtrees.
#[derive(Clone, Copy)]
struct Run {
    start: u64,
    size: u64,
}

/// The runs of leaves whose hashes make up `PATH(index, D[size])` (RFC 9162 §2.1.3.1), in
/// proof order (from the leaf's sibling up to the root's child). Requires `index < size`.
///
/// The RFC's recursion is unrolled from the top: each step records the sibling of the half
/// holding the leaf, and the list is reversed at the end because the proof lists the deepest
/// sibling first.
fn inclusion_runs(index: u64, size: u64) -> Vec<Run> {
    let mut runs = Vec::new();
    let (mut m, mut start, mut n) = (index, 0, size);
    while n > 1 {
        let k = largest_power_of_two_below(n);
        if m < k {
            // PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])
            runs.push(Run {
                start: start + k,
                size: n - k,
            });
            n = k;
        } else {
            // PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])
            runs.push(Run { start, size: k });
            m -= k;
            start += k;
            n -= k;
        }
    }
    runs.reverse();
    runs
}

/// The runs of leaves whose hashes make up `PROOF(from, D[to])` (RFC 9162 §2.1.4.1), in proof
/// order. Requires `0 < from < to`.
///
/// `SUBPROOF(m, D[n], b)` unrolled from the top like [`inclusion_runs`]; `whole` is the RFC's
/// `b`, true while the subtree being descended is still the old tree's own root, whose hash
/// the verifier already has.
fn consistency_runs(from: u64, to: u64) -> Vec<Run> {
    let mut runs = Vec::new();
    let (mut m, mut start, mut n, mut whole) = (from, 0, to, true);
    while m != n {
        let k = largest_power_of_two_below(n);
        if m <= k {
            // SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            runs.push(Run {
                start: start + k,
                size: n - k,
            });
            n = k;
        } else {
            // SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            runs.push(Run { start, size: k });
            m -= k;
            start += k;
            n -= k;
            whole = false;
        }
    }
    // SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])}
    if !whole {
        runs.push(Run { start, size: n });
    }
    runs.reverse();
    runs
}

/// The Merkle Tree Hash of a run of leaves, from the perfect subtrees it is made of: one per
/// set bit of its size, so at most 64 node reads, and one when the run is itself perfect.
///
/// The run is cut from its right end, smallest piece first; folding each new (left) piece onto
/// the hash so far is exactly the RFC 6962 split at the largest power of two, applied
/// repeatedly.
fn range_hash<S: NodeSource + ?Sized>(source: &S, run: Run) -> Result<Hash, S::Error> {
    let mut end = run.start + run.size;
    let mut remaining = run.size;
    let mut acc: Option<Hash> = None;
    while remaining != 0 {
        let level = remaining.trailing_zeros();
        let width = 1u64 << level;
        end -= width;
        let piece = source.node(NodeId {
            level,
            index: end >> level,
        })?;
        acc = Some(match acc {
            None => piece,
            Some(right) => node_hash(&piece, &right),
        });
        remaining -= width;
    }
    // An empty run has the empty tree's hash; proofs never ask for one.
    Ok(acc.unwrap_or(EMPTY_ROOT))
}

/// The inclusion proof of the leaf at `index` in the tree of the first `size` leaves,
/// `PATH(index, D[size])` of RFC 9162 §2.1.3.1, read from `source` in O(log n) node reads.
pub fn inclusion_proof_from<S: NodeSource + ?Sized>(
    source: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProveError<S::Error>> {
    if index >= size {
        return Err(ProveError::IndexOutOfRange { index, size });
    }
    inclusion_runs(index, size)
        .into_iter()
        .map(|run| range_hash(source, run).map_err(ProveError::Source))
        .collect()
}

/// The inclusion proof of the leaf at `index` in the tree of the first `size` of `leaves`.
pub fn inclusion_proof(
    leaves: &[Hash],
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProveError<NodeOutOfRange>> {
    inclusion_proof_from(leaves, index, size)
}

/// The consistency proof between the trees of the first `from` and the first `to` leaves,
/// `PROOF(from, D[to])` of RFC 9162 §2.1.4.1, read from `source` in O(log n) node reads.
///
/// The proof is empty when `from` is 0 (every tree extends the empty one) or `from == to`
/// (the two roots must then simply be equal); the RFC defines proofs for `0 < from < to`
/// only, and these are the answers its verifiers expect at the edges.
pub fn consistency_proof_from<S: NodeSource + ?Sized>(
    source: &S,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, ProveError<S::Error>> {
    if from > to {
        return Err(ProveError::SizesOutOfOrder { from, to });
    }
    if from == 0 || from == to {
        return Ok(Vec::new());
    }
    consistency_runs(from, to)
        .into_iter()
        .map(|run| range_hash(source, run).map_err(ProveError::Source))
        .collect()
}

/// The consistency proof between the trees of the first `from` and the first `to` of `leaves`.
pub fn consistency_proof(
    leaves: &[Hash],
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, ProveError<NodeOutOfRange>> {
    consistency_proof_from(leaves, from, to)
}

/// Checks that `leaf` is the leaf at `index` of the tree of `size` leaves whose root is
/// `root`, with the algorithm of RFC 9162 §2.1.3.2. O(log n).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    // Step 1: the index must lie in the tree.
    if index >= size {
        return Err(VerifyError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_runs(index, size).len();
    let wrong_length = VerifyError::WrongProofLength {
        expected,
        actual: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    // Step 2.
    let mut f_n = index;
    let mut s_n = size - 1;
    // Step 3.
    let mut r = *leaf;
    // Step 4.
    for p in proof {
        // 4a: a proof longer than the path to the root.
        if s_n == 0 {
            return Err(wrong_length);
        }
        // 4b.
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        // 4c.
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 5.
    if s_n != 0 {
        return Err(wrong_length);
    }
    if r != *root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `to` leaves with root `to_root` extends the tree of `from` leaves
/// with root `from_root`, with the algorithm of RFC 9162 §2.1.4.2. O(log n).
///
/// At the edges the RFC leaves open: from size 0 the proof must be empty and `from_root` must
/// be the empty root (any tree extends the empty tree); between equal sizes the proof must be
/// empty and the roots equal.
pub fn verify_consistency(
    from: u64,
    to: u64,
    from_root: &Hash,
    to_root: &Hash,
    proof: &[Hash],
) -> Result<(), VerifyError> {
    if from > to {
        return Err(VerifyError::SizesOutOfOrder { from, to });
    }
    if from == 0 || from == to {
        if !proof.is_empty() {
            return Err(VerifyError::WrongProofLength {
                expected: 0,
                actual: proof.len(),
            });
        }
        let expected_from_root = if from == 0 { &EMPTY_ROOT } else { to_root };
        if from_root != expected_from_root {
            return Err(VerifyError::RootMismatch);
        }
        return Ok(());
    }
    let expected = consistency_runs(from, to).len();
    let wrong_length = VerifyError::WrongProofLength {
        expected,
        actual: proof.len(),
    };
    // Step 1 (an empty proof) is covered here: for 0 < from < to at least one hash is needed.
    if proof.len() != expected {
        return Err(wrong_length);
    }
    // Step 2: a power-of-two old tree is a subtree of the new one, so its root starts the path.
    let seed = from.is_power_of_two().then_some(from_root);
    let mut path = seed.into_iter().chain(proof);
    // Step 3.
    let mut f_n = from - 1;
    let mut s_n = to - 1;
    // Step 4.
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 5.
    let Some(first) = path.next() else {
        return Err(wrong_length);
    };
    let mut f_r = *first;
    let mut s_r = *first;
    // Step 6.
    for c in path {
        // 6a.
        if s_n == 0 {
            return Err(wrong_length);
        }
        // 6b.
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        // 6c.
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 7.
    if s_n != 0 {
        return Err(wrong_length);
    }
    if f_r != *from_root || s_r != *to_root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// Why a [`CompactRange`] could not be read from bytes or grown.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CompactRangeError {
    #[error("a compact range of {size} leaves takes {expected} bytes, not {actual}")]
    WrongLength {
        size: u64,
        expected: usize,
        actual: usize,
    },
    #[error("the tree is full: it cannot hold more than 2^64 - 1 leaves")]
    Full,
}

/// The frontier of an append-only tree: the roots of the perfect subtrees that its leaves
/// form, left to right, one per set bit of its size. It is all a single writer needs to keep
/// in memory (O(log n) hashes) to append leaves one at a time and know the root after each.
///
/// Byte form, for the server to persist: the size as 8 big-endian bytes, then the 32-byte
/// peak hashes from the largest (leftmost) subtree to the smallest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompactRange {
    size: u64,
    peaks: Vec<Hash>,
}

impl CompactRange {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the frontier of the tree of the first `size` leaves from stored node hashes,
    /// in one read per peak, as a server does at start-up.
    pub fn from_source<S: NodeSource + ?Sized>(source: &S, size: u64) -> Result<Self, S::Error> {
        let mut peaks = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..u64::BITS).rev() {
            if size >> level & 1 == 1 {
                peaks.push(source.node(NodeId {
                    level,
                    index: start >> level,
                })?);
                start += 1 << level;
            }
        }
        Ok(Self { size, peaks })
    }

    /// The number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The roots of the perfect subtrees, largest (leftmost) first.
    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) -> Result<(), CompactRangeError> {
        self.push_with(leaf, |_, _| {})
    }

    /// Appends a leaf hash and reports each perfect subtree that this leaf completes, the leaf
    /// itself first and then each larger one up to the new peak: exactly the node hashes a
    /// server stores to answer proofs later as a [`NodeSource`].
    pub fn push_with(
        &mut self,
        leaf: Hash,
        mut completed: impl FnMut(NodeId, &Hash),
    ) -> Result<(), CompactRangeError> {
        let new_size = self.size.checked_add(1).ok_or(CompactRangeError::Full)?;
        let index = self.size;
        let mut hash = leaf;
        let mut level = 0;
        completed(NodeId { level, index }, &hash);
        // Each set low bit of the old size is a peak of the same size as the subtree just
        // completed, immediately to its left: merge them, as binary addition carries.
        while index >> level & 1 == 1 {
            // The old size has as many peaks as set bits, so this peak exists.
            let Some(left) = self.peaks.pop() else {
                break;
            };
            hash = node_hash(&left, &hash);
            level += 1;
            completed(
                NodeId {
                    level,
                    index: index >> level,
                },
                &hash,
            );
        }
        self.peaks.push(hash);
        self.size = new_size;
        Ok(())
    }

    /// The root of the tree: the peaks folded from the right, which is the RFC 6962 split at
    /// the largest power of two applied repeatedly. O(log n).
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(last) = peaks.next() else {
            return EMPTY_ROOT;
        };
        peaks.fold(*last, |right, left| node_hash(left, &right))
    }

    /// The byte form described on the type.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(8 + HASH_LEN * self.peaks.len());
        bytes.extend_from_slice(&self.size.to_be_bytes());
        for peak in &self.peaks {
            bytes.extend_from_slice(&peak.0);
        }
        bytes
    }

    /// Reads the byte form described on the type; its length must match the size exactly.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CompactRangeError> {
        let Some((size, rest)) = bytes.split_first_chunk::<8>() else {
            return Err(CompactRangeError::WrongLength {
                size: 0,
                expected: 8,
                actual: bytes.len(),
            });
        };
        let size = u64::from_be_bytes(*size);
        let expected = 8 + HASH_LEN * size.count_ones() as usize;
        if bytes.len() != expected {
            return Err(CompactRangeError::WrongLength {
                size,
                expected,
                actual: bytes.len(),
            });
        }
        let peaks = rest
            .chunks_exact(HASH_LEN)
            .map(|chunk| {
                let mut hash = [0; HASH_LEN];
                hash.copy_from_slice(chunk);
                Hash(hash)
            })
            .collect();
        Ok(Self { size, peaks })
    }
}

/// The perfect subtrees a verifier needs, besides the leaves `from..to` themselves, to compute
/// the root of the tree of `size` leaves: the maximal subtrees of the RFC 6962 split that lie
/// wholly outside the range, left to right. With them an exported slice of the log is checked
/// against a checkpoint without the rest of the log.
pub fn range_nodes(from: u64, to: u64, size: u64) -> Result<Vec<NodeId>, VerifyError> {
    check_range(from, to, size)?;
    let mut nodes = Vec::new();
    collect_range_nodes(0, size, from, to, &mut nodes);
    Ok(nodes)
}

fn check_range(from: u64, to: u64, size: u64) -> Result<(), VerifyError> {
    if from > to || to > size || from == to {
        return Err(VerifyError::IndexOutOfRange {
            index: to.max(from),
            size,
        });
    }
    Ok(())
}

/// Whether MTH(D[start..end]) is a stored perfect subtree the walk can stop at: outside the
/// range and a power of two wide (the split keeps such subtrees aligned on their width). The
/// rightmost subtree of a split may be imperfect; the walk then goes on into it.
fn is_outside_perfect(start: u64, end: u64, from: u64, to: u64) -> bool {
    (end <= from || start >= to) && (end - start).is_power_of_two()
}

/// Walks MTH(D[start..end]) as RFC 6962 §2.1 splits it, recording every maximal perfect
/// subtree outside `from..to`, left to right.
fn collect_range_nodes(start: u64, end: u64, from: u64, to: u64, out: &mut Vec<NodeId>) {
    if is_outside_perfect(start, end, from, to) {
        let level = (end - start).trailing_zeros();
        out.push(NodeId {
            level,
            index: start >> level,
        });
        return;
    }
    if end - start == 1 {
        return; // a leaf inside the range: the verifier has it
    }
    let k = largest_power_of_two_below(end - start);
    collect_range_nodes(start, start + k, from, to, out);
    collect_range_nodes(start + k, end, from, to, out);
}

/// The root of the tree of `size` leaves from the leaf hashes `leaves` of `from..from +
/// leaves.len()` and the subtree hashes [`range_nodes`] names, in its order.
pub fn root_from_range(
    leaves: &[Hash],
    from: u64,
    size: u64,
    nodes: &[Hash],
) -> Result<Hash, VerifyError> {
    let to = from + leaves.len() as u64;
    let expected = range_nodes(from, to, size)?;
    if expected.len() != nodes.len() {
        return Err(VerifyError::WrongProofLength {
            expected: expected.len(),
            actual: nodes.len(),
        });
    }
    let mut nodes = nodes.iter();
    Ok(fold_range(0, size, from, to, leaves, &mut nodes))
}

fn fold_range<'a>(
    start: u64,
    end: u64,
    from: u64,
    to: u64,
    leaves: &[Hash],
    nodes: &mut impl Iterator<Item = &'a Hash>,
) -> Hash {
    if is_outside_perfect(start, end, from, to) {
        // The same walk as `collect_range_nodes`, so the next node is this subtree's; their
        // counts were checked equal.
        return nodes.next().copied().unwrap_or(EMPTY_ROOT);
    }
    if end - start == 1 {
        return leaves[(start - from) as usize];
    }
    let k = largest_power_of_two_below(end - start);
    let left = fold_range(start, start + k, from, to, leaves, nodes);
    let right = fold_range(start + k, end, from, to, leaves, nodes);
    node_hash(&left, &right)
}
