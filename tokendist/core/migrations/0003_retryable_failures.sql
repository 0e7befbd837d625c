-- Whether a failed distribution may be re-driven: true when nothing can have been paid
-- (refused by simulation before signing, or the transaction reverted on-chain, which
-- rolls the Distributor's once-only flag back too). False for failures that need a human
-- first (a nonce consumed by a transaction this system did not sign).
ALTER TABLE distributions ADD COLUMN retryable BOOLEAN NOT NULL DEFAULT false;
UPDATE distributions SET retryable = true WHERE state = 'failed' AND sender IS NULL;
