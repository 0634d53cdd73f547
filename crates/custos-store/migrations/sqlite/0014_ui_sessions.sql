-- Web UI sessions: a browser that signed in with an operator token holds a random session id
-- in an HttpOnly cookie; only its keyed hash is kept. The CSRF token is bound to the session.
-- Ended sessions are deleted when they are no longer of use (on the next sign-in).
CREATE TABLE ui_sessions (
    id_hash     BLOB PRIMARY KEY,
    operator_id TEXT NOT NULL REFERENCES operators(id),
    csrf_token  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    ended_at    INTEGER
);
CREATE INDEX ui_sessions_by_expiry ON ui_sessions(expires_at);

