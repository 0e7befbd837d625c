-- A reorganisation deeper than the finality rule removes payouts already credited (issue
-- 15). `tokendist chain-check` re-reads the chain's Distributed logs for recently credited
-- distributions every few seconds; what it needs to stay incremental lives here.

-- Per chain: the head the last check read up to, and when it began (a distribution
-- credited since is checked whatever its block).
CREATE TABLE chain_checks (
    chain_id       BIGINT PRIMARY KEY,
    checked_block  BIGINT NOT NULL CHECK (checked_block >= 0),
    started_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Credited distributions whose payout the check did not find on the chain: checked again
-- every run, however old their block, until the payout is back (`tokendist reconcile`).
CREATE TABLE credited_not_on_chain (
    event_id     UUID PRIMARY KEY REFERENCES distributions (event_id),
    chain_id     BIGINT NOT NULL,
    head         BIGINT NOT NULL,
    detected_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The check's two ways in: recent blocks, and recent credits.
CREATE INDEX distributions_credited_block ON distributions (block_number)
    WHERE state = 'credited';
CREATE INDEX distributions_credited_at ON distributions (credited_at)
    WHERE state = 'credited';

-- A batch whose nonce another transaction took after a deep reorg can never be mined:
-- `reconcile` signs its calldata again (same payment indices, so the Distributor's bitmap
-- pays each at most once) under a new nonce, as a new batch that names the original.
ALTER TABLE batches ADD COLUMN resigns BIGINT REFERENCES batches (id);
CREATE INDEX batches_resigns ON batches (resigns) WHERE resigns IS NOT NULL;
