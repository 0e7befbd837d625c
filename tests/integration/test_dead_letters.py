"""Bad input, table-driven: every kind lands in the dead-letter topic with its reason,
none stops the consumer or is lost, and the valid events around them are processed."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration import harness
from tokendist.core import kafka
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment
from tokendist.schemas import parse_event

pytestmark = pytest.mark.integration

KEY = b"user-0"


def good(tk: Deployment, i: int, **data: Any) -> dict[str, Any]:
    event = harness.payment(tk, i, user=0).event()
    doc: dict[str, Any] = json.loads(event.to_json())
    doc["data"].update(data)
    return doc


def raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def bad_inputs(tk: Deployment) -> list[tuple[str, bytes | None, bytes, str]]:
    """(name, key, value, expected dlq.reason)."""
    wallet = harness.wallet(0)
    return [
        ("malformed json", KEY, b'{"event_id": ', "malformed_json"),
        ("wrong types", KEY, raw(good(tk, 101, amount_minor="500")), "invalid_schema"),
        (
            "missing fields",
            KEY,
            raw({**good(tk, 102), "data": {"user_id": "user-0"}}),
            "invalid_schema",
        ),
        (
            "unknown version",
            KEY,
            raw({**good(tk, 103), "schema_version": 9}),
            "unsupported_schema_version",
        ),
        (
            "unknown type",
            KEY,
            raw({**good(tk, 104), "event_type": "Chargeback"}),
            "unknown_event_type",
        ),
        (
            "invalid address",
            KEY,
            raw(good(tk, 105, wallet_address="0xnot-an-address")),
            "invalid_schema",
        ),
        (
            "non-checksummed address",
            KEY,
            raw(good(tk, 106, wallet_address=wallet.lower())),
            "invalid_schema",
        ),
        ("zero tokens", KEY, raw(good(tk, 107, tokens="0")), "invalid_schema"),
        ("negative amount", KEY, raw(good(tk, 108, amount_minor=-100)), "invalid_schema"),
        ("overflowing tokens", KEY, raw(good(tk, 109, tokens=str(2**256))), "invalid_schema"),
        (
            "unknown tokenization",
            KEY,
            raw(good(tk, 110, tokenization_id="tok-404")),
            "unknown_tokenization",
        ),
        ("huge payload", KEY, b'{"pad": "' + b"x" * 200_000 + b'"}', "too_large"),
        ("non-UTF-8 bytes", KEY, b"\xc3\x28\xff payment", "not_utf8"),
        ("no key", None, raw(good(tk, 111)), "missing_key"),
        ("key of another user", b"user-9", raw(good(tk, 112)), "key_mismatch"),
        (  # the confirmed payment of investment 1 has another event id
            "same investment, other event id",
            KEY,
            raw({**good(tk, 1), "event_id": str(uuid.uuid4())}),
            "unconfirmed_payment",
        ),
        ("empty value", KEY, b"", "malformed_json"),
    ]


async def test_each_bad_input_lands_in_the_dlq_with_its_reason_and_the_stream_goes_on(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO users (id, kyc_status, wallet_address) VALUES ('user-0','approved',$1)",
            harness.wallet(0),
        )
    cases = bad_inputs(tokenization)
    first, last = good(tokenization, 1), good(tokenization, 2)
    for _, _, value, reason in cases:  # past the payment check, to reach the later ones
        if reason == "unknown_tokenization":
            await harness.confirm_event(pool, parse_event(value))
    for doc in (first, last):
        await harness.confirm_event(pool, parse_event(raw(doc)))
    producer = AIOKafkaProducer(**kafka.connection(settings), max_request_size=2 * 1024 * 1024)
    async with harness.consumer(settings):
        await producer.start()
        try:
            await producer.send_and_wait(settings.topic, raw(first), key=KEY)
            for _, key, value, _ in cases:
                await producer.send_and_wait(settings.topic, value, key=key)
            await producer.send_and_wait(settings.topic, raw(last), key=KEY)
        finally:
            await producer.stop()
        await harness.wait_until(lambda: _credited(pool, 2), what="both valid events credited")
        await harness.wait_until(lambda: harness.committed_to_end(settings), what="all committed")
    parked = await harness.read_topic(settings, settings.dlq_topic, expected=len(cases))
    assert len(parked) == len(cases)
    by_value = {r.value: dict(r.headers) for r in parked}
    for name, _, value, reason in cases:
        headers = by_value[value]
        assert headers["dlq.reason"].decode() == reason, name
        assert headers["dlq.original.topic"].decode() == settings.topic
        assert int(headers["dlq.original.offset"]) >= 0
        assert headers["dlq.detail"], name
    assert sorted(await harness.paid_to(settings, tokenization)) == sorted(
        [
            (harness.wallet(0).lower(), int(first["data"]["tokens"])),
            (harness.wallet(0).lower(), int(last["data"]["tokens"])),
        ]
    )


async def _credited(pool: asyncpg.Pool, n: int) -> bool:
    return await harness.credited(pool) == n
