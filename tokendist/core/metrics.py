"""Prometheus metrics and the ``/healthz`` + ``/readyz`` + ``/metrics`` endpoint.

Every metric is documented in the README's metrics reference; names are constants here.
The HTTP server is a few lines of asyncio (one GET per connection): the relay and the
consumer are asyncio programs, and prometheus_client's own server is a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

log = structlog.get_logger("tokendist.metrics")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)

EVENTS = Counter("tokendist_events_total", "Events finished by the consumer", ["outcome"])
PROCESSING = Histogram(
    "tokendist_event_processing_seconds", "Time to process one event", buckets=LATENCY_BUCKETS
)
END_TO_END = Histogram(
    "tokendist_end_to_end_seconds",
    "Payment confirmation (event occurred_at) to holdings credited",
    buckets=LATENCY_BUCKETS,
)
DEAD_LETTERS = Counter("tokendist_dead_letters_total", "Messages parked in the DLQ", ["reason"])
DEAD_LETTERS_STORED = Counter(
    "tokendist_dead_letters_stored_total",
    "Parked records the DLQ topic could not take, kept whole in PostgreSQL instead",
)
PARKED_AFTER_ERRORS = Counter(
    "tokendist_records_parked_after_errors_total",
    "Records parked because processing failed with an unexpected error, attempt after attempt",
)
UNPARKABLE = Counter(
    "tokendist_unparkable_records_total",
    "Attempts to park a failing record that failed themselves (the partition waits: alert)",
)
RETRYING = Gauge(
    "tokendist_partition_retrying_seconds",
    "How long the oldest record being retried has held its partition (0: none)",
    ["partition"],
)
RETRIES = Counter("tokendist_retries_total", "Event processing attempts retried", ["error"])
LAG = Gauge("tokendist_consumer_lag", "Records behind the partition's end", ["partition"])
INFLIGHT = Gauge(
    "tokendist_inflight_transactions", "Signed or submitted batches, not yet confirmed", ["sender"]
)
# Exported so an alert compares against the configured cap instead of a copy of it.
INFLIGHT_CAP = Gauge(
    "tokendist_inflight_cap", "Most transactions one operator may have unconfirmed (the setting)"
)
# Per key of the pool; a key appears with its first sweep (no "gas low" alert from a 0).
OPERATOR_GAS = Gauge(
    "tokendist_operator_gas_wei",
    "An operator key's ETH balance in wei, as of the last sweep",
    ["sender"],
)
NONCE_GAP = Gauge(
    "tokendist_nonce_gap",
    "Nonces reserved in PostgreSQL but not yet seen by the node",
    ["sender"],
)
BATCH_SIZE = Histogram(
    "tokendist_batch_size", "Payments per signed batch", buckets=(1, 5, 10, 25, 50, 100, 200, 500)
)
KEY_RESTING = Counter(
    "tokendist_operator_key_rested_total",
    "Times a key was left out because the node refused it (gas money, role)",
    ["sender"],
)
BATCHES = Counter("tokendist_batches_total", "Batches settled, by how they ended", ["outcome"])
REORGS = Counter(
    "tokendist_reorgs_total",
    "Mined batches whose block a reorganisation replaced before they were final",
)
# Per endpoint of TOKENDIST_RPC_URL + TOKENDIST_RPC_URLS, named "position/host:port".
RPC_ENDPOINT_HEALTHY = Gauge(
    "tokendist_rpc_endpoint_healthy",
    "1 while an RPC endpoint answers and keeps up with the best head (it serves reads)",
    ["endpoint"],
)
RPC_ENDPOINT_LAG = Gauge(
    "tokendist_rpc_endpoint_lag_blocks",
    "Blocks an RPC endpoint's head trails the best endpoint's, as of its last head check",
    ["endpoint"],
)
RPC_ENDPOINT_ERRORS = Counter(
    "tokendist_rpc_endpoint_errors_total",
    "Requests an RPC endpoint failed (429, 5xx, timeout, connection, bad answer)",
    ["endpoint", "kind"],
)
FEE_ABOVE_CAP = Gauge(
    "tokendist_fee_above_cap",
    "1 while 2 x base fee + tip exceeds TOKENDIST_MAX_FEE_WEI: no new batch is signed",
)
# Set by ``tokendist chain-check`` (one process; ``ops.chaincheck``).
CREDITED_NOT_ON_CHAIN = Gauge(
    "tokendist_credited_not_on_chain",
    "Credited distributions whose Distributed log the chain no longer has (a reorg deeper "
    "than the finality rule): `tokendist reconcile` repairs them",
)
DEEP_REORGS = Counter(
    "tokendist_deep_reorgs_total",
    "Chain checks that found credited payouts newly gone from the chain",
)
CHAIN_CHECKED = Gauge(
    "tokendist_chain_check_last_success_timestamp_seconds",
    "When the last chain check (credited distributions against the chain's logs) finished",
)
RELAY_PUBLISHED = Counter("tokendist_relay_published_total", "Outbox rows published")
RELAY_LEADER = Gauge("tokendist_relay_leader", "1 while this relay holds the leader lock")
OUTBOX_OLDEST = Gauge(
    "tokendist_outbox_oldest_unpublished_seconds",
    "Age of the oldest unpublished outbox row as of the leading relay's last poll (0: none)",
)

# Read every few seconds from PostgreSQL and the node by ``consumer.gauges``: every member
# reports the same figures, so alerts take max/min by tokenization, not a sum.
PARKED = Gauge("tokendist_parked_payments", "Payments parked before signing (state awaiting_kyc)")
PARKED_BY_REASON = Gauge(
    "tokendist_parked_payments_by_reason",
    "Payments parked before signing, by what must clear: awaiting_kyc, token_paused, "
    "wallet_frozen, compliance_refused",
    ["reason"],
)
PARKED_OLDEST = Gauge(
    "tokendist_parked_oldest_seconds",
    "How long the oldest payment awaiting KYC has been parked (0: none)",
)
MINED_NOT_FINAL = Gauge(
    "tokendist_batches_mined_not_final",
    "Batches in a block but not final yet by the finality rule (state mined)",
)
MINED_NOT_FINAL_OLDEST = Gauge(
    "tokendist_batches_mined_not_final_oldest_seconds",
    "How long the oldest batch mined but not final has waited for finality (0: none)",
)
# Token base units as floats: precise to 1 part in 2**53, plenty to compare against a need.
DISTRIBUTOR_TOKENS = Gauge(
    "tokendist_distributor_token_balance",
    "Tokens the tokenization's Distributor holds (balanceOf, base units)",
    ["tokenization"],
)
TOKENS_RECEIVED_HOUR = Gauge(
    "tokendist_tokens_received_last_hour",
    "Tokens of the payments received in the last hour, whatever became of them "
    "(base units): the next hour's expected need",
    ["tokenization"],
)


def forget_partition(partition: int) -> None:
    """Stop reporting a partition this process no longer owns: its last lag and retrying
    age would otherwise stay exported, unchanging, and alert forever."""
    for gauge in (LAG, RETRYING):
        with contextlib.suppress(KeyError):
            gauge.remove(str(partition))


async def serve(port: int, ready: Callable[[], bool]) -> None:
    """Serve until cancelled. ``ready`` says whether this process can take work now."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            request = await reader.readline()
            path = request.split(b" ")[1].decode() if request.count(b" ") >= 2 else ""
            if path == "/metrics":
                status, body, kind = 200, generate_latest(), CONTENT_TYPE_LATEST
            elif path == "/healthz":
                status, body, kind = 200, b"ok\n", "text/plain"
            elif path == "/readyz":
                ok = ready()
                status, body = (200, b"ready\n") if ok else (503, b"not ready\n")
                kind = "text/plain"
            else:
                status, body, kind = 404, b"not found\n", "text/plain"
            head = f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\n"
            head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host="0.0.0.0", port=port)  # noqa: S104 -- scraped from outside the container
    log.info("metrics_listening", port=port)
    async with server:
        await server.serve_forever()


# Reasons: client_disconnected (left before sending the body it declared), head_timeout,
# body_timeout, connection_cap. Counted, and logged at debug only: each is cheap to send.
WEBHOOK_DROPPED = Counter(
    "tokendist_webhook_dropped_total",
    "Webhook server connections or requests ended before a request was read whole",
    ["reason"],
)
# Outcome: the answer's outcome (``confirmed``, ``duplicate``, ``flagged``, …) or its refusal
# reason (``bad_signature``, ``sender_not_allowed``, …): both come from fixed sets in code.
WEBHOOK_REQUESTS = Counter(
    "tokendist_webhook_requests_total",
    "Webhook server requests answered by an endpoint",
    ["endpoint", "outcome"],
)
WEBHOOK_LATENCY = Histogram(
    "tokendist_webhook_request_seconds",
    "Time from routing a request to its answer",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30),
)
