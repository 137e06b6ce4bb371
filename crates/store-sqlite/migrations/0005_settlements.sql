-- Orders and the coupons they hold (settlement rows). Times are epoch milliseconds. The
-- MySQL adapter uses the same table and column names (per shard, routed by user_id).

CREATE TABLE orders (
    order_id            TEXT    PRIMARY KEY,
    user_id             INTEGER NOT NULL,
    status              TEXT    NOT NULL,
    subtotal            INTEGER NOT NULL,
    discount            INTEGER NOT NULL,
    payable             INTEGER NOT NULL,
    lock_expires_at_ms  INTEGER NOT NULL,
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL
) WITHOUT ROWID;

-- The lock-expiry sweep.
CREATE INDEX orders_lock_expiry ON orders (status, lock_expires_at_ms);

CREATE TABLE settlements (
    order_id        TEXT    NOT NULL REFERENCES orders (order_id),
    coupon_id       INTEGER NOT NULL,
    user_id         INTEGER NOT NULL,
    template_id     INTEGER NOT NULL,
    discount        INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    valid_until_ms  INTEGER NOT NULL,
    PRIMARY KEY (order_id, coupon_id)
) WITHOUT ROWID;
