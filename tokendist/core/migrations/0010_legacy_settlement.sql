-- Investors taken over from the system tokendist replaced (`tokendist legacy settle`).
-- One row per (investor, tokenization), ever: its insert is what makes settling happen
-- once, whichever audit file asks again. ``chain_paid`` is the opening balance the chain
-- proves (every transfer out of the old distributor wallets); ``legacy_db_holding`` is
-- what the old token_holdings said instead; ``topup`` is paid through the outbox.
CREATE TABLE legacy_adoptions (
    user_id            TEXT NOT NULL,
    tokenization_id    TEXT NOT NULL REFERENCES tokenizations (id),
    audit_id           UUID NOT NULL,
    finding            TEXT NOT NULL
                       CHECK (finding IN ('settled', 'holdings_wrong', 'never_paid',
                                          'underpaid', 'overpaid')),
    wallet_address     TEXT NOT NULL CHECK (wallet_address ~ '^0x[0-9a-fA-F]{40}$'),
    bought             NUMERIC(78, 0) NOT NULL CHECK (bought >= 0),
    chain_paid         NUMERIC(78, 0) NOT NULL CHECK (chain_paid >= 0),
    legacy_db_holding  NUMERIC(78, 0) NOT NULL CHECK (legacy_db_holding >= 0),
    topup              NUMERIC(78, 0) NOT NULL CHECK (topup >= 0),
    topup_event_id     UUID,
    adopted_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, tokenization_id),
    CHECK ((topup > 0) = (topup_event_id IS NOT NULL))
);

-- The adopted opening balances, double-entry like ledger_entries (which are per
-- distribution): the old distributor's side and the investor's, summing to zero.
CREATE TABLE legacy_ledger_entries (
    id               BIGSERIAL PRIMARY KEY,
    user_id          TEXT NOT NULL,
    tokenization_id  TEXT NOT NULL,
    account          TEXT NOT NULL,
    amount           NUMERIC(78, 0) NOT NULL CHECK (amount <> 0),
    reason           TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    FOREIGN KEY (user_id, tokenization_id) REFERENCES legacy_adoptions (user_id, tokenization_id),
    UNIQUE (user_id, tokenization_id, account)
);
