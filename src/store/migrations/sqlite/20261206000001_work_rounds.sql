-- SQLite keeps the same tables so that every query naming them runs on both; `--worker`
-- itself needs Postgres (SQLite has no SKIP LOCKED and is one file on one machine).
-- Workers that share one night (`tally run --worker`): a round is one night's work of one
-- period, split into units (a source's scope). Each unit is claimed by one worker at a time
-- under a lease that its heartbeat renews; a worker that dies stops renewing, and its unit is
-- claimed again once the lease has run out (`FOR UPDATE SKIP LOCKED`: claimers never wait for
-- each other). The round is priced, reconciled and pushed once, by the worker that takes the
-- writer lease after every unit is settled; `finished_by` is that run.
CREATE TABLE work_rounds (
    round       TEXT PRIMARY KEY,
    period      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    finished_by INTEGER,
    finished_at TEXT
);

CREATE TABLE work_units (
    round       TEXT NOT NULL REFERENCES work_rounds (round) ON DELETE CASCADE,
    source      TEXT NOT NULL,
    scope       TEXT NOT NULL,
    -- pending → claimed → done | failed; a claimed unit whose lease ran out is claimable again.
    state       TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'claimed', 'done', 'failed')),
    holder_run  INTEGER,
    holder_host TEXT,
    holder_pid  INTEGER,
    lease_until TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    settled_at  TEXT,
    PRIMARY KEY (round, source, scope)
);

-- The workers of a round that are alive: the heartbeat moves `alive_until`. A worker's run is
-- `running` without the writer lease, so the lease holder must not take it for a dead one.
CREATE TABLE round_workers (
    run_id      INTEGER PRIMARY KEY,
    round       TEXT NOT NULL REFERENCES work_rounds (round) ON DELETE CASCADE,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    alive_until TEXT NOT NULL
);
