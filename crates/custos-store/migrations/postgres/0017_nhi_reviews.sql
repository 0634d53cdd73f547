-- Reviews of an NHI itself (resume it, decommission it, confirm its owner) are approval
-- requests with no task: task_id becomes optional.
ALTER TABLE approvals ALTER COLUMN task_id DROP NOT NULL;

-- Every rotation of a static key: the old key is replaced once. When the scheduler rotates a
-- key for its age, nobody is there to be shown the replacement's secret, so it is kept here
-- sealed under the key-encryption key until the NHI collects it, once, with the old key (which
-- works until the grace period ends); it is erased when collected.
CREATE TABLE key_rotations (
    old_credential_id TEXT PRIMARY KEY REFERENCES credentials(id),
    new_credential_id TEXT NOT NULL UNIQUE REFERENCES credentials(id),
    nhi_id            TEXT NOT NULL REFERENCES nhis(id),
    rotated_by        TEXT NOT NULL,
    sealed_secret     BYTEA,                 -- waiting to be collected; NULL otherwise
    created_at        BIGINT NOT NULL,
    collected_at      BIGINT
);
-- Live static keys by age, for the rotation job.
CREATE INDEX credentials_static_by_age ON credentials(created_at)
    WHERE kind = 'static_key' AND revoked_at IS NULL;

-- Active tasks by end of life, for the job that closes those past it.
CREATE INDEX tasks_active_by_expiry ON tasks(expires_at) WHERE state = 'active';

-- A staged decommission may be cancelled during its watch, and the NHI decommissioned again
-- later: one workflow per NHI that is not cancelled.
ALTER TABLE decommissions DROP CONSTRAINT decommissions_nhi_id_key;
CREATE UNIQUE INDEX decommissions_one_per_nhi ON decommissions(nhi_id) WHERE step <> 'cancelled';
CREATE INDEX decommissions_by_nhi ON decommissions(nhi_id);
DROP INDEX decommissions_unfinished;
CREATE INDEX decommissions_unfinished ON decommissions(started_at)
    WHERE step NOT IN ('done', 'cancelled');
