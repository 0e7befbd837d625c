"""Fuzzing the Kafka record path: any bytes, any key, any headers, any size up to the
topic's limit, through the consumer's own ``Processor.handle`` against the real
PostgreSQL, the real broker (the DLQ) and the real node.

Nothing in this database is a confirmed payment, so every record must be parked: the
handler returns (never raises), the record is recorded in ``dead_letters`` under its own
position, and nothing is claimed or signed."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration import harness
from tokendist.consumer import wiring
from tokendist.consumer.dlq import headers_from_json
from tokendist.consumer.processor import Outcome, Processor
from tokendist.core import kafka
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment

pytestmark = pytest.mark.integration

CASES = 300
OFFSETS = itertools.count()


def event_like(tk_id: str) -> st.SearchStrategy[bytes]:
    """Documents shaped like the real event (so that they reach the later checks): valid
    ones with any ids and amounts, and ones with any field replaced by any JSON."""
    anything = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=30),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=6,
    )

    def build(investment: int, tokens: int, field: str | None, value: Any) -> bytes:
        doc: dict[str, Any] = {
            "event_id": str(uuid.uuid4()),
            "event_type": "PaymentConfirmed",
            "schema_version": 1,
            "occurred_at": "2026-12-01T10:00:00Z",
            "data": {
                "user_id": "user-0",
                "investment_id": f"inv-{investment}",
                "tokenization_id": tk_id,
                "property_id": "prop-1",
                "tokens": str(tokens),
                "amount_minor": 50_000,
                "currency": "NGN",
                "wallet_address": harness.wallet(0),
                "provider": "paystack",
                "provider_reference": f"PSK-{investment}",
            },
        }
        if field is not None:
            doc["data"][field] = value
        return json.dumps(doc).encode()

    return st.builds(
        build,
        st.integers(0, 10**6),
        st.integers(1, 2**256 - 1),
        st.none() | st.sampled_from(["tokens", "user_id", "wallet_address", "amount_minor"]),
        anything,
    )


def values(tk_id: str) -> st.SearchStrategy[bytes | None]:
    return st.one_of(
        st.none(),
        st.binary(max_size=2048),
        st.text(max_size=512).map(str.encode),
        event_like(tk_id),
        st.integers(1, 20_000).map(lambda n: b'{"n": ' + b"9" * n + b"}"),
        st.integers(1, 20_000).map(lambda n: b"[" * n + b"]" * n),
        # Past the event limit, up to just under the topic's (1,048,588 bytes).
        st.sampled_from([64 * 1024 + 1, 700_000, 1_048_300]).map(lambda n: b"x" * n),
    )


KEYS = st.one_of(st.none(), st.just(b"user-0"), st.binary(max_size=64))
HEADERS = st.lists(st.tuples(st.text(max_size=20), st.none() | st.binary(max_size=64)), max_size=4)


@pytest.fixture
async def processor(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> AsyncIterator[Processor]:
    await kafka.ensure_topics(settings)
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO users VALUES ('user-0', 'approved', $1)", harness.wallet(0))
    # The consumer's own composition root, its gatherer running: a record that reached
    # signing would be signed for real, and the assertions would see it.
    async with AsyncExitStack() as resources:
        member = await wiring.build(settings.consumer(), asyncio.Event(), resources)
        gatherer = asyncio.create_task(member.gatherer.run())
        try:
            yield member.processor
        finally:
            gatherer.cancel()
            await asyncio.gather(gatherer, return_exceptions=True)


@given(data=st.data())
@settings(
    max_examples=CASES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
async def test_any_record_is_parked_with_a_reason_and_nothing_is_signed(
    data: st.DataObject, processor: Processor, pool: asyncpg.Pool, settings: Settings
) -> None:
    tk_id = "tok-1"
    record = SimpleNamespace(
        topic=settings.topic,
        partition=data.draw(st.integers(0, settings.topic_partitions - 1)),
        offset=next(OFFSETS),
        timestamp=1_764_583_200_000,
        key=data.draw(KEYS),
        value=data.draw(values(tk_id)),
        headers=data.draw(HEADERS),
    )
    assert await processor.handle(record) is Outcome.DEAD_LETTERED
    parked = await pool.fetchrow(
        "SELECT reason, stored FROM dead_letters"
        " WHERE topic = $1 AND kafka_partition = $2 AND kafka_offset = $3",
        record.topic,
        record.partition,
        record.offset,
    )
    assert parked is not None
    assert parked["reason"]
    too_large = len(record.value or b"") > 1_000_000
    assert parked["stored"] == (too_large or (record.key is None and record.value is None))
    assert await pool.fetchval("SELECT count(*) FROM distributions") == 0
    assert await pool.fetchval("SELECT count(*) FROM chain_transactions") == 0


async def test_a_kept_record_may_carry_any_header_name(
    processor: Processor, pool: asyncpg.Pool, settings: Settings
) -> None:
    """Found by the fuzzer: neither key nor value (kept in PostgreSQL) and a header named
    NUL, which a jsonb column refuses. Both header and record come back as they were."""
    headers = [("\x00", None), ("trace", b"\x00\xff")]
    record = SimpleNamespace(
        topic=settings.topic,
        partition=0,
        offset=next(OFFSETS),
        timestamp=1_764_583_200_000,
        key=None,
        value=None,
        headers=headers,
    )
    assert await processor.handle(record) is Outcome.DEAD_LETTERED
    kept = await pool.fetchval(
        "SELECT stored_headers FROM dead_letters WHERE topic = $1 AND kafka_offset = $2",
        record.topic,
        record.offset,
    )
    assert headers_from_json(kept) == [("\x00", b""), ("trace", b"\x00\xff")]
