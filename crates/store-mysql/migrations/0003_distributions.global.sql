-- Global (unsharded) tables, created in databases[0] only.

-- Where each distribution task lives, like template_directory for templates.
CREATE TABLE IF NOT EXISTS distribution_directory (
    distribution_id BIGINT NOT NULL PRIMARY KEY,
    shop_id BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
