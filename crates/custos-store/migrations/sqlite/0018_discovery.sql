-- Discovery: what imports observed, how an NHI is named on other platforms, and logical agents.

-- Each NHI's ids on other platforms (its `external_ids` object, one row per entry), so that an
-- identity seen in a platform's logs is matched with a registered NHI by an index lookup.
-- Kept by the store with the NHI's row; derived, so it has no events of its own.
CREATE TABLE nhi_external_ids (
    platform    TEXT NOT NULL,
    external_id TEXT NOT NULL,
    nhi_id      TEXT NOT NULL REFERENCES nhis(id),
    PRIMARY KEY (nhi_id, platform)
);
CREATE INDEX nhi_external_ids_lookup ON nhi_external_ids(platform, external_id);
INSERT INTO nhi_external_ids (platform, external_id, nhi_id)
    SELECT e.key, e.value, n.id FROM nhis n, json_each(n.external_ids) e;

-- Every identity an import has seen, registered or not: one row per platform and principal,
-- merged across imports. `evidence` is a JSON object of bounded size (sources, actions,
-- addresses, user agents, the listing's facts).
CREATE TABLE observed_identities (
    platform     TEXT NOT NULL,
    principal    TEXT NOT NULL,
    display_name TEXT NOT NULL,
    class        TEXT NOT NULL,                 -- human | non_human | platform
    class_reason TEXT NOT NULL,
    nhi_id       TEXT REFERENCES nhis(id),      -- the registered NHI it was matched with
    first_seen   INTEGER,
    last_seen    INTEGER,
    events       INTEGER NOT NULL,              -- log records seen, over every import
    evidence     TEXT NOT NULL,
    first_imported_at INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (platform, principal)
);
CREATE INDEX observed_identities_by_class ON observed_identities(class, platform, principal);

-- One agent's identities across platforms, linked by a person (a suggestion is computed, not
-- stored, until someone confirms it). An NHI belongs to at most one logical agent.
CREATE TABLE logical_agents (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    team_id     TEXT NOT NULL REFERENCES teams(id),
    description TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE TABLE logical_agent_members (
    nhi_id     TEXT PRIMARY KEY REFERENCES nhis(id),
    agent_id   TEXT NOT NULL REFERENCES logical_agents(id),
    linked_at  INTEGER NOT NULL,
    linked_by  TEXT NOT NULL
);
CREATE INDEX logical_agent_members_by_agent ON logical_agent_members(agent_id, nhi_id);

-- A shadow NHI's findings are looked up by their key to see whether one was dismissed.
CREATE INDEX findings_by_dedupe_key ON findings(dedupe_key, created_at);
