-- Reviews of an NHI itself (resume it, decommission it, confirm its owner) are approval
-- requests with no task: task_id becomes optional. SQLite cannot drop a NOT NULL, so the
-- table is rebuilt under its own name: its rows are set aside, the table dropped and created
-- anew, and the rows put back. The votes and findings that point at it are checked when the
-- migration commits; putting a row back settles the references to it.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE approvals_0017 AS SELECT * FROM approvals;
DROP TABLE approvals;
CREATE TABLE approvals (
    id                    TEXT PRIMARY KEY,
    nhi_id                TEXT NOT NULL REFERENCES nhis(id),
    task_id               TEXT REFERENCES tasks(id), -- NULL: a review of the NHI itself
    requested_by          TEXT NOT NULL,
    purpose               TEXT NOT NULL,
    requested_scope       TEXT NOT NULL, -- JSON array of grants; empty for a review of the NHI
    excess                TEXT NOT NULL, -- JSON array of grants beyond the ceiling
    requested_ttl_seconds INTEGER NOT NULL,
    state                 TEXT NOT NULL,
    created_at            INTEGER NOT NULL,
    decided_at            INTEGER,
    decided_by            TEXT,
    reason                TEXT,
    granted_scope         TEXT,
    granted_ttl_seconds   INTEGER,
    kind                  TEXT NOT NULL DEFAULT 'scope_escalation',
    policies              TEXT NOT NULL DEFAULT '[]',
    risk                  TEXT NOT NULL DEFAULT 'low',
    risk_factors          TEXT NOT NULL DEFAULT '[]',
    required_approvals    INTEGER NOT NULL DEFAULT 1,
    expires_at            INTEGER NOT NULL DEFAULT 0,
    escalated_to          TEXT REFERENCES teams(id),
    escalated_at          INTEGER
);
INSERT INTO approvals (id, nhi_id, task_id, requested_by, purpose, requested_scope, excess,
    requested_ttl_seconds, state, created_at, decided_at, decided_by, reason, granted_scope,
    granted_ttl_seconds, kind, policies, risk, risk_factors, required_approvals, expires_at,
    escalated_to, escalated_at)
SELECT id, nhi_id, task_id, requested_by, purpose, requested_scope, excess,
    requested_ttl_seconds, state, created_at, decided_at, decided_by, reason, granted_scope,
    granted_ttl_seconds, kind, policies, risk, risk_factors, required_approvals, expires_at,
    escalated_to, escalated_at
FROM approvals_0017;
DROP TABLE approvals_0017;
CREATE INDEX approvals_by_state ON approvals(state, id);
CREATE INDEX approvals_by_nhi ON approvals(nhi_id, id);
CREATE INDEX approvals_pending_by_deadline ON approvals(state, expires_at);
CREATE INDEX approvals_awaiting_escalation ON approvals(created_at)
    WHERE state = 'pending' AND escalated_at IS NULL;
CREATE INDEX approvals_by_escalation ON approvals(escalated_to, id)
    WHERE escalated_to IS NOT NULL;

-- Every rotation of a static key: the old key is replaced once. When the scheduler rotates a
-- key for its age, nobody is there to be shown the replacement's secret, so it is kept here
-- sealed under the key-encryption key until the NHI collects it, once, with the old key (which
-- works until the grace period ends); it is erased when collected.
CREATE TABLE key_rotations (
    old_credential_id TEXT PRIMARY KEY REFERENCES credentials(id),
    new_credential_id TEXT NOT NULL UNIQUE REFERENCES credentials(id),
    nhi_id            TEXT NOT NULL REFERENCES nhis(id),
    rotated_by        TEXT NOT NULL,
    sealed_secret     BLOB,                 -- waiting to be collected; NULL otherwise
    created_at        INTEGER NOT NULL,
    collected_at      INTEGER
);
-- Live static keys by age, for the rotation job.
CREATE INDEX credentials_static_by_age ON credentials(created_at)
    WHERE kind = 'static_key' AND revoked_at IS NULL;

-- Active tasks by end of life, for the job that closes those past it.
CREATE INDEX tasks_active_by_expiry ON tasks(expires_at) WHERE state = 'active';

-- A staged decommission may be cancelled during its watch, and the NHI decommissioned again
-- later: one workflow per NHI that is not cancelled. The column's UNIQUE becomes a partial
-- unique index, which SQLite can only do by rebuilding the table (nothing refers to it).
CREATE TABLE decommissions_0017 AS SELECT * FROM decommissions;
DROP TABLE decommissions;
CREATE TABLE decommissions (
    id           TEXT PRIMARY KEY,
    nhi_id       TEXT NOT NULL REFERENCES nhis(id),
    step         TEXT NOT NULL,    -- watch | revoke | tombstone | archive | notify | done | cancelled
    trigger_kind TEXT NOT NULL,                   -- request | review | timeout | webhook
    requested_by TEXT NOT NULL,
    reason       TEXT NOT NULL,
    teardown     TEXT NOT NULL,                   -- JSON: what the steps did so far
    receipt      TEXT,                            -- compact JWS, once done
    failures     INTEGER NOT NULL,
    last_error   TEXT,
    started_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
INSERT INTO decommissions SELECT id, nhi_id, step, trigger_kind, requested_by, reason,
    teardown, receipt, failures, last_error, started_at, updated_at, finished_at
FROM decommissions_0017;
DROP TABLE decommissions_0017;
CREATE UNIQUE INDEX decommissions_one_per_nhi ON decommissions(nhi_id) WHERE step <> 'cancelled';
CREATE INDEX decommissions_by_nhi ON decommissions(nhi_id);
CREATE INDEX decommissions_by_time ON decommissions(started_at);
CREATE INDEX decommissions_unfinished ON decommissions(started_at)
    WHERE step NOT IN ('done', 'cancelled');
