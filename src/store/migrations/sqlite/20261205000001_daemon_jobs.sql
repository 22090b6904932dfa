-- The daemon's jobs across instances, and the months closed to scheduled runs.
--
-- Each tick of a job (its name and the instant it fired) is claimed by one daemon among all
-- those on this database: the INSERT of the claim is the decision (its primary key admits one
-- row), the others read who claimed it and skip. The claim keeps the last run the tick did, for
-- /healthz of any instance.
CREATE TABLE job_ticks (
    job         TEXT NOT NULL,
    fire_at     TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    claimed_at  TEXT NOT NULL,
    run_id      INTEGER,
    status      TEXT,
    finished_at TEXT,
    PRIMARY KEY (job, fire_at)
);

-- A month the late-data window has passed: scheduled runs never touch it again (a manual
-- `tally run --period` still may, and says so).
CREATE TABLE closed_periods (
    period    TEXT PRIMARY KEY,
    closed_at TEXT NOT NULL,
    closed_by TEXT NOT NULL
);
