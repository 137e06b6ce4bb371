-- The W3C traceparent of the unit of work (request or job step) that wrote an outbox event,
-- so a consumer can continue its trace. NULL for events written before this column existed.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
