-- ERC-3643 (T-REX) security tokens. A tokenization with a row in erc3643_suites is a
-- T-REX token: a transfer reaches only a wallet whose ONCHAINID identity is registered and
-- verified in the suite's identity registry and that its compliance allows. Without a
-- row, a tokenization is the plain ERC-20 (PropertyToken).
CREATE TABLE erc3643_suites (
    tokenization_id           TEXT PRIMARY KEY REFERENCES tokenizations (id),
    identity_registry         TEXT NOT NULL CHECK (identity_registry ~ '^0x[0-9a-fA-F]{40}$'),
    identity_registry_storage TEXT NOT NULL
                              CHECK (identity_registry_storage ~ '^0x[0-9a-fA-F]{40}$'),
    trusted_issuers_registry  TEXT NOT NULL
                              CHECK (trusted_issuers_registry ~ '^0x[0-9a-fA-F]{40}$'),
    claim_topics_registry     TEXT NOT NULL CHECK (claim_topics_registry ~ '^0x[0-9a-fA-F]{40}$'),
    compliance                TEXT NOT NULL CHECK (compliance ~ '^0x[0-9a-fA-F]{40}$'),
    -- Platform-wide, shared by every suite of the chain: the ONCHAINID factory that
    -- creates investors' identities and the claim issuer that signs their KYC claims.
    id_factory                TEXT NOT NULL CHECK (id_factory ~ '^0x[0-9a-fA-F]{40}$'),
    claim_issuer              TEXT NOT NULL CHECK (claim_issuer ~ '^0x[0-9a-fA-F]{40}$'),
    kyc_claim_topic           NUMERIC(78, 0) NOT NULL CHECK (kyc_claim_topic >= 0),
    created_at                TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- An investor's on-chain identity: its intent is recorded before the chain is touched,
-- so a crash between the two leaves 'registering' or 'removing' behind, which the same
-- command (or reconcile) finishes; every chain step checks before it acts.
CREATE TABLE onchain_identities (
    user_id           TEXT PRIMARY KEY REFERENCES users (id),
    wallet_address    TEXT NOT NULL CHECK (wallet_address ~ '^0x[0-9a-fA-F]{40}$'),
    -- ISO 3166-1 numeric, as T-REX's identity registry stores it.
    country           INTEGER NOT NULL CHECK (country BETWEEN 1 AND 999),
    identity_address  TEXT CHECK (identity_address ~ '^0x[0-9a-fA-F]{40}$'),
    state             TEXT NOT NULL
                      CHECK (state IN ('registering', 'registered', 'removing', 'removed')),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
