-- Inventory, operators and the event trail. Timestamps are Unix milliseconds; ids are UUIDv7
-- text, so ordering by id is ordering by creation time (the cursor for pagination).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE teams (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    contact    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE operators (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    roles      TEXT NOT NULL, -- ",admin,reviewer," so a role test is one LIKE
    token_hash BYTEA NOT NULL UNIQUE,
    token_hint TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT,
    revoked_at BIGINT
);

CREATE TABLE operator_teams (
    operator_id TEXT NOT NULL REFERENCES operators(id),
    team_id     TEXT NOT NULL REFERENCES teams(id),
    PRIMARY KEY (operator_id, team_id)
);
CREATE INDEX operator_teams_by_team ON operator_teams(team_id);

CREATE TABLE nhis (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    kind              TEXT NOT NULL,
    platform          TEXT NOT NULL,
    environment       TEXT NOT NULL,
    status            TEXT NOT NULL,
    owner_team_id     TEXT NOT NULL REFERENCES teams(id),
    owner_application TEXT,
    owner_contact     TEXT,
    purpose           TEXT NOT NULL,
    scope_ceiling     TEXT NOT NULL, -- JSON array of grants in text form
    tags              TEXT NOT NULL, -- JSON object; mirrored in nhi_tags for filtering
    external_ids      TEXT NOT NULL, -- JSON object
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    expires_at        BIGINT,
    last_used_at      BIGINT,
    version           BIGINT NOT NULL,
    UNIQUE (platform, name)
);
CREATE INDEX nhis_by_status ON nhis(status, id);
CREATE INDEX nhis_by_kind ON nhis(kind, id);
CREATE INDEX nhis_by_platform ON nhis(platform, id);
CREATE INDEX nhis_by_environment ON nhis(environment, id);
CREATE INDEX nhis_by_team ON nhis(owner_team_id, id);
CREATE INDEX nhis_by_expiry ON nhis(expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX nhis_by_last_used ON nhis(last_used_at);

CREATE TABLE nhi_tags (
    nhi_id TEXT NOT NULL REFERENCES nhis(id),
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (nhi_id, key)
);
CREATE INDEX nhi_tags_by_value ON nhi_tags(key, value, nhi_id);

CREATE TABLE credentials (
    id          TEXT PRIMARY KEY,
    nhi_id      TEXT NOT NULL REFERENCES nhis(id),
    kind        TEXT NOT NULL,
    secret_hash BYTEA NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT,
    created_by  TEXT NOT NULL
);
CREATE INDEX credentials_by_nhi ON credentials(nhi_id, id);

CREATE TABLE events (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    subject     TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    details     TEXT NOT NULL -- JSON object of strings
);
CREATE INDEX events_by_subject ON events(subject, seq);

-- Free-text name search is a substring match; trigrams let PostgreSQL answer it from an index.
-- The extension is database-wide, so it lives in `public` whichever schema Custos uses.
CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;
CREATE INDEX nhis_by_name_trgm ON nhis USING gin (lower(name) public.gin_trgm_ops);
