"""An audit-log verifier written from the specifications, not from the server's code.

- C2SP signed-note (https://c2sp.org/signed-note): Ed25519 signatures over a note text, key IDs,
  and the verifier key text `<name>+<hex key ID>+<base64(0x01 || public key)>` (the vkey form of
  golang.org/x/mod/sumdb/note, which the signed-note examples use).
- C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint): the note text origin / size / root.
- RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency): the iterative algorithms, step by
  step as the RFC states them, over RFC 6962 hashing (SHA-256, leaf prefix 0x00, node 0x01).
- The canonical byte form of a Custos event (crates/custos-core/src/audit.rs), from its text.

Every check raises VerificationError; nothing here returns a boolean that could be ignored.
Only `cryptography` (Ed25519) and the standard library are used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

HASH_SIZE = 32
# signed-note "Signature types": 0x01 is Ed25519.
ED25519 = 0x01
ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
# signed-note: verifiers "MUST accept at least up to 16 signatures"; Go's note.Open takes 100.
MAX_SIGNATURES = 100
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
EVENT_ENCODING_V1 = 0x01


class VerificationError(Exception):
    """The input is malformed, or a signature or proof does not verify."""


# ---- helpers ----


def b64decode_strict(text: str, what: str) -> bytes:
    """RFC 4648 §4 standard base64, padded, canonical (re-encodes to the same text)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as e:
        raise VerificationError(f"{what}: not standard base64: {text!r}") from e
    if base64.b64encode(raw).decode("ascii") != text:
        raise VerificationError(f"{what}: not canonical base64: {text!r}")
    return raw


def _check_key_name(name: str) -> None:
    # signed-note: "Key names MUST be non-empty and MUST NOT contain any Unicode spaces or
    # plus (U+002B) characters."
    if not name:
        raise VerificationError("empty key name")
    for ch in name:
        if ch == "+" or ch.isspace() or unicodedata.category(ch) == "Zs":
            raise VerificationError(f"key name {name!r} contains a space or a plus")


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf_hash(entry: bytes) -> bytes:
    """RFC 6962 / RFC 9162 §2.1.1: MTH({d}) = HASH(0x00 || d)."""
    return sha256(b"\x00" + entry)


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 / RFC 9162 §2.1.1: HASH(0x01 || left || right)."""
    return sha256(b"\x01" + left + right)


EMPTY_ROOT = sha256(b"")  # MTH({}) = HASH()


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise VerificationError(f"{what}: not a {HASH_SIZE}-byte hash")


# ---- signed-note verifier keys ----


def key_id(name: str, signature_type: int, public_key: bytes) -> int:
    """signed-note: key ID = SHA-256(key name || 0x0A || signature type || public key)[:4],
    a big-endian uint32."""
    digest = sha256(name.encode("utf-8") + b"\n" + bytes([signature_type]) + public_key)
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class NoteVerifier:
    name: str
    key_id: int
    public_key: Ed25519PublicKey
    raw_public_key: bytes

    def verify(self, signature: bytes, message: bytes) -> None:
        if len(signature) != ED25519_SIGNATURE_SIZE:
            raise VerificationError(
                f"signature by {self.name}: {len(signature)} bytes, not {ED25519_SIGNATURE_SIZE}"
            )
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature as e:
            raise VerificationError(f"signature by {self.name} does not verify") from e


def parse_vkey(vkey: str) -> NoteVerifier:
    """`<name>+<8 hex digits of key ID>+<base64(0x01 || 32-byte Ed25519 public key)>`; the key ID
    must be the one the signed-note spec derives from the name and key."""
    # The name holds no plus, and base64 may: split at the first two.
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise VerificationError(f"vkey {vkey!r}: not name+id+key")
    name, hex_id, key_text = parts
    _check_key_name(name)
    if not re.fullmatch(r"[0-9a-fA-F]{8}", hex_id):
        raise VerificationError(f"vkey {vkey!r}: key ID {hex_id!r} is not 8 hex digits")
    key = b64decode_strict(key_text, "vkey key")
    if len(key) != 1 + ED25519_PUBLIC_KEY_SIZE or key[0] != ED25519:
        raise VerificationError(f"vkey {vkey!r}: not 0x01 followed by a 32-byte Ed25519 key")
    raw = key[1:]
    expected = key_id(name, ED25519, raw)
    if int(hex_id, 16) != expected:
        raise VerificationError(
            f"vkey {vkey!r}: key ID {hex_id} is not SHA-256(name || 0x0A || 0x01 || key)[:4]"
            f" = {expected:08x}"
        )
    return NoteVerifier(name, expected, Ed25519PublicKey.from_public_bytes(raw), raw)


def format_vkey(name: str, public_key: bytes) -> str:
    """The vkey text of an Ed25519 key (for tests that make their own keys)."""
    key = bytes([ED25519]) + public_key
    return f"{name}+{key_id(name, ED25519, public_key):08x}+{base64.b64encode(key).decode()}"


# ---- signed notes ----


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: int
    signature: bytes  # the bytes after the key ID


@dataclass(frozen=True)
class Note:
    text: str  # ends in a newline; what the signatures sign
    signatures: tuple[NoteSignature, ...]


def parse_note(note: str | bytes) -> Note:
    """Parses a signed note, strictly: valid UTF-8, no control characters but newline, a text
    ending in a newline, a blank line, then one or more well-formed signature lines."""
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as e:
            raise VerificationError("the note is not valid UTF-8") from e
    for ch in note:
        if ord(ch) < 0x20 and ch != "\n":
            raise VerificationError(f"the note holds control character U+{ord(ch):04X}")
    # "the text is separated from the signatures by the last empty line in the note."
    split = note.rfind("\n\n")
    if split < 0:
        raise VerificationError("no blank line between the text and the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not text.endswith("\n") or text == "\n":
        raise VerificationError("the note text is empty or does not end in a newline")
    if not block:
        raise VerificationError("no signature lines")
    if not block.endswith("\n"):
        raise VerificationError("the last signature line does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise VerificationError(f"more than {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        # em dash, space, key name, space, base64-encoded signature, newline.
        if not line.startswith(SIGNATURE_PREFIX):
            raise VerificationError(f"signature line {line!r} does not start with an em dash")
        fields = line[len(SIGNATURE_PREFIX) :].split(" ")
        if len(fields) != 2:
            raise VerificationError(f"signature line {line!r} is not '— name signature'")
        name, signature_text = fields
        _check_key_name(name)
        raw = b64decode_strict(signature_text, "signature")
        if len(raw) < 5:
            raise VerificationError(f"signature line {line!r}: fewer than 4+1 bytes")
        signatures.append(NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return Note(text, tuple(signatures))


def verify_note(note: str | bytes, verifiers: Iterable[NoteVerifier]) -> Note:
    """Parses the note and checks it against the known keys: a signature whose (name, key ID)
    matches a known key MUST verify (a failure rejects the whole note), others are ignored, and
    at least one known key's signature must have verified. Returns the note with only the
    verified signatures."""
    parsed = parse_note(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    verified = []
    message = parsed.text.encode("utf-8")
    for signature in parsed.signatures:
        verifier = known.get((signature.name, signature.key_id))
        if verifier is None:
            continue  # "Verifiers MUST ignore signatures from unknown keys"
        verifier.verify(signature.signature, message)
        verified.append(signature)
    if not verified:
        raise VerificationError("no signature from a known key")
    return Note(parsed.text, tuple(verified))


# ---- checkpoints ----


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


def parse_checkpoint(text: str) -> Checkpoint:
    """tlog-checkpoint: at least three non-empty lines: origin, decimal size (no leading zeroes
    but for 0), base64 root hash; any further lines are non-empty extension lines."""
    if not text.endswith("\n"):
        raise VerificationError("the checkpoint text does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise VerificationError("the checkpoint has fewer than three lines")
    if any(not line for line in lines):
        raise VerificationError("the checkpoint has an empty line")
    origin, size_text, root_text, *extensions = lines
    if not re.fullmatch(r"0|[1-9][0-9]*", size_text):
        raise VerificationError(f"checkpoint size {size_text!r} is not a decimal number")
    root = b64decode_strict(root_text, "checkpoint root")
    _check_hash(root, "checkpoint root")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


def open_checkpoint(
    note: str | bytes, verifier: NoteVerifier, origin: str | None = None
) -> Checkpoint:
    """Verifies the signed note with the log's key, then parses its text as a checkpoint; with
    `origin`, the checkpoint must name it."""
    checkpoint = parse_checkpoint(verify_note(note, [verifier]).text)
    if origin is not None and checkpoint.origin != origin:
        raise VerificationError(f"checkpoint origin {checkpoint.origin!r}, not {origin!r}")
    return checkpoint


# ---- the canonical event encoding ----

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def rfc3339_to_unix_millis(text: str) -> int:
    """An RFC 3339 date-time as whole Unix milliseconds; finer fractions than a millisecond
    are refused rather than rounded (the encoding carries milliseconds only)."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise VerificationError(f"{text!r} is not an RFC 3339 date-time")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    fraction = fraction or ""
    if fraction[3:].strip("0"):
        raise VerificationError(f"{text!r} is finer than a millisecond")
    millis = int((fraction + "000")[:3])
    if offset in ("Z", "z"):
        tz = timezone.utc
    else:
        sign = 1 if offset[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=tz
        )
    except ValueError as e:
        raise VerificationError(f"{text!r} is not a valid date-time") from e
    return (moment - _EPOCH) // timedelta(milliseconds=1) + millis


def _u32(n: int) -> bytes:
    if not 0 <= n < 2**32:
        raise VerificationError(f"{n} does not fit a u32")
    return struct.pack(">I", n)


def _string(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise VerificationError(f"{what}: not a string")
    data = value.encode("utf-8")
    return _u32(len(data)) + data


def encode_event(event: Mapping) -> bytes:
    """The canonical bytes of an event as the API shows it: 0x01 || str(id) || str(kind) ||
    str(actor) || str(subject) || i64 Unix ms || u32 count || (str(key) || str(value)) for each
    detail, keys in ascending byte order; str = u32 byte length || UTF-8; big-endian."""
    out = bytearray([EVENT_ENCODING_V1])
    for field in ("id", "kind", "actor", "subject"):
        out += _string(event[field], field)
    millis = rfc3339_to_unix_millis(event["occurred_at"])
    if not -(2**63) <= millis < 2**63:
        raise VerificationError("occurred_at does not fit an i64")
    out += struct.pack(">q", millis)
    details = event["details"]
    if not isinstance(details, Mapping):
        raise VerificationError("details: not an object")
    out += _u32(len(details))
    keys = [(_string(k, "detail key"), k) for k in details]
    if len({k for k, _ in keys}) != len(keys):
        raise VerificationError("repeated detail key")
    # Byte order of the UTF-8 keys (the length prefix does not take part in the ordering).
    for _, key in sorted(keys, key=lambda pair: pair[1].encode("utf-8")):
        out += _string(key, "detail key") + _string(details[key], f"details[{key!r}]")
    return bytes(out)


def event_leaf_hash(event: Mapping) -> bytes:
    return leaf_hash(encode_event(event))


# ---- RFC 9162 proofs ----


def _lsb(n: int) -> bool:
    return n & 1 == 1


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2, "Verifying an Inclusion Proof", step by step."""
    _check_hash(leaf, "leaf hash")
    _check_hash(root, "root hash")
    for i, p in enumerate(proof):
        _check_hash(p, f"inclusion_path[{i}]")
    if index < 0 or size < 0:
        raise VerificationError("negative index or size")
    # 1. If leaf_index is greater than or equal to tree_size, then fail.
    if index >= size:
        raise VerificationError(f"leaf index {index} is not below tree size {size}")
    # 2. Set fn to leaf_index and sn to tree_size - 1.
    fn, sn = index, size - 1
    # 3. Set r to hash.
    r = leaf
    # 4. For each value p in the inclusion_path array:
    for p in proof:
        # a. If sn is 0, then stop the iteration and fail the proof verification.
        if sn == 0:
            raise VerificationError("inclusion path longer than the tree is deep")
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if _lsb(fn) or fn == sn:
            # i. Set r to HASH(0x01 || p || r).
            r = node_hash(p, r)
            # ii. If LSB(fn) is not set, then right-shift both fn and sn equally until either
            #     LSB(fn) is set or fn is 0.
            if not _lsb(fn):
                while not _lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        # Otherwise:
        else:
            # i. Set r to HASH(0x01 || r || p).
            r = node_hash(r, p)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 5. Compare sn to 0. Compare r against the root_hash. If sn is equal to 0 and r and the
    #    root_hash are equal, then the log has proven the inclusion of hash. Otherwise, fail.
    if sn != 0:
        raise VerificationError("inclusion path shorter than the tree is deep")
    if r != root:
        raise VerificationError("inclusion proof does not lead to the root")


def verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2, "Verifying Consistency between Two Tree Heads", step by step, for
    0 < first < second, the sizes the RFC defines a consistency proof for (§2.1.4). The two
    cases outside it are settled without a proof, which must then be empty: equal sizes must
    have equal roots, and the empty tree (root HASH()) is a prefix of every tree."""
    _check_hash(first_hash, "first hash")
    _check_hash(second_hash, "second hash")
    path = list(proof)
    for i, c in enumerate(path):
        _check_hash(c, f"consistency_path[{i}]")
    if first < 0 or first > second:
        raise VerificationError(f"tree size {first} cannot grow into {second}")
    if first == second or first == 0:
        if path:
            raise VerificationError(f"a proof from {first} to {second} must be empty")
        if first == 0 and first_hash != EMPTY_ROOT:
            raise VerificationError("the root of the empty tree is not HASH()")
        if first == second and first_hash != second_hash:
            raise VerificationError(f"two different roots for tree size {first}")
        return
    # 1. If consistency_path is an empty array, stop and fail the proof verification.
    if not path:
        raise VerificationError("empty consistency path")
    # 2. If first is an exact power of 2, then prepend first_hash to the consistency_path array.
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    # 3. Set fn to first - 1 and sn to second - 1.
    fn, sn = first - 1, second - 1
    # 4. If LSB(fn) is set, then right-shift both fn and sn equally until LSB(fn) is not set.
    if _lsb(fn):
        while _lsb(fn):
            fn >>= 1
            sn >>= 1
    # 5. Set both fr and sr to the first value in the consistency_path array.
    fr = sr = path[0]
    # 6. For each subsequent value c in the consistency_path array:
    for c in path[1:]:
        # a. If sn is 0, then stop the iteration and fail the proof verification.
        if sn == 0:
            raise VerificationError("consistency path longer than the tree is deep")
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if _lsb(fn) or fn == sn:
            # i. Set fr to HASH(0x01 || c || fr). Set sr to HASH(0x01 || c || sr).
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            # ii. If LSB(fn) is not set, then right-shift both fn and sn equally until either
            #     LSB(fn) is set or fn is 0.
            if not _lsb(fn):
                while not _lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        # Otherwise:
        else:
            # i. Set sr to HASH(0x01 || sr || c).
            sr = node_hash(sr, c)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 7. Verify that the fr calculated is equal to the first_hash supplied, that the sr
    #    calculated is equal to the second_hash supplied, and that sn is 0.
    if sn != 0:
        raise VerificationError("consistency path shorter than the tree is deep")
    if fr != first_hash:
        raise VerificationError("consistency proof does not lead to the first root")
    if sr != second_hash:
        raise VerificationError("consistency proof does not lead to the second root")
