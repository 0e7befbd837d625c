-- Keep each confirmed event's payload with its dedupe row, so reconciliation can re-drive
-- a confirmed payment whose outbox row was already pruned. Rows from before stay NULL and
-- are reported for a human instead.
ALTER TABLE payment_confirmations ADD COLUMN payload JSONB;
