-- Slim staging (docs/PERFORMANCE.md): a staged record keeps only what totals and evidence need.
-- The source's payload is no longer stored: nothing read it back, and writing it was most of a
-- page's staging time. In its place, `page` says which page of the scope's listing the record
-- was read from, so that an accountant can find it at the source.
--
-- The staged records of an unfinished extraction are dropped with their checkpoints, so that
-- the next run reads those scopes again from page 1: a checkpoint never claims a page whose
-- records are not staged. A month already extracted is simply read again by the next run, as
-- every run reads its month again.
DROP TABLE staged_records;
DELETE FROM checkpoints;

CREATE TABLE staged_records (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    source       TEXT NOT NULL,
    scope        TEXT NOT NULL,
    period       TEXT NOT NULL,
    record_key   TEXT NOT NULL,
    customer_key TEXT NOT NULL,
    item         TEXT NOT NULL,
    quantity     TEXT NOT NULL,
    -- The page of the scope's listing the record was (last) read from, from 1.
    page         INTEGER NOT NULL,
    run_id       INTEGER NOT NULL REFERENCES runs (id),
    -- A record listed twice (even on two pages) is staged, and counted, once.
    UNIQUE (source, scope, period, record_key)
) STRICT;

-- Totalling reads a source's period in id order, batch by batch.
CREATE INDEX staged_records_source_period_id ON staged_records (source, period, id);
