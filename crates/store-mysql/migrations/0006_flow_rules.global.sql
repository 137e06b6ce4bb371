-- Global (unsharded) tables, created in databases[0] only.

-- Flow-control rules set by an admin: one row (id 1), the rule set as JSON (the admin API's
-- shape, validated before it is saved) and a version every node polls to notice a change.
CREATE TABLE IF NOT EXISTS flow_rules (
    id TINYINT NOT NULL PRIMARY KEY,
    version BIGINT NOT NULL,
    rules TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
