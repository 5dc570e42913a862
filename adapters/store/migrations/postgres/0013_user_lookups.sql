-- The user directory's lookups by account or by phone across tenants (`miniauth import
-- gitegg` asks whether a batch's accounts and phones are taken, in any tenant; the
-- unique keys lead with the tenant and cannot answer that): without these, each such
-- question reads the whole table.
CREATE INDEX users_account ON users (account);
CREATE INDEX users_mobile_hash ON users (mobile_hash);
