-- Distribution tasks, their failed rows and their uploaded file, created once for every table
-- index `{t}` of every database. Rows are routed here by shop_id (see router.rs), the route
-- of the shop's templates: a batch's stock change and the task's checkpoint are one local
-- transaction. Times are epoch milliseconds.
-- The `distributions_{t}` columns are exactly the `DistributionRecord` row layout of `stampede-store-sql`.

CREATE TABLE IF NOT EXISTS distributions_{t} (
    id BIGINT NOT NULL PRIMARY KEY,
    template_id BIGINT NOT NULL,
    shop_id BIGINT NOT NULL,
    name VARCHAR(200) NOT NULL,
    status VARCHAR(16) NOT NULL,
    send_at_ms BIGINT NOT NULL,
    total_rows BIGINT NOT NULL,
    processed_rows BIGINT NOT NULL,
    succeeded BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    started_at_ms BIGINT NULL,
    finished_at_ms BIGINT NULL,
    notify_url VARCHAR(2048) NULL,
    failure_reason VARCHAR(1024) NULL,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    file_format VARCHAR(8) NOT NULL,
    file_size BIGINT NOT NULL,
    batch_size BIGINT NOT NULL,
    created_by VARCHAR(255) NOT NULL,
    -- Upload keys are compared byte for byte, like the templates' idempotency keys.
    idem_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NULL,
    request_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
    lease_owner VARCHAR(128) NULL,
    -- 0 = nobody holds the task.
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    notify_state VARCHAR(16) NOT NULL,
    notify_attempts INT NOT NULL DEFAULT 0,
    notify_next_at_ms BIGINT NOT NULL DEFAULT 0,
    -- One task per upload key and shop (NULL keys never collide).
    UNIQUE KEY uq_distributions_idem (shop_id, idem_key),
    INDEX idx_distributions_shop (shop_id, id),
    INDEX idx_distributions_runnable (status, send_at_ms),
    INDEX idx_distributions_notify (notify_state, notify_next_at_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- One row per file row that gave no coupon; the key makes a replayed batch a no-op.
CREATE TABLE IF NOT EXISTS distribution_failures_{t} (
    distribution_id BIGINT NOT NULL,
    row_no BIGINT NOT NULL,
    raw VARCHAR(400) NOT NULL,
    reason VARCHAR(32) NOT NULL,
    PRIMARY KEY (distribution_id, row_no)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The uploaded file in chunks of `FILE_CHUNK_BYTES`, so any node can read it.
CREATE TABLE IF NOT EXISTS distribution_files_{t} (
    distribution_id BIGINT NOT NULL,
    chunk INT NOT NULL,
    bytes MEDIUMBLOB NOT NULL,
    PRIMARY KEY (distribution_id, chunk)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
