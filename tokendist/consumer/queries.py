"""Every SQL statement of the consumer, by name (the operator tools' are in
``tokendist.ops.queries``)."""

DISTRIBUTION_COLUMNS = """
    event_id, investment_id, payment_id, user_id, tokenization_id, tokens, state,
    failure_reason, recipient, sender, nonce, tx_hash, block_number, batch_id, payment_index
"""

TOKENIZATION = """
SELECT id, property_id, chain_id, token_address, decimals, distributor_address
FROM tokenizations WHERE id = $1
"""

# The claim and what it found, in one round trip. The outer SELECTs read the statement's
# snapshot: they do not see this INSERT's row (the CTE returns it) nor a row committed by
# a concurrent claim this INSERT waited for; the caller looks again when it finds no row.
CLAIM_AND_FIND = f"""
WITH inserted AS (
    INSERT INTO distributions
        (event_id, investment_id, payment_id, user_id, tokenization_id, tokens, payload,
         state, kafka_partition, kafka_offset)
    VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, 'received', $8, $9)
    ON CONFLICT DO NOTHING
    RETURNING {DISTRIBUTION_COLUMNS}
)
SELECT 'inserted' AS found, {DISTRIBUTION_COLUMNS} FROM inserted
UNION ALL
SELECT 'event', {DISTRIBUTION_COLUMNS} FROM distributions WHERE event_id = $1
UNION ALL
SELECT 'investment', {DISTRIBUTION_COLUMNS} FROM distributions WHERE investment_id = $2
"""

BY_EVENT = f"SELECT {DISTRIBUTION_COLUMNS} FROM distributions WHERE event_id = $1"
BY_INVESTMENT = f"SELECT {DISTRIBUTION_COLUMNS} FROM distributions WHERE investment_id = $1"

USER = "SELECT id, kyc_status, wallet_address FROM users WHERE id = $1"

# Serialises "is this user payable? else park" with "approve and release parked events":
# without it an approval landing between the check and the park would release nothing
# and leave the event parked forever. An advisory lock, because the user row may not
# exist yet.
LOCK_USER_KYC = "SELECT pg_advisory_xact_lock(hashtext('tokendist-kyc:' || $1))"

# A row parked here waits for its investor's KYC in this database (see PARK for the rest).
TRANSITION = f"""
UPDATE distributions
SET state = $3, failure_reason = $4, retryable = $5, updated_at = now(),
    parked_reason = CASE WHEN $3 = 'awaiting_kyc' THEN 'awaiting_kyc' END, parked_detail = NULL
WHERE event_id = $1 AND state = $2
RETURNING {DISTRIBUTION_COLUMNS}
"""

# The pre-flight's refusal (ERC-3643): parked, or its reason updated if parked already.
# ``updated_at`` keeps the instant it was first parked (the oldest-parked gauge).
PARK = f"""
UPDATE distributions
SET state = 'awaiting_kyc', parked_reason = $2, parked_detail = $3,
    updated_at = CASE WHEN state = 'received' THEN now() ELSE updated_at END
WHERE event_id = $1 AND state IN ('received', 'awaiting_kyc')
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


MARK_BROADCAST = "UPDATE chain_transactions SET broadcast_at = now() WHERE tx_hash = $1"


CREDIT_HOLDING = """
INSERT INTO token_holdings (user_id, tokenization_id, property_id, balance)
VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id, tokenization_id)
DO UPDATE SET balance = token_holdings.balance + EXCLUDED.balance, updated_at = now()
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


# --- the key pool -------------------------------------------------------------------

# A key in the settings and not yet known is active; a known key keeps the state an
# operator gave it (``tokendist keys``).
REGISTER_KEY = """
INSERT INTO operator_keys (chain_id, address) VALUES ($1, $2)
ON CONFLICT (chain_id, address) DO NOTHING
"""

KEY_STATES = "SELECT address, state FROM operator_keys WHERE chain_id = $1"

# Signing takes the key's row FOR SHARE; ``tokendist keys remove`` updates it to
# 'draining' before it counts in-flight batches: no batch is signed past a drain.
KEY_STATE_FOR_SHARE = """
SELECT state FROM operator_keys WHERE chain_id = $1 AND address = $2 FOR SHARE
"""

# Unconfirmed batches per key: what its in-flight cap counts.
INFLIGHT_BATCHES = """
SELECT sender, count(*) AS n FROM batches
WHERE chain_id = $1 AND state IN ('signed', 'submitted')
GROUP BY sender
"""

# --- batches ------------------------------------------------------------------------

BATCH_COLUMNS = """
    id, chain_id, sender, nonce, distributor_address, first_index, size, calldata,
    gas_limit, state, tx_hash, block_number, block_hash, failure_reason
"""

# The rows a batch may take, locked: only those still before signing. SKIP LOCKED: a row
# another member is signing right now is theirs.
LOCK_SIGNABLE = f"""
SELECT {DISTRIBUTION_COLUMNS} FROM distributions
WHERE event_id = ANY($1::uuid[]) AND state IN ('received', 'awaiting_kyc')
FOR UPDATE SKIP LOCKED
"""

# Payouts the index scan found for any of these payments.
FOUND_ON_CHAIN = """
SELECT payment_id, payment_index, tx_hash, block_number FROM onchain_payments
WHERE distributor_address = $1 AND payment_id = ANY($2::text[])
"""

CONFIRM_FROM_CHAIN = f"""
UPDATE distributions
SET state = 'confirmed', recipient = $2, tx_hash = $3, block_number = $4,
    payment_index = $5, distributor_address = $6, updated_at = now(),
    parked_reason = NULL, parked_detail = NULL
WHERE event_id = $1 AND state IN ('received', 'awaiting_kyc')
RETURNING {DISTRIBUTION_COLUMNS}
"""

# Indices are taken in contiguous ranges: a batch's payments are first_index + position.
TAKE_INDICES = """
UPDATE distributor_indices SET next_index = next_index + $2, updated_at = now()
WHERE distributor_address = $1
RETURNING next_index - $2
"""

INSERT_BATCH = """
INSERT INTO batches
    (chain_id, sender, nonce, distributor_address, first_index, size, calldata, gas_limit,
     state)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'signed')
RETURNING id
"""

INSERT_BATCH_TX = """
INSERT INTO chain_transactions
    (tx_hash, batch_id, chain_id, sender, nonce, raw_tx, gas_limit, max_fee_per_gas,
     priority_fee)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (tx_hash) DO NOTHING
"""

# $2..: parallel arrays, one element per payment of the batch.
MARK_BATCHED = """
UPDATE distributions d
SET state = 'signed', batch_id = $1, recipient = p.recipient, payment_index = p.payment_index,
    distributor_address = $3, sender = $4, nonce = $5, tx_hash = $6, updated_at = now(),
    parked_reason = NULL, parked_detail = NULL
FROM unnest($2::uuid[], $7::text[], $8::bigint[]) AS p(event_id, recipient, payment_index)
WHERE d.event_id = p.event_id
"""

BATCH = f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1"
BATCH_FOR_UPDATE = BATCH + " FOR UPDATE"

BATCH_MEMBERS = f"""
SELECT {DISTRIBUTION_COLUMNS} FROM distributions WHERE batch_id = $1 ORDER BY payment_index
"""

BATCH_ATTEMPTS = """
SELECT tx_hash, raw_tx, nonce, max_fee_per_gas, priority_fee, created_at, broadcast_at
FROM chain_transactions WHERE batch_id = $1
ORDER BY created_at, max_fee_per_gas
"""

NEWEST_BATCH_TX = """
SELECT tx_hash FROM chain_transactions WHERE batch_id = $1
ORDER BY max_fee_per_gas DESC, created_at DESC LIMIT 1
"""

SET_BATCH_STATE = f"""
UPDATE batches
SET state = $3, tx_hash = coalesce($4, tx_hash), block_number = coalesce($5, block_number),
    failure_reason = coalesce($6, failure_reason), block_hash = coalesce($7, block_hash),
    updated_at = now()
WHERE id = $1 AND state = ANY($2::text[])
RETURNING {BATCH_COLUMNS}
"""

# A reorganisation took the mined transaction out of the canonical chain: back to
# submitted, its block forgotten, its tx_hash kept (the attempt to broadcast again).
# Guarded by the block it was seen in: a member that saw it mined again meanwhile wins.
BATCH_REORGED = f"""
UPDATE batches SET state = 'submitted', block_number = NULL, block_hash = NULL,
    updated_at = now()
WHERE id = $1 AND state = 'mined' AND block_hash = $2
RETURNING {BATCH_COLUMNS}
"""

MEMBERS_SUBMITTED = """
UPDATE distributions SET state = 'submitted', updated_at = now()
WHERE batch_id = $1 AND state = 'signed'
"""

# $2: the event ids paid by this batch's transaction; $4..: those found paid by an
# earlier one (their own tx and block).
MEMBERS_CONFIRMED = """
UPDATE distributions SET state = 'confirmed', tx_hash = $3, block_number = $4,
    updated_at = now()
WHERE batch_id = $1 AND event_id = ANY($2::uuid[]) AND state IN ('signed', 'submitted')
"""

# reconcile: a payment found paid (and final) on-chain while its row still waits.
CONFIRM_PAID = f"""
UPDATE distributions SET state = 'confirmed', tx_hash = $2, block_number = $3,
    updated_at = now()
WHERE event_id = $1 AND state IN ('signed', 'submitted')
RETURNING {DISTRIBUTION_COLUMNS}
"""

MEMBER_CONFIRMED_EARLIER = """
UPDATE distributions SET state = 'confirmed', tx_hash = $3, block_number = $4,
    updated_at = now()
WHERE batch_id = $1 AND event_id = $2 AND state IN ('signed', 'submitted')
"""

MEMBERS_FAILED = """
UPDATE distributions SET state = 'failed', failure_reason = $3, retryable = $4,
    updated_at = now()
WHERE batch_id = $1 AND event_id = ANY($2::uuid[]) AND state IN ('signed', 'submitted')
"""

# The batch's bytes can never be mined (its nonce went to another transaction): its
# payments go back to be batched again, under fresh indices.
MEMBERS_RELEASED = """
UPDATE distributions
SET state = 'received', batch_id = NULL, payment_index = NULL, sender = NULL, nonce = NULL,
    tx_hash = NULL, updated_at = now()
WHERE batch_id = $1 AND state IN ('signed', 'submitted')
"""

# Holdings +=, the ledger pair, the investment distributed and the state credited for
# every confirmed one of these payments, in one statement; a second run finds none
# confirmed and changes nothing. Summed per holder: one INSERT may not touch a row twice.
CREDIT = """
WITH credited AS (
    UPDATE distributions
    SET state = 'credited', credited_at = now(), updated_at = now()
    WHERE event_id = ANY($1::uuid[]) AND state = 'confirmed'
    RETURNING event_id, investment_id, user_id, tokenization_id, tokens
), holdings AS (
    INSERT INTO token_holdings (user_id, tokenization_id, property_id, balance)
    SELECT c.user_id, c.tokenization_id, t.property_id, sum(c.tokens)
    FROM credited c JOIN tokenizations t ON t.id = c.tokenization_id
    GROUP BY c.user_id, c.tokenization_id, t.property_id
    ON CONFLICT (user_id, tokenization_id)
    DO UPDATE SET balance = token_holdings.balance + EXCLUDED.balance, updated_at = now()
), ledger AS (
    INSERT INTO ledger_entries (event_id, tokenization_id, account, amount)
    SELECT c.event_id, c.tokenization_id, e.account, e.amount
    FROM credited c
    CROSS JOIN LATERAL (VALUES ('distributor:' || c.tokenization_id, -c.tokens),
                               ('investor:' || c.user_id, c.tokens)) AS e(account, amount)
), investments_done AS (
    UPDATE investments SET status = 'tokens_distributed', updated_at = now()
    WHERE id IN (SELECT investment_id FROM credited) AND status <> 'tokens_distributed'
)
SELECT count(*) FROM credited
"""

# The resubmitter's view: the newest attempt of every unconfirmed batch of a key.
PENDING_BATCHES = """
SELECT DISTINCT ON (b.id)
       b.id AS batch_id, b.distributor_address, b.calldata, b.gas_limit, t.tx_hash,
       t.raw_tx, t.nonce, t.max_fee_per_gas, t.priority_fee, t.created_at, t.broadcast_at
FROM batches b JOIN chain_transactions t ON t.batch_id = b.id
WHERE b.chain_id = $1 AND b.sender = $2 AND b.state IN ('signed', 'submitted')
ORDER BY b.id, t.max_fee_per_gas DESC, t.created_at DESC
"""


# --- the index floor ----------------------------------------------------------------

ENSURE_INDICES = """
INSERT INTO distributor_indices (distributor_address) VALUES ($1)
ON CONFLICT (distributor_address) DO NOTHING
"""

INDICES = """
SELECT next_index, scanned_block FROM distributor_indices WHERE distributor_address = $1
"""

RAISE_INDICES = """
UPDATE distributor_indices
SET next_index = GREATEST(next_index, $2), scanned_block = GREATEST(scanned_block, $3),
    updated_at = now()
WHERE distributor_address = $1
"""

KNOWN_TRANSACTIONS = "SELECT tx_hash FROM chain_transactions WHERE tx_hash = ANY($1::text[])"

RECORD_ONCHAIN = """
INSERT INTO onchain_payments (distributor_address, payment_id, payment_index, tx_hash, block_number)
SELECT $1, p.payment_id, p.payment_index, p.tx_hash, p.block_number
FROM unnest($2::text[], $3::bigint[], $4::text[], $5::bigint[])
     AS p(payment_id, payment_index, tx_hash, block_number)
ON CONFLICT (distributor_address, payment_id) DO NOTHING
"""

# A tokenization and its suite are recorded in one transaction: once the consumer sees a
# tokenization, whether it is ERC-3643 is settled.
SUITE_OF_DISTRIBUTOR = """
SELECT t.token_address FROM tokenizations t JOIN erc3643_suites s ON s.tokenization_id = t.id
WHERE t.distributor_address = $1
"""

DISTRIBUTORS_ON_CHAIN = "SELECT DISTINCT distributor_address FROM tokenizations WHERE chain_id = $1"

# --- periodic gauges (consumer/gauges.py) -------------------------------------------
# Read-only, for metrics, every INTERVAL_S (30 s) per member. The parked rows are found
# through ``distributions_open``; the last hour's rows by ``created_at`` take a sequential
# scan of ``distributions`` until a migration adds an index on it.

# A payment is parked when its row moves to awaiting_kyc (``updated_at``); a re-driven
# event that is still not payable leaves the row untouched.
MINED_NOT_FINAL = """
SELECT count(*) AS mined,
       coalesce(extract(epoch FROM now() - min(updated_at)), 0)::float8 AS oldest_s
FROM batches WHERE state = 'mined'
"""

PARKED_PAYMENTS = """
SELECT count(*) AS parked,
       coalesce(extract(epoch FROM now() - min(updated_at)), 0)::float8 AS oldest_s
FROM distributions WHERE state = 'awaiting_kyc'
"""

PARKED_BY_REASON = """
SELECT parked_reason AS reason, count(*) AS parked FROM distributions
WHERE state = 'awaiting_kyc' GROUP BY parked_reason
"""

# Demand, not credits: once a Distributor runs dry its payments fail and credits stop,
# while payments keep arriving.
TOKENS_RECEIVED_LAST_HOUR = """
SELECT t.id AS tokenization_id, t.token_address, t.distributor_address,
       coalesce(sum(d.tokens), 0) AS received
FROM tokenizations t
LEFT JOIN distributions d
       ON d.tokenization_id = t.id AND d.created_at > now() - interval '1 hour'
WHERE t.chain_id = $1
GROUP BY t.id
ORDER BY t.id
"""

# --- the re-check of parked payments (consumer/release.py) ------------------------------

# Parked payments of ERC-3643 tokens whose investor is payable in this database: only the
# chain can still hold them back. In the order they arrived: the pre-flight sums a
# wallet's payments in order, as the batches would pay them.
PARKED_ON_CHAIN = """
SELECT d.event_id, d.tokens, d.parked_reason, d.parked_detail, u.wallet_address,
       t.token_address, t.distributor_address
FROM distributions d
JOIN users u ON u.id = d.user_id
JOIN tokenizations t ON t.id = d.tokenization_id
JOIN erc3643_suites s ON s.tokenization_id = t.id
WHERE d.state = 'awaiting_kyc' AND t.chain_id = $1
  AND u.kyc_status = 'approved' AND u.wallet_address IS NOT NULL
ORDER BY d.created_at, d.event_id
"""

# Released: back to received and the event published again, in one transaction (as an
# approval re-drives its parked events), so the release is never lost nor half-done.
RELEASE_PARKED = """
UPDATE distributions
SET state = 'received', parked_reason = NULL, parked_detail = NULL, updated_at = now()
WHERE event_id = ANY($1::uuid[]) AND state = 'awaiting_kyc'
RETURNING payload::text AS payload
"""

REPARK = """
UPDATE distributions SET parked_reason = $2, parked_detail = $3
WHERE event_id = $1 AND state = 'awaiting_kyc'
"""
