-- Escalation, separation of duties and agents' callbacks.
--
-- A team may name a fallback team that also sees its approval requests once they have waited
-- escalate_after_seconds (NULL: the configured default) unanswered.
ALTER TABLE teams ADD COLUMN fallback_team_id TEXT REFERENCES teams(id);
ALTER TABLE teams ADD COLUMN escalate_after_seconds BIGINT;
ALTER TABLE teams ADD CONSTRAINT teams_fallback_not_itself CHECK (fallback_team_id <> id);

-- A request escalated to a fallback team, once: to which team, and when.
ALTER TABLE approvals ADD COLUMN escalated_to TEXT REFERENCES teams(id);
ALTER TABLE approvals ADD COLUMN escalated_at BIGINT;
CREATE INDEX approvals_awaiting_escalation ON approvals(created_at)
    WHERE state = 'pending' AND escalated_at IS NULL;
CREATE INDEX approvals_by_escalation ON approvals(escalated_to, id)
    WHERE escalated_to IS NOT NULL;

-- Where the agent that asked for a task wants to hear that its approval was decided.
ALTER TABLE tasks ADD COLUMN callback_url TEXT;

-- A task's callback travels as a notification delivery without a channel: it names the URL it
-- is posted to instead.
ALTER TABLE notification_deliveries ALTER COLUMN channel_id DROP NOT NULL;
ALTER TABLE notification_deliveries ADD COLUMN callback_url TEXT;
ALTER TABLE notification_deliveries ADD CONSTRAINT notification_deliveries_one_target
    CHECK ((channel_id IS NULL) <> (callback_url IS NULL));
