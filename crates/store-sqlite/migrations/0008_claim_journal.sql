-- How far the embedded claim journal has been applied to this file. The journal (an fsync'd
-- append-only file beside this database) acknowledges claims; a background applier stores
-- them here and moves this position in the same transaction, so a restart replays exactly
-- the records after it.
CREATE TABLE claim_journal (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    applied_lsn      INTEGER NOT NULL
);
INSERT INTO claim_journal (id, applied_lsn) VALUES (1, 0);
