-- Journeys (versioned definitions) and their runs, the durable job queue,
-- the outbox of messages, consents and suppressions.
CREATE TABLE journeys (
    name        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

-- Whether a journey takes new entries (its latest version does).
CREATE TABLE journey_states (
    name        TEXT PRIMARY KEY,
    active      BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- `seq` counts a run's transitions; a job names the seq it expects, so a
-- job that lost a race (or ran twice after a crash) does nothing.
CREATE TABLE journey_runs (
    id             TEXT PRIMARY KEY,
    journey        TEXT NOT NULL,
    version        BIGINT NOT NULL,
    contact_id     TEXT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    purpose        TEXT NOT NULL,
    status         TEXT NOT NULL,
    step           TEXT,
    seq            BIGINT NOT NULL,
    waiting_for    TEXT,
    trigger_event  TEXT,
    started_at     BIGINT NOT NULL,
    ended_at       BIGINT,
    exit_reason    TEXT
);
CREATE UNIQUE INDEX journey_runs_one_open ON journey_runs (journey, contact_id) WHERE ended_at IS NULL;
CREATE INDEX journey_runs_by_contact ON journey_runs (contact_id, ended_at);
CREATE INDEX journey_runs_by_journey ON journey_runs (journey, contact_id, started_at);

-- Finished jobs are deleted; a job out of attempts keeps `failed_at`.
CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,
    unique_key   TEXT NOT NULL UNIQUE,
    payload      TEXT NOT NULL,
    due_at       BIGINT NOT NULL,
    lease_until  BIGINT,
    leased_by    TEXT,
    attempts     BIGINT NOT NULL DEFAULT 0,
    last_error   TEXT,
    failed_at    BIGINT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs (due_at) WHERE failed_at IS NULL;

CREATE TABLE outbox (
    id               TEXT PRIMARY KEY,
    idempotency_key  TEXT NOT NULL UNIQUE,
    run_id           TEXT NOT NULL,
    journey          TEXT NOT NULL,
    step             TEXT NOT NULL,
    variant          TEXT,
    contact_id       TEXT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    binding          TEXT NOT NULL,
    channel          TEXT NOT NULL,
    purpose          TEXT NOT NULL,
    message          TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    provider_id      TEXT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    sent_at          BIGINT
);
CREATE INDEX outbox_by_contact ON outbox (contact_id, purpose, created_at);

CREATE TABLE consents (
    contact_id    TEXT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    channel       TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    status        TEXT NOT NULL,
    source        TEXT,
    text_version  TEXT,
    ip            TEXT,
    user_agent    TEXT,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (contact_id, channel, purpose)
);

-- `channel` is `*` for every channel; `scope` is `marketing` or `all`.
CREATE TABLE suppressions (
    contact_id  TEXT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    channel     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    scope       TEXT NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (contact_id, channel, reason)
);

-- Channel bindings may reach these hosts over HTTP (comma-separated).
ALTER TABLE bindings ADD COLUMN allow_http TEXT NOT NULL DEFAULT '';
