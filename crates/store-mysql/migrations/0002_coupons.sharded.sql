-- User coupons and their outbox, created once for every table index `{t}` of every database.
-- Rows are routed here by user_id (see router.rs), so a user's coupons and the events that
-- record them are written in one local transaction. Times are epoch milliseconds.
-- The `user_coupons_{t}` columns are exactly the `CouponRecord` row layout of `stampede-store-sql`.

CREATE TABLE IF NOT EXISTS user_coupons_{t} (
    id BIGINT NOT NULL PRIMARY KEY,
    user_id BIGINT NOT NULL,
    template_id BIGINT NOT NULL,
    shop_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    origin VARCHAR(16) NOT NULL,
    status VARCHAR(16) NOT NULL,
    valid_from_ms BIGINT NOT NULL,
    valid_until_ms BIGINT NOT NULL,
    claimed_at_ms BIGINT NOT NULL,
    locked_order_id VARCHAR(128) NULL,
    used_at_ms BIGINT NULL,
    claim_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NULL,
    -- The last guard against a duplicate claim, and what makes claim-log replays no-ops.
    UNIQUE KEY uq_coupons_claim (user_id, template_id, seq),
    -- One coupon per claim idempotency key (NULL keys never collide).
    UNIQUE KEY uq_coupons_claim_key (user_id, template_id, claim_key),
    INDEX idx_coupons_listing (user_id, valid_until_ms, id),
    INDEX idx_coupons_template (template_id, user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Event ids are derived from the aggregate (`coupon.claimed:<id>`), so a replay dedups here.
CREATE TABLE IF NOT EXISTS outbox_{t} (
    seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    kind VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    aggregate_id BIGINT NOT NULL,
    payload LONGTEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    published_at_ms BIGINT NULL,
    UNIQUE KEY uq_outbox_event (event_id),
    INDEX idx_outbox_kind (kind, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The applied position of the template's Redis claim log (a stream id "ms-seq"): the
-- persisters move it and the stock together, so each log entry's stock change lands once.
-- MySQL lacks ADD COLUMN IF NOT EXISTS; the runner treats "duplicate column" as done.
ALTER TABLE templates_{t} ADD COLUMN claim_log_pos VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '0-0';
