-- One index fewer on the hottest table: the duplicate-claim guard, reordered as
-- (template, user, seq), also serves every per-template read (rebuilding a template's hot
-- state) that `user_coupons_template` served. Each claim applied to SQLite now updates one
-- index page at a random place fewer.
DROP INDEX user_coupons_template;
DROP INDEX user_coupons_claim;
CREATE UNIQUE INDEX user_coupons_claim ON user_coupons (template_id, user_id, seq);
