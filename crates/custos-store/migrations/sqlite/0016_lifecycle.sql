-- Decommissioning: one durable workflow per NHI, moved from step to step only from the step
-- it is at, so that it is resumed after a crash and finishes once. Kept after it is done: the
-- teardown receipt lives here.
CREATE TABLE decommissions (
    id           TEXT PRIMARY KEY,
    nhi_id       TEXT NOT NULL UNIQUE REFERENCES nhis(id),
    step         TEXT NOT NULL,                   -- revoke | tombstone | archive | notify | done
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
CREATE INDEX decommissions_by_time ON decommissions(started_at);
CREATE INDEX decommissions_unfinished ON decommissions(started_at) WHERE step <> 'done';

-- Deployment systems allowed to say an agent was shut down: each signs its calls with an
-- HMAC secret of its own, kept sealed under the key-encryption key. Disabled, never deleted.
CREATE TABLE deployment_hooks (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    team_id       TEXT REFERENCES teams(id),      -- NULL: any team's NHIs
    sealed_secret BLOB NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    disabled_at   INTEGER
);
