-- Appends no longer serialise on a database-wide advisory lock (issue 13, docs/scaling.md).
--
-- Each event records the transaction that wrote it (`txid`), and its `position` is
-- derived from that transaction: `txid * 65536 + the event's index in its append`.
-- Position order is then (writing transaction, index) order, and a reader that stops
-- below the safe horizon — `txid < pg_snapshot_xmin(pg_current_snapshot())`, the oldest
-- transaction still in flight — never skips a committed event, and never meets a
-- position lower than one it already read: every transaction still in flight, and
-- every later one, writes positions at or above `horizon * 65536`. (A plain sequence
-- with the same filter is not enough: a transaction can take a lower position than
-- another and commit after it, with an older xid than the horizon on the other.)
--
-- Events written before this migration keep their positions, all below the first new
-- one (checked here), and a `txid` of 0: finished long ago.
ALTER TABLE events ADD COLUMN txid xid8 NOT NULL DEFAULT '0';
ALTER TABLE events ALTER COLUMN txid SET DEFAULT pg_current_xact_id();
ALTER TABLE events ALTER COLUMN position DROP IDENTITY IF EXISTS;

-- The store's appends give each event its index explicitly. Rows inserted by hand
-- (tools, tests) take the next value of this counter as their index instead.
CREATE SEQUENCE events_index_in_xact;
ALTER TABLE events ALTER COLUMN position
    SET DEFAULT (pg_current_xact_id()::text::bigint * 65536 + nextval('events_index_in_xact') % 65536);

DO $$
BEGIN
    IF (SELECT COALESCE(MAX(position), 0) FROM events)
        >= pg_current_xact_id()::text::bigint * 65536 THEN
        RAISE EXCEPTION 'events.position: existing positions reach past the transaction-derived ones';
    END IF;
END
$$;

-- A claim in the binding registry remembers the snapshot it was made in: the
-- projection of an `Unbound` releases it only when the `Unbound`'s transaction was not
-- yet committed in that snapshot (positions are no longer the commit order that
-- `claimed_after` relied on; it stays for claims made before this migration and for
-- claims the projection itself repairs).
ALTER TABLE bindings ADD COLUMN claimed_snapshot pg_snapshot;
