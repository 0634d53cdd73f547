//! The Merkle log math against published vectors and an independent implementation.
//!
//! Known answers: the eight-leaf tree of the Certificate Transparency reference tests, with the
//! roots, inclusion proofs and consistency proofs of transparency-dev/merkle
//! (`testonly/reference_test.go`), and that project's corrupted-proof probes.
//!
//! The oracle: `ct-merkle`, a separate RFC 6962 implementation (tree-index arithmetic rather
//! than this crate's recursive split), must produce byte-identical roots and proofs for every
//! tree size up to 300, every index and every older size, and must accept every proof made
//! here.

use std::cell::Cell;

use ct_merkle::array::Array;
use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use custos_core::merkle::{
    CompactRange, CompactRangeError, EMPTY_ROOT, Hash, HashParseError, NodeId, NodeOutOfRange,
    NodeSource, ProveError, VerifyError, consistency_proof, consistency_proof_from,
    inclusion_proof, inclusion_proof_from, leaf_hash, node_hash, root, verify_consistency,
    verify_inclusion,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

/// The leaves of the Certificate Transparency reference tree, in hex.
const CT_LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// `MTH(D[n])` of the reference tree for n = 0 ..= 8.
const CT_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf index, tree size, proof) from transparency-dev/merkle, with 0-based indices.
const CT_INCLUSION: &[(u64, u64, &[&str])] = &[
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (first size, second size, proof) from transparency-dev/merkle.
const CT_CONSISTENCY: &[(u64, u64, &[&str])] = &[
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

/// An arbitrary hash that is no root or node of the reference tree.
const SOME_HASH: &str = "abacaba000000000000000000000000000000000000000000060061e00123456";

fn h(hex: &str) -> Hash {
    Hash::from_hex(hex).unwrap()
}

fn hashes(hexes: &[&str]) -> Vec<Hash> {
    hexes.iter().map(|x| h(x)).collect()
}

fn ct_leaf_hashes() -> Vec<Hash> {
    CT_LEAVES
        .iter()
        .map(|x| leaf_hash(&hex::decode(x).unwrap()))
        .collect()
}

fn ct_root(size: u64) -> Hash {
    h(CT_ROOTS[size as usize])
}

/// A store of every perfect subtree's hash, level by level, as the server keeps them: it is
/// filled only from what [`CompactRange::push_with`] reports, and it counts its reads so that
/// tests can hold proof generation to O(log n) of them.
#[derive(Default)]
struct Levels {
    levels: Vec<Vec<Hash>>,
    reads: Cell<u64>,
}

impl Levels {
    /// Appends every leaf, recording the completed nodes, and returns the compact range.
    fn build(leaves: &[Hash]) -> (Self, CompactRange) {
        let mut store = Self::default();
        let mut range = CompactRange::new();
        for leaf in leaves {
            range
                .push_with(*leaf, |node, hash| store.record(node, hash))
                .unwrap();
        }
        (store, range)
    }

    fn record(&mut self, node: NodeId, hash: &Hash) {
        let level = node.level as usize;
        if self.levels.len() <= level {
            self.levels.resize(level + 1, Vec::new());
        }
        // Nodes of a level complete left to right, each exactly once.
        assert_eq!(self.levels[level].len() as u64, node.index, "{node:?}");
        self.levels[level].push(*hash);
    }

    fn take_reads(&self) -> u64 {
        self.reads.replace(0)
    }
}

impl NodeSource for Levels {
    type Error = NodeId;

    fn node(&self, node: NodeId) -> Result<Hash, NodeId> {
        self.reads.set(self.reads.get() + 1);
        self.levels
            .get(node.level as usize)
            .and_then(|level| level.get(node.index as usize))
            .copied()
            .ok_or(node)
    }
}

/// The most node reads a proof about a tree of `size` leaves may take: one per proof element,
/// plus one per perfect subtree of the single element that is not perfect.
fn read_bound(size: u64) -> u64 {
    let depth = u64::from(64 - size.saturating_sub(1).leading_zeros());
    2 * depth + 2
}

fn to_bytes(proof: &[Hash]) -> Vec<u8> {
    proof.iter().flat_map(|x| x.0).collect()
}

fn ct_root_hash(hash: &Hash, size: u64) -> RootHash<Sha256> {
    RootHash::new(Array(hash.0), size)
}

/// Distinct leaf data: the index first, so no two leaves (and no two subtrees) share a hash
/// and a proof can only verify for the position it was made for.
fn distinct_leaves(extra: &[Vec<u8>]) -> Vec<Vec<u8>> {
    extra
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let mut data = (i as u64).to_be_bytes().to_vec();
            data.extend_from_slice(bytes);
            data
        })
        .collect()
}

#[test]
fn hashes_are_domain_separated_sha256() {
    assert_eq!(EMPTY_ROOT.0, <[u8; 32]>::from(Sha256::digest(b"")));
    assert_eq!(root(&[]), EMPTY_ROOT);
    assert_eq!(leaf_hash(b"").0, <[u8; 32]>::from(Sha256::digest([0x00])));
    let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
    let mut node = vec![0x01];
    node.extend_from_slice(&a.0);
    node.extend_from_slice(&b.0);
    assert_eq!(node_hash(&a, &b).0, <[u8; 32]>::from(Sha256::digest(&node)));
    assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
}

#[test]
fn reference_tree_roots() {
    let leaves = ct_leaf_hashes();
    let mut range = CompactRange::new();
    assert_eq!(range.root(), ct_root(0));
    for size in 1..=8 {
        range.push(leaves[size - 1]).unwrap();
        assert_eq!(root(&leaves[..size]), ct_root(size as u64), "size {size}");
        assert_eq!(
            range.root(),
            ct_root(size as u64),
            "compact range, size {size}"
        );
        assert_eq!(range.size(), size as u64);
    }
    assert_eq!(
        range.root().to_hex(),
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    );
}

#[test]
fn reference_inclusion_proofs() {
    let leaves = ct_leaf_hashes();
    let (store, _) = Levels::build(&leaves);
    for &(index, size, expected) in CT_INCLUSION {
        let expected = hashes(expected);
        assert_eq!(inclusion_proof(&leaves, index, size).unwrap(), expected);
        assert_eq!(inclusion_proof_from(&store, index, size).unwrap(), expected);
        let leaf = leaves[index as usize];
        assert_eq!(
            verify_inclusion(&leaf, index, size, &expected, &ct_root(size)),
            Ok(())
        );
    }
}

#[test]
fn reference_consistency_proofs() {
    let leaves = ct_leaf_hashes();
    let (store, _) = Levels::build(&leaves);
    for &(from, to, expected) in CT_CONSISTENCY {
        let expected = hashes(expected);
        assert_eq!(consistency_proof(&leaves, from, to).unwrap(), expected);
        assert_eq!(consistency_proof_from(&store, from, to).unwrap(), expected);
        assert_eq!(
            verify_consistency(from, to, &ct_root(from), &ct_root(to), &expected),
            Ok(())
        );
    }
}

/// The corrupted inclusion probes of transparency-dev/merkle: each must be refused.
#[test]
fn corrupted_inclusion_proofs_are_refused() {
    let leaves = ct_leaf_hashes();
    let some = h(SOME_HASH);
    let refused = |what: &str, index: u64, size: u64, leaf: Hash, root: Hash, proof: &[Hash]| {
        assert!(
            verify_inclusion(&leaf, index, size, proof, &root).is_err(),
            "{what}: index {index}, size {size}"
        );
    };
    for &(index, size, proof) in CT_INCLUSION {
        let proof = hashes(proof);
        let (leaf, root) = (leaves[index as usize], ct_root(size));
        refused("index - 1", index.wrapping_sub(1), size, leaf, root, &proof);
        refused("index + 1", index + 1, size, leaf, root, &proof);
        refused("index ^ 2", index ^ 2, size, leaf, root, &proof);
        refused("size * 2", index, size * 2, leaf, root, &proof);
        refused("size / 2", index, size / 2, leaf, root, &proof);
        refused(
            "wrong leaf",
            index,
            size,
            leaf_hash(b"WrongLeaf"),
            root,
            &proof,
        );
        refused("empty root", index, size, leaf, EMPTY_ROOT, &proof);
        refused("random root", index, size, leaf, some, &proof);
        let trailing = [&proof[..], &[root]].concat();
        refused("trailing root", index, size, leaf, root, &trailing);
        let preceding = [&[root], &proof[..]].concat();
        refused("preceding root", index, size, leaf, root, &preceding);
        for i in 0..proof.len() {
            let mut flipped = proof.clone();
            flipped[i].0[0] ^= 8;
            refused(
                &format!("bit flip in [{i}]"),
                index,
                size,
                leaf,
                root,
                &flipped,
            );
        }
        if let Some((_, shorter)) = proof.split_last() {
            refused("removed", index, size, leaf, root, shorter);
        }
        if proof.len() > 1 {
            let inserted = [&proof[..1], &[some], &proof[1..]].concat();
            refused("inserted", index, size, leaf, root, &inserted);
        }
    }
}

/// The corrupted consistency probes of transparency-dev/merkle: each must be refused.
#[test]
fn corrupted_consistency_proofs_are_refused() {
    let some = h(SOME_HASH);
    let refused = |what: &str, from: u64, to: u64, r1: Hash, r2: Hash, proof: &[Hash]| {
        assert!(
            verify_consistency(from, to, &r1, &r2, proof).is_err(),
            "{what}: {from} -> {to}"
        );
    };
    for &(from, to, proof) in CT_CONSISTENCY.iter().filter(|c| !c.2.is_empty()) {
        let proof = hashes(proof);
        let (r1, r2) = (ct_root(from), ct_root(to));
        refused("from - 1", from - 1, to, r1, r2, &proof);
        refused("from + 1", from + 1, to, r1, r2, &proof);
        refused("from ^ 2", from ^ 2, to, r1, r2, &proof);
        refused("to * 2", from, to * 2, r1, r2, &proof);
        refused("to / 2", from, to / 2, r1, r2, &proof);
        refused("wrong first root", from, to, some, r2, &proof);
        refused("wrong second root", from, to, r1, some, &proof);
        refused("swapped roots", from, to, r2, r1, &proof);
        refused("empty proof", from, to, r1, r2, &[]);
        for (what, extra) in [
            ("first root", r1),
            ("second root", r2),
            ("proof[0]", proof[0]),
        ] {
            let trailing = [&proof[..], &[extra]].concat();
            refused(&format!("trailing {what}"), from, to, r1, r2, &trailing);
            let preceding = [&[extra], &proof[..]].concat();
            refused(&format!("preceding {what}"), from, to, r1, r2, &preceding);
        }
        refused("truncated", from, to, r1, r2, &proof[..proof.len() - 1]);
        for i in 0..proof.len() {
            let mut flipped = proof.clone();
            flipped[i].0[0] ^= 16;
            refused(&format!("bit flip in [{i}]"), from, to, r1, r2, &flipped);
        }
    }
}

/// The edges: empty trees, equal sizes, sizes out of order, indices outside the tree.
#[test]
fn edge_cases_are_typed() {
    let (r1, r2) = (h(SOME_HASH), ct_root(1));
    let leaf = ct_leaf_hashes()[0];
    for (index, size) in [(0, 0), (1, 0), (2, 1), (5, 5)] {
        assert_eq!(
            verify_inclusion(&leaf, index, size, &[], &r2),
            Err(VerifyError::IndexOutOfRange { index, size })
        );
        assert_eq!(
            inclusion_proof(&ct_leaf_hashes(), index, size),
            Err(ProveError::IndexOutOfRange { index, size })
        );
    }
    // A one-leaf tree: the leaf is the root and the proof is empty.
    assert_eq!(verify_inclusion(&leaf, 0, 1, &[], &leaf), Ok(()));
    assert_eq!(
        verify_inclusion(&leaf, 0, 1, &[], &EMPTY_ROOT),
        Err(VerifyError::RootMismatch)
    );
    assert_eq!(
        verify_inclusion(&leaf, 0, 1, &[leaf], &leaf),
        Err(VerifyError::WrongProofLength {
            expected: 0,
            actual: 1
        })
    );

    // Equal sizes: an empty proof, and the roots must match.
    assert_eq!(verify_consistency(1, 1, &r2, &r2, &[]), Ok(()));
    assert_eq!(
        verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &[]),
        Ok(())
    );
    assert_eq!(
        verify_consistency(1, 1, &r1, &r2, &[]),
        Err(VerifyError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(0, 0, &r1, &r1, &[]),
        Err(VerifyError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(1, 1, &r2, &r2, &[EMPTY_ROOT]),
        Err(VerifyError::WrongProofLength {
            expected: 0,
            actual: 1
        })
    );
    // From the empty tree: nothing to prove, but the old root must be the empty root.
    assert_eq!(verify_consistency(0, 5, &EMPTY_ROOT, &r2, &[]), Ok(()));
    assert_eq!(
        verify_consistency(0, 5, &r1, &r2, &[]),
        Err(VerifyError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(0, 1, &EMPTY_ROOT, &r2, &[EMPTY_ROOT]),
        Err(VerifyError::WrongProofLength {
            expected: 0,
            actual: 1
        })
    );
    assert_eq!(consistency_proof(&[], 0, 0), Ok(Vec::new()));
    // Time travel.
    for (from, to) in [(1, 0), (2, 1), (u64::MAX, 0)] {
        assert_eq!(
            verify_consistency(from, to, &r1, &r2, &[]),
            Err(VerifyError::SizesOutOfOrder { from, to })
        );
        assert_eq!(
            consistency_proof(&ct_leaf_hashes(), from, to),
            Err(ProveError::SizesOutOfOrder { from, to })
        );
    }
    // Different sizes with an empty proof.
    assert_eq!(
        verify_consistency(1, 2, &r1, &r2, &[]),
        Err(VerifyError::WrongProofLength {
            expected: 1,
            actual: 0
        })
    );
}

#[test]
fn proofs_past_the_given_leaves_are_refused() {
    let leaves = ct_leaf_hashes();
    let err = inclusion_proof(&leaves[..3], 0, 8).unwrap_err();
    assert!(
        matches!(err, ProveError::Source(NodeOutOfRange { leaves: 3, .. })),
        "{err:?}"
    );
    assert!(matches!(
        consistency_proof(&leaves[..3], 2, 8),
        Err(ProveError::Source(_))
    ));
    let (store, _) = Levels::build(&leaves[..3]);
    assert!(matches!(
        inclusion_proof_from(&store, 2, 4),
        Err(ProveError::Source(NodeId { level: 0, index: 3 }))
    ));
    // A slice answers nodes it covers, and refuses the rest without overflowing.
    let slice: &[Hash] = &leaves;
    assert_eq!(slice.node(NodeId { level: 3, index: 0 }), Ok(ct_root(8)));
    for node in [
        NodeId { level: 4, index: 0 },
        NodeId { level: 0, index: 8 },
        NodeId {
            level: 64,
            index: 0,
        },
        NodeId {
            level: 63,
            index: 2,
        },
        NodeId {
            level: 1,
            index: u64::MAX,
        },
    ] {
        assert_eq!(slice.node(node), Err(NodeOutOfRange { node, leaves: 8 }));
    }
}

/// Every size up to 300, every index, every older size: the proofs read from stored nodes are
/// byte for byte those of the oracle, stay within O(log n) reads, verify here and verify with
/// the oracle; and the compact range's root is the oracle's root at every size.
#[test]
fn every_proof_up_to_300_leaves_matches_the_oracle() {
    const N: usize = 300;
    let data: Vec<Vec<u8>> = (0..N).map(|i| vec![i as u8; i % 7]).collect();
    let leaves: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
    let (store, full) = Levels::build(&leaves);
    assert_eq!(full.root(), root(&leaves));

    let mut oracle = MemoryBackedTree::<Sha256, Vec<u8>>::new();
    let mut range = CompactRange::new();
    let mut roots = vec![EMPTY_ROOT];
    for n in 1..=N as u64 {
        oracle.push(data[n as usize - 1].clone());
        range.push(leaves[n as usize - 1]).unwrap();
        let oracle_root = oracle.root();
        assert_eq!(
            range.root().0.as_slice(),
            oracle_root.as_bytes().as_slice(),
            "root {n}"
        );
        roots.push(range.root());

        for index in 0..n {
            let proof = inclusion_proof_from(&store, index, n).unwrap();
            assert!(
                store.take_reads() <= read_bound(n),
                "reads, inclusion {index} in {n}"
            );
            let theirs = oracle.prove_inclusion(index as usize);
            assert_eq!(
                to_bytes(&proof),
                theirs.as_bytes(),
                "inclusion {index} in {n}"
            );
            let leaf = leaves[index as usize];
            assert_eq!(
                verify_inclusion(&leaf, index, n, &proof, &range.root()),
                Ok(())
            );
            let ours = InclusionProof::<Sha256>::try_from_bytes(to_bytes(&proof)).unwrap();
            oracle_root
                .verify_inclusion(&data[index as usize], index, &ours)
                .unwrap();
        }
        for from in 1..=n {
            let proof = consistency_proof_from(&store, from, n).unwrap();
            assert!(
                store.take_reads() <= read_bound(n),
                "reads, consistency {from} to {n}"
            );
            let theirs = oracle.prove_consistency((n - from) as usize);
            assert_eq!(
                to_bytes(&proof),
                theirs.as_bytes(),
                "consistency {from} to {n}"
            );
            let old = roots[from as usize];
            assert_eq!(
                verify_consistency(from, n, &old, &range.root(), &proof),
                Ok(())
            );
            let ours = ConsistencyProof::<Sha256>::try_from_bytes(to_bytes(&proof)).unwrap();
            oracle_root
                .verify_consistency(&ct_root_hash(&old, from), &ours)
                .unwrap();
        }
    }
}

/// A uniform tree (every leaf the same) is cheap to describe at any size, which lets the
/// arithmetic run at sizes near 2^64, where an overflow would show.
struct Uniform {
    levels: Vec<Hash>,
}

impl Uniform {
    fn new() -> Self {
        let mut levels = vec![leaf_hash(b"same")];
        for level in 1..64 {
            let below = levels[level - 1];
            levels.push(node_hash(&below, &below));
        }
        Self { levels }
    }
}

impl NodeSource for Uniform {
    type Error = NodeId;

    fn node(&self, node: NodeId) -> Result<Hash, NodeId> {
        let width = 1u64.checked_shl(node.level).ok_or(node)?;
        match node.index.checked_mul(width) {
            Some(start) if start.checked_add(width - 1).is_some() => {
                Ok(self.levels[node.level as usize])
            }
            _ => Err(node),
        }
    }
}

#[test]
fn proofs_work_at_sizes_near_the_u64_limit() {
    let tree = Uniform::new();
    let leaf = tree.levels[0];
    let sizes = [
        u64::MAX,
        u64::MAX - 1,
        1 << 63,
        (1 << 63) + 1,
        (1 << 62) + 12_345,
        1_000_003,
    ];
    for &size in &sizes {
        let at_size = CompactRange::from_source(&tree, size).unwrap();
        let root = at_size.root();
        for index in [0, 1, size / 3, size - 2, size - 1] {
            let proof = inclusion_proof_from(&tree, index, size).unwrap();
            assert!(proof.len() <= 64);
            assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
        }
        for from in [1, 2, 3, size / 2 + 1, size - 1, size] {
            let old = CompactRange::from_source(&tree, from).unwrap().root();
            let proof = consistency_proof_from(&tree, from, size).unwrap();
            assert_eq!(verify_consistency(from, size, &old, &root, &proof), Ok(()));
        }
    }
    // The compact range refuses to grow past u64::MAX leaves instead of wrapping around.
    let mut full = CompactRange::from_source(&tree, u64::MAX).unwrap();
    assert_eq!(full.peaks().len(), 64);
    assert_eq!(full.push(leaf), Err(CompactRangeError::Full));
    assert_eq!(full.size(), u64::MAX);
}

#[test]
fn compact_range_reports_each_node_once_and_persists() {
    let leaves: Vec<Hash> = (0u32..100).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let slice: &[Hash] = &leaves;
    let mut range = CompactRange::new();
    let mut seen = Vec::new();
    for (i, leaf) in leaves.iter().enumerate() {
        range
            .push_with(*leaf, |node, hash| seen.push((node, *hash)))
            .unwrap();
        let size = i as u64 + 1;
        assert_eq!(range.peaks().len() as u32, size.count_ones());
        let bytes = range.to_bytes();
        assert_eq!(bytes.len(), 8 + 32 * range.peaks().len());
        assert_eq!(CompactRange::from_bytes(&bytes), Ok(range.clone()));
        assert_eq!(CompactRange::from_source(slice, size), Ok(range.clone()));
    }
    // Every perfect subtree of the 100 leaves, each reported once, with its true hash.
    let perfect: u64 = (0..7).map(|level| 100u64 >> level).sum();
    assert_eq!(seen.len() as u64, perfect);
    for (node, hash) in &seen {
        assert_eq!(slice.node(*node), Ok(*hash), "{node:?}");
    }

    assert_eq!(
        CompactRange::from_bytes(&CompactRange::new().to_bytes()),
        Ok(CompactRange::new())
    );
    let bytes = range.to_bytes();
    for bad in [
        &bytes[..7],
        &bytes[..bytes.len() - 1],
        &[bytes.as_slice(), &[0]].concat(),
    ] {
        assert!(matches!(
            CompactRange::from_bytes(bad),
            Err(CompactRangeError::WrongLength { .. })
        ));
    }
}

#[test]
fn hash_text_forms() {
    let hash = ct_root(8);
    assert_eq!(Hash::from_hex(&hash.to_hex()), Ok(hash));
    assert_eq!(Hash::from_base64(&hash.to_base64()), Ok(hash));
    assert_eq!(hash.to_string(), hash.to_hex());
    assert_eq!(
        format!("{hash:?}"),
        "Hash(5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328)"
    );
    assert_eq!(
        Hash::from_hex(&hash.to_hex().to_uppercase()),
        Err(HashParseError::InvalidHex)
    );
    assert_eq!(Hash::from_hex("zz"), Err(HashParseError::InvalidHex));
    assert_eq!(Hash::from_hex("abcd"), Err(HashParseError::WrongLength(2)));
    let b64 = hash.to_base64();
    assert_eq!(
        Hash::from_base64(b64.trim_end_matches('=')),
        Err(HashParseError::InvalidBase64)
    );
    // The last character carries two bits past the 32 bytes, which the canonical form keeps
    // zero; setting one gives another text for the same bytes, which is refused.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut stray = b64.clone().into_bytes();
    let value = ALPHABET.iter().position(|&c| c == stray[42]).unwrap();
    assert_eq!(value & 3, 0);
    stray[42] = ALPHABET[value | 1];
    assert_eq!(
        Hash::from_base64(std::str::from_utf8(&stray).unwrap()),
        Err(HashParseError::InvalidBase64)
    );
    assert_eq!(
        Hash::from_base64("AAAA"),
        Err(HashParseError::WrongLength(3))
    );
    assert_eq!(
        Hash::from_slice(&[0; 31]),
        Err(HashParseError::WrongLength(31))
    );
}

fn leaf_data() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6), 1..=300)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random leaf contents (including repeated leaves), proofs from a plain slice of leaf
    /// hashes: the oracle agrees byte for byte, and both verifiers accept.
    #[test]
    fn slice_proofs_match_the_oracle(data in leaf_data(), a in any::<u64>(), b in any::<u64>()) {
        let n = data.len() as u64;
        let leaves: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
        let mut oracle = MemoryBackedTree::<Sha256, Vec<u8>>::new();
        for d in &data {
            oracle.push(d.clone());
        }
        let tree_root = root(&leaves);
        let oracle_root = oracle.root();
        prop_assert_eq!(tree_root.0.as_slice(), oracle_root.as_bytes().as_slice());

        let index = a % n;
        let proof = inclusion_proof(&leaves, index, n).unwrap();
        let theirs = oracle.prove_inclusion(index as usize);
        prop_assert_eq!(to_bytes(&proof), theirs.as_bytes());
        prop_assert_eq!(verify_inclusion(&leaves[index as usize], index, n, &proof, &tree_root), Ok(()));

        let from = 1 + b % n;
        let proof = consistency_proof(&leaves, from, n).unwrap();
        let theirs = oracle.prove_consistency((n - from) as usize);
        prop_assert_eq!(to_bytes(&proof), theirs.as_bytes());
        let old = root(&leaves[..from as usize]);
        prop_assert_eq!(verify_consistency(from, n, &old, &tree_root, &proof), Ok(()));
    }

    /// With distinct leaves, an inclusion proof verifies for exactly one claim: the index and
    /// size it was made for (or another size whose proof happens to be the same hashes).
    #[test]
    fn inclusion_proofs_bind_their_claim(
        extra in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..4), 2..=200),
        a in any::<u64>(), b in any::<u64>(), c in any::<u64>(),
    ) {
        let leaves: Vec<Hash> = distinct_leaves(&extra).iter().map(|d| leaf_hash(d)).collect();
        let n = leaves.len() as u64;
        let size = 1 + a % n;
        let index = b % size;
        let leaf = leaves[index as usize];
        let proof = inclusion_proof(&leaves, index, size).unwrap();
        let tree_root = root(&leaves[..size as usize]);
        prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &tree_root), Ok(()));

        // Another index in the same tree.
        let other = c % size;
        if other != index {
            prop_assert!(verify_inclusion(&leaf, other, size, &proof, &tree_root).is_err());
            prop_assert!(verify_inclusion(&leaves[other as usize], index, size, &proof, &tree_root).is_err());
        }
        // Another size, with that size's true root: accepted only if its proof is this one.
        let other_size = 1 + c % n;
        if other_size != size && index < other_size {
            let other_root = root(&leaves[..other_size as usize]);
            let accepted = verify_inclusion(&leaf, index, other_size, &proof, &other_root).is_ok();
            let same = inclusion_proof(&leaves, index, other_size).unwrap() == proof;
            prop_assert_eq!(accepted, same);
        }
        // A flipped bit anywhere, a truncated or an extended proof.
        if !proof.is_empty() {
            let mut tampered = proof.clone();
            let at = (c as usize) % tampered.len();
            tampered[at].0[(c as usize >> 8) % 32] ^= 1 << (c % 8);
            prop_assert_eq!(verify_inclusion(&leaf, index, size, &tampered, &tree_root), Err(VerifyError::RootMismatch));
            let expected = proof.len();
            prop_assert_eq!(
                verify_inclusion(&leaf, index, size, &proof[..expected - 1], &tree_root),
                Err(VerifyError::WrongProofLength { expected, actual: expected - 1 })
            );
        }
        let longer = [&proof[..], &[tree_root]].concat();
        prop_assert_eq!(
            verify_inclusion(&leaf, index, size, &longer, &tree_root),
            Err(VerifyError::WrongProofLength { expected: proof.len(), actual: proof.len() + 1 })
        );
        let mut tampered_leaf = leaf;
        tampered_leaf.0[0] ^= 1;
        prop_assert!(verify_inclusion(&tampered_leaf, index, size, &proof, &tree_root).is_err());
    }

    /// With distinct leaves, a consistency proof verifies for exactly the pair of sizes and
    /// roots it was made for, and any tampering is refused.
    #[test]
    fn consistency_proofs_bind_their_claim(
        extra in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..4), 2..=200),
        a in any::<u64>(), b in any::<u64>(), c in any::<u64>(),
    ) {
        let leaves: Vec<Hash> = distinct_leaves(&extra).iter().map(|d| leaf_hash(d)).collect();
        let n = leaves.len() as u64;
        let to = 2 + a % (n - 1);
        let from = 1 + b % (to - 1);
        let mut range = CompactRange::new();
        let mut roots = vec![range.root()];
        for leaf in &leaves {
            range.push(*leaf).unwrap();
            roots.push(range.root());
        }
        let proof = consistency_proof(&leaves, from, to).unwrap();
        let (r1, r2) = (roots[from as usize], roots[to as usize]);
        prop_assert_eq!(verify_consistency(from, to, &r1, &r2, &proof), Ok(()));

        // Other sizes with their true roots: accepted only if their proof is this one.
        let other_from = 1 + c % to;
        let accepted = verify_consistency(other_from, to, &roots[other_from as usize], &r2, &proof).is_ok();
        prop_assert_eq!(accepted, consistency_proof(&leaves, other_from, to).unwrap() == proof);
        let other_to = from + c % (n - from + 1);
        let accepted = verify_consistency(from, other_to, &r1, &roots[other_to as usize], &proof).is_ok();
        prop_assert_eq!(accepted, consistency_proof(&leaves, from, other_to).unwrap() == proof);

        // A root of another tree, a flipped bit, a truncated or an extended proof.
        prop_assert_eq!(verify_consistency(from, to, &roots[from as usize - 1], &r2, &proof), Err(VerifyError::RootMismatch));
        prop_assert_eq!(verify_consistency(from, to, &r1, &roots[to as usize - 1], &proof), Err(VerifyError::RootMismatch));
        let mut tampered = proof.clone();
        let at = (c as usize) % tampered.len();
        tampered[at].0[(c as usize >> 8) % 32] ^= 1 << (c % 8);
        prop_assert_eq!(verify_consistency(from, to, &r1, &r2, &tampered), Err(VerifyError::RootMismatch));
        let expected = proof.len();
        prop_assert_eq!(
            verify_consistency(from, to, &r1, &r2, &proof[..expected - 1]),
            Err(VerifyError::WrongProofLength { expected, actual: expected - 1 })
        );
        let longer = [&proof[..], &[r2]].concat();
        prop_assert_eq!(
            verify_consistency(from, to, &r1, &r2, &longer),
            Err(VerifyError::WrongProofLength { expected, actual: expected + 1 })
        );
    }

    /// Verification never panics, whatever the sizes, indices and proof.
    #[test]
    fn verification_of_arbitrary_input_never_panics(
        a in any::<u64>(), b in any::<u64>(),
        proof in proptest::collection::vec(any::<[u8; 32]>(), 0..70),
        r1 in any::<[u8; 32]>(), r2 in any::<[u8; 32]>(),
    ) {
        let proof: Vec<Hash> = proof.into_iter().map(Hash).collect();
        let _ = verify_inclusion(&Hash(r1), a, b, &proof, &Hash(r2));
        let _ = verify_consistency(a, b, &Hash(r1), &Hash(r2), &proof);
        let _ = verify_consistency(a.min(b), a.max(b), &Hash(r1), &Hash(r2), &proof);
        let mut bytes = b.to_be_bytes().to_vec();
        bytes.extend(proof.iter().flat_map(|x| x.0));
        if let Ok(range) = CompactRange::from_bytes(&bytes) {
            prop_assert_eq!(range.to_bytes(), bytes);
            let _ = range.root();
        }
    }
}

mod range_roots {
    use custos_core::merkle::{self, Hash, NodeSource};
    use proptest::prelude::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
            .collect()
    }

    proptest! {
        /// Any slice of the log plus the nodes `range_nodes` names gives back the root that
        /// all the leaves give.
        #[test]
        fn a_slice_and_its_range_nodes_give_the_root(size in 1u64..300, a in 0u64..300, b in 0u64..300) {
            let (from, to) = (a.min(b) % size, (a.max(b) % size) + 1);
            prop_assume!(from < to);
            let all = leaves(size);
            let ids = merkle::range_nodes(from, to, size).unwrap();
            let nodes: Vec<Hash> = ids.iter().map(|id| all[..].node(*id).unwrap()).collect();
            let root = merkle::root_from_range(&all[from as usize..to as usize], from, size, &nodes).unwrap();
            prop_assert_eq!(root, merkle::root(&all));
            // A changed leaf changes the root.
            let mut changed = all[from as usize..to as usize].to_vec();
            changed[0] = merkle::leaf_hash(b"changed");
            prop_assert_ne!(merkle::root_from_range(&changed, from, size, &nodes).unwrap(), merkle::root(&all));
        }
    }

    #[test]
    fn a_whole_log_needs_no_nodes_and_bad_ranges_are_refused() {
        assert!(merkle::range_nodes(0, 7, 7).unwrap().is_empty());
        assert!(merkle::range_nodes(3, 3, 7).is_err());
        assert!(merkle::range_nodes(0, 8, 7).is_err());
        let all = leaves(7);
        assert!(
            merkle::root_from_range(&all[2..4], 2, 7, &[]).is_err(),
            "nodes missing"
        );
    }
}
