-- Login sessions (issue 17): each refresh-token family is a session, named by the `sid`
-- claim of its access tokens. The family row is the one place that says whether the
-- session lives: revocation (logout, reuse, unbind, erasure, a disabled user) marks it,
-- rotation locks it, and access tokens are checked against it. Its absolute lifetime
-- runs from `created_at` (configured, not stored, so that changing it applies to all).
CREATE TABLE refresh_families (
    family_id    TEXT    PRIMARY KEY,
    user_id      BIGINT  NOT NULL,
    tenant       TEXT    NOT NULL,
    appid        TEXT,
    created_at   BIGINT  NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
-- Revoking a user's sessions (all, or those of one app).
CREATE INDEX refresh_families_user ON refresh_families (user_id, appid);

-- The families of tokens issued before this migration: revoked when any of their
-- tokens was (revocation always covered the whole family).
INSERT INTO refresh_families (family_id, user_id, tenant, appid, created_at, revoked_at)
SELECT family_id, MIN(user_id), MIN(tenant), MIN(appid), MIN(issued_at), MIN(revoked_at)
FROM refresh_tokens
GROUP BY family_id;

-- The purge finds dead rows by their times.
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);
CREATE INDEX refresh_tokens_revoked ON refresh_tokens (revoked_at);
