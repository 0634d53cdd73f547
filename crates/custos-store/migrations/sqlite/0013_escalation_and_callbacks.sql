-- Escalation, separation of duties and agents' callbacks.
--
-- A team may name a fallback team that also sees its approval requests once they have waited
-- escalate_after_seconds (NULL: the configured default) unanswered.
ALTER TABLE teams ADD COLUMN fallback_team_id TEXT REFERENCES teams(id);
ALTER TABLE teams ADD COLUMN escalate_after_seconds INTEGER;

-- A request escalated to a fallback team, once: to which team, and when.
ALTER TABLE approvals ADD COLUMN escalated_to TEXT REFERENCES teams(id);
ALTER TABLE approvals ADD COLUMN escalated_at INTEGER;
CREATE INDEX approvals_awaiting_escalation ON approvals(created_at)
    WHERE state = 'pending' AND escalated_at IS NULL;
CREATE INDEX approvals_by_escalation ON approvals(escalated_to, id)
    WHERE escalated_to IS NOT NULL;

-- Where the agent that asked for a task wants to hear that its approval was decided.
ALTER TABLE tasks ADD COLUMN callback_url TEXT;

-- A task's callback travels as a notification delivery without a channel: it names the URL it
-- is posted to instead. SQLite cannot drop NOT NULL from a column, so the table is rebuilt
-- (nothing references it).
CREATE TABLE notification_deliveries_0013 (
    id              TEXT PRIMARY KEY,
    channel_id      TEXT REFERENCES notification_channels(id), -- NULL: a task's callback
    callback_url    TEXT,                     -- a task's callback: where it is posted
    subject         TEXT NOT NULL,            -- approval:<id>, test:<channel id>, task:<id>
    payload         TEXT NOT NULL,            -- what is sent, rendered when it was queued
    state           TEXT NOT NULL,            -- pending | delivered | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- when a pending delivery is next due; while an attempt is in flight, the end of its lease
    next_attempt_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    CHECK ((channel_id IS NULL) <> (callback_url IS NULL))
);
INSERT INTO notification_deliveries_0013 (id, channel_id, callback_url, subject, payload, state,
    attempts, next_attempt_at, last_attempt_at, last_error, created_at, delivered_at)
SELECT id, channel_id, NULL, subject, payload, state, attempts, next_attempt_at,
    last_attempt_at, last_error, created_at, delivered_at
FROM notification_deliveries;
DROP TABLE notification_deliveries;
ALTER TABLE notification_deliveries_0013 RENAME TO notification_deliveries;
CREATE INDEX notification_deliveries_due ON notification_deliveries(next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX notification_deliveries_by_state ON notification_deliveries(state, id);
CREATE INDEX notification_deliveries_by_channel ON notification_deliveries(channel_id, id);
