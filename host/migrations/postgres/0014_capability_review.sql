-- Capability review on upgrade (issue 17): what an admin approved for a
-- plugin version beyond the version live at the time (JSON of a
-- CapabilityDiff: imports, config keys, HTTP hosts, raised limits), by whom
-- and when. A version asking for more than the live one goes live only once
-- its additions are approved; NULL: nothing approved yet.
ALTER TABLE plugin_versions ADD COLUMN approved TEXT;
ALTER TABLE plugin_versions ADD COLUMN approved_by TEXT;
ALTER TABLE plugin_versions ADD COLUMN approved_at BIGINT;
