"""The receiver is provider-neutral: a second provider, as small as ``PaymentProvider``
allows, is served beside Paystack by the same app, in-process against real PostgreSQL.

``FakePay`` signs with its own scheme (base64 HMAC-SHA256 in its own header), reads flat
JSON bodies of its own, and answers ``confirm`` from a dict. Through it, the receiver
confirms, deduplicates, flags and defers exactly as it does for Paystack, and every row
and event it writes carries the provider's name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from tests.integration import webhook_harness as wh
from tests.services import Services
from tokendist.core.errors import MalformedPayload, ProviderUnavailable
from tokendist.schemas import parse_event
from tokendist.sim import provider as paystack_sender
from tokendist.webhook import create_pending_investment
from tokendist.webhook.paystack import SIGNATURE_HEADER, signature
from tokendist.webhook.providers import registry
from tokendist.webhook.providers.base import (
    Adjustment,
    AdjustmentKind,
    Charge,
    Domain,
    Ignored,
    Notice,
    Verification,
)

FAKE_SECRET = b"fakepay-secret-" + b"3" * 20
FAKE_HEADER = "fakepay-signature"


@dataclass
class FakePay:
    name: str = "fakepay"
    mode: Domain = "live"
    answers: dict[str, Verification] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    down: bool = False  # confirm cannot be answered now
    closed: int = 0

    @staticmethod
    def sign(raw: bytes) -> str:
        return base64.b64encode(hmac.new(FAKE_SECRET, raw, hashlib.sha256).digest()).decode()

    def verify_signature(self, raw: bytes, headers: Mapping[str, str]) -> bool:
        provided = headers.get(FAKE_HEADER, "").encode("latin-1")
        return hmac.compare_digest(self.sign(raw).encode(), provided)

    def parse(self, raw: bytes) -> Notice:
        try:
            doc: Any = json.loads(raw)
            kind, reference, cents = doc["type"], str(doc["ref"]), int(doc["cents"])
        except (ValueError, KeyError, TypeError):
            raise MalformedPayload("fakepay_unreadable", "not a FakePay notice") from None
        kept = json.dumps({"type": kind, "ref": reference, "cents": cents})
        if kind == "payment.settled":
            return Charge(
                event=kind,
                reference=reference,
                domain="live",
                amount_minor=cents,
                currency=doc.get("cur", "NGN"),
                paid_at=None,
                kept=kept,
            )
        if kind == "payment.refunded":
            return Adjustment(
                event=kind,
                kind=AdjustmentKind.REFUND,
                reference=reference,
                amount_minor=cents,
                kept=kept,
            )
        return Ignored(event=str(kind))

    async def confirm(self, reference: str) -> Verification | None:
        self.asked.append(reference)
        if self.down:
            raise ProviderUnavailable("fakepay is down")
        return self.answers.get(reference)

    async def close(self) -> None:
        self.closed += 1


def notice(kind: str, reference: str, cents: int = 500_000) -> bytes:
    return json.dumps({"type": kind, "ref": reference, "cents": cents}).encode()


@dataclass
class Both:
    """The app serving Paystack (from the settings) and FakePay, and its database."""

    client: wh.InProcess
    fake: FakePay
    db: asyncpg.Pool

    async def fakepay(self, body: bytes, *, path: str = "/webhooks/fakepay") -> tuple[int, Any]:
        status, text = await self.client.post(path, body, {FAKE_HEADER: self.fake.sign(body)})
        return status, json.loads(text)

    async def paystack(self, body: bytes, *, path: str = "/webhooks/paystack") -> tuple[int, Any]:
        sig = signature(wh.LIVE_KEY.encode(), body)
        status, text = await self.client.post(path, body, {SIGNATURE_HEADER: sig})
        return status, json.loads(text)


@pytest.fixture
async def both(stack: Services, database_url: str) -> AsyncIterator[Both]:
    settings = wh.webhook_settings(database_url, stack.kafka_bootstrap)
    fake = FakePay()
    db = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    await wh.add_tokenization(db)
    try:
        providers = [*registry.enabled(settings), fake]
        async with wh.in_process(settings, providers=providers) as client:
            yield Both(client, fake, db)
        assert fake.closed == 1  # the app's lifespan closes every provider
    finally:
        await db.close()


async def pending_at(db: asyncpg.Pool, i: int, provider: str, reference: str) -> str:
    """A pending investment of 500000 NGN paid through ``provider``; its id."""
    o = wh.order(i).model_copy(update={"provider": provider, "provider_reference": reference})
    async with db.acquire() as conn:
        await create_pending_investment(conn, o)
    return o.investment_id


CONFIRMED = {**wh.NOTHING, "provider_payments": 1, "payment_confirmations": 1, "outbox": 1}


async def test_a_second_provider_confirms_once_and_its_name_is_on_every_row(both: Both) -> None:
    investment = await pending_at(both.db, 1, "fakepay", "FP-1")
    both.fake.answers["FP-1"] = Verification("success", 500_000, "NGN")
    body = notice("payment.settled", "FP-1")
    answers = [await both.fakepay(body) for _ in range(3)]
    assert answers == [(200, {"outcome": "confirmed"})] + [(200, {"outcome": "duplicate"})] * 2
    assert await wh.counts(both.db) == CONFIRMED
    row = await both.db.fetchrow(
        "SELECT provider, status, body, body_sha256 FROM provider_payments"
    )
    assert row is not None
    assert (row["provider"], row["status"]) == ("fakepay", "accepted")
    assert json.loads(row["body"]) == {"type": "payment.settled", "ref": "FP-1", "cents": 500_000}
    assert row["body_sha256"] == hashlib.sha256(body).hexdigest()
    event = parse_event((await both.db.fetchval("SELECT payload::text FROM outbox")).encode())
    assert (event.data.provider, event.data.provider_reference) == ("fakepay", "FP-1")
    assert event.data.investment_id == investment
    assert await both.db.fetchval(
        "SELECT provider FROM payment_confirmations WHERE investment_id = $1", investment
    ) == ("fakepay")
    assert both.fake.asked == ["FP-1"] * 3  # asked before each transaction, as Paystack's API


@pytest.mark.parametrize(
    ("provider", "cents", "answer", "reason"),
    [
        ("fakepay", 499_999, None, "amount_mismatch"),
        ("fakepay", 500_000, Verification("reversed", 500_000, "NGN"), "not_verified"),
        # The same reference pending at Paystack is not FakePay's: references are per provider.
        ("paystack", 500_000, None, "unknown_reference"),
    ],
)
async def test_a_second_providers_mismatches_are_flagged_and_never_distributed(
    both: Both, provider: str, cents: int, answer: Verification | None, reason: str
) -> None:
    await pending_at(both.db, 1, provider, "FP-1")
    if answer is not None:
        both.fake.answers["FP-1"] = answer
    body = notice("payment.settled", "FP-1", cents)
    for expected in ("flagged", "duplicate"):
        assert await both.fakepay(body) == (200, {"outcome": expected})
    row = await both.db.fetchrow("SELECT provider, status, flag_reason FROM provider_payments")
    assert row is not None
    assert tuple(row) == ("fakepay", "flagged", reason)
    assert await wh.counts(both.db) == {**wh.NOTHING, "provider_payments": 1}


async def test_a_second_providers_refund_and_other_events(both: Both) -> None:
    await pending_at(both.db, 1, "fakepay", "FP-1")
    assert await both.fakepay(notice("payment.settled", "FP-1")) == (200, {"outcome": "confirmed"})
    refund = notice("payment.refunded", "FP-1", 1_000)
    assert await both.fakepay(refund) == (200, {"outcome": "adjustment_recorded"})
    assert await both.fakepay(refund) == (200, {"outcome": "duplicate"})
    assert await both.fakepay(notice("payout.sent", "FP-1")) == (200, {"outcome": "ignored"})
    rows = await both.db.fetch(
        "SELECT a.provider, a.kind, a.event, a.amount_minor, a.payment_id = p.id"
        " FROM payment_adjustments a LEFT JOIN provider_payments p ON p.provider = a.provider"
    )
    assert [tuple(r) for r in rows] == [("fakepay", "refund", "payment.refunded", 1_000, True)]
    assert await wh.counts(both.db) == {**CONFIRMED, "payment_adjustments": 1}


async def test_a_second_providers_outage_answers_503_writing_nothing_and_the_retry_confirms(
    both: Both,
) -> None:
    await pending_at(both.db, 1, "fakepay", "FP-1")
    body = notice("payment.settled", "FP-1")
    both.fake.down = True
    assert await both.fakepay(body) == (503, {"error": "unavailable"})
    assert await wh.counts(both.db) == wh.NOTHING
    both.fake.down = False
    both.fake.answers["FP-1"] = Verification("success", 500_000, "NGN")
    assert await both.fakepay(body) == (200, {"outcome": "confirmed"})
    assert await wh.counts(both.db) == CONFIRMED


async def test_each_provider_checks_only_its_own_signature_and_reading(both: Both) -> None:
    await pending_at(both.db, 1, "fakepay", "FP-1")
    await pending_at(both.db, 2, "paystack", "PSK-2")
    fake_body = notice("payment.settled", "FP-1")
    paystack_body = paystack_sender.charge_success("PSK-2", 500_000)
    # Each body signed by the other provider's scheme, sent to the other's route.
    assert await both.paystack(fake_body, path="/webhooks/fakepay") == (
        401,
        {"error": "bad_signature"},
    )
    assert await both.fakepay(paystack_body, path="/webhooks/paystack") == (
        401,
        {"error": "bad_signature"},
    )
    # Signed right but in the other's format: each provider's own reason.
    assert await both.fakepay(paystack_body) == (400, {"error": "fakepay_unreadable"})
    assert await both.paystack(b'{"type": "payment.settled"}') == (400, {"error": "not_an_event"})
    assert await wh.counts(both.db) == wh.NOTHING
    assert await both.paystack(paystack_body) == (200, {"outcome": "confirmed"})
    assert await both.fakepay(fake_body) == (200, {"outcome": "confirmed"})
    rows = await both.db.fetch("SELECT provider, provider_reference FROM provider_payments")
    assert sorted(tuple(r) for r in rows) == [("fakepay", "FP-1"), ("paystack", "PSK-2")]


@pytest.mark.parametrize("segment", ["stripe", "PAYSTACK", "paystack ", "fake_pay", "x" * 300])
async def test_an_unknown_provider_is_404_with_a_reason_and_writes_nothing(
    both: Both, segment: str
) -> None:
    await pending_at(both.db, 1, "paystack", "PSK-1")
    body = paystack_sender.charge_success("PSK-1", 500_000)
    assert await both.paystack(body, path=f"/webhooks/{segment}") == (
        404,
        {"error": "unknown_provider"},
    )
    assert await wh.counts(both.db) == wh.NOTHING


async def test_answers_are_counted_by_outcome_and_timed(both: Both) -> None:
    """What the webhook alerts read: each answer counted under its outcome or refusal
    reason, and timed."""

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"endpoint": "webhook", **labels}) or 0.0

    before = {
        outcome: sample("tokendist_webhook_requests_total", outcome=outcome)
        for outcome in ("confirmed", "duplicate", "bad_signature")
    }
    timed = sample("tokendist_webhook_request_seconds_count")
    await pending_at(both.db, 1, "fakepay", "FP-1")
    both.fake.answers["FP-1"] = Verification("success", 500_000, "NGN")
    body = notice("payment.settled", "FP-1")
    assert [(await both.fakepay(body))[0] for _ in range(2)] == [200, 200]
    status, _ = await both.client.post("/webhooks/fakepay", body, {FAKE_HEADER: "forged"})
    assert status == 401

    after = {
        outcome: sample("tokendist_webhook_requests_total", outcome=outcome) for outcome in before
    }
    assert {k: after[k] - before[k] for k in before} == {
        "confirmed": 1,
        "duplicate": 1,
        "bad_signature": 1,
    }
    assert sample("tokendist_webhook_request_seconds_count") - timed == 3
