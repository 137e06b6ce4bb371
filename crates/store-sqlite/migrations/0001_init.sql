-- Templates, their audit log, and idempotency keys. Times are epoch milliseconds.
-- The `templates` columns are exactly the `TemplateRecord` row layout of `stampede-store-sql`.

CREATE TABLE templates (
    id              INTEGER PRIMARY KEY,
    shop_id         INTEGER NOT NULL,
    name            TEXT    NOT NULL,
    instructions    TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    scope           TEXT    NOT NULL,
    goods_ids       TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    amount_off      INTEGER,
    threshold       INTEGER,
    percent_off     INTEGER,
    max_off         INTEGER,
    stock_total     INTEGER NOT NULL,
    stock           INTEGER NOT NULL,
    claim_start_ms  INTEGER NOT NULL,
    claim_end_ms    INTEGER NOT NULL,
    valid_from_ms   INTEGER,
    valid_until_ms  INTEGER,
    validity_hours  INTEGER,
    per_user_limit  INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);

-- Listing one shop newest first.
CREATE INDEX templates_shop_id ON templates (shop_id, id);
-- The end sweep: active templates by claim_end.
CREATE INDEX templates_status_claim_end ON templates (status, claim_end_ms);

CREATE TABLE template_audit (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    template_id  INTEGER NOT NULL REFERENCES templates (id),
    shop_id      INTEGER NOT NULL,
    at_ms        INTEGER NOT NULL,
    actor        TEXT    NOT NULL,
    action       TEXT    NOT NULL,
    before_json  TEXT,
    after_json   TEXT    NOT NULL
);

CREATE INDEX template_audit_template ON template_audit (template_id, seq);

-- No foreign key on template_id: the key is claimed before the template row is written
-- (same transaction), and MySQL, which shares this shape, has no deferred constraints.
CREATE TABLE idempotency_keys (
    shop_id        INTEGER NOT NULL,
    idem_key       TEXT    NOT NULL,
    request_hash   TEXT    NOT NULL,
    template_id    INTEGER NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (shop_id, idem_key)
);

-- The purge deletes by age.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at_ms);
