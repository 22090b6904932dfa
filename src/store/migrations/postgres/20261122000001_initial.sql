-- tally's state: runs, extraction checkpoints, staged records, the ledger and exceptions.
-- Money and quantities are NUMERIC (exact, scale kept: 12.50 stays 12.50), never floating point.
-- Text that is sorted on (line keys, sources, kinds, customers) uses the "C" collation so that
-- Postgres orders it byte by byte, exactly as SQLite does, whatever the database's locale.

CREATE TABLE runs (
    id            BIGSERIAL PRIMARY KEY,
    triggered_by  TEXT NOT NULL CHECK (triggered_by IN ('manual', 'schedule', 'demo')),
    period        TEXT NOT NULL,
    source_filter TEXT,
    status        TEXT NOT NULL
                  CHECK (status IN ('running', 'completed', 'completed_with_exceptions', 'failed')),
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    summary       JSONB
);

CREATE TABLE checkpoints (
    source      TEXT NOT NULL,
    scope       TEXT NOT NULL,
    period      TEXT NOT NULL,
    next_cursor TEXT,
    complete    BOOLEAN NOT NULL,
    pages       BIGINT NOT NULL,
    records     BIGINT NOT NULL,
    run_id      BIGINT NOT NULL REFERENCES runs (id),
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, scope, period)
);

CREATE TABLE staged_records (
    id           BIGSERIAL PRIMARY KEY,
    source       TEXT NOT NULL,
    scope        TEXT NOT NULL,
    period       TEXT NOT NULL,
    record_key   TEXT NOT NULL,
    customer_key TEXT NOT NULL,
    item         TEXT NOT NULL,
    quantity     NUMERIC NOT NULL,
    payload      JSONB NOT NULL,
    run_id       BIGINT NOT NULL REFERENCES runs (id),
    -- A record listed twice (even on two pages) is staged, and counted, once.
    UNIQUE (source, scope, period, record_key)
);

-- Mapping reads a source's period page by page, by id.
CREATE INDEX staged_records_source_period_id ON staged_records (source, period, id);

CREATE TABLE ledger_lines (
    id              BIGSERIAL PRIMARY KEY,
    line_key        TEXT COLLATE "C" NOT NULL,
    period          TEXT NOT NULL,
    billing_account TEXT NOT NULL,
    license_type    TEXT NOT NULL,
    source          TEXT COLLATE "C" NOT NULL,
    revision        INTEGER NOT NULL CHECK (revision >= 1),
    idempotency_key TEXT NOT NULL UNIQUE,
    quantity        NUMERIC NOT NULL,
    amount          NUMERIC NOT NULL,
    rate            NUMERIC NOT NULL,
    currency        TEXT NOT NULL,
    total_quantity  NUMERIC NOT NULL,
    total_amount    NUMERIC NOT NULL,
    price_ref       TEXT NOT NULL,
    trace           JSONB NOT NULL,
    evidence_count  BIGINT NOT NULL,
    evidence_hash   TEXT NOT NULL,
    sink            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('draft', 'approved', 'pushing', 'pushed')),
    external_id     TEXT,
    push_marker     TEXT,
    last_error      TEXT,
    run_id          BIGINT NOT NULL REFERENCES runs (id),
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    pushed_at       TIMESTAMPTZ,
    UNIQUE (line_key, revision)
);

-- Every read of the ledger is one period's, in line key then revision order.
CREATE INDEX ledger_lines_period_key ON ledger_lines (period, line_key, revision);

CREATE TABLE exceptions (
    id              BIGSERIAL PRIMARY KEY,
    period          TEXT NOT NULL,
    source          TEXT COLLATE "C" NOT NULL,
    kind            TEXT COLLATE "C" NOT NULL
                    CHECK (kind IN ('unmapped_customer', 'unmapped_license', 'no_price', 'not_billable')),
    customer_key    TEXT COLLATE "C" NOT NULL,
    item            TEXT COLLATE "C" NOT NULL,
    billing_account TEXT,
    license_type    TEXT,
    quantity        NUMERIC NOT NULL,
    record_count    BIGINT NOT NULL,
    message         TEXT NOT NULL,
    run_id          BIGINT NOT NULL REFERENCES runs (id)
);

-- A run replaces the exceptions of (period, source).
CREATE INDEX exceptions_period_source ON exceptions (period, source);
