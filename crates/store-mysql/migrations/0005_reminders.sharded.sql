-- Users' reminders, created once for every table index `{t}` of every database. Rows are
-- routed here by user_id (see router.rs), the route of the user's coupons and outbox. Times
-- are epoch milliseconds. The SQLite adapter uses the same table and column names.

-- One row per user and template: `bits` and `sent` are `ReminderSet`s (36 bits used).
-- `next_due_ms` is a wake-up hint, never later than the earliest undelivered reminder.
CREATE TABLE IF NOT EXISTS reminders_{t} (
    user_id BIGINT NOT NULL,
    template_id BIGINT NOT NULL,
    claim_start_ms BIGINT NOT NULL,
    bits BIGINT NOT NULL,
    sent BIGINT NOT NULL DEFAULT 0,
    next_due_ms BIGINT NULL,
    PRIMARY KEY (user_id, template_id),
    INDEX idx_reminders_due (next_due_ms),
    -- The purge of rows whose sale has long started.
    INDEX idx_reminders_start (claim_start_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Delivery leases, one table per database and one row per table index (`part`) of it. The
-- only sharded statement without `{t}`: it runs once per index, IF NOT EXISTS makes that a
-- no-op after the first. Owners are compared exactly (utf8mb4_bin).
CREATE TABLE IF NOT EXISTS reminder_leases (
    part INT NOT NULL PRIMARY KEY,
    owner VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    token BIGINT NOT NULL,
    until_ms BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
