-- Standing rules: an admin's "approve this scope for this NHI until then", so that the same
-- safe request does not wait for a reviewer again and again. Revoked, never deleted.
CREATE TABLE approval_rules (
    id         TEXT PRIMARY KEY,
    nhi_id     TEXT NOT NULL REFERENCES nhis(id),
    scope      TEXT NOT NULL, -- JSON array of grants
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX approval_rules_by_nhi ON approval_rules(nhi_id, expires_at);
