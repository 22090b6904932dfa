-- Run history (docs/LEDGER.md, "Runs"): who asked for a run, and the customer it was limited to.
-- `requested_by` is the operator's `--by` (default: the login name) or NULL for a run the
-- schedule started; `customer_filter` is the `--customer` as given, NULL for every customer.
ALTER TABLE runs ADD COLUMN requested_by TEXT;
ALTER TABLE runs ADD COLUMN customer_filter TEXT;
