-- A draft revision whose figures changed after a person or a rule had approved it: the run
-- that changed it took the approval away (it must be looked at again), and this says so on the
-- revision itself, for the review page. Cleared when the revision is approved again.
ALTER TABLE ledger_lines ADD COLUMN back_to_review INTEGER NOT NULL DEFAULT 0;
