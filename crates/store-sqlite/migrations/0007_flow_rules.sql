-- Flow-control rules set by an admin: one row (id 1), the rule set as JSON (the admin API's
-- shape, validated before it is saved) and a version every node polls to notice a change.
CREATE TABLE flow_rules (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    version        INTEGER NOT NULL,
    rules          TEXT NOT NULL,
    updated_at_ms  INTEGER NOT NULL
);
