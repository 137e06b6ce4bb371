-- Per-shard tables, created once for every table index `{t}` (0..M-1) of every database.
-- Rows are routed here by shop_id (see router.rs). Times are epoch milliseconds.
-- MySQL DDL is not transactional: every statement is idempotent so a crashed run can rerun.

CREATE TABLE IF NOT EXISTS templates_{t} (
    id BIGINT NOT NULL PRIMARY KEY,
    shop_id BIGINT NOT NULL,
    name VARCHAR(100) NOT NULL,
    instructions VARCHAR(1000) NOT NULL,
    source VARCHAR(16) NOT NULL,
    scope VARCHAR(16) NOT NULL,
    goods_ids TEXT NOT NULL,
    kind VARCHAR(16) NOT NULL,
    amount_off BIGINT NULL,
    threshold BIGINT NULL,
    percent_off BIGINT NULL,
    max_off BIGINT NULL,
    stock_total BIGINT NOT NULL,
    stock BIGINT NOT NULL,
    claim_start_ms BIGINT NOT NULL,
    claim_end_ms BIGINT NOT NULL,
    valid_from_ms BIGINT NULL,
    valid_until_ms BIGINT NULL,
    validity_hours BIGINT NULL,
    per_user_limit BIGINT NOT NULL,
    status VARCHAR(16) NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    INDEX idx_templates_shop (shop_id, id),
    INDEX idx_templates_due (status, claim_end_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS template_audit_{t} (
    seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    template_id BIGINT NOT NULL,
    shop_id BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    actor VARCHAR(100) NOT NULL,
    action VARCHAR(32) NOT NULL,
    before_json LONGTEXT NULL,
    after_json LONGTEXT NOT NULL,
    INDEX idx_audit_template (template_id, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Keys are compared byte for byte (ascii_bin): `abc` and `ABC` are different keys.
CREATE TABLE IF NOT EXISTS idempotency_keys_{t} (
    shop_id BIGINT NOT NULL,
    idem_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    request_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    template_id BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (shop_id, idem_key),
    INDEX idx_idempotency_created (created_at_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
