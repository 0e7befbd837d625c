-- The unit of a transaction becomes a batch (issue 14). A distribution stays one row per
-- payment; a batch (one key, one nonce, its signed attempts) pays many of them through
-- Distributor.distributeBatch, each guarded on-chain by its own bit at a dense index.

-- The operator keys the consumers sign with: each owns its nonce sequence (sender_nonces).
-- 'draining' takes no new batches; 'removed' has had its role revoked on the Distributors.
CREATE TABLE operator_keys (
    chain_id    BIGINT NOT NULL,
    address     TEXT NOT NULL CHECK (address ~ '^0x[0-9a-fA-F]{40}$'),
    state       TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'draining', 'removed')),
    added_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, address)
);

CREATE TABLE batches (
    id                   BIGSERIAL PRIMARY KEY,
    chain_id             BIGINT NOT NULL,
    sender               TEXT NOT NULL,
    nonce                BIGINT NOT NULL CHECK (nonce >= 0),
    distributor_address  TEXT NOT NULL,
    first_index          BIGINT NOT NULL CHECK (first_index >= 0),
    size                 INTEGER NOT NULL CHECK (size > 0),
    -- What every attempt (fee bump) signs again: same calldata, same nonce.
    calldata             BYTEA NOT NULL,
    gas_limit            BIGINT NOT NULL CHECK (gas_limit > 0),
    state                TEXT NOT NULL
                         CHECK (state IN ('signed', 'submitted', 'confirmed', 'credited',
                                          'reverted', 'abandoned')),
    tx_hash              TEXT,
    block_number         BIGINT,
    failure_reason       TEXT,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (chain_id, sender, nonce)
);
CREATE INDEX batches_open ON batches (chain_id, sender, nonce)
    WHERE state IN ('signed', 'submitted');

-- An attempt belongs to a batch now; rows of single-payment transactions keep event_id.
ALTER TABLE chain_transactions ALTER COLUMN event_id DROP NOT NULL;
ALTER TABLE chain_transactions ADD COLUMN batch_id BIGINT REFERENCES batches (id);
CREATE INDEX chain_transactions_batch ON chain_transactions (batch_id);

ALTER TABLE distributions ADD COLUMN batch_id BIGINT REFERENCES batches (id);
ALTER TABLE distributions ADD COLUMN payment_index BIGINT CHECK (payment_index >= 0);
CREATE INDEX distributions_batch ON distributions (batch_id);
-- An index pays one payment: two distributions of one Distributor never share one.
ALTER TABLE distributions ADD COLUMN distributor_address TEXT;
CREATE UNIQUE INDEX distributions_index
    ON distributions (distributor_address, payment_index) WHERE payment_index IS NOT NULL;

-- The next index per Distributor, never below what its logs show used: rebuilt from the
-- chain (scanned_block onwards) before any index is assigned, so a database restored from
-- an older backup cannot give an index used on-chain to another payment.
CREATE TABLE distributor_indices (
    distributor_address  TEXT PRIMARY KEY,
    next_index           BIGINT NOT NULL DEFAULT 0 CHECK (next_index >= 0),
    scanned_block        BIGINT NOT NULL DEFAULT -1,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Payouts found in the Distributor's logs by that scan: a payment found here is confirmed
-- by the transaction that paid it, never batched again.
CREATE TABLE onchain_payments (
    distributor_address  TEXT NOT NULL,
    payment_id           TEXT NOT NULL,
    payment_index        BIGINT NOT NULL,
    tx_hash              TEXT NOT NULL,
    block_number         BIGINT NOT NULL,
    PRIMARY KEY (distributor_address, payment_id)
);

-- A payment the index scan found paid on-chain is confirmed by that transaction, whose
-- sender and nonce the logs do not say: only a signed or submitted one must name them.
ALTER TABLE distributions DROP CONSTRAINT distributions_check;
ALTER TABLE distributions ADD CONSTRAINT distributions_check CHECK (
    (state NOT IN ('signed', 'submitted')
     OR (recipient IS NOT NULL AND sender IS NOT NULL AND nonce IS NOT NULL))
    AND (state NOT IN ('confirmed', 'credited') OR recipient IS NOT NULL)
);
