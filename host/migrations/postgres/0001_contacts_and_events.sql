-- Contacts and their touchpoints (PostgreSQL). Times are Unix epoch milliseconds.
CREATE TABLE contacts (
    id            TEXT PRIMARY KEY,
    email         TEXT UNIQUE,
    external_id   TEXT UNIQUE,
    phone         TEXT,
    timezone      TEXT,
    score         BIGINT NOT NULL DEFAULT 0,
    stage         TEXT NOT NULL DEFAULT 'subscriber',
    attributes    TEXT NOT NULL DEFAULT '{}',
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    last_seen_at  BIGINT
);

CREATE TABLE events (
    id               TEXT PRIMARY KEY,
    contact_id       TEXT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    at               BIGINT NOT NULL,
    properties       TEXT NOT NULL DEFAULT '{}',
    client_event_id  TEXT UNIQUE,
    received_at      BIGINT NOT NULL
);

CREATE INDEX events_timeline ON events (contact_id, at DESC);
CREATE INDEX events_by_kind ON events (contact_id, kind, at);
