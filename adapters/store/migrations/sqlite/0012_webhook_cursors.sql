-- Webhook deliveries (issue 14): one cursor per [[webhooks]] subscription.
--
-- `position`: every event up to it was delivered or is not wanted. `attempts`,
-- `next_attempt_at`, `last_error` and the `pending_*` columns describe the next
-- wanted event while it fails; `parked_at` is set when it ran out of attempts (the
-- subscription waits for an operator's retry). `lease_holder` / `lease_until`: the one
-- instance that delivers this subscription now (every write is conditional on it).
CREATE TABLE webhook_cursors (
    subscription     TEXT    PRIMARY KEY,
    position         INTEGER  NOT NULL,
    attempts         INTEGER  NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    last_error       TEXT,
    pending_position INTEGER,
    pending_id       TEXT,
    pending_type     TEXT,
    pending_account  TEXT,
    parked_at        INTEGER,
    lease_holder     TEXT,
    lease_until      INTEGER  NOT NULL DEFAULT 0
);

CREATE INDEX webhook_cursors_parked ON webhook_cursors (pending_id);
