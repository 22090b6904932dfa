-- Operations on a shared ledger (one writer at a time, signals, crashes) and approvals by person.
-- The same changes as the Postgres migration. SQLite cannot change a CHECK constraint in place,
-- so `runs` is rebuilt by SQLite's documented procedure (copy, drop, rename), which needs foreign
-- keys off: the store turns them off on the migrating connection around the migration's
-- transaction (store/dialect.rs), and the child tables keep referring to `runs` by name.

CREATE TABLE runs_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    triggered_by  TEXT NOT NULL CHECK (triggered_by IN ('manual', 'schedule', 'demo')),
    period        TEXT NOT NULL,
    source_filter TEXT,
    status        TEXT NOT NULL
                  CHECK (status IN ('running', 'completed', 'completed_with_exceptions', 'failed',
                                    'interrupted', 'abandoned')),
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    summary       TEXT,
    host          TEXT,
    pid           INTEGER
) STRICT;
INSERT INTO runs_new (id, triggered_by, period, source_filter, status, started_at, finished_at, summary)
    SELECT id, triggered_by, period, source_filter, status, started_at, finished_at, summary FROM runs;
DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;

ALTER TABLE ledger_lines ADD COLUMN approved_by TEXT;
ALTER TABLE ledger_lines ADD COLUMN approved_at TEXT;
ALTER TABLE ledger_lines ADD COLUMN approval_note TEXT;

CREATE TABLE writer_lease (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    command TEXT NOT NULL,
    run_id  INTEGER,
    host    TEXT NOT NULL,
    pid     INTEGER NOT NULL,
    since   TEXT NOT NULL
) STRICT;
