-- Relay leases on outbox partitions: one table per database, one row per outbox table index
-- (`part`) of it, so one node at a time publishes a partition. Like `reminder_leases`, the
-- statement has no `{t}`: it runs once per index and IF NOT EXISTS makes the rest no-ops.
CREATE TABLE IF NOT EXISTS outbox_leases (
    part INT NOT NULL PRIMARY KEY,
    owner VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    token BIGINT NOT NULL,
    until_ms BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
