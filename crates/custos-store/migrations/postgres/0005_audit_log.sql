-- The tamper-evident log over the event trail (RFC 6962). Events are its leaves in log order;
-- audit_nodes keeps the hash of every complete subtree (level 0: the leaf hashes), so a proof
-- reads O(log n) rows. Only the sealer writes these tables, after the events have committed.
CREATE TABLE audit_leaves (
    leaf_index BIGINT PRIMARY KEY,
    event_seq  BIGINT NOT NULL UNIQUE REFERENCES events(seq)
);

CREATE TABLE audit_nodes (
    level BIGINT NOT NULL,
    idx   BIGINT NOT NULL,
    hash  BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);

-- Signed checkpoints (C2SP tlog-checkpoint in a signed note), newest last.
CREATE TABLE audit_checkpoints (
    size       BIGINT PRIMARY KEY,
    root       BYTEA NOT NULL,
    note       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
