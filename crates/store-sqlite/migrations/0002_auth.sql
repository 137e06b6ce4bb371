-- Accounts, login sessions and their rotating refresh tokens (stored as SHA-256 hex).

CREATE TABLE accounts (
    id             INTEGER PRIMARY KEY,
    username       TEXT    NOT NULL UNIQUE,
    password_hash  TEXT    NOT NULL,
    role           TEXT    NOT NULL,
    shop_id        INTEGER,
    created_at_ms  INTEGER NOT NULL
);

CREATE TABLE auth_sessions (
    id             TEXT    PRIMARY KEY,
    account_id     INTEGER NOT NULL REFERENCES accounts (id),
    created_at_ms  INTEGER NOT NULL,
    revoked_at_ms  INTEGER
);

CREATE TABLE refresh_tokens (
    token_hash     TEXT    PRIMARY KEY,
    session_id     TEXT    NOT NULL REFERENCES auth_sessions (id),
    expires_at_ms  INTEGER NOT NULL,
    used_at_ms     INTEGER
);

CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);
