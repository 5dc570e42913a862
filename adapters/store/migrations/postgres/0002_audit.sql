-- Tamper evidence (docs/audit.md).

-- The chain hash of an account's last event, so that a commit links its first event
-- without reading the log. NULL for accounts whose events predate the chain.
ALTER TABLE snapshots ADD COLUMN last_hash TEXT;

-- Periodic evidence over the whole log: the cumulative hash of every event's hash in
-- position order, up to and including `position`.
CREATE TABLE audit_checkpoints (
    position   BIGINT PRIMARY KEY,
    cumulative TEXT   NOT NULL,
    events     BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Point-in-time questions look for the accounts a user was ever bound to.
CREATE INDEX events_type ON events (event_type);
