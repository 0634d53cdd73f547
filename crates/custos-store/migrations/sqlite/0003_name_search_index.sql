-- A trigram index of NHI names, so a search for a rare term reads its few matches instead of
-- scanning a million names. FTS5 keys its rows by an integer; `nhis` has a text primary key and
-- so an implicit rowid that VACUUM may renumber, hence an explicit, stable `search_key`.
ALTER TABLE nhis ADD COLUMN search_key INTEGER;
UPDATE nhis SET search_key = rowid;
CREATE UNIQUE INDEX nhis_by_search_key ON nhis(search_key);

CREATE VIRTUAL TABLE nhi_name_search USING fts5(name, tokenize = 'trigram');
INSERT INTO nhi_name_search (rowid, name) SELECT search_key, name FROM nhis;

-- Triggers keep the index in step with every write path, so no caller can forget it.
CREATE TRIGGER nhis_name_search_insert AFTER INSERT ON nhis BEGIN
    UPDATE nhis SET search_key = (SELECT COALESCE(MAX(search_key), 0) + 1 FROM nhis)
        WHERE rowid = new.rowid;
    INSERT INTO nhi_name_search (rowid, name)
        SELECT search_key, name FROM nhis WHERE rowid = new.rowid;
END;

CREATE TRIGGER nhis_name_search_rename AFTER UPDATE OF name ON nhis
    WHEN old.name IS NOT new.name BEGIN
    UPDATE nhi_name_search SET name = new.name WHERE rowid = new.search_key;
END;
