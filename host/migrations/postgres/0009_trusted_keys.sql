-- Publisher keys whose signed plugin bundles this cluster accepts.
CREATE TABLE trusted_keys (
    public_key  TEXT PRIMARY KEY,
    publisher   TEXT NOT NULL,
    added_at    BIGINT NOT NULL,
    added_by    TEXT NOT NULL
);
