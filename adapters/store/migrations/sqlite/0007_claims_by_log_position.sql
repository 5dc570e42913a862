-- The registry's repair orders a claim and an `Unbound` by log position, not by
-- comparing clocks (issue 11): a claim remembers the newest log position when it was
-- made (`claimed_after`), and the projection of an `Unbound` at position P releases
-- only claims made before P was committed — never a rebind's claim made after it.
--
-- Claims made before this migration count as made after everything already in the
-- log: the projection does not release them, and the orphan sweep removes those the
-- log no longer confirms.
ALTER TABLE bindings ADD COLUMN claimed_after INTEGER NOT NULL DEFAULT 0;
UPDATE bindings SET claimed_after = (SELECT COALESCE(MAX(position), 0) FROM events);
