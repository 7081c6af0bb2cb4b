-- Counters kept as things happen, so the dashboard reads a few rows rather
-- than millions: what recipients did with each message, and touchpoints per
-- day in 64 shards (concurrent ingests rarely wait on the same row).
-- Existing data is counted once here.
ALTER TABLE outbox ADD COLUMN opens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN clicks BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN unsubscribes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN complaints BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN bounce TEXT;
UPDATE outbox SET
    opens = (SELECT COUNT(*) FROM message_events m WHERE m.outbox_id = outbox.id AND m.kind = 'opened'),
    clicks = (SELECT COUNT(*) FROM message_events m WHERE m.outbox_id = outbox.id AND m.kind = 'clicked'),
    unsubscribes = (SELECT COUNT(*) FROM message_events m WHERE m.outbox_id = outbox.id AND m.kind = 'unsubscribed'),
    complaints = (SELECT COUNT(*) FROM message_events m WHERE m.outbox_id = outbox.id AND m.kind = 'complained'),
    bounce = (SELECT MIN(CASE WHEN m.detail = 'hard' THEN 'hard' ELSE 'soft' END) FROM message_events m
              WHERE m.outbox_id = outbox.id AND m.kind = 'bounced');

CREATE TABLE event_days (
    day     BIGINT NOT NULL,
    shard   BIGINT NOT NULL,
    events  BIGINT NOT NULL,
    PRIMARY KEY (day, shard)
);
INSERT INTO event_days (day, shard, events) SELECT at / 86400000, 0, COUNT(*) FROM events GROUP BY at / 86400000;

-- Conversions are credited from the converted runs to their messages.
CREATE INDEX outbox_by_run ON outbox (run_id);
CREATE INDEX journey_runs_converted ON journey_runs (journey, ended_at) WHERE status = 'converted';
