-- Server settings (the signing secret), what recipients did with each
-- message, the audit log of data-protection actions, and salted hashes of
-- erased addresses (so a re-import without new consent is never mailed).
CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

CREATE TABLE message_events (
    outbox_id  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    detail     TEXT,
    at         BIGINT NOT NULL
);
CREATE INDEX message_events_by_message ON message_events (outbox_id, kind);

CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    contact_id  TEXT,
    detail      TEXT NOT NULL
);
CREATE INDEX audit_log_by_contact ON audit_log (contact_id, at);

CREATE TABLE erased_addresses (
    address_hash  TEXT PRIMARY KEY,
    at            BIGINT NOT NULL
);

-- Double opt-in: a consent asked for and waiting for its confirmation.
CREATE TABLE consent_requests (
    id            TEXT PRIMARY KEY,
    contact_id    TEXT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    channel       TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    binding       TEXT NOT NULL,
    status        TEXT NOT NULL,
    source        TEXT,
    text_version  TEXT,
    ip            TEXT,
    user_agent    TEXT,
    created_at    BIGINT NOT NULL,
    reminded_at   BIGINT,
    decided_at    BIGINT
);
CREATE INDEX consent_requests_by_contact ON consent_requests (contact_id);
