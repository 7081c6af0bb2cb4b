-- The jobs notice names the kinds a statement inserted (comma-separated),
-- so a node wakes only the scheduler lanes that claim them; a statement
-- that inserted nothing (every job there already) sends none. PostgreSQL
-- delivers a transaction's equal notices once, at commit.
CREATE OR REPLACE FUNCTION nachfass_jobs_notify() RETURNS trigger AS $$
DECLARE
    kinds TEXT;
BEGIN
    SELECT string_agg(DISTINCT kind, ',' ORDER BY kind) INTO kinds FROM inserted;
    IF kinds IS NOT NULL THEN
        PERFORM pg_notify('nachfass_jobs', kinds);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER jobs_notify ON jobs;
CREATE TRIGGER jobs_notify AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION nachfass_jobs_notify();
