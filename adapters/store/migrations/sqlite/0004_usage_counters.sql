-- Counters shared by every instance (issue 17): exchanges of a ticket for tokens (one
-- use) and legacy payloads tried under a session key (a few tries). Keys are
-- "<kind>:<fingerprint>"; fingerprints are hashes, never the credential itself.
CREATE TABLE usage_counters (
    counter_key TEXT    PRIMARY KEY,
    uses        INTEGER NOT NULL,
    keep_until  INTEGER NOT NULL
);

CREATE INDEX usage_counters_keep_until ON usage_counters (keep_until);
