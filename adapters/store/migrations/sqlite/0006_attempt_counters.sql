-- Throttling counters shared by every instance (issue 17): password failures per
-- (account, client), per account and per client, and logins per client.
--
-- `key_hash` is a keyed hash of the throttle key (it names an account and an
-- address); a window starts at its first hit and lasts the window of the key's kind.
CREATE TABLE attempt_counters (
    key_hash          TEXT   PRIMARY KEY,
    window_started_at INTEGER NOT NULL,
    window_ends_at    INTEGER NOT NULL,
    hits              INTEGER NOT NULL
);

-- Expired windows are purged by age.
CREATE INDEX attempt_counters_ends ON attempt_counters (window_ends_at);
