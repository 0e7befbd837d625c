"""Every SQL statement of the consumer, by name (the operator tools' are in
``tokendist.ops.queries``)."""

DISTRIBUTION_COLUMNS = """
    event_id, investment_id, payment_id, user_id, tokenization_id, tokens, state,
    failure_reason, recipient, sender, nonce, tx_hash, block_number
"""

TOKENIZATION = """
SELECT id, property_id, chain_id, token_address, decimals, distributor_address
FROM tokenizations WHERE id = $1
"""

CLAIM = """
INSERT INTO distributions
    (event_id, investment_id, payment_id, user_id, tokenization_id, tokens, payload, state,
     kafka_partition, kafka_offset)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, 'received', $8, $9)
ON CONFLICT DO NOTHING
"""

BY_EVENT = f"SELECT {DISTRIBUTION_COLUMNS} FROM distributions WHERE event_id = $1"
BY_EVENT_FOR_UPDATE = BY_EVENT + " FOR UPDATE"
BY_INVESTMENT = f"SELECT {DISTRIBUTION_COLUMNS} FROM distributions WHERE investment_id = $1"

USER = "SELECT id, kyc_status, wallet_address FROM users WHERE id = $1"

# Serialises "is this user payable? else park" with "approve and release parked events":
# without it an approval landing between the check and the park would release nothing
# and leave the event parked forever. An advisory lock, because the user row may not
# exist yet.
LOCK_USER_KYC = "SELECT pg_advisory_xact_lock(hashtext('tokendist-kyc:' || $1))"

TRANSITION = f"""
UPDATE distributions
SET state = $3, failure_reason = $4, retryable = $5, updated_at = now()
WHERE event_id = $1 AND state = $2
RETURNING {DISTRIBUTION_COLUMNS}
"""

# Synchronise with the chain: never below what the chain has seen (pending).
SYNC_NONCE = """
INSERT INTO sender_nonces (chain_id, sender, next_nonce) VALUES ($1, $2, $3)
ON CONFLICT (chain_id, sender)
DO UPDATE SET next_nonce = GREATEST(sender_nonces.next_nonce, EXCLUDED.next_nonce),
              updated_at = now()
RETURNING next_nonce
"""

LOCK_NONCE = "SELECT next_nonce FROM sender_nonces WHERE chain_id = $1 AND sender = $2 FOR UPDATE"

ADVANCE_NONCE = """
UPDATE sender_nonces SET next_nonce = $3 + 1, updated_at = now()
WHERE chain_id = $1 AND sender = $2
"""

NEXT_NONCE = "SELECT next_nonce FROM sender_nonces WHERE chain_id = $1 AND sender = $2"

INFLIGHT = """
SELECT count(*) FROM distributions WHERE sender = $1 AND state IN ('signed', 'submitted')
"""

# ON CONFLICT: byte-identical replacements signed by two members at once are one
# transaction; the second insert is a no-op.
INSERT_TX = """
INSERT INTO chain_transactions
    (tx_hash, event_id, chain_id, sender, nonce, raw_tx, gas_limit, max_fee_per_gas,
     priority_fee)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (tx_hash) DO NOTHING
"""

MARK_SIGNED = f"""
UPDATE distributions
SET state = 'signed', recipient = $2, sender = $3, nonce = $4, tx_hash = $5,
    updated_at = now()
WHERE event_id = $1
RETURNING {DISTRIBUTION_COLUMNS}
"""

# The transactions of the event's current nonce (a re-driven event's reverted
# transaction of an earlier nonce is history, not a candidate).
TRANSACTIONS_OF = """
SELECT t.tx_hash, t.raw_tx, t.nonce, t.max_fee_per_gas, t.priority_fee, t.created_at,
       t.broadcast_at
FROM chain_transactions t JOIN distributions d ON d.event_id = t.event_id
WHERE t.event_id = $1 AND t.nonce = d.nonce AND t.sender = d.sender
ORDER BY t.created_at, t.max_fee_per_gas
"""

NEWEST_TX = """
SELECT t.tx_hash FROM chain_transactions t JOIN distributions d ON d.event_id = t.event_id
WHERE t.event_id = $1 AND t.nonce = d.nonce AND t.sender = d.sender
ORDER BY t.max_fee_per_gas DESC, t.created_at DESC LIMIT 1
"""

MARK_BROADCAST = "UPDATE chain_transactions SET broadcast_at = now() WHERE tx_hash = $1"

MARK_CONFIRMED = f"""
UPDATE distributions
SET state = 'confirmed', tx_hash = $2, block_number = $3, updated_at = now()
WHERE event_id = $1 AND state IN ('signed', 'submitted')
RETURNING {DISTRIBUTION_COLUMNS}
"""

CREDIT_HOLDING = """
INSERT INTO token_holdings (user_id, tokenization_id, property_id, balance)
VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id, tokenization_id)
DO UPDATE SET balance = token_holdings.balance + EXCLUDED.balance, updated_at = now()
"""

LEDGER_PAIR = """
INSERT INTO ledger_entries (event_id, tokenization_id, account, amount)
VALUES ($1, $2, 'distributor:' || $2, -$3::numeric), ($1, $2, 'investor:' || $4, $3::numeric)
"""

MARK_INVESTMENT_DISTRIBUTED = """
UPDATE investments SET status = 'tokens_distributed', updated_at = now()
WHERE id = $1 AND status <> 'tokens_distributed'
"""

MARK_CREDITED = f"""
UPDATE distributions
SET state = 'credited', credited_at = now(), updated_at = now()
WHERE event_id = $1 AND state = 'confirmed'
RETURNING {DISTRIBUTION_COLUMNS}
"""

# The resubmitter's view: the newest transaction of every unconfirmed distribution.
PENDING_TRANSACTIONS = """
SELECT DISTINCT ON (t.event_id)
       t.event_id, t.tx_hash, t.raw_tx, t.nonce, t.gas_limit, t.max_fee_per_gas, t.priority_fee,
       t.created_at, t.broadcast_at, d.payment_id, d.recipient, d.tokens,
       tk.distributor_address
FROM chain_transactions t
JOIN distributions d ON d.event_id = t.event_id
JOIN tokenizations tk ON tk.id = d.tokenization_id
WHERE d.state IN ('signed', 'submitted') AND t.chain_id = $1 AND t.sender = $2
  AND t.nonce = d.nonce
ORDER BY t.event_id, t.max_fee_per_gas DESC
"""

# The confirmed payment an event claims to be: written by outbox.enqueue in the payment's
# own transaction. Kafka carries events; this row is what makes one payable.
CONFIRMATION = """
SELECT investment_id, user_id, tokenization_id, tokens, provider, provider_reference,
       payload::text AS payload
FROM payment_confirmations WHERE event_id = $1
"""

# Parking the same position again (a replay, a crash before the commit) counts, not adds.
RECORD_DEAD_LETTER = """
INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, reason, detail, value_bytes)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (topic, kafka_partition, kafka_offset)
DO UPDATE SET times_parked = dead_letters.times_parked + 1, last_parked_at = now(),
              reason = EXCLUDED.reason, detail = EXCLUDED.detail
"""

KEEP_DEAD_LETTER = """
UPDATE dead_letters
SET stored = true, stored_key = $4, stored_value = $5, stored_headers = $6
WHERE topic = $1 AND kafka_partition = $2 AND kafka_offset = $3
"""

UPSERT_RETRYING = """
INSERT INTO retrying_partitions
    (consumer_group, topic, kafka_partition, kafka_offset, attempts, error, since)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (consumer_group, topic, kafka_partition)
DO UPDATE SET kafka_offset = EXCLUDED.kafka_offset, attempts = EXCLUDED.attempts,
              error = EXCLUDED.error, since = EXCLUDED.since, updated_at = now()
"""

CLEAR_RETRYING = """
DELETE FROM retrying_partitions
WHERE consumer_group = $1 AND topic = $2 AND kafka_partition = ANY($3::int[])
"""
