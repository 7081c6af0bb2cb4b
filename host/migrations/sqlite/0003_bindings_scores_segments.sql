-- Plugin bindings (scorers and segments), score history, segment members.
CREATE TABLE bindings (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    plugin      TEXT NOT NULL,
    config      TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL
);

CREATE TABLE score_changes (
    id          TEXT PRIMARY KEY,
    contact_id  TEXT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    binding     TEXT NOT NULL,
    delta       BIGINT NOT NULL,
    reasons     TEXT NOT NULL,
    event_id    TEXT,
    at          BIGINT NOT NULL
);
CREATE INDEX score_changes_by_contact ON score_changes (contact_id, at);

CREATE TABLE segment_members (
    segment     TEXT NOT NULL,
    contact_id  TEXT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    since       BIGINT NOT NULL,
    PRIMARY KEY (segment, contact_id)
);
CREATE INDEX segment_members_by_contact ON segment_members (contact_id);
