-- The tamper-evident log over the event trail (RFC 6962). Events are its leaves in log order;
-- audit_nodes keeps the hash of every complete subtree (level 0: the leaf hashes), so a proof
-- reads O(log n) rows. Only the sealer writes these tables, after the events have committed.
CREATE TABLE audit_leaves (
    leaf_index INTEGER PRIMARY KEY,
    event_seq  INTEGER NOT NULL UNIQUE REFERENCES events(seq)
);

CREATE TABLE audit_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
);

-- Signed checkpoints (C2SP tlog-checkpoint in a signed note), newest last.
CREATE TABLE audit_checkpoints (
    size       INTEGER PRIMARY KEY,
    root       BLOB NOT NULL,
    note       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
