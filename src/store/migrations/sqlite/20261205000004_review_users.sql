-- The accountants' review page (`tally serve`): who may sign in, their sessions, and the failed
-- sign-ins that slow a name down.
--
-- A password is kept only as its argon2id PHC string; a session's token only as its SHA-256 (hex),
-- so that a copy of the database signs no one in. The CSRF token is per session and is not a
-- credential on its own (it is useless without the session cookie).
CREATE TABLE review_users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'approver')),
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE review_sessions (
    token_hash TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL REFERENCES review_users (name) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

-- Failed sign-ins in a row per name (known or not, so that the answer tells nothing about which
-- names exist); cleared by a successful sign-in.
CREATE TABLE review_login_failures (
    user_name      TEXT PRIMARY KEY,
    failures       INTEGER NOT NULL,
    last_failed_at TEXT NOT NULL
);
