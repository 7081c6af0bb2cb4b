-- Backtests (issue 15): a candidate plugin version replayed against the
-- stored history beside the live one, as a durable job. `cursor` is the
-- last contact done and `tally` the figures so far, written together, so a
-- backtest resumes where it stopped after a crash; `report` is kept when
-- it is done, and any node reads both here.
CREATE TABLE backtests (
    id           TEXT PRIMARY KEY,
    plugin       TEXT NOT NULL,
    version      TEXT NOT NULL,
    plan         TEXT NOT NULL,
    total        BIGINT NOT NULL DEFAULT 0,
    evaluated    BIGINT NOT NULL DEFAULT 0,
    cursor       TEXT,
    tally        TEXT,
    report       TEXT,
    error        TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
CREATE INDEX backtests_by_plugin ON backtests (plugin, created_at);
