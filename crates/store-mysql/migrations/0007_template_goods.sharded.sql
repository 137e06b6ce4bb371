-- Which templates list which goods, next to the templates they index (same shard, routed by
-- shop_id): the back-office "templates of this product" filter reads it instead of scanning
-- every template's comma-separated `goods_ids`. Goods never change after creation, so rows
-- are written with the template and never updated. Existing templates are indexed here by
-- splitting their lists (INSERT IGNORE: a rerun adds nothing twice).
CREATE TABLE IF NOT EXISTS template_goods_{t} (
    goods_id BIGINT NOT NULL,
    template_id BIGINT NOT NULL,
    PRIMARY KEY (goods_id, template_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

INSERT IGNORE INTO template_goods_{t} (goods_id, template_id)
WITH RECURSIVE split (template_id, head, rest) AS (
    SELECT id, SUBSTRING_INDEX(goods_ids, ',', 1),
           IF(LOCATE(',', goods_ids) > 0, SUBSTRING(goods_ids, LOCATE(',', goods_ids) + 1), '')
    FROM templates_{t} WHERE goods_ids <> ''
    UNION ALL
    SELECT template_id, SUBSTRING_INDEX(rest, ',', 1),
           IF(LOCATE(',', rest) > 0, SUBSTRING(rest, LOCATE(',', rest) + 1), '')
    FROM split WHERE rest <> ''
)
SELECT CAST(head AS SIGNED), template_id FROM split;
