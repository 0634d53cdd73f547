-- Behaviour baselining: each NHI's learned profile, the findings raised against it, and the
-- policies that say what to do about them.

-- The per-NHI behaviour profile: an opaque byte string (at most 2 KiB) that the server encodes
-- and rewrites in batches. Derived state, like last-used times: it has no events.
CREATE TABLE baselines (
    nhi_id     TEXT PRIMARY KEY REFERENCES nhis(id),
    profile    BYTEA NOT NULL,
    updated_at BIGINT NOT NULL
);

-- What was noticed. At most one unresolved finding per dedupe key (the partial unique index
-- below); a repeat folds into it. Resolved findings are kept.
CREATE TABLE findings (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    nhi_id          TEXT REFERENCES nhis(id),     -- NULL: about nothing in the inventory
    dedupe_key      TEXT NOT NULL,
    state           TEXT NOT NULL,                -- open | acknowledged | dismissed | accepted
    severity        TEXT NOT NULL,                -- low | medium | high
    score           DOUBLE PRECISION NOT NULL,
    summary         TEXT NOT NULL,
    evidence        TEXT NOT NULL,                -- JSON object
    action          TEXT NOT NULL,                -- record | alert | step_up | suspend
    approval_id     TEXT REFERENCES approvals(id),
    occurrences     BIGINT NOT NULL,
    first_seen      BIGINT NOT NULL,
    last_seen       BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    acknowledged_at BIGINT,
    acknowledged_by TEXT,
    resolved_at     BIGINT,                       -- set exactly when dismissed or accepted
    resolved_by     TEXT,
    resolution      TEXT
);
CREATE INDEX findings_by_nhi ON findings(nhi_id, created_at);
CREATE INDEX findings_by_state ON findings(state, created_at);
CREATE INDEX findings_by_time ON findings(created_at);
CREATE UNIQUE INDEX findings_unresolved_by_key ON findings(dedupe_key) WHERE resolved_at IS NULL;

-- What to do about findings, per NHI, team, kind or by default. Revoked, never deleted.
CREATE TABLE response_policies (
    id           TEXT PRIMARY KEY,
    target_type  TEXT NOT NULL,                   -- default | nhi | team | kind
    target       TEXT,                            -- NULL for default
    action       TEXT NOT NULL,
    min_severity TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
