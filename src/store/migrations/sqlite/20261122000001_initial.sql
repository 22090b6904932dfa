-- tally's state: runs, extraction checkpoints, staged records, the ledger and exceptions.
-- The same tables as the Postgres schema. SQLite has no exact decimal type, so money and
-- quantities are TEXT holding the exact decimal string ("12.50"), never REAL; timestamps are
-- RFC 3339 TEXT and JSON is TEXT. STRICT tables refuse a value of the wrong type instead of
-- silently converting it. AUTOINCREMENT keeps ids of deleted rows from being reused.

CREATE TABLE runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    triggered_by  TEXT NOT NULL CHECK (triggered_by IN ('manual', 'schedule', 'demo')),
    period        TEXT NOT NULL,
    source_filter TEXT,
    status        TEXT NOT NULL
                  CHECK (status IN ('running', 'completed', 'completed_with_exceptions', 'failed')),
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    summary       TEXT
) STRICT;

CREATE TABLE checkpoints (
    source      TEXT NOT NULL,
    scope       TEXT NOT NULL,
    period      TEXT NOT NULL,
    next_cursor TEXT,
    complete    INTEGER NOT NULL,
    pages       INTEGER NOT NULL,
    records     INTEGER NOT NULL,
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (source, scope, period)
) STRICT;

CREATE TABLE staged_records (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    source       TEXT NOT NULL,
    scope        TEXT NOT NULL,
    period       TEXT NOT NULL,
    record_key   TEXT NOT NULL,
    customer_key TEXT NOT NULL,
    item         TEXT NOT NULL,
    quantity     TEXT NOT NULL,
    payload      TEXT NOT NULL,
    run_id       INTEGER NOT NULL REFERENCES runs (id),
    -- A record listed twice (even on two pages) is staged, and counted, once.
    UNIQUE (source, scope, period, record_key)
) STRICT;

-- Mapping reads a source's period page by page, by id.
CREATE INDEX staged_records_source_period_id ON staged_records (source, period, id);

CREATE TABLE ledger_lines (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    line_key        TEXT NOT NULL,
    period          TEXT NOT NULL,
    billing_account TEXT NOT NULL,
    license_type    TEXT NOT NULL,
    source          TEXT NOT NULL,
    revision        INTEGER NOT NULL CHECK (revision >= 1),
    idempotency_key TEXT NOT NULL UNIQUE,
    quantity        TEXT NOT NULL,
    amount          TEXT NOT NULL,
    rate            TEXT NOT NULL,
    currency        TEXT NOT NULL,
    total_quantity  TEXT NOT NULL,
    total_amount    TEXT NOT NULL,
    price_ref       TEXT NOT NULL,
    trace           TEXT NOT NULL,
    evidence_count  INTEGER NOT NULL,
    evidence_hash   TEXT NOT NULL,
    sink            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('draft', 'approved', 'pushing', 'pushed')),
    external_id     TEXT,
    push_marker     TEXT,
    last_error      TEXT,
    run_id          INTEGER NOT NULL REFERENCES runs (id),
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    pushed_at       TEXT,
    UNIQUE (line_key, revision)
) STRICT;

-- Every read of the ledger is one period's, in line key then revision order.
CREATE INDEX ledger_lines_period_key ON ledger_lines (period, line_key, revision);

CREATE TABLE exceptions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    period          TEXT NOT NULL,
    source          TEXT NOT NULL,
    kind            TEXT NOT NULL
                    CHECK (kind IN ('unmapped_customer', 'unmapped_license', 'no_price', 'not_billable')),
    customer_key    TEXT NOT NULL,
    item            TEXT NOT NULL,
    billing_account TEXT,
    license_type    TEXT,
    quantity        TEXT NOT NULL,
    record_count    INTEGER NOT NULL,
    message         TEXT NOT NULL,
    run_id          INTEGER NOT NULL REFERENCES runs (id)
) STRICT;

-- A run replaces the exceptions of (period, source).
CREATE INDEX exceptions_period_source ON exceptions (period, source);
