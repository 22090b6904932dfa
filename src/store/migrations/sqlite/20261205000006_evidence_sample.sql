-- A few of the source records behind a revision (JSON array of `record key (customer key,
-- item)`), for the review page's line detail. NULL for revisions written before it was kept.
ALTER TABLE ledger_lines ADD COLUMN evidence_sample TEXT;
