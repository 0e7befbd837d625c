-- The payment provider's side of a payment, as its webhooks report it. One row per
-- (provider, domain, reference) whatever the number of deliveries: the unique constraint,
-- not a prior SELECT, is what makes a re-delivered or concurrent webhook a no-op. A
-- payment that does not match its pending investment (or has none) is kept, flagged for a
-- human, and never distributed. The domain is part of the key so that a test-mode
-- notification sent to a live receiver by mistake (flagged) cannot shadow the live
-- payment under the same reference; only the receiver's own mode is ever accepted.
CREATE TABLE provider_payments (
    id                  BIGSERIAL PRIMARY KEY,
    provider            TEXT NOT NULL CHECK (provider <> ''),
    provider_reference  TEXT NOT NULL CHECK (provider_reference <> ''),
    -- NULL when no investment carries this reference (flagged unknown_reference).
    investment_id       TEXT REFERENCES investments (id),
    domain              TEXT NOT NULL CHECK (domain IN ('live', 'test')),
    amount_minor        BIGINT NOT NULL CHECK (amount_minor >= 0),
    currency            TEXT NOT NULL,
    paid_at             TIMESTAMPTZ,
    status              TEXT NOT NULL CHECK (status IN ('accepted', 'flagged')),
    flag_reason         TEXT CHECK (flag_reason IN (
                            'unknown_reference', 'amount_mismatch', 'currency_mismatch',
                            'domain_mismatch', 'investment_not_pending', 'not_verified')),
    -- The delivered body verbatim (text, not jsonb: jsonb refuses \u0000 escapes, which
    -- are valid JSON, and a payment must never fail to be recorded over one).
    body                TEXT NOT NULL,
    received_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider, domain, provider_reference),
    CHECK ((status = 'flagged') = (flag_reason IS NOT NULL)),
    CHECK (status = 'flagged' OR investment_id IS NOT NULL)
);
CREATE INDEX provider_payments_flagged ON provider_payments (received_at)
    WHERE status = 'flagged';

-- Refunds and disputes reported after a payment. Tokens already distributed are not
-- clawed back automatically: each row raises an alert and waits for an operator.
-- Webhooks carry no event id; a re-delivery repeats the same bytes, so the body's hash
-- is the dedupe key.
CREATE TABLE payment_adjustments (
    id                  BIGSERIAL PRIMARY KEY,
    provider            TEXT NOT NULL CHECK (provider <> ''),
    provider_reference  TEXT NOT NULL,
    -- NULL when the charge it refers to was never recorded here.
    payment_id          BIGINT REFERENCES provider_payments (id),
    kind                TEXT NOT NULL CHECK (kind IN ('refund', 'dispute')),
    event               TEXT NOT NULL,
    amount_minor        BIGINT CHECK (amount_minor >= 0),
    body                TEXT NOT NULL,
    body_sha256         TEXT NOT NULL CHECK (body_sha256 ~ '^[0-9a-f]{64}$'),
    received_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider, body_sha256)
);
CREATE INDEX payment_adjustments_reference ON payment_adjustments (provider, provider_reference);
