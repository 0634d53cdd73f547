-- SQLite's migration 0003 adds a trigram index for name search. PostgreSQL has had one since
-- 0001 (pg_trgm); this file keeps the two migration histories numbered alike.
SELECT 1;
