-- Global (unsharded) tables, created in databases[0] only.

-- Which user an order belongs to, so a lookup by order id alone is routed, not broadcast,
-- and one order id cannot serve two users. Written before the order's shard transaction: a
-- crash in between leaves a row pointing at no order, which reads as "no settlement".
CREATE TABLE IF NOT EXISTS order_directory (
    order_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    user_id BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
