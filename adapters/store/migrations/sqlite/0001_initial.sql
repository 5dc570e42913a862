-- miniauth schema, SQLite. Times are Unix milliseconds (INTEGER) so that both engines
-- compare them the same way in SQL.

-- The event log, in the shape sqlite-es reads (aggregate_type, aggregate_id, sequence,
-- event_type, event_version, payload, metadata), plus `position`: the global commit order.
CREATE TABLE events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    sequence       INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    event_version  TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    CONSTRAINT events_aggregate_sequence UNIQUE (aggregate_type, aggregate_id, sequence)
);

-- One state row per aggregate, written in the same transaction as its events.
CREATE TABLE snapshots (
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    last_sequence  INTEGER NOT NULL,
    payload        TEXT    NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Read model: one row per social account, projected from the log.
CREATE TABLE account_view (
    aggregate_id   TEXT    PRIMARY KEY,
    appid          TEXT    NOT NULL,
    openid         TEXT    NOT NULL,
    unionid        TEXT,
    bound_user     INTEGER,
    has_profile    INTEGER NOT NULL,
    has_phone      INTEGER NOT NULL,
    latest_session INTEGER NOT NULL,
    erased         INTEGER NOT NULL,
    last_sequence  INTEGER NOT NULL,
    last_position  INTEGER NOT NULL
);
CREATE INDEX account_view_unionid ON account_view (unionid);
CREATE INDEX account_view_bound_user ON account_view (bound_user);

-- How far each projection has read the log.
CREATE TABLE projection_checkpoints (
    name     TEXT    PRIMARY KEY,
    position INTEGER NOT NULL
);
INSERT INTO projection_checkpoints (name, position) VALUES ('accounts', 0);

-- The business users. Mobile numbers are kept as a keyed hash (lookups, uniqueness) and
-- sealed text (reading back); nickname and avatar sealed: no personal datum in clear.
CREATE TABLE users (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant          TEXT    NOT NULL,
    account         TEXT,
    mobile_hash     TEXT,
    mobile_sealed   TEXT,
    nickname_sealed TEXT,
    avatar_sealed   TEXT,
    password_hash   TEXT,
    status          TEXT    NOT NULL,
    origin          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    CONSTRAINT users_tenant_account UNIQUE (tenant, account),
    CONSTRAINT users_tenant_mobile UNIQUE (tenant, mobile_hash)
);

-- The binding registry: one user per WeChat identity, one identity per user per app.
CREATE TABLE bindings (
    appid      TEXT    NOT NULL,
    openid     TEXT    NOT NULL,
    user_id    INTEGER NOT NULL,
    claimed_at INTEGER NOT NULL,
    CONSTRAINT bindings_identity UNIQUE (appid, openid),
    CONSTRAINT bindings_user_app UNIQUE (appid, user_id)
);
CREATE INDEX bindings_user ON bindings (user_id);

-- Refresh tokens: only the SHA-256 of the token is stored.
CREATE TABLE refresh_tokens (
    token_hash TEXT    PRIMARY KEY,
    family_id  TEXT    NOT NULL,
    user_id    INTEGER NOT NULL,
    tenant     TEXT    NOT NULL,
    appid      TEXT,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    rotated_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- Per-account data keys, sealed with the server key. Erasure deletes the row.
CREATE TABLE data_keys (
    account_id TEXT    PRIMARY KEY,
    key_id     TEXT    NOT NULL,
    sealed_key TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

-- Shared key material (JWT signing key, ticket key), sealed with the server key.
CREATE TABLE key_material (
    name       TEXT    PRIMARY KEY,
    sealed     TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
