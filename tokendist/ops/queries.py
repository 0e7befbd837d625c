"""Every SQL statement of the operator tools, by name (the consumer's own are in
``consumer.queries``: the tools read the same tables, never through its statements)."""

from tokendist.consumer import queries as consumer

# Approving a user takes the consumer's own KYC lock: the two must be one lock.
LOCK_USER_KYC = consumer.LOCK_USER_KYC

# --- chain deploy, chain rotate-operator ------------------------------------------------

DISTRIBUTOR_OF = "SELECT distributor_address FROM tokenizations WHERE id = $1"

RECORD_TOKENIZATION = """
INSERT INTO tokenizations (id, property_id, chain_id, token_address, decimals, distributor_address)
VALUES ($1, $2, $3, $4, $5, $6)
"""

SUITE_COLUMNS = (
    "identity_registry",
    "identity_registry_storage",
    "trusted_issuers_registry",
    "claim_topics_registry",
    "compliance",
    "id_factory",
    "claim_issuer",
    "kyc_claim_topic",
)

RECORD_SUITE = """
INSERT INTO erc3643_suites (tokenization_id, identity_registry, identity_registry_storage,
    trusted_issuers_registry, claim_topics_registry, compliance, id_factory, claim_issuer,
    kyc_claim_topic)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""

# The oldest suite's: every later one of the chain shares its factory and issuer.
ERC3643_PLATFORM = """
SELECT s.id_factory, s.claim_issuer FROM erc3643_suites s
JOIN tokenizations t ON t.id = s.tokenization_id
WHERE t.chain_id = $1 ORDER BY s.created_at, s.tokenization_id LIMIT 1
"""

ERC3643_SUITES = """
SELECT s.*, t.token_address, t.distributor_address FROM erc3643_suites s
JOIN tokenizations t ON t.id = s.tokenization_id ORDER BY s.tokenization_id
"""

# --- keys list, keys add, keys remove ----------------------------------------------

K_CHAIN_DISTRIBUTORS = """
SELECT id, distributor_address FROM tokenizations WHERE chain_id = $1 ORDER BY id
"""

# In flight: what the pool's cap counts (``consumer.queries.INFLIGHT_BATCHES``); the next
# nonce is NULL until a member has synchronised the key with the chain.
K_KEYS = """
SELECT k.address, k.state, n.next_nonce,
       (SELECT count(*) FROM batches b
        WHERE b.chain_id = k.chain_id AND b.sender = k.address
          AND b.state IN ('signed', 'submitted')) AS inflight
FROM operator_keys k
LEFT JOIN sender_nonces n ON n.chain_id = k.chain_id AND n.sender = k.address
WHERE k.chain_id = $1
ORDER BY k.added_at, k.address
"""

K_KEY_STATE = "SELECT state FROM operator_keys WHERE chain_id = $1 AND address = $2"

K_ACTIVATE = """
INSERT INTO operator_keys (chain_id, address, state) VALUES ($1, $2, 'active')
ON CONFLICT (chain_id, address) DO UPDATE SET state = 'active', updated_at = now()
WHERE operator_keys.state <> 'active'
"""

# A removed key stays removed: running ``keys remove`` again only checks its roles.
K_DRAIN = """
INSERT INTO operator_keys (chain_id, address, state) VALUES ($1, $2, 'draining')
ON CONFLICT (chain_id, address) DO UPDATE SET state = 'draining', updated_at = now()
WHERE operator_keys.state = 'active'
"""

# A drain waits for mined batches too: one a reorganisation takes out is sent again, and
# must still find the key's role on the Distributor.
K_INFLIGHT = """
SELECT count(*) FROM batches
WHERE chain_id = $1 AND sender = $2 AND state IN ('signed', 'submitted', 'mined')
"""

# Only a draining key: an operator who added it back meanwhile has the last word.
K_MARK_REMOVED = """
UPDATE operator_keys SET state = 'removed', updated_at = now()
WHERE chain_id = $1 AND address = $2 AND state = 'draining'
"""

# --- verify: read-only invariant queries -------------------------------------------------

V_COUNTS = "SELECT state, count(*) AS n FROM distributions GROUP BY state"

V_UNDISTRIBUTED = """
SELECT c.event_id, c.investment_id, c.confirmed_at FROM payment_confirmations c
LEFT JOIN distributions d ON d.investment_id = c.investment_id
WHERE d.event_id IS NULL AND c.confirmed_at < now() - make_interval(secs => $1)
"""

V_DISTRIBUTION_WITHOUT_CONFIRMATION = """
SELECT d.event_id, d.investment_id FROM distributions d
LEFT JOIN payment_confirmations c ON c.investment_id = d.investment_id
WHERE c.event_id IS NULL
"""

V_ONCHAIN_DISTRIBUTIONS = """
SELECT d.event_id, d.payment_id, d.recipient, d.tokens, d.state, d.tokenization_id
FROM distributions d WHERE d.state IN ('signed', 'submitted', 'confirmed', 'credited')
"""

# Holdings adopted from the old system (migration 0010) count as credited, with their
# own ledger pairs: ``tokendist legacy settle``.
V_HOLDINGS_MISMATCH = """
WITH credited AS (
    SELECT user_id, tokenization_id, sum(total) AS total FROM (
        SELECT user_id, tokenization_id, tokens AS total FROM distributions
        WHERE state = 'credited'
        UNION ALL SELECT user_id, tokenization_id, chain_paid FROM legacy_adoptions
    ) c GROUP BY user_id, tokenization_id
), ledger AS (
    SELECT substr(account, 10) AS user_id, tokenization_id, sum(amount) AS total FROM (
        SELECT account, tokenization_id, amount FROM ledger_entries
        UNION ALL SELECT account, tokenization_id, amount FROM legacy_ledger_entries
    ) e WHERE account LIKE 'investor:%' GROUP BY 1, 2
)
SELECT coalesce(h.user_id, c.user_id, l.user_id) AS user_id,
       coalesce(h.tokenization_id, c.tokenization_id, l.tokenization_id) AS tokenization_id,
       coalesce(h.balance, 0) AS holding, coalesce(c.total, 0) AS credited,
       coalesce(l.total, 0) AS ledger
FROM token_holdings h
FULL JOIN credited c USING (user_id, tokenization_id)
FULL JOIN ledger l USING (user_id, tokenization_id)
WHERE coalesce(h.balance, 0) <> coalesce(c.total, 0) OR coalesce(c.total, 0) <> coalesce(l.total, 0)
"""

V_LEDGER_UNBALANCED = """
SELECT event_id::text, sum(amount) AS total FROM ledger_entries GROUP BY event_id
HAVING sum(amount) <> 0
UNION ALL
SELECT 'legacy ' || user_id || ' / ' || tokenization_id, sum(amount) FROM legacy_ledger_entries
GROUP BY user_id, tokenization_id HAVING sum(amount) <> 0
"""

V_LEDGER_TOTAL = """
SELECT coalesce(sum(amount), 0) FROM (
    SELECT amount FROM ledger_entries UNION ALL SELECT amount FROM legacy_ledger_entries
) e
"""

V_RECIPIENT_TOTALS = """
SELECT d.tokenization_id, lower(d.recipient) AS recipient,
       coalesce(sum(d.tokens) FILTER (WHERE d.state IN ('confirmed', 'credited')), 0) AS settled,
       coalesce(sum(d.tokens) FILTER (WHERE d.state IN ('signed', 'submitted')), 0) AS inflight
FROM (
    SELECT tokenization_id, recipient, tokens, state FROM distributions
    WHERE state IN ('signed', 'submitted', 'confirmed', 'credited')
    UNION ALL
    SELECT tokenization_id, wallet_address, chain_paid, 'confirmed' FROM legacy_adoptions
    WHERE chain_paid > 0
) d GROUP BY 1, 2
"""

V_STALE_OUTBOX = """
SELECT count(*) AS n, min(created_at) AS oldest FROM outbox
WHERE published_at IS NULL AND created_at < now() - make_interval(secs => $1)
"""

V_STUCK_DISTRIBUTIONS = """
SELECT event_id, state, updated_at FROM distributions
WHERE state IN ('received', 'signed', 'submitted', 'confirmed')
  AND updated_at < now() - make_interval(secs => $1)
"""

V_TOKENIZATIONS = "SELECT id, token_address, distributor_address FROM tokenizations"

# --- status ------------------------------------------------------------------------------

S_OUTBOX = """
SELECT count(*) FILTER (WHERE published_at IS NULL) AS backlog,
       count(*) FILTER (WHERE published_at IS NOT NULL) AS published,
       extract(epoch FROM now() - min(created_at) FILTER (WHERE published_at IS NULL))::float8
           AS oldest_s
FROM outbox
"""

S_PARKED_USERS = "SELECT count(DISTINCT user_id) FROM distributions WHERE state = 'awaiting_kyc'"

# What the consumer's gauge reports: batches in a block, not final by the finality rule.
S_MINED_NOT_FINAL = consumer.MINED_NOT_FINAL

# Parked payments by reason, with the oldest one's detail (a compliance refusal's names
# the module); the KYC of this database has none.
S_PARKED_REASONS = """
SELECT parked_reason AS reason, count(*) AS payments,
       (array_agg(parked_detail ORDER BY updated_at))[1] AS oldest_detail
FROM distributions WHERE state = 'awaiting_kyc'
GROUP BY parked_reason ORDER BY parked_reason
"""

S_LAST_FAILURES = """
SELECT event_id, failure_reason, updated_at FROM distributions
WHERE state = 'failed' ORDER BY updated_at DESC LIMIT 5
"""

S_RETRYING = """
SELECT kafka_partition, kafka_offset, attempts, error,
       extract(epoch FROM now() - since)::float8 AS for_s,
       extract(epoch FROM now() - updated_at)::float8 AS reported_s
FROM retrying_partitions WHERE consumer_group = $1 AND topic = $2
ORDER BY kafka_partition
"""

S_DEAD_LETTERS = """
SELECT count(*) AS messages, coalesce(sum(times_parked), 0)::bigint AS parkings,
       count(*) FILTER (WHERE stored) AS stored
FROM dead_letters WHERE topic = $1
"""

S_LAST_DEAD_LETTERS = """
SELECT kafka_partition, kafka_offset, reason, last_parked_at FROM dead_letters
WHERE topic = $1 ORDER BY last_parked_at DESC LIMIT 3
"""

# --- reconcile ---------------------------------------------------------------------------

# Read as the consumer reads a distribution (``Distribution.from_row``).
R_STALE_ON_CHAIN = f"""
SELECT {consumer.DISTRIBUTION_COLUMNS} FROM distributions
WHERE state IN ('signed', 'submitted', 'confirmed')
  AND updated_at < now() - make_interval(secs => $1)
ORDER BY nonce
"""  # noqa: S608 -- interpolates only the consumer's constant column list, never input

R_UNDISTRIBUTED = """
SELECT c.event_id, c.investment_id, c.payload::text AS payload FROM payment_confirmations c
LEFT JOIN distributions d ON d.investment_id = c.investment_id
WHERE d.event_id IS NULL AND c.confirmed_at < now() - make_interval(secs => $1)
"""

# --- redrive -----------------------------------------------------------------------------

# Only failures marked retryable: nothing can have been paid (see migration 0003).
REDRIVABLE = """
SELECT event_id, payload::text AS payload FROM distributions
WHERE state = 'failed' AND retryable AND ($1::uuid[] IS NULL OR event_id = ANY($1))
FOR UPDATE
"""

RESET_TO_RECEIVED = """
UPDATE distributions
SET state = 'received', failure_reason = NULL, retryable = false, recipient = NULL,
    sender = NULL, nonce = NULL, tx_hash = NULL, block_number = NULL, batch_id = NULL,
    payment_index = NULL, updated_at = now()
WHERE event_id = ANY($1::uuid[])
"""

# --- kyc approve -------------------------------------------------------------------------

# Addresses are recorded EIP-55 cased; compare without case.
K_TOKENIZATION_OF_ADDRESS = """
SELECT id FROM tokenizations
WHERE lower(token_address) = lower($1) OR lower(distributor_address) = lower($1)
LIMIT 1
"""

APPROVE_USER = """
INSERT INTO users (id, kyc_status, wallet_address) VALUES ($1, 'approved', $2)
ON CONFLICT (id) DO UPDATE
SET kyc_status = 'approved', wallet_address = COALESCE($2, users.wallet_address), updated_at = now()
RETURNING wallet_address
"""

PARKED_OF_USER = """
SELECT event_id, payload::text AS payload FROM distributions
WHERE user_id = $1 AND state = 'awaiting_kyc'
"""

# --- kyc on-chain (ERC-3643) -----------------------------------------------------------

# The intent, before the chain is touched: the wallet and country to register (the given
# ones, else those recorded); ``previous`` is the wallet registered before, if another.
K_BEGIN_REGISTRATION = """
WITH old AS (SELECT wallet_address, state FROM onchain_identities WHERE user_id = $1)
INSERT INTO onchain_identities (user_id, wallet_address, country, state)
VALUES ($1, $2, $3, 'registering')
ON CONFLICT (user_id) DO UPDATE
SET wallet_address = EXCLUDED.wallet_address, country = EXCLUDED.country,
    identity_address = CASE WHEN lower(onchain_identities.wallet_address)
                                 = lower(EXCLUDED.wallet_address)
                            THEN onchain_identities.identity_address END,
    state = 'registering', updated_at = now()
RETURNING (SELECT wallet_address FROM old WHERE state <> 'removed'
           AND lower(wallet_address) <> lower($2)) AS previous
"""

K_ONCHAIN_IDENTITY = """
SELECT user_id, wallet_address, country, identity_address, state FROM onchain_identities
WHERE user_id = $1
"""

K_USER_WALLET = "SELECT wallet_address FROM users WHERE id = $1"

# KYC stays pending until the chain has the identity: only the row the identity needs.
ENSURE_USER = "INSERT INTO users (id) VALUES ($1) ON CONFLICT (id) DO NOTHING"

K_MARK_REGISTERED = """
UPDATE onchain_identities SET state = 'registered', identity_address = $2, updated_at = now()
WHERE user_id = $1 AND state = 'registering'
"""

REVOKE_USER = """
UPDATE users SET kyc_status = 'rejected', updated_at = now() WHERE id = $1 RETURNING id
"""

K_BEGIN_REMOVAL = """
UPDATE onchain_identities SET state = 'removing', updated_at = now()
WHERE user_id = $1 AND state <> 'removed'
RETURNING wallet_address
"""

K_MARK_REMOVED_IDENTITY = """
UPDATE onchain_identities SET state = 'removed', updated_at = now()
WHERE user_id = $1 AND state = 'removing'
"""

# Older than a grace: a kyc command may be between its steps right now.
K_UNFINISHED_IDENTITIES = """
SELECT user_id, state FROM onchain_identities
WHERE state IN ('registering', 'removing') AND updated_at < now() - make_interval(secs => $1)
ORDER BY user_id
"""

# --- dlq redrive -------------------------------------------------------------------------

STORED_DEAD_LETTER = """
SELECT stored_key, stored_value, stored_headers::text AS stored_headers FROM dead_letters
WHERE topic = $1 AND kafka_partition = $2 AND kafka_offset = $3 AND stored
"""

# --- chain-check, and reconcile's repair of what it finds ---------------------------------

C_CHECKPOINT = "SELECT checked_block, started_at FROM chain_checks WHERE chain_id = $1"
C_NOW = "SELECT clock_timestamp()"

# Credited in the recent blocks ($2), credited since the last check began ($3), or found
# missing before: each through its own index.
C_CANDIDATES = """
WITH picked AS (
    SELECT event_id FROM distributions WHERE state = 'credited' AND block_number >= $2
    UNION
    SELECT event_id FROM distributions WHERE state = 'credited' AND credited_at >= $3
    UNION
    SELECT event_id FROM credited_not_on_chain WHERE chain_id = $1
)
SELECT d.event_id, d.user_id, d.payment_id, d.block_number, d.batch_id,
       lower(COALESCE(d.distributor_address, t.distributor_address)) AS distributor,
       m.event_id IS NOT NULL AS known_missing
FROM picked p
JOIN distributions d ON d.event_id = p.event_id
JOIN tokenizations t ON t.id = d.tokenization_id
LEFT JOIN credited_not_on_chain m ON m.event_id = d.event_id
WHERE d.state = 'credited' AND t.chain_id = $1
"""

C_MARK_MISSING = """
INSERT INTO credited_not_on_chain (event_id, chain_id, head)
SELECT unnest($1::uuid[]), $2, $3
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""

C_MARK_FOUND = "DELETE FROM credited_not_on_chain WHERE event_id = ANY($1::uuid[])"

C_SAVE_CHECKPOINT = """
INSERT INTO chain_checks (chain_id, checked_block, started_at) VALUES ($1, $2, $3)
ON CONFLICT (chain_id) DO UPDATE
SET checked_block = EXCLUDED.checked_block, started_at = EXCLUDED.started_at, updated_at = now()
"""

# Per batch asked for, the batch that now carries its calldata: its newest re-signing
# (``resigns``), or itself.
C_BATCHES_OF = """
SELECT DISTINCT ON (coalesce(resigns, id))
       coalesce(resigns, id) AS original, id, chain_id, sender, nonce, state
FROM batches WHERE id = ANY($1::bigint[]) OR resigns = ANY($1::bigint[])
ORDER BY coalesce(resigns, id), id DESC
"""

# Re-signing takes the key's next nonce as the consumer's signing does, with its statements.
KEY_STATE_FOR_SHARE = consumer.KEY_STATE_FOR_SHARE
SYNC_NONCE = consumer.SYNC_NONCE
LOCK_NONCE = consumer.LOCK_NONCE
ADVANCE_NONCE = consumer.ADVANCE_NONCE
INSERT_BATCH_TX = consumer.INSERT_BATCH_TX

C_INSERT_RESIGNED = """
INSERT INTO batches
    (chain_id, sender, nonce, distributor_address, first_index, size, calldata, gas_limit,
     state, resigns)
SELECT chain_id, $2, $3, distributor_address, first_index, size, calldata, gas_limit,
       'signed', $4
FROM batches WHERE id = $1
RETURNING id
"""

# Re-signed batches not settled yet, with every attempt's hash: reconcile settles them.
C_RESIGNED_IN_FLIGHT = """
SELECT b.id, array_agg(t.tx_hash ORDER BY t.created_at) AS tx_hashes
FROM batches b JOIN chain_transactions t ON t.batch_id = b.id
WHERE b.resigns IS NOT NULL AND b.state IN ('signed', 'submitted')
GROUP BY b.id ORDER BY b.id
"""

C_BATCH_TO_SIGN = "SELECT distributor_address, calldata, gas_limit FROM batches WHERE id = $1"


# Per nonce of a key, its batch and the attempt to send again: the one that was mined if
# known, else the newest (the highest fee).
C_SENDER_ATTEMPTS = """
SELECT DISTINCT ON (b.nonce) b.id AS batch_id, b.nonce, b.state, t.tx_hash, t.raw_tx
FROM batches b JOIN chain_transactions t ON t.batch_id = b.id
WHERE b.chain_id = $1 AND b.sender = $2 AND b.nonce BETWEEN $3 AND $4
ORDER BY b.nonce, t.tx_hash = b.tx_hash DESC NULLS LAST, t.max_fee_per_gas DESC,
         t.created_at DESC
"""
