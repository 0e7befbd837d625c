"""Issue 12 against the real services: no single record can stop a partition, and no
record pays without a confirmed payment behind it."""

from __future__ import annotations

import json

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration import harness
from tokendist.consumer.dlq import STORED_HEADER, headers_from_json
from tokendist.core import kafka
from tokendist.core.settings import Settings
from tokendist.ops import dlq_admin, status
from tokendist.ops.deploy import Deployment

pytestmark = pytest.mark.integration

KEY = b"user-0"
# The broker's default max.message.bytes is 1,048,588: this record fits the topic, its
# DLQ copy (the same bytes plus the dlq.* headers) does not fit a producer request.
NEAR_LIMIT = 1_048_300


async def produce(
    settings: Settings, *records: tuple[bytes, bytes, list[tuple[str, bytes]]]
) -> None:
    await kafka.ensure_topics(settings)
    producer = AIOKafkaProducer(**kafka.connection(settings), max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(settings.topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def test_poison_records_are_parked_and_the_payments_behind_them_are_credited(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """A 5,000-digit integer (ValueError in json) and a record just under the topic's
    limit (its DLQ copy is too large) on the same partition as genuine payments: before
    the fix each stopped the partition for good."""
    first, last = (harness.payment(tokenization, i, user=0) for i in (1, 2))
    for p in (first, last):
        await harness.pay(pool, p)
    digits = b'{"event_type": "PaymentConfirmed", "n": ' + b"9" * 5000 + b"}"
    filler = b'{"pad": "' + b"x" * (NEAR_LIMIT - 11) + b'"}'
    huge_headers = [("trace", b"t-1"), ("empty", b"")]
    await produce(
        settings,
        (KEY, await confirmed(pool, first.investment_id), []),  # no relay runs: no copies
        (KEY, digits, []),
        (KEY, filler, huge_headers),
        (KEY, await confirmed(pool, last.investment_id), []),
    )
    async with harness.consumer(settings):
        await harness.wait_until(lambda: credited_is(pool, 2), what="both payments credited")
        await harness.wait_until(lambda: harness.committed_to_end(settings), what="commit")

    rows = {
        r["reason"]: r
        for r in await pool.fetch(
            "SELECT reason, stored, stored_key, stored_value, stored_headers::text AS h,"
            " value_bytes, times_parked FROM dead_letters ORDER BY kafka_offset"
        )
    }
    assert set(rows) == {"malformed_json", "too_large"}
    assert not rows["malformed_json"]["stored"]
    kept = rows["too_large"]
    assert kept["stored"]
    assert kept["value_bytes"] == len(filler)
    assert (bytes(kept["stored_key"]), bytes(kept["stored_value"])) == (KEY, filler)
    assert headers_from_json(kept["h"]) == huge_headers

    parked = await harness.read_topic(settings, settings.dlq_topic, expected=2)
    by_reason = {dict(r.headers)["dlq.reason"].decode(): r for r in parked}
    assert by_reason["malformed_json"].value == digits
    pointer = by_reason["too_large"]
    assert json.loads(pointer.value)["stored_in"] == "postgresql"
    assert dict(pointer.headers)[STORED_HEADER] == b"postgresql"
    wallet = harness.wallet(0).lower()
    assert sorted(await harness.paid_to(settings, tokenization)) == sorted(
        [(wallet, first.tokens), (wallet, last.tokens)]
    )
    assert await pool.fetchval("SELECT count(*) FROM retrying_partitions") == 0

    # The operator's view: the pointer is shown as such, and re-driving reads the original.
    listed = await dlq_admin.read_all(settings)
    (stored,) = [p for p in listed if p.stored]
    assert "kept in PostgreSQL" in stored.line()
    (original,) = await dlq_admin.with_originals(settings, [stored])
    assert (original.key, original.value) == (KEY, filler)
    assert original.headers[: len(huge_headers)] == huge_headers
    assert original.meta["dlq.reason"] == "too_large"


async def test_a_well_formed_event_without_a_confirmed_payment_pays_nobody(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """Write access to the topic is not a payout: an invented payment for an approved
    investor, and a genuine event with its tokens raised, are both refused unsigned."""
    genuine = harness.payment(tokenization, 1, user=0, tokens=10**18)
    await harness.pay(pool, genuine)
    invented = harness.payment(tokenization, 99, user=0, tokens=7 * 10**18).event()
    doc = json.loads(await confirmed(pool, genuine.investment_id))
    doc["data"]["tokens"] = str(7 * 10**18)
    inflated = json.dumps(doc).encode()
    await produce(settings, (KEY, invented.to_json(), []), (KEY, inflated, []))
    async with harness.relay(settings), harness.consumer(settings):
        await harness.wait_until(lambda: credited_is(pool, 1), what="the genuine payment")
        await harness.wait_until(lambda: harness.committed_to_end(settings), what="commit")

    parked = await harness.read_topic(settings, settings.dlq_topic, expected=2)
    assert sorted(dict(r.headers)["dlq.reason"].decode() for r in parked) == [
        "payment_mismatch",
        "unconfirmed_payment",
    ]
    assert await pool.fetchval("SELECT count(*) FROM distributions") == 1
    assert await pool.fetchval("SELECT count(*) FROM chain_transactions") == 1
    assert await harness.paid_to(settings, tokenization) == [(harness.wallet(0).lower(), 10**18)]
    assert await harness.holding(pool, 0) == 10**18


async def confirmed(pool: asyncpg.Pool, investment_id: str) -> bytes:
    """The event as the payment's transaction enqueued it."""
    payload: str = await pool.fetchval(
        "SELECT payload::text FROM payment_confirmations WHERE investment_id = $1", investment_id
    )
    return payload.encode()


async def credited_is(pool: asyncpg.Pool, n: int) -> bool:
    return await harness.credited(pool) == n


async def test_a_record_failing_unexpectedly_shows_in_status_then_is_parked(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """A real PostgreSQL error on one investor's credit (after the tokens moved): status
    names the waiting partition and the error, then the record is parked after its
    bounded attempts, the partition moves on, and the payment is still paid once."""
    settings = settings.model_copy(update={"park_after_errors": 4, "topic_partitions": 1})
    await harness.fail_credits(pool, of_user="user-0")
    seen_waiting: list[str] = []

    async def waiting_in_status() -> bool:
        async with pool.acquire() as conn, status.KafkaOffsets(settings) as offsets:
            seen_waiting.extend((await status.gather(conn, offsets, None)).retrying)
        return bool(seen_waiting)

    async with harness.relay(settings), harness.consumer(settings):
        await harness.pay(pool, harness.payment(tokenization, 1, user=0))
        await harness.pay(pool, harness.payment(tokenization, 2, user=1))
        await harness.wait_until(waiting_in_status, what="status to show the waiting record")
        await harness.wait_until(lambda: credited_is(pool, 1), what="the other user's credit")
        await harness.wait_until(lambda: harness.committed_to_end(settings), what="parking")
    assert "p0 at offset 0" in seen_waiting[0]
    assert "injected failure of the credit write" in seen_waiting[0]
    parked = await pool.fetchrow("SELECT reason, detail FROM dead_letters")
    assert parked is not None
    assert parked["reason"] == "processing_error"
    assert parked["detail"].startswith("4 attempts:")
    assert await pool.fetchval("SELECT count(*) FROM retrying_partitions") == 0
    assert await harness.state_of(pool, "inv-1") == "confirmed"  # paid, credit not written
    assert len(await harness.paid_to(settings, tokenization)) == 2
