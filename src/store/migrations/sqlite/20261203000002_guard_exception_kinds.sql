-- Two new kinds of exception: `out_of_range` and `suspicious_shrink` (the same change as the
-- Postgres migration). SQLite cannot change a CHECK constraint in place, so `exceptions` is
-- rebuilt by SQLite's documented procedure (copy, drop, rename), with foreign keys off around
-- the migration (store/dialect.rs).

CREATE TABLE exceptions_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    period          TEXT NOT NULL,
    source          TEXT NOT NULL,
    kind            TEXT NOT NULL
                    CHECK (kind IN ('unmapped_customer', 'unmapped_license', 'no_price', 'not_billable',
                                    'out_of_range', 'suspicious_shrink')),
    customer_key    TEXT NOT NULL,
    item            TEXT NOT NULL,
    billing_account TEXT,
    license_type    TEXT,
    quantity        TEXT NOT NULL,
    record_count    INTEGER NOT NULL,
    message         TEXT NOT NULL,
    run_id          INTEGER NOT NULL REFERENCES runs (id)
) STRICT;
INSERT INTO exceptions_new SELECT * FROM exceptions;
DROP TABLE exceptions;
ALTER TABLE exceptions_new RENAME TO exceptions;

-- A run replaces the exceptions of (period, source).
CREATE INDEX exceptions_period_source ON exceptions (period, source);
