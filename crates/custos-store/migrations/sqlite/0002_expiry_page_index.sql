-- Pages filtered by expiry are ordered by id: with the id in the index, the page's ids come
-- from the index alone instead of reading and sorting every matching row.
CREATE INDEX nhis_by_expiry_id ON nhis(expires_at, id) WHERE expires_at IS NOT NULL;
DROP INDEX nhis_by_expiry;
