-- Erasure leaves nothing readable (issue 17, docs/operations.md "Erasure").

-- The read model keeps a keyed hash of the unionid (HMAC under a key derived from the
-- server key), never the unionid; erasure clears it. Events of version 2 carry the hash
-- beside the sealed unionid; version 1 events are upcast to their hash on read.
DROP INDEX account_view_unionid;
ALTER TABLE account_view DROP COLUMN unionid;
ALTER TABLE account_view ADD COLUMN unionid_hash TEXT;
CREATE INDEX account_view_unionid_hash ON account_view (unionid_hash);

-- Rebuild the read model from the log (at start-up, by the catch-up): the hashes come
-- from the events.
DELETE FROM account_view;
UPDATE projection_checkpoints SET position = 0 WHERE name = 'accounts';

-- The state rows of earlier releases hold unionids in clear. They are a cache of the
-- log: an unreadable payload is rebuilt from the events on the next load, and
-- rewritten by the next commit. Their sequence and chain hash stay (audit verify).
UPDATE snapshots SET payload = '{}';
