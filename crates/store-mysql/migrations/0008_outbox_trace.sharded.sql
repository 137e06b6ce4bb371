-- The W3C traceparent of the unit of work (request or job step) that wrote an outbox event,
-- so a consumer can continue its trace. NULL for events written before this column existed.
ALTER TABLE outbox_{t} ADD COLUMN traceparent VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL;
