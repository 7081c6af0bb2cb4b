-- Job kinds (issue 10): the kind a job runs as is its own column, not a
-- tag inside the payload; queued jobs keep theirs.
ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT '';
UPDATE jobs SET kind = COALESCE(json_extract(payload, '$.job'), '');
