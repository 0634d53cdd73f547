-- Notifications from the review inbox: where they go (channels), and each message on its way
-- (deliveries), retried with backoff until it is delivered or given up.

CREATE TABLE notification_channels (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL,              -- webhook | email
    team_id       TEXT REFERENCES teams(id),  -- NULL: requests of every team's NHIs
    -- webhook: the URL as shown (its origin; the whole URL is sealed, as a Slack webhook URL
    -- is itself a credential); email: the SMTP settings and recipients, as JSON
    target        TEXT NOT NULL,
    format        TEXT NOT NULL,              -- json | slack (webhooks), text (email)
    -- sealed with the key-encryption key: the webhook's URL and HMAC secret, or the SMTP
    -- password
    sealed_secret BLOB,
    created_at    INTEGER NOT NULL,
    disabled_at   INTEGER
);

CREATE TABLE notification_deliveries (
    id              TEXT PRIMARY KEY,
    channel_id      TEXT NOT NULL REFERENCES notification_channels(id),
    subject         TEXT NOT NULL,            -- what it is about: approval:<id>, test:<channel id>
    payload         TEXT NOT NULL,            -- what is sent, rendered when it was queued
    state           TEXT NOT NULL,            -- pending | delivered | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- when a pending delivery is next due; while an attempt is in flight, the end of its lease
    next_attempt_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER
);
CREATE INDEX notification_deliveries_due ON notification_deliveries(next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX notification_deliveries_by_state ON notification_deliveries(state, id);
CREATE INDEX notification_deliveries_by_channel ON notification_deliveries(channel_id, id);
