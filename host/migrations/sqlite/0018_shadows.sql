-- Shadow mode (issue 15): a candidate version of a scorer or segment-rule
-- plugin runs beside the live one on a binding's live calls. `shadows` is
-- cluster state (every node runs the active one, found by the plugin
-- reconcile); `shadow_results` records each pair of answers, never applied.
-- At most one active shadow per binding.
CREATE TABLE shadows (
    id            TEXT PRIMARY KEY,
    binding       TEXT NOT NULL,
    kind          TEXT NOT NULL,
    plugin        TEXT NOT NULL,
    version       TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    ended_at      BIGINT
);
CREATE UNIQUE INDEX shadows_one_active ON shadows (binding) WHERE status = 'active';

-- `live_value`/`candidate_value`: a scorer's delta, a rule's 1 or 0; null
-- when that side declined or failed (`*_outcome` says which).
CREATE TABLE shadow_results (
    id                 TEXT PRIMARY KEY,
    shadow_id          TEXT NOT NULL,
    contact_id         TEXT NOT NULL,
    event_id           TEXT,
    call               TEXT NOT NULL,
    live_version       TEXT NOT NULL,
    live_outcome       TEXT NOT NULL,
    live_value         BIGINT,
    live_micros        BIGINT NOT NULL,
    live_fuel          BIGINT NOT NULL,
    candidate_outcome  TEXT NOT NULL,
    candidate_value    BIGINT,
    candidate_detail   TEXT,
    candidate_micros   BIGINT NOT NULL,
    candidate_fuel     BIGINT NOT NULL,
    agree              BIGINT NOT NULL,
    at                 BIGINT NOT NULL
);
CREATE INDEX shadow_results_by_shadow ON shadow_results (shadow_id, agree, at);
