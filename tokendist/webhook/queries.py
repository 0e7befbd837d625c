"""Every SQL statement of the webhook package (the receiver and the checkout API)."""

# A user the platform has not registered here yet starts with KYC pending: their payment
# is held (awaiting_kyc) until `tokendist kyc approve` records the wallet.
ENSURE_USER = "INSERT INTO users (id) VALUES ($1) ON CONFLICT (id) DO NOTHING"

TOKENIZATION_EXISTS = "SELECT EXISTS (SELECT 1 FROM tokenizations WHERE id = $1)"

INSERT_PENDING_INVESTMENT = """
INSERT INTO investments (id, user_id, tokenization_id, provider, provider_reference,
                         amount_minor, currency, tokens_requested, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending')
ON CONFLICT DO NOTHING
RETURNING id
"""

INVESTMENT_BY_ID_OR_REFERENCE = """
SELECT id, user_id, tokenization_id, provider, provider_reference, amount_minor, currency,
       tokens_requested, status
FROM investments
WHERE id = $1 OR (provider = $2 AND provider_reference = $3)
"""

# Locks the investment so concurrent deliveries of its webhook take turns; the unique
# reference of provider_payments still decides which one records the payment.
INVESTMENT_FOR_PAYMENT = """
SELECT i.id, i.user_id, i.tokenization_id, i.amount_minor, i.currency, i.tokens_requested,
       i.status, t.property_id, u.wallet_address
FROM investments i
JOIN tokenizations t ON t.id = i.tokenization_id
JOIN users u ON u.id = i.user_id
WHERE i.provider = $1 AND i.provider_reference = $2
FOR UPDATE OF i
"""

INSERT_PAYMENT = """
INSERT INTO provider_payments (provider, provider_reference, investment_id, domain,
                               amount_minor, currency, paid_at, status, flag_reason, body,
                               body_sha256)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (provider, domain, provider_reference) DO NOTHING
RETURNING id
"""

CONFIRM_INVESTMENT = """
UPDATE investments SET status = 'confirmed', updated_at = now()
WHERE id = $1 AND status = 'pending'
"""

# The accepted payment if there is one (another domain's, flagged, may share the reference).
PAYMENT_BY_REFERENCE = """
SELECT p.id, i.status AS investment_status
FROM provider_payments p LEFT JOIN investments i ON i.id = p.investment_id
WHERE p.provider = $1 AND p.provider_reference = $2
ORDER BY p.status = 'accepted' DESC, p.id
LIMIT 1
"""

INSERT_ADJUSTMENT = """
INSERT INTO payment_adjustments (provider, provider_reference, payment_id, kind, event,
                                 amount_minor, body, body_sha256)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (provider, body_sha256) DO NOTHING
RETURNING id
"""
