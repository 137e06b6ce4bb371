-- Orders and the coupons they hold (settlement rows), created once for every table index `{t}`
-- of every database. Rows are routed here by user_id (see router.rs), the route of the user's
-- coupons and outbox: each lifecycle step (lock, redeem, release, refund) is one local
-- transaction over the order, its lines, the coupons and their events. Times are epoch
-- milliseconds. The SQLite adapter uses the same table and column names.

-- Order ids are the checkout service's own ids, compared byte for byte (ascii_bin).
CREATE TABLE IF NOT EXISTS orders_{t} (
    order_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    user_id BIGINT NOT NULL,
    status VARCHAR(16) NOT NULL,
    subtotal BIGINT NOT NULL,
    discount BIGINT NOT NULL,
    payable BIGINT NOT NULL,
    lock_expires_at_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    -- The lock-expiry sweep.
    INDEX idx_orders_lock_expiry (status, lock_expires_at_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS settlements_{t} (
    order_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    coupon_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    template_id BIGINT NOT NULL,
    discount BIGINT NOT NULL,
    status VARCHAR(16) NOT NULL,
    -- The coupon's valid_until: a refund after it returns the coupon as `expired`.
    valid_until_ms BIGINT NOT NULL,
    PRIMARY KEY (order_id, coupon_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Settlement event ids are `<kind>:<coupon id>:<order id>`, up to 100 characters with a
-- 64-character order id: the outbox's 64 no longer fits them. Widening is idempotent (a
-- rerun sets the same definition) and, within one length byte, done in place.
ALTER TABLE outbox_{t} MODIFY COLUMN event_id VARCHAR(160) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;
