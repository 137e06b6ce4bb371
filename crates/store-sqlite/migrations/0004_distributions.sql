-- Distribution tasks, their failed rows and their uploaded files. Times are epoch
-- milliseconds. The `distributions` columns are exactly
-- the `DistributionRecord` row layout of `stampede-store-sql`.

CREATE TABLE distributions (
    id                 INTEGER PRIMARY KEY,
    template_id        INTEGER NOT NULL REFERENCES templates (id),
    shop_id            INTEGER NOT NULL,
    name               TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    send_at_ms         INTEGER NOT NULL,
    total_rows         INTEGER NOT NULL,
    processed_rows     INTEGER NOT NULL,
    succeeded          INTEGER NOT NULL,
    failed             INTEGER NOT NULL,
    created_at_ms      INTEGER NOT NULL,
    started_at_ms      INTEGER,
    finished_at_ms     INTEGER,
    notify_url         TEXT,
    failure_reason     TEXT,
    cancel_requested   INTEGER NOT NULL,
    file_format        TEXT    NOT NULL,
    file_size          INTEGER NOT NULL,
    batch_size         INTEGER NOT NULL,
    created_by         TEXT    NOT NULL,
    idem_key           TEXT,
    request_hash       TEXT,
    lease_owner        TEXT,
    lease_until_ms     INTEGER NOT NULL,
    notify_state       TEXT    NOT NULL,
    notify_attempts    INTEGER NOT NULL,
    notify_next_at_ms  INTEGER NOT NULL
);

-- Listing one shop newest first.
CREATE INDEX distributions_shop ON distributions (shop_id, id);
-- One task per upload Idempotency-Key in a shop.
CREATE UNIQUE INDEX distributions_idem ON distributions (shop_id, idem_key)
    WHERE idem_key IS NOT NULL;
-- The runner's scan and the notifier's scan.
CREATE INDEX distributions_runnable ON distributions (status, send_at_ms);
CREATE INDEX distributions_notify ON distributions (notify_state, notify_next_at_ms);

CREATE TABLE distribution_failures (
    distribution_id  INTEGER NOT NULL REFERENCES distributions (id),
    row_no           INTEGER NOT NULL,
    raw              TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    PRIMARY KEY (distribution_id, row_no)
) WITHOUT ROWID;

-- The uploaded file in 1 MiB chunks, so it lives (and is backed up) with the task.
CREATE TABLE distribution_files (
    distribution_id  INTEGER NOT NULL REFERENCES distributions (id),
    chunk            INTEGER NOT NULL,
    bytes            BLOB    NOT NULL,
    PRIMARY KEY (distribution_id, chunk)
);
