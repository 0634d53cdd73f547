"""The audit log checked by an outside verifier (c2sp_tlog.py, written from the C2SP signed-note
and tlog-checkpoint texts and RFC 9162): the checkpoint's signature under the published vkey,
an inclusion proof for every leaf with the leaf hash rebuilt from the event, a consistency
proof as the log grows, and forgeries of each that the verifier must refuse."""

from __future__ import annotations

import base64
import random
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from c2sp_tlog import (
    EMPTY_ROOT,
    Checkpoint,
    NoteVerifier,
    VerificationError,
    b64decode_strict,
    encode_event,
    event_leaf_hash,
    format_vkey,
    key_id,
    leaf_hash,
    node_hash,
    open_checkpoint,
    parse_checkpoint,
    parse_note,
    parse_vkey,
    rfc3339_to_unix_millis,
    verify_consistency,
    verify_inclusion,
    verify_note,
)
from custos import Custos, new_client_key, public_jwk, unique

# How the server writes a timestamp: RFC 3339 in UTC, with a fraction of at most milliseconds
# (the `time` crate leaves out a zero fraction and trailing zeros: "…:42.57Z", "…:42Z").
UTC_MILLIS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z")


# ---- the live log ----


@dataclass(frozen=True)
class Signed:
    """A checkpoint as served, and as the verifier reads it."""

    body: dict
    verifier: NoteVerifier
    checkpoint: Checkpoint


def audit(custos: Custos, path: str, **params: int) -> dict:
    response = custos.admin.get(f"/v1/audit/{path}", params=params)
    assert response.status_code == 200, f"{path} {params}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def fetch_checkpoint(custos: Custos) -> Signed:
    body = audit(custos, "checkpoint")
    verifier = parse_vkey(body["verifier_key"])
    checkpoint = open_checkpoint(body["note"], verifier)
    return Signed(body, verifier, checkpoint)


def make_activity(custos: Custos, label: str, agents: int) -> None:
    """A team (its name not ASCII, so that lengths in bytes and in characters differ), agents
    with a static key each, and a P-256 and an Ed25519 client key on the first two."""
    name = unique(f"audit-équipe-{label}-日本")
    response = custos.admin.post(
        "/v1/teams", json={"name": name, "contact": f"audit-{label}@example.com"}
    )
    assert response.status_code == 201, response.text
    registered = [custos.nhi(f"audit-{label}", ["crm:read:customers/*"]) for _ in range(agents)]
    for nhi, alg in zip(registered, ("ES256", "EdDSA"), strict=False):
        custos.register_client_key(nhi.id, public_jwk(new_client_key(alg), alg))


def trail(custos: Custos) -> list[dict]:
    """Every event of /v1/audit/events, oldest first."""
    events, cursor = [], None
    while True:
        params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        response = custos.admin.get("/v1/audit/events", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        events += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return events


@pytest.fixture(scope="module")
def first(custos: Custos) -> Signed:
    make_activity(custos, "first", agents=12)
    return fetch_checkpoint(custos)


def inclusion(custos: Custos, index: int, size: int) -> dict:
    proof = audit(custos, "proof/inclusion", index=index, size=size)
    assert (proof["index"], proof["size"]) == (index, size)
    return proof


def hashes(proof: dict) -> list[bytes]:
    return [b64decode_strict(h, "proof hash") for h in proof["hashes"]]


def flip_bit(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# ---- the checkpoint ----


def test_checkpoint_is_a_signed_tlog_checkpoint(custos: Custos, first: Signed):
    body, verifier, checkpoint = first.body, first.verifier, first.checkpoint
    # The JSON fields say what the signed text says.
    assert checkpoint.size == body["size"]
    assert checkpoint.root == b64decode_strict(body["root"], "root")
    assert checkpoint.extensions == ()
    assert UTC_MILLIS.fullmatch(body["created_at"]), body["created_at"]
    # A few dozen events: the server's own two at start, then this module's activity.
    assert checkpoint.size >= 30
    # tlog-checkpoint: "The log's key name in its signature line SHOULD match the origin line."
    assert verifier.name == checkpoint.origin
    note = parse_note(body["note"])
    assert [(s.name, s.key_id) for s in note.signatures] == [(verifier.name, verifier.key_id)]
    assert note.text == f"{checkpoint.origin}\n{checkpoint.size}\n{body['root']}\n"

    # Nothing happened since: the same checkpoint again, signature and all (Ed25519 is
    # deterministic, and the server keeps a checkpoint until the log grows).
    again = fetch_checkpoint(custos)
    assert again.checkpoint == checkpoint
    assert again.body["note"] == body["note"]
    assert again.body["verifier_key"] == body["verifier_key"]


# ---- every leaf ----


def test_every_leaf_is_included_and_hashes_to_its_event(custos: Custos, first: Signed):
    size, root = first.checkpoint.size, first.checkpoint.root
    events = []
    for index in range(size):
        proof = inclusion(custos, index, size)
        event = proof["event"]
        assert UTC_MILLIS.fullmatch(event["occurred_at"]), event["occurred_at"]
        # The leaf hash, rebuilt here from the event as shown, is the one the server proves.
        leaf = event_leaf_hash(event)
        assert leaf == b64decode_strict(proof["leaf_hash"], "leaf_hash"), (index, event)
        verify_inclusion(leaf, index, size, hashes(proof), root)
        events.append(event)

    # The log is the event trail: each event once, in the order of the trail (one SQLite
    # writer: seal order is seq order), each leaf exactly the event the trail lists.
    assert len({e["id"] for e in events}) == size
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert trail(custos)[:size] == events
    kinds = {e["kind"] for e in events}
    assert {"server.bootstrapped", "team.created", "nhi.registered", "credential.issued"} <= kinds
    # Some event carries text whose UTF-8 length differs from its length in characters.
    assert any(
        len(v.encode()) != len(v) for e in events for v in e["details"].values()
    ), "no event with a non-ASCII detail"


def test_a_leaf_of_an_unsigned_smaller_tree_is_tied_to_the_checkpoint(
    custos: Custos, first: Signed
):
    """An inclusion proof in a tree no checkpoint signed leads to that tree's root; a
    consistency proof then ties the root to the signed one."""
    size = first.checkpoint.size
    for index, tree in [(0, 1), (3, 4), (size // 2, size - 1), (size - 2, size - 1)]:
        proof = inclusion(custos, index, tree)
        leaf = event_leaf_hash(proof["event"])
        assert leaf == b64decode_strict(proof["leaf_hash"], "leaf_hash")
        older = rebuild_root(leaf, index, tree, hashes(proof))
        assert older is not None
        consistency = audit(custos, "proof/consistency", **{"from": tree, "to": size})
        verify_consistency(tree, size, older, first.checkpoint.root, hashes(consistency))
        with pytest.raises(VerificationError):
            verify_consistency(
                tree, size, flip_bit(older, 1), first.checkpoint.root, hashes(consistency)
            )


def rebuild_root(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes | None:
    """The root an inclusion path leads to, from RFC 9162 §2.1.3.2 steps 2-4 (the verifier
    then compares it in step 5); used only to get a root for a tree no checkpoint signed."""
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


# ---- growth ----


def test_the_log_grows_consistently(custos: Custos, first: Signed):
    make_activity(custos, "second", agents=5)
    second = fetch_checkpoint(custos)
    # The same log, the same key.
    assert second.body["verifier_key"] == first.body["verifier_key"]
    assert second.checkpoint.origin == first.checkpoint.origin
    size1, root1 = first.checkpoint.size, first.checkpoint.root
    size2, root2 = second.checkpoint.size, second.checkpoint.root
    assert size2 >= size1 + 13  # a team, five agents with a key each, two client keys

    proof = audit(custos, "proof/consistency", **{"from": size1, "to": size2})
    assert (proof["from"], proof["to"]) == (size1, size2)
    verify_consistency(size1, size2, root1, root2, hashes(proof))
    # Not the other way round, and not against each other's root.
    with pytest.raises(VerificationError):
        verify_consistency(size1, size2, root2, root1, hashes(proof))

    # Every new leaf is in the new tree.
    for index in range(size1, size2):
        leaf_proof = inclusion(custos, index, size2)
        leaf = event_leaf_hash(leaf_proof["event"])
        assert leaf == b64decode_strict(leaf_proof["leaf_hash"], "leaf_hash")
        verify_inclusion(leaf, index, size2, hashes(leaf_proof), root2)

    # From every older size, each older root rebuilt from the last leaf's inclusion path in
    # that tree: every prefix of the log is consistent with the new checkpoint (this takes each
    # branch of the RFC algorithm: powers of two, odd and even sizes).
    for older in range(1, size2):
        last = inclusion(custos, older - 1, older)
        older_root = rebuild_root(
            event_leaf_hash(last["event"]), older - 1, older, hashes(last)
        )
        assert older_root is not None
        if older == size1:
            assert older_root == root1
        proof = audit(custos, "proof/consistency", **{"from": older, "to": size2})
        verify_consistency(older, size2, older_root, root2, hashes(proof))
    # The edge cases outside RFC 9162's 0 < first < second: empty proofs.
    for older, older_root in [(0, EMPTY_ROOT), (size2, root2)]:
        proof = audit(custos, "proof/consistency", **{"from": older, "to": size2})
        assert proof["hashes"] == []
        verify_consistency(older, size2, older_root, root2, [])


# ---- forgeries the verifier must refuse ----


def test_a_tampered_inclusion_proof_is_refused(custos: Custos, first: Signed):
    size, root = first.checkpoint.size, first.checkpoint.root
    for index in sorted({0, 1, size // 2, size - 2, size - 1}):
        proof = inclusion(custos, index, size)
        path = hashes(proof)
        leaf = event_leaf_hash(proof["event"])
        verify_inclusion(leaf, index, size, path, root)
        assert path, "a tree of a few dozen leaves has a path for every leaf"

        # A flipped bit anywhere: in any path hash, in the leaf, in the root.
        for position in range(len(path)):
            for bit in (0, 77, 255):
                forged = list(path)
                forged[position] = flip_bit(path[position], bit)
                with pytest.raises(VerificationError):
                    verify_inclusion(leaf, index, size, forged, root)
        with pytest.raises(VerificationError):
            verify_inclusion(flip_bit(leaf, 3), index, size, path, root)
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, index, size, path, flip_bit(root, 200))

        # The wrong index or size, a path cut short, lengthened, or reordered.
        for wrong in {index - 1, index + 1, index ^ 1, size - 1 - index} - {index, -1}:
            with pytest.raises(VerificationError):
                verify_inclusion(leaf, wrong, size, path, root)
        # A size of another depth. (One of the same depth can pass with this path and root:
        # the walk of RFC 9162 §2.1.3.2 depends on the size only through its bits above the
        # leaf's; the signed note binds size and root together, and the size used here is the
        # note's, never the proof response's.)
        deeper = (1 << (size - 1).bit_length()) + 1
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, index, deeper, path, root)
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, index, size, path[:-1], root)
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, index, size, [*path, path[-1]], root)
        if len(path) > 1:
            with pytest.raises(VerificationError):
                verify_inclusion(leaf, index, size, path[::-1], root)


def test_a_tampered_event_is_refused(custos: Custos, first: Signed):
    size, root = first.checkpoint.size, first.checkpoint.root
    # The first NHI registration: several details, text of several kinds.
    for index in range(size):
        proof = inclusion(custos, index, size)
        if proof["event"]["kind"] == "nhi.registered":
            break
    else:
        pytest.fail("no nhi.registered event in the log")
    event, path = proof["event"], hashes(proof)
    verify_inclusion(event_leaf_hash(event), index, size, path, root)

    def tampered(**changes) -> dict:
        return {**event, **changes}

    key = sorted(event["details"])[0]
    forgeries = [
        tampered(details={**event["details"], key: event["details"][key] + "x"}),
        tampered(details={**event["details"], "extra": ""}),
        tampered(details={k: v for k, v in event["details"].items() if k != key}),
        tampered(details={**event["details"], key.upper(): event["details"][key]}),
        tampered(kind="nhi.updated"),
        tampered(actor="system"),
        tampered(subject=event["subject"] + " "),
        tampered(id=event["id"][:-1] + ("1" if event["id"].endswith("0") else "0")),
    ]
    millis = rfc3339_to_unix_millis(event["occurred_at"])
    forgeries.append(tampered(occurred_at=shifted(event["occurred_at"], millis + 1)))
    for forged in forgeries:
        assert encode_event(forged) != encode_event(event)
        with pytest.raises(VerificationError):
            verify_inclusion(event_leaf_hash(forged), index, size, path, root)
    # The seq is not part of the leaf (it is the store's, not the event's).
    verify_inclusion(event_leaf_hash(tampered(seq=event["seq"] + 1)), index, size, path, root)


def shifted(occurred_at: str, millis: int) -> str:
    """`millis` written as RFC 3339 UTC with three fraction digits."""
    seconds, ms = divmod(millis, 1000)
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    out = moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"
    assert rfc3339_to_unix_millis(out) == millis != rfc3339_to_unix_millis(occurred_at)
    return out


def test_a_tampered_consistency_proof_is_refused(custos: Custos, first: Signed):
    size2, root2 = first.checkpoint.size, first.checkpoint.root
    for size1 in (1, 2, 3, 5, 8, size2 - 1):
        last = inclusion(custos, size1 - 1, size1)
        root1 = rebuild_root(event_leaf_hash(last["event"]), size1 - 1, size1, hashes(last))
        path = hashes(audit(custos, "proof/consistency", **{"from": size1, "to": size2}))
        verify_consistency(size1, size2, root1, root2, path)
        for position in range(len(path)):
            forged = list(path)
            forged[position] = flip_bit(path[position], 129)
            with pytest.raises(VerificationError):
                verify_consistency(size1, size2, root1, root2, forged)
        for wrong in [
            (size1 + 1, size2, root1, root2, path),
            # (size2 + 1 could pass, as for inclusion: the note binds size2 to root2.)
            (size1, (1 << (size2 - 1).bit_length()) + 1, root1, root2, path),
            (size1, size2, flip_bit(root1, 0), root2, path),
            (size1, size2, root1, flip_bit(root2, 0), path),
            (size1, size2, root1, root2, path[:-1]),
            (size1, size2, root1, root2, [*path, path[-1]]),
            (size1, size2, root1, root2, []),
        ]:
            if wrong[0] <= wrong[1]:
                with pytest.raises(VerificationError):
                    verify_consistency(*wrong)
    with pytest.raises(VerificationError):
        verify_consistency(size2, size2 - 1, root2, root2, [])  # trees do not shrink
    with pytest.raises(VerificationError):
        verify_consistency(size2, size2, root2, flip_bit(root2, 9), [])  # a fork


def test_a_forged_note_is_refused(first: Signed):
    note, verifier = first.body["note"], first.verifier
    text = parse_note(note).text
    signature_line = note[len(text) + 1 :]

    # Another key under the log's name: its own vkey verifies the note it signs, the log's
    # does not (another key ID, so the signature is ignored, and none is left).
    other = Ed25519PrivateKey.generate()
    other_raw = other.public_key().public_bytes_raw()
    other_vkey = parse_vkey(format_vkey(verifier.name, other_raw))
    assert other_vkey.key_id != verifier.key_id
    forged = sign_note(text, verifier.name, other_vkey.key_id, other)
    verify_note(forged, [other_vkey])
    with pytest.raises(VerificationError, match="no signature from a known key"):
        open_checkpoint(forged, verifier)
    # The same, claiming the log's key ID: the signature is checked, and fails.
    impostor = sign_note(text, verifier.name, verifier.key_id, other)
    with pytest.raises(VerificationError, match="does not verify"):
        open_checkpoint(impostor, verifier)
    # The log's own signature next to a failing one from its key: the whole note is refused.
    with pytest.raises(VerificationError, match="does not verify"):
        open_checkpoint(impostor + signature_line, verifier)
    # The log's signature plus an unknown key's: the unknown one is ignored.
    cosigned = note + sign_note(text, "witness.example", 1234, other)[len(text) + 1 :]
    assert open_checkpoint(cosigned, verifier) == first.checkpoint

    # The text altered under the log's signature: another size, another root, one more line.
    size, root = first.checkpoint.size, first.body["root"]
    other_root = base64.b64encode(flip_bit(first.checkpoint.root, 5)).decode()
    for altered in [
        text.replace(f"\n{size}\n", f"\n{size + 1}\n"),
        text.replace(root, other_root),
        text.replace(first.checkpoint.origin, first.checkpoint.origin + "x", 1),
        text + "extension\n",
    ]:
        assert altered != text
        with pytest.raises(VerificationError, match="does not verify"):
            open_checkpoint(altered + "\n" + signature_line, verifier)

    # Malformed notes, each refused before any signature is looked at.
    for malformed in [
        note.rstrip("\n"),  # no final newline
        text + signature_line,  # no blank line
        text + "\n" + signature_line.replace("\u2014", "-", 1),  # a hyphen, not an em dash
        text + "\n" + signature_line.replace(" ", "  ", 1),  # two spaces
        text + "\n" + signature_line.replace("=\n", "\n"),  # base64 padding dropped
        text + "\n",  # no signature line
        text.replace("\n", "\r\n") + "\n" + signature_line,  # a control character
    ]:
        with pytest.raises(VerificationError):
            open_checkpoint(malformed, verifier)

    # A vkey whose ID is not the hash of its name and key.
    name, hex_id, key = first.body["verifier_key"].split("+", 2)
    with pytest.raises(VerificationError, match="key ID"):
        parse_vkey(f"{name}+{int(hex_id, 16) ^ 1:08x}+{key}")
    with pytest.raises(VerificationError, match="key ID"):
        parse_vkey(f"{name}x+{hex_id}+{key}")  # the ID is bound to the name too
    # The note under the log's name with the wrong expected origin.
    with pytest.raises(VerificationError, match="origin"):
        open_checkpoint(note, verifier, origin="example.com/another-log")


def sign_note(text: str, name: str, kid: int, key: Ed25519PrivateKey) -> str:
    signature = kid.to_bytes(4, "big") + key.sign(text.encode())
    return f"{text}\n\u2014 {name} {base64.b64encode(signature).decode()}\n"


# ---- the verifier itself, without the server ----
#
# Trees and proofs built from RFC 9162's recursive definitions (§2.1.1 MTH, §2.1.3.1 PATH,
# §2.1.4.1 PROOF), independently of the server and of the iterative verifier under test.


def mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hash(leaves[0])
    k = 1 << ((n - 1).bit_length() - 1)  # the largest power of two smaller than n
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*subproof(m, leaves[:k], complete), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def test_verifier_accepts_rfc_proofs_and_only_those():
    entries = [f"entry {i}".encode() for i in range(33)]
    for n in range(1, len(entries) + 1):
        tree = entries[:n]
        root = mth(tree)
        for m in range(n):
            proof = path(m, tree)
            verify_inclusion(leaf_hash(tree[m]), m, n, proof, root)
            with pytest.raises(VerificationError):
                verify_inclusion(leaf_hash(tree[m] + b"!"), m, n, proof, root)
            for bad in {m + 1, m - 1} & set(range(n)):
                if path(bad, tree) != proof:
                    with pytest.raises(VerificationError):
                        verify_inclusion(leaf_hash(tree[m]), bad, n, proof, root)
        for m in range(1, n):
            proof = subproof(m, tree, True)
            verify_consistency(m, n, mth(entries[:m]), root, proof)
            with pytest.raises(VerificationError):
                verify_consistency(m, n, mth(entries[: m - 1]), root, proof)
            for i in range(len(proof)):
                forged = list(proof)
                forged[i] = flip_bit(forged[i], 42)
                with pytest.raises(VerificationError):
                    verify_consistency(m, n, mth(entries[:m]), root, forged)
        verify_consistency(0, n, EMPTY_ROOT, root, [])
        verify_consistency(n, n, root, root, [])


def test_signed_note_known_answer():
    # The example key and note of golang.org/x/mod/sumdb/note (the signed-note reference
    # implementation): the private seed follows the 0x01 type byte.
    seed = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    assert format_vkey("PeterNeumann", public) == vkey
    verifier = parse_vkey(vkey)
    assert verifier.key_id == key_id("PeterNeumann", 0x01, public) == 0xC74F20A3
    with pytest.raises(VerificationError, match="key ID"):
        parse_vkey(vkey.replace("+c74f20a3+", "+c74f20a4+"))
    text = (
        "If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n"
    )
    note = (
        text + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2p"
        "ZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
    )
    assert verify_note(note, [verifier]).text == text
    with pytest.raises(VerificationError):
        verify_note(note.replace("problem is.", "problem is!"), [verifier])
    # The text of a note may hold blank lines; the last one separates the signatures.
    assert parse_note("a\n\nb\n\n\u2014 k AAAAAAAA\n").text == "a\n\nb\n"


def test_canonical_encoding_by_hand():
    event = {
        "id": "e1",
        "kind": "team.created",
        "actor": "system",
        "subject": "team:t",
        "occurred_at": "1970-01-01T00:00:01.5Z",
        # Out of order on purpose; "é" (2 bytes in UTF-8) sorts after ASCII by byte.
        "details": {"é": "ü", "b": "", "a": "1"},
    }
    expected = (
        b"\x01"
        + b"\x00\x00\x00\x02e1"
        + b"\x00\x00\x00\x0cteam.created"
        + b"\x00\x00\x00\x06system"
        + b"\x00\x00\x00\x06team:t"
        + (1500).to_bytes(8, "big")
        + b"\x00\x00\x00\x03"
        + b"\x00\x00\x00\x01a\x00\x00\x00\x011"
        + b"\x00\x00\x00\x01b\x00\x00\x00\x00"
        + b"\x00\x00\x00\x02\xc3\xa9\x00\x00\x00\x02\xc3\xbc"
    )
    assert encode_event(event) == expected
    shuffled = dict(random.Random(7).sample(list(event["details"].items()), 3))
    assert encode_event({**event, "details": shuffled}) == expected
    assert event_leaf_hash(event) == leaf_hash(expected)
    # Timestamps: the same instant however the fraction and offset are written.
    for same in ("1970-01-01T00:00:01.500Z", "1970-01-01T01:00:01.5+01:00"):
        assert rfc3339_to_unix_millis(same) == 1500
    for bad in ("1970-01-01T00:00:01.5001Z", "1970-01-01 00:00:01Z", "1970-01-01T00:00:01"):
        with pytest.raises(VerificationError):
            rfc3339_to_unix_millis(bad)
    # A checkpoint body: sizes without leading zeroes, a 32-byte root, no empty lines.
    root = base64.b64encode(bytes(32)).decode()
    assert parse_checkpoint(f"o\n0\n{root}\n") == Checkpoint("o", 0, bytes(32))
    for bad in (f"o\n01\n{root}\n", f"o\n1\n{root[:-4]}\n", f"o\n1\n{root}\n\n", f"o\n1\n{root}"):
        with pytest.raises(VerificationError):
            parse_checkpoint(bad)
