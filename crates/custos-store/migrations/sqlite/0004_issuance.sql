-- Per-task credentials, approvals, delegation and the server's signing keys.

-- Access tokens and client keys are credentials too. An access token keeps its scope, its task
-- and the credential it was delegated from, so revoking anything reaches everything below it.
ALTER TABLE credentials ADD COLUMN scope TEXT; -- JSON array of grants; access tokens only
ALTER TABLE credentials ADD COLUMN task_id TEXT;
ALTER TABLE credentials ADD COLUMN parent_id TEXT;
ALTER TABLE credentials ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
ALTER TABLE credentials ADD COLUMN public_jwk TEXT; -- client keys only
CREATE INDEX credentials_by_task ON credentials(task_id) WHERE task_id IS NOT NULL;
CREATE INDEX credentials_by_parent ON credentials(parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE tasks (
    id            TEXT PRIMARY KEY,
    nhi_id        TEXT NOT NULL REFERENCES nhis(id),
    purpose       TEXT NOT NULL,
    scope         TEXT NOT NULL, -- JSON array of grants
    ttl_seconds   INTEGER NOT NULL,
    state         TEXT NOT NULL,
    requested_by  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    approval_id   TEXT,
    activated_at  INTEGER,
    expires_at    INTEGER,
    ended_at      INTEGER,
    credential_id TEXT
);
CREATE INDEX tasks_by_nhi ON tasks(nhi_id, id);

CREATE TABLE approvals (
    id                    TEXT PRIMARY KEY,
    nhi_id                TEXT NOT NULL REFERENCES nhis(id),
    task_id               TEXT NOT NULL REFERENCES tasks(id),
    requested_by          TEXT NOT NULL,
    purpose               TEXT NOT NULL,
    requested_scope       TEXT NOT NULL, -- JSON array of grants
    excess                TEXT NOT NULL, -- JSON array of grants beyond the ceiling
    requested_ttl_seconds INTEGER NOT NULL,
    state                 TEXT NOT NULL,
    created_at            INTEGER NOT NULL,
    decided_at            INTEGER,
    decided_by            TEXT,
    reason                TEXT,
    granted_scope         TEXT,
    granted_ttl_seconds   INTEGER
);
CREATE INDEX approvals_by_state ON approvals(state, id);
CREATE INDEX approvals_by_nhi ON approvals(nhi_id, id);

-- Private keys are sealed with the key-encryption key before they reach the store.
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    alg           TEXT NOT NULL,
    public_jwk    TEXT NOT NULL,
    sealed_key    BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    retired_at    INTEGER,
    publish_until INTEGER -- a retired key stays in the JWKS until its last token has expired
);

-- Client assertions (RFC 7523) are single use: each jti is remembered until it expires.
CREATE TABLE client_assertions (
    client_id  TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX client_assertions_by_expiry ON client_assertions(expires_at);
