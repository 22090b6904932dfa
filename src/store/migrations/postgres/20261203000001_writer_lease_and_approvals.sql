-- Operations on a shared ledger (one writer at a time, signals, crashes) and approvals by person.
--
-- Runs gain two end states: `interrupted` (stopped by SIGTERM/SIGINT after recording what it
-- did) and `abandoned` (its process died; marked by the next writer), and the host and process
-- that ran them, so that a busy writer can be named.
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check CHECK (status IN
    ('running', 'completed', 'completed_with_exceptions', 'failed', 'interrupted', 'abandoned'));
ALTER TABLE runs ADD COLUMN host TEXT;
ALTER TABLE runs ADD COLUMN pid BIGINT;

-- Who approved a revision, when, and why: a person (`--by`) or an approval rule (`rule:<name>`).
ALTER TABLE ledger_lines ADD COLUMN approved_by TEXT;
ALTER TABLE ledger_lines ADD COLUMN approved_at TIMESTAMPTZ;
ALTER TABLE ledger_lines ADD COLUMN approval_note TEXT;

-- The holder of the writer lease, written by the holder right after it takes the lock (the
-- lock itself is a session advisory lock that dies with its holder); read by a writer that
-- finds the lock taken, to say who holds it. One row at most.
CREATE TABLE writer_lease (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    command TEXT NOT NULL,
    run_id  BIGINT,
    host    TEXT NOT NULL,
    pid     BIGINT NOT NULL,
    since   TIMESTAMPTZ NOT NULL
);
