-- When a credential was last let through by the decision point (NHIs have had last_used_at
-- since 0001). Written in batches from the decisions, never older than what it replaces.
ALTER TABLE credentials ADD COLUMN last_used_at INTEGER;
