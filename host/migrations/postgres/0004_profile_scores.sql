-- Each scorer binding's current contribution from the profile (explicit
-- scoring), so a profile change replaces it instead of adding again.
CREATE TABLE profile_scores (
    contact_id  TEXT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    binding     TEXT NOT NULL,
    points      BIGINT NOT NULL,
    PRIMARY KEY (contact_id, binding)
);
