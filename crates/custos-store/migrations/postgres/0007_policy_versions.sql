-- The guardrail policies (Cedar text) and the resource catalogue they were validated against,
-- one row per version, never changed: the newest is in force, the others are history.
CREATE TABLE policy_versions (
    version    BIGINT PRIMARY KEY,
    policies   TEXT NOT NULL,
    catalogue  TEXT NOT NULL, -- JSON
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
