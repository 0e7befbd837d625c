-- Money is integers everywhere: fiat in minor units (BIGINT), tokens in base units
-- (NUMERIC(78,0) holds any uint256). Invariants live in constraints, not in code.

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    kyc_status      TEXT NOT NULL DEFAULT 'pending'
                    CHECK (kyc_status IN ('pending', 'approved', 'rejected')),
    wallet_address  TEXT CHECK (wallet_address ~ '^0x[0-9a-fA-F]{40}$'),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE tokenizations (
    id                   TEXT PRIMARY KEY,
    property_id          TEXT NOT NULL,
    chain_id             BIGINT NOT NULL CHECK (chain_id > 0),
    token_address        TEXT NOT NULL CHECK (token_address ~ '^0x[0-9a-fA-F]{40}$'),
    decimals             SMALLINT NOT NULL CHECK (decimals BETWEEN 0 AND 36),
    distributor_address  TEXT NOT NULL CHECK (distributor_address ~ '^0x[0-9a-fA-F]{40}$'),
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE investments (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL REFERENCES users (id),
    tokenization_id     TEXT NOT NULL REFERENCES tokenizations (id),
    provider            TEXT NOT NULL CHECK (provider <> ''),
    provider_reference  TEXT NOT NULL CHECK (provider_reference <> ''),
    amount_minor        BIGINT NOT NULL CHECK (amount_minor > 0),
    currency            TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    tokens_requested    NUMERIC(78, 0) NOT NULL CHECK (tokens_requested > 0),
    status              TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'confirmed', 'tokens_distributed', 'failed')),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_reference)
);

-- Every payment confirmation ever enqueued, kept forever: the dedupe key for webhook
-- retries (the outbox itself is pruned) and the "confirmed upstream" side of verify.
CREATE TABLE payment_confirmations (
    event_id            UUID PRIMARY KEY,
    provider            TEXT NOT NULL,
    provider_reference  TEXT NOT NULL,
    investment_id       TEXT NOT NULL UNIQUE,
    user_id             TEXT NOT NULL,
    tokenization_id     TEXT NOT NULL,
    tokens              NUMERIC(78, 0) NOT NULL CHECK (tokens > 0),
    confirmed_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_reference)
);

-- Debezium outbox conventions: id, aggregatetype, aggregateid, type, payload.
CREATE TABLE outbox (
    seq            BIGSERIAL UNIQUE,
    id             UUID PRIMARY KEY,
    aggregatetype  TEXT NOT NULL,
    aggregateid    TEXT NOT NULL,
    type           TEXT NOT NULL,
    payload        JSONB NOT NULL,
    headers        JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at   TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tokendist_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- One row per payment event: the distribution state machine.
CREATE TABLE distributions (
    event_id         UUID PRIMARY KEY,
    investment_id    TEXT NOT NULL UNIQUE,
    -- keccak256(investment_id): the Distributor refuses a second payout under it.
    payment_id       TEXT NOT NULL UNIQUE,
    user_id          TEXT NOT NULL,
    tokenization_id  TEXT NOT NULL REFERENCES tokenizations (id),
    tokens           NUMERIC(78, 0) NOT NULL CHECK (tokens > 0),
    payload          JSONB NOT NULL,
    state            TEXT NOT NULL
                     CHECK (state IN ('received', 'awaiting_kyc', 'signed', 'submitted',
                                      'confirmed', 'credited', 'failed')),
    failure_reason   TEXT,
    recipient        TEXT CHECK (recipient ~ '^0x[0-9a-fA-F]{40}$'),
    sender           TEXT,
    nonce            BIGINT CHECK (nonce >= 0),
    tx_hash          TEXT,
    block_number     BIGINT,
    kafka_partition  INTEGER,
    kafka_offset     BIGINT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    credited_at      TIMESTAMPTZ,
    CHECK (state NOT IN ('signed', 'submitted', 'confirmed', 'credited')
           OR (recipient IS NOT NULL AND sender IS NOT NULL AND nonce IS NOT NULL)),
    CHECK (state NOT IN ('confirmed', 'credited') OR (tx_hash IS NOT NULL AND block_number IS NOT NULL)),
    CHECK ((state = 'failed') = (failure_reason IS NOT NULL))
);
CREATE INDEX distributions_open ON distributions (state)
    WHERE state NOT IN ('credited', 'failed');
CREATE INDEX distributions_user ON distributions (user_id);

-- Every signed transaction, stored before it is broadcast. A fee bump adds a row with the
-- same (sender, nonce); at most one of them can ever be mined.
CREATE TABLE chain_transactions (
    tx_hash           TEXT PRIMARY KEY,
    event_id          UUID NOT NULL REFERENCES distributions (event_id),
    chain_id          BIGINT NOT NULL,
    sender            TEXT NOT NULL,
    nonce             BIGINT NOT NULL CHECK (nonce >= 0),
    raw_tx            BYTEA NOT NULL,
    gas_limit         BIGINT NOT NULL CHECK (gas_limit > 0),
    max_fee_per_gas   NUMERIC(78, 0) NOT NULL,
    priority_fee      NUMERIC(78, 0) NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    broadcast_at      TIMESTAMPTZ
);
CREATE INDEX chain_transactions_event ON chain_transactions (event_id);
CREATE INDEX chain_transactions_sender_nonce ON chain_transactions (chain_id, sender, nonce);

-- The next nonce per sender, shared by every consumer process (SELECT ... FOR UPDATE).
CREATE TABLE sender_nonces (
    chain_id    BIGINT NOT NULL,
    sender      TEXT NOT NULL,
    next_nonce  BIGINT NOT NULL CHECK (next_nonce >= 0),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, sender)
);

CREATE TABLE token_holdings (
    user_id          TEXT NOT NULL,
    tokenization_id  TEXT NOT NULL REFERENCES tokenizations (id),
    property_id      TEXT NOT NULL,
    balance          NUMERIC(78, 0) NOT NULL CHECK (balance >= 0),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, tokenization_id)
);

-- Double-entry: each credit writes the distributor's debit and the investor's credit with
-- opposite signs, so every event's entries sum to zero.
CREATE TABLE ledger_entries (
    id               BIGSERIAL PRIMARY KEY,
    event_id         UUID NOT NULL REFERENCES distributions (event_id),
    tokenization_id  TEXT NOT NULL,
    account          TEXT NOT NULL,
    amount           NUMERIC(78, 0) NOT NULL CHECK (amount <> 0),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (event_id, account)
);
