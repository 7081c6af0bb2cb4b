-- A channel binding's delivery rate limit, as JSON ({"per_second": 10,
-- "burst": 20}); NULL for none.
ALTER TABLE bindings ADD COLUMN rate TEXT;

-- The token bucket of each rate-limited binding, one row for the whole
-- cluster: every node takes its batch's tokens from this row in one
-- transaction, so two nodes never send twice the rate. Refilled lazily
-- from the clock when tokens are taken. queued_until is the last time a
-- deferred message was pushed to, so the next ones queue behind it.
CREATE TABLE rate_buckets (
    binding      TEXT PRIMARY KEY,
    tokens       DOUBLE PRECISION NOT NULL,
    refilled_at  BIGINT NOT NULL,
    queued_until BIGINT NOT NULL
);
