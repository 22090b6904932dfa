-- Exception history (docs/LEDGER.md, "Exceptions"): a run no longer deletes the exceptions of
-- (period, source) it replaces; it marks them with its own id in `superseded_by_run`, so that
-- every run's exceptions stay readable. The current exceptions are those not superseded.
ALTER TABLE exceptions ADD COLUMN superseded_by_run BIGINT REFERENCES runs (id);
CREATE INDEX exceptions_current ON exceptions (period, source) WHERE superseded_by_run IS NULL;
