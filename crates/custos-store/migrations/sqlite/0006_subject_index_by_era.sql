-- The trail's subject index, partitioned by era: 16,384 consecutive events (`seq >> 14`) per era.
-- Keyed by (subject, seq) alone, every appended event landed on an effectively random leaf of a
-- B-tree spanning the whole trail, so a group commit of N events dirtied about N pages, and on
-- SQLite each was written to the WAL whole (10 page-sized system calls per event, an eighth of
-- the append rate). With the era first, the live part of the index is the newest era's few
-- hundred pages, which a commit rewrites once however many events it holds. Reads by subject
-- walk the eras in order (`list_events`, `audit_events_of`); the expression must stay exactly
-- `seq >> 14` in those queries for the index to serve them.
DROP INDEX events_by_subject;
CREATE INDEX events_by_subject_era ON events ((seq >> 14), subject, seq);
