-- Staging by page (docs/PERFORMANCE.md): a scope's listing is kept one row per page, its records
-- encoded together, instead of one row per record under a unique index. A million records were
-- a million index insertions of four text columns, most of a first run's time; they are now ten
-- thousand rows. Each page keeps a fingerprint of its records, so that a re-run of an unchanged
-- month finds its pages already staged and writes nothing but its checkpoint.
--
-- A record listed twice (even on two pages) still counts once: totals read the pages back and
-- keep each record key's last listing.
--
-- As with the slim staging before it, staged records and unfinished checkpoints go: the next run
-- reads every scope again from page 1, so that no checkpoint claims a page that is not staged.
DROP TABLE staged_records;
DELETE FROM checkpoints;

CREATE TABLE staged_pages (
    source      TEXT NOT NULL,
    scope       TEXT NOT NULL,
    period      TEXT NOT NULL,
    -- The page of the scope's listing, from 1: an accountant finds a record at the source by it.
    page        BIGINT NOT NULL,
    -- How many records the page listed, and the records themselves: a JSON array of
    -- [record_key, customer_key, item, quantity] (the quantity a decimal string), in the order
    -- the peer listed them.
    records     BIGINT NOT NULL,
    body        TEXT NOT NULL,
    -- SHA-256 (hex) of body: equal fingerprints, equal records.
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (source, period, scope, page)
);

-- A re-run of a complete extraction: its staged pages are kept and compared page by page with
-- what the peer lists now, until the first page that differs (from which on they are staged
-- again). While this is true, the pages past the checkpoint are the earlier run's, not yet
-- compared.
ALTER TABLE checkpoints ADD COLUMN rereading BOOLEAN NOT NULL DEFAULT FALSE;
