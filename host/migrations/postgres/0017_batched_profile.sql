-- Batched profile pipeline (issue 14): an event is stored first and its
-- scoring and segment effects are applied later, in a batch, in one
-- transaction that also sets `processed_at`. An event without it was
-- accepted but not yet applied (a crash in between): a `process_events`
-- job finds it. Events stored before this migration were applied already.
ALTER TABLE events ADD COLUMN processed_at BIGINT;
UPDATE events SET processed_at = received_at;
CREATE INDEX events_unprocessed ON events (received_at) WHERE processed_at IS NULL;
-- Scheduler lanes claim by kind.
CREATE INDEX jobs_due_by_kind ON jobs (kind, due_at) WHERE failed_at IS NULL;
-- Every node's scheduler wakes when jobs are committed (LISTEN
-- nachfass_jobs), instead of waiting for its next poll. Notices of one
-- transaction are delivered once, at commit.
CREATE FUNCTION nachfass_jobs_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('nachfass_jobs', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER jobs_notify AFTER INSERT ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION nachfass_jobs_notify();
