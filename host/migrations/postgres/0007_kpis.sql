-- KPIs: the value a goal brought, and indexes for per-journey figures.
ALTER TABLE journey_runs ADD COLUMN conversion_value DOUBLE PRECISION;
CREATE INDEX journey_runs_started ON journey_runs (journey, started_at);
CREATE INDEX outbox_by_journey ON outbox (journey, created_at);
-- Events per day for the dashboard.
CREATE INDEX events_by_time ON events (at);
CREATE INDEX outbox_by_time ON outbox (created_at);
