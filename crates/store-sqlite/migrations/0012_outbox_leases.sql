-- Relay leases on outbox partitions, one row per partition (SQLite has one: partition 0):
-- one node at a time publishes a partition. `token` changes with every change of holder.
CREATE TABLE outbox_leases (
    part      INTEGER PRIMARY KEY,
    owner     TEXT    NOT NULL,
    token     INTEGER NOT NULL,
    until_ms  INTEGER NOT NULL
);
