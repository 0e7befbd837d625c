-- Finality (issue 15): a batch whose transaction is in a block but not yet final by the
-- finality rule is 'mined', with the block's hash: a reorganisation that replaces that
-- block is seen by the hash changing (or the receipt going), and the batch goes back to
-- 'submitted' to be broadcast again.
ALTER TABLE batches ADD COLUMN block_hash TEXT;
ALTER TABLE batches DROP CONSTRAINT batches_state_check;
ALTER TABLE batches ADD CONSTRAINT batches_state_check
    CHECK (state IN ('signed', 'submitted', 'mined', 'confirmed', 'credited', 'reverted',
                     'abandoned'));
-- A mined batch names the block its transaction is in.
ALTER TABLE batches ADD CONSTRAINT batches_mined_block CHECK (
    state <> 'mined'
    OR (tx_hash IS NOT NULL AND block_number IS NOT NULL AND block_hash IS NOT NULL)
);
-- What `tokendist status` and the gauge count: few rows, read every few seconds.
CREATE INDEX batches_mined ON batches (updated_at) WHERE state = 'mined';
