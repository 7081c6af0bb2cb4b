-- Plugins as cluster state (issue 13): every version's component and
-- manifest, addressed by SHA-256, and each plugin's live and previous
-- version. Every node loads from here; a plugins directory only imports.
CREATE TABLE plugin_versions (
    sha256      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    world       TEXT NOT NULL,
    manifest    TEXT NOT NULL,
    component   BLOB NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE plugins (
    name        TEXT PRIMARY KEY,
    world       TEXT NOT NULL,
    live        TEXT NOT NULL,
    previous    TEXT,
    updated_at  BIGINT NOT NULL
);

-- Limits per binding: JSON of the fields a binding overrides (fuel,
-- wall_time_ms, memory_bytes, max_output_bytes).
ALTER TABLE bindings ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
-- Why the circuit breaker paused a binding (NULL: active); an operator
-- resumes it.
ALTER TABLE bindings ADD COLUMN paused TEXT;
-- A pinned version or semver range; NULL follows the live version.
ALTER TABLE bindings ADD COLUMN version TEXT;

-- Long work a plugin change causes (a segment rebuild, a re-score of every
-- contact), run as a durable job that resumes from `cursor` after a crash;
-- any node reads the progress here.
CREATE TABLE plugin_tasks (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    target       TEXT NOT NULL,
    reason       TEXT NOT NULL,
    total        BIGINT NOT NULL DEFAULT 0,
    evaluated    BIGINT NOT NULL DEFAULT 0,
    entered      BIGINT NOT NULL DEFAULT 0,
    left_count   BIGINT NOT NULL DEFAULT 0,
    cursor       TEXT,
    error        TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
CREATE INDEX plugin_tasks_by_target ON plugin_tasks (kind, target, created_at);
