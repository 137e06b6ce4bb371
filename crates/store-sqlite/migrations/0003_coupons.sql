-- User coupons and the transactional outbox. The `user_coupons` columns are exactly
-- the `CouponRecord` row layout of `stampede-store-sql`. Times are epoch milliseconds.

CREATE TABLE user_coupons (
    id               INTEGER PRIMARY KEY,
    user_id          INTEGER NOT NULL,
    template_id      INTEGER NOT NULL,
    shop_id          INTEGER NOT NULL,
    seq              INTEGER NOT NULL,
    origin           TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    valid_from_ms    INTEGER NOT NULL,
    valid_until_ms   INTEGER NOT NULL,
    claimed_at_ms    INTEGER NOT NULL,
    locked_order_id  TEXT,
    used_at_ms       INTEGER,
    claim_key        TEXT
);

-- The last guard against a duplicate claim: one coupon per (user, template, seq).
CREATE UNIQUE INDEX user_coupons_claim ON user_coupons (user_id, template_id, seq);
-- One coupon per claim idempotency key; keyless coupons are left out of the index.
CREATE UNIQUE INDEX user_coupons_claim_key ON user_coupons (user_id, template_id, claim_key)
    WHERE claim_key IS NOT NULL;
-- "My coupons", keyset-paginated by (valid_until, id).
CREATE INDEX user_coupons_listing ON user_coupons (user_id, valid_until_ms, id);
-- Rebuilding a template's hot state (per-user counts, keyed claims).
CREATE INDEX user_coupons_template ON user_coupons (template_id, user_id);

-- Domain events written in the transaction of the change they record. AUTOINCREMENT: a
-- relay's cursor on `seq` must never see a number reused after rows are deleted.
CREATE TABLE outbox (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT    NOT NULL UNIQUE,
    kind             TEXT    NOT NULL,
    aggregate_id     INTEGER NOT NULL,
    payload          TEXT    NOT NULL,
    created_at_ms    INTEGER NOT NULL,
    published_at_ms  INTEGER
);

CREATE INDEX outbox_kind ON outbox (kind, seq);
