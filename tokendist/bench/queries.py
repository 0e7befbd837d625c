"""The benchmark's SQL: latencies from the timestamps the pipeline itself records.

Computing them in PostgreSQL means every timestamp comes from one clock (the server's),
whichever process wrote it. Each is now() of the writing transaction:

    payment_confirmations.confirmed_at   the payment service's transaction
    distributions.created_at             a consumer claimed the event (after Kafka)
    chain_transactions.created_at        the payment's batch was signed and stored (its
                                         first attempt)
    chain_transactions.broadcast_at      the node accepted the batch (last broadcast)
    distributions.credited_at            holdings credited after the receipt
"""

from __future__ import annotations

# Name → (from, to) over the columns of SPANS_CTE; the names are the report's rows.
SEGMENTS: dict[str, tuple[str, str]] = {
    "confirmed → claimed (relay, Kafka, consumer queue)": ("confirmed_at", "claimed_at"),
    "claimed → signed (gathered into a batch)": ("claimed_at", "signed_at"),
    "signed → broadcast": ("signed_at", "broadcast_at"),
    "broadcast → credited": ("broadcast_at", "credited_at"),
}
TOTAL = ("confirmed_at", "credited_at")
# What the consumers count as in flight (states 'signed' and 'submitted'), plus the credit.
IN_FLIGHT = ("signed_at", "credited_at")

SPANS_CTE = """
WITH first_tx AS (
    SELECT DISTINCT ON (batch_id) batch_id, created_at, broadcast_at
    FROM chain_transactions WHERE batch_id IS NOT NULL ORDER BY batch_id, created_at
), spans AS (
    SELECT c.confirmed_at, d.created_at AS claimed_at, t.created_at AS signed_at,
           t.broadcast_at, d.credited_at
    FROM distributions d
    JOIN payment_confirmations c USING (event_id)
    LEFT JOIN first_tx t USING (batch_id)
    WHERE d.tokenization_id = $1 AND d.state = 'credited'
)
"""


def percentiles(start: str, end: str) -> str:
    """p50/p90/p95/p99/max/mean in whole milliseconds of ``end - start`` over credited events.

    ``start`` and ``end`` are only ever the constant column names above, never input.
    """
    ms = f"(extract(epoch FROM ({end} - {start})) * 1000)::bigint"
    return (
        SPANS_CTE
        + f"""
SELECT count({ms}) AS n,
       percentile_disc(ARRAY[0.5, 0.9, 0.95, 0.99]) WITHIN GROUP (ORDER BY {ms}) AS p,
       max({ms}) AS max_ms,
       avg({ms})::bigint AS mean_ms
FROM spans
"""  # noqa: S608
    )


OUTCOMES = """
SELECT count(*) FILTER (WHERE state = 'credited') AS credited,
       count(*) FILTER (WHERE state = 'failed') AS failed
FROM distributions WHERE tokenization_id = $1
"""

# The end-to-end window: first payment confirmed → last holding credited.
WINDOW = """
SELECT min(c.confirmed_at) AS first_confirmed, max(d.credited_at) AS last_credited,
       count(DISTINCT d.block_number) AS blocks, count(DISTINCT d.batch_id) AS batches
FROM distributions d JOIN payment_confirmations c USING (event_id)
WHERE d.tokenization_id = $1 AND d.state = 'credited'
"""

# The relay holds this advisory lock (outbox.relay.LEADER_LOCK) while it leads. A key
# below 2**32 shows up in pg_locks as classid 0, objid = key, objsubid 1.
RELAY_LEADING = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND classid = 0 AND objid = $1 AND objsubid = 1
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
