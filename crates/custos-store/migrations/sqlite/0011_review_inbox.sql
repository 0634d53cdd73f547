-- The review inbox: what kind of request it is, the guardrails that raised it, its judged risk
-- and the quorum that risk asks for, and a deadline after which it is expired (and so denied).
-- Requests from before this migration get a day from their creation, as new ones do by default.
ALTER TABLE approvals ADD COLUMN kind TEXT NOT NULL DEFAULT 'scope_escalation';
ALTER TABLE approvals ADD COLUMN policies TEXT NOT NULL DEFAULT '[]';
ALTER TABLE approvals ADD COLUMN risk TEXT NOT NULL DEFAULT 'low';
ALTER TABLE approvals ADD COLUMN risk_factors TEXT NOT NULL DEFAULT '[]';
ALTER TABLE approvals ADD COLUMN required_approvals INTEGER NOT NULL DEFAULT 1;
ALTER TABLE approvals ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
UPDATE approvals SET expires_at = created_at + 86400000;
CREATE INDEX approvals_pending_by_deadline ON approvals(state, expires_at);

-- The approvals counted towards a quorum before the last one decides.
CREATE TABLE approval_votes (
    approval_id TEXT NOT NULL REFERENCES approvals(id),
    reviewer    TEXT NOT NULL,
    scope       TEXT NOT NULL, -- JSON array of grants
    ttl_seconds INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (approval_id, reviewer)
);
