-- Two new kinds of exception (docs/LEDGER.md, "Exceptions"): `out_of_range`, a quantity above
-- the configured maximum or an amount too large to compute, and `suspicious_shrink`, a source
-- that answered far less than the period's pushed lines imply.
ALTER TABLE exceptions DROP CONSTRAINT exceptions_kind_check;
ALTER TABLE exceptions ADD CONSTRAINT exceptions_kind_check
    CHECK (kind IN ('unmapped_customer', 'unmapped_license', 'no_price', 'not_billable',
                    'out_of_range', 'suspicious_shrink'));
