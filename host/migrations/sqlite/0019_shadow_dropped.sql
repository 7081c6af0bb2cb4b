-- Shadow results are written through a bounded in-memory queue per node;
-- what does not fit is dropped and counted here, per shadow, so the report
-- says how many calls it does not cover.
ALTER TABLE shadows ADD COLUMN dropped BIGINT NOT NULL DEFAULT 0;
