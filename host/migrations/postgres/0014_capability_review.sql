-- Capability review on upgrade (issue 17): what an admin approved for a
-- plugin version beyond the version live at the time (JSON of a
-- CapabilityDiff: imports, config keys, HTTP hosts, raised limits), by whom
-- and when. A version asking for more than the live one goes live only once
-- its additions are approved; NULL: nothing approved yet.
ALTER TABLE plugin_versions ADD COLUMN approved TEXT;
ALTER TABLE plugin_versions ADD COLUMN approved_by TEXT;
ALTER TABLE plugin_versions ADD COLUMN approved_at BIGINT;
-- When the version first went live: one that was live before needs no
-- review to go live again (its capabilities were granted then).
ALTER TABLE plugin_versions ADD COLUMN went_live_at BIGINT;
UPDATE plugin_versions SET went_live_at = 0 WHERE EXISTS (
    SELECT 1 FROM plugins p
    WHERE p.name = plugin_versions.name
      AND (p.live = plugin_versions.version OR p.previous = plugin_versions.version)
);
