"""Every SQL statement of the outbox package, by name."""

INSERT_CONFIRMATION = """
INSERT INTO payment_confirmations
    (event_id, provider, provider_reference, investment_id, user_id, tokenization_id, tokens,
     payload)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)
ON CONFLICT DO NOTHING
RETURNING event_id
"""

EXISTING_CONFIRMATION = """
SELECT event_id, investment_id FROM payment_confirmations
WHERE (provider = $1 AND provider_reference = $2) OR investment_id = $3
"""

INSERT_OUTBOX = """
INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, headers)
VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)
"""

CLAIM_BATCH = """
SELECT id, aggregateid, type, payload::text AS payload, headers::text AS headers
FROM outbox
WHERE published_at IS NULL
ORDER BY seq
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

MARK_PUBLISHED = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::uuid[])"

PRUNE_PUBLISHED = """
DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)
"""

OLDEST_UNPUBLISHED_AGE = """
SELECT EXTRACT(EPOCH FROM now() - created_at)::float8
FROM outbox
WHERE published_at IS NULL
ORDER BY seq
LIMIT 1
"""

TRY_LEADER_LOCK = "SELECT pg_try_advisory_lock($1)"

# --- CDC mode (tokendist.outbox.cdc) -----------------------------------------------------

# One statement, one snapshot: every row it returns committed before the WAL insert
# position it reads (the position is taken after the snapshot).
CDC_UNPUBLISHED_AND_POSITION = """
SELECT coalesce(array_agg(id), '{}') AS ids, pg_current_wal_insert_lsn()::text AS position
FROM outbox
WHERE published_at IS NULL
"""

CDC_SLOT_CONFIRMED = """
SELECT confirmed_flush_lsn >= $2::text::pg_lsn AS passed
FROM pg_replication_slots
WHERE slot_name = $1 AND slot_type = 'logical' AND database = current_database()
"""

CDC_MARK_PUBLISHED = """
UPDATE outbox SET published_at = now() WHERE id = ANY($1::uuid[]) AND published_at IS NULL
"""
