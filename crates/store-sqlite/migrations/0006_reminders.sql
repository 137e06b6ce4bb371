-- Reminders: one row per user and template. `bits` is the set of
-- reminders (a bit per channel × 5-minute slot, see stampede_domain::reminder), `sent` those
-- delivered, `next_due_ms` the delivery scheduler's wake-up hint (NULL: nothing left to
-- deliver; never later than the earliest undelivered reminder). Times are epoch
-- milliseconds. The MySQL adapter uses the same names (per shard, routed by user_id).
CREATE TABLE reminders (
    user_id         INTEGER NOT NULL,
    template_id     INTEGER NOT NULL,
    claim_start_ms  INTEGER NOT NULL,
    bits            INTEGER NOT NULL,
    sent            INTEGER NOT NULL DEFAULT 0,
    next_due_ms     INTEGER,
    PRIMARY KEY (user_id, template_id)
) WITHOUT ROWID;

-- The scheduler's scan; rows with nothing left to deliver stay out of the index.
CREATE INDEX reminders_due ON reminders (next_due_ms) WHERE next_due_ms IS NOT NULL;

-- The purge of rows whose sale has long started.
CREATE INDEX reminders_start ON reminders (claim_start_ms);

-- Delivery leases, one row per partition (SQLite has one: partition 0). `token` changes with
-- every change of holder and fences the holder's writes.
CREATE TABLE reminder_leases (
    part      INTEGER PRIMARY KEY,
    owner     TEXT    NOT NULL,
    token     INTEGER NOT NULL,
    until_ms  INTEGER NOT NULL
);
