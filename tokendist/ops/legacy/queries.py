"""Every SQL statement of ``tokendist legacy``, by name.

``L_*`` read the old system's database (the tables the investigation names, plus the
profiles that hold each investor's wallet and KYC status) through a read-only session.
Ids are read as text, so UUID and text keys both work; amounts as text, so no float ever
touches them. An operator whose old schema differs adapts these statements only.

The others write adoptions in tokendist's own database (migration 0010).
"""

from tokendist.consumer import queries as consumer

L_INVESTMENTS = """
SELECT id::text AS id, user_id::text AS user_id, tokenization_id::text AS tokenization_id,
       tokens_requested::text AS tokens, amount_ngn::text AS amount, payment_status AS status
FROM investments WHERE tokenization_id::text = ANY($1::text[])
"""

L_PROFILES = """
SELECT id::text AS user_id, wallet_address AS wallet, kyc_status FROM profiles
"""

# The wallets the old distributor recorded per investor: a transfer to an earlier wallet
# is still that investor's.
L_EVENT_WALLETS = """
SELECT DISTINCT user_id::text AS user_id, wallet_address AS wallet
FROM token_distribution_events WHERE wallet_address IS NOT NULL
"""

L_HOLDINGS = """
SELECT user_id::text AS user_id, tokenization_id::text AS tokenization_id,
       balance::text AS balance
FROM token_holdings WHERE tokenization_id::text = ANY($1::text[])
"""

# --- settle, in tokendist's database -----------------------------------------------------

TOKENIZATIONS = "SELECT id, property_id, chain_id, token_address FROM tokenizations"

USER = consumer.USER

INSERT_USER = """
INSERT INTO users (id, kyc_status, wallet_address) VALUES ($1, $2, $3)
ON CONFLICT (id) DO NOTHING
"""

ADOPTIONS = "SELECT user_id, tokenization_id, audit_id FROM legacy_adoptions"

# The row whose insert decides, per (investor, tokenization), that settling happens once,
# whatever audit file asks for it again.
INSERT_ADOPTION = """
INSERT INTO legacy_adoptions
    (user_id, tokenization_id, audit_id, finding, wallet_address, bought, chain_paid,
     legacy_db_holding, topup, topup_event_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (user_id, tokenization_id) DO NOTHING
RETURNING user_id
"""

CREDIT_HOLDING = consumer.CREDIT_HOLDING

LEDGER_PAIR = """
INSERT INTO legacy_ledger_entries (user_id, tokenization_id, account, amount, reason)
VALUES ($1, $2, 'legacy:' || $2, -$3::numeric, $4), ($1, $2, 'investor:' || $1, $3::numeric, $4)
"""
