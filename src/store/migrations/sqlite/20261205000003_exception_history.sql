-- Exception history (the same change as the Postgres migration): a run marks the exceptions it
-- replaces with its id in `superseded_by_run` instead of deleting them; the current exceptions
-- are those not superseded. A column added with a NULL default may carry REFERENCES in SQLite.
ALTER TABLE exceptions ADD COLUMN superseded_by_run INTEGER REFERENCES runs (id);
CREATE INDEX exceptions_current ON exceptions (period, source) WHERE superseded_by_run IS NULL;
