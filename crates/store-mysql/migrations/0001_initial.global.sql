-- Global (unsharded) tables, created in databases[0] only.
-- MySQL DDL is not transactional: every statement is idempotent so a crashed run can rerun.

-- Where each template lives: get-by-id routes through here instead of scanning every shard.
CREATE TABLE IF NOT EXISTS template_directory (
    template_id BIGINT NOT NULL PRIMARY KEY,
    shop_id BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Usernames match exactly (utf8mb4_bin), as they do in the SQLite adapter.
CREATE TABLE IF NOT EXISTS accounts (
    id BIGINT NOT NULL PRIMARY KEY,
    username VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    role VARCHAR(16) NOT NULL,
    shop_id BIGINT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE KEY uq_accounts_username (username)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Session ids and token hashes are case-sensitive random strings (ascii_bin).
CREATE TABLE IF NOT EXISTS auth_sessions (
    id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    account_id BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    session_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms BIGINT NULL,
    INDEX idx_refresh_session (session_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
