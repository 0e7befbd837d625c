"""The Paystack webhook receiver against real PostgreSQL over real HTTP (uvicorn).

Every test asserts outcomes: HTTP codes, and the rows of provider_payments,
payment_confirmations, outbox and payment_adjustments. Nothing is written before the
signature holds; a payment is recorded once however often, or however concurrently, its
webhook arrives.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from pydantic import SecretStr

from tests.integration import harness
from tests.integration import webhook_harness as wh
from tests.services import Services
from tokendist.core import db as db_module
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment
from tokendist.schemas import parse_event
from tokendist.sim import payments, provider
from tokendist.sim.provider import Provider
from tokendist.webhook import create_pending_investment
from tokendist.webhook.paystack import SIGNATURE_HEADER, signature


@pytest.fixture
def live(stack: Services, database_url: str) -> Settings:
    return wh.webhook_settings(database_url, stack.kafka_bootstrap)


@pytest.fixture
async def db(live: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(live.database_url, min_size=1, max_size=4)
    await wh.add_tokenization(pool)
    yield pool
    await pool.close()


@pytest.fixture
async def endpoint(live: Settings, db: asyncpg.Pool) -> AsyncIterator[wh.Endpoint]:
    async with wh.serving(live) as ep:
        yield ep


async def investment_status(pool: asyncpg.Pool, investment_id: str) -> str:
    status: str = await pool.fetchval("SELECT status FROM investments WHERE id = $1", investment_id)
    return status


async def test_a_valid_delivery_records_one_payment_and_one_event(
    endpoint: wh.Endpoint, db: asyncpg.Pool
) -> None:
    o = await wh.pending(db, 1)
    status, text = await endpoint.provider.deliver(
        provider.charge_success(o.provider_reference, o.amount_minor)
    )
    assert (status, json.loads(text)) == (200, {"outcome": "confirmed"})
    assert await wh.counts(db) == {
        **wh.NOTHING,
        "provider_payments": 1,
        "payment_confirmations": 1,
        "outbox": 1,
    }
    assert await investment_status(db, o.investment_id) == "confirmed"
    row = await db.fetchrow("SELECT status, flag_reason, amount_minor FROM provider_payments")
    assert row is not None
    assert dict(row) == {"status": "accepted", "flag_reason": None, "amount_minor": 500_000}
    event = parse_event((await db.fetchval("SELECT payload::text FROM outbox")).encode())
    assert event.data.investment_id == o.investment_id
    assert event.data.tokens == o.tokens
    assert (event.data.amount_minor, event.data.currency) == (500_000, "NGN")
    assert (event.data.provider, event.data.provider_reference) == ("paystack", "PSK-1")


async def test_reformatted_body_with_the_original_signature_is_refused(
    endpoint: wh.Endpoint, db: asyncpg.Pool
) -> None:
    o = await wh.pending(db, 1)
    body = provider.charge_success(o.provider_reference, o.amount_minor)
    pretty = json.dumps(json.loads(body), indent=2).encode()  # same JSON, other bytes
    assert json.loads(pretty) == json.loads(body)
    status, _ = await endpoint.provider.deliver(pretty, signed_as=endpoint.provider.sign(body))
    assert status == 401
    assert await wh.counts(db) == wh.NOTHING
    assert await investment_status(db, o.investment_id) == "pending"


def _bad_signatures(body: bytes) -> dict[str, str | None]:
    good = signature(wh.LIVE_KEY.encode(), body)
    return {
        "missing": None,
        "empty": "",
        "truncated": good[:64],
        "too_long": good + "00",
        "not_hex": "z" * 128,
        "uppercase": good.upper(),
        "other_mode_key": signature(wh.TEST_KEY.encode(), body),
        "sha256": signature(wh.LIVE_KEY.encode(), body)[:64] + "0" * 64,
        "non_ascii": "é" * 128,
    }


@pytest.mark.parametrize("kind", list(_bad_signatures(b"")))
async def test_bad_signatures_are_refused_and_write_nothing(
    endpoint: wh.Endpoint, db: asyncpg.Pool, kind: str
) -> None:
    o = await wh.pending(db, 1)
    body = provider.charge_success(o.provider_reference, o.amount_minor)
    sig = _bad_signatures(body)[kind]
    headers = {"content-type": "application/json"}
    if sig is not None:
        headers[SIGNATURE_HEADER] = sig
    async with endpoint.session.post(endpoint.url, data=body, headers=headers) as resp:
        assert resp.status == 401
    assert await wh.counts(db) == wh.NOTHING
    assert await investment_status(db, o.investment_id) == "pending"


async def test_one_changed_byte_is_refused(endpoint: wh.Endpoint, db: asyncpg.Pool) -> None:
    o = await wh.pending(db, 1)
    body = provider.charge_success(o.provider_reference, o.amount_minor)
    at = body.index(b"500000")
    tampered = body[:at] + b"9" + body[at + 1 :]  # 900000: a bigger payment, same signature
    status, _ = await endpoint.provider.deliver(tampered, signed_as=endpoint.provider.sign(body))
    assert status == 401
    assert await wh.counts(db) == wh.NOTHING


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[1, 2]",
        b'{"data": {}}',
        b"\xff\xfe{}",
        b'{"event": "charge.success", "data": "x"}',
        b'{"event": "charge.success", "data": {"amount": 1, "currency": "NGN", "domain": "live"}}',
        b'{"event": "charge.success", "data": {"reference": "PSK-1", "amount": "500000",'
        b' "currency": "NGN", "domain": "live"}}',
    ],
    ids=[
        "truncated",
        "empty",
        "array",
        "no_event",
        "not_utf8",
        "data_not_object",
        "no_reference",
        "string_amount",
    ],
)
async def test_valid_signature_over_unusable_json_is_400_never_500(
    endpoint: wh.Endpoint, db: asyncpg.Pool, body: bytes
) -> None:
    await wh.pending(db, 1)
    status, _ = await endpoint.provider.deliver(body)
    assert status == 400
    assert await wh.counts(db) == wh.NOTHING


def _charge(reference: str = '"PSK-1"', amount: str = "500000") -> bytes:
    return (
        f'{{"event":"charge.success","data":{{"reference":{reference},"amount":{amount},'
        '"currency":"NGN","domain":"live"}}'
    ).encode()


def _refund(reference: str = '"PSK-1"', amount: str = '"1000"') -> bytes:
    return (
        f'{{"event":"refund.processed","data":{{"transaction_reference":{reference},'
        f'"amount":{amount}}}}}'
    ).encode()


# The signed bodies that answered 500 (issue 12), each with the reason it now gets.
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_charge(amount="9" * 5000), "number_too_long"),
        (_refund(amount='"' + "9" * 5000 + '"'), "invalid_amount"),
        (b"[" * 10_000 + b"]" * 10_000, "too_deep"),
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "too_deep"),
        (_charge(amount=str(2**63)), "amount_out_of_range"),
        (_refund(amount=f'"{2**63}"'), "invalid_amount"),
        (_charge(reference=r'"PSK-1\u0000"'), "invalid_reference"),
        (_charge(reference=r'"PSK-\ud800"'), "invalid_reference"),
        (_refund(reference=r'"PSK-1\u0000"'), "invalid_reference"),
        (_refund(reference=r'"\udfff"'), "invalid_reference"),
        (
            b'{"event":"charge.success","data":{"reference":"PSK-1","amount":1,'
            b'"currency":"NGN","domain":"live","amount":500000}}',
            "duplicate_key",
        ),
    ],
    ids=[
        "amount_5000_digits",
        "refund_amount_5000_digits",
        "arrays_10000_deep",
        "objects_10000_deep",
        "amount_2_63",
        "refund_amount_2_63",
        "reference_nul",
        "reference_lone_surrogate",
        "refund_reference_nul",
        "refund_reference_lone_surrogate",
        "duplicate_amount",
    ],
)
async def test_signed_bodies_that_answered_500_get_400_with_their_reason(
    endpoint: wh.Endpoint, db: asyncpg.Pool, body: bytes, reason: str
) -> None:
    await wh.pending(db, 1)
    status, text = await endpoint.provider.deliver(body)
    assert (status, json.loads(text)) == (400, {"error": reason})
    assert await wh.counts(db) == wh.NOTHING


async def test_a_charge_just_within_bigint_is_recorded_flagged(
    endpoint: wh.Endpoint, db: asyncpg.Pool
) -> None:
    """Absurd but storable: kept for a human, never distributed."""
    await wh.pending(db, 1)
    status, text = await endpoint.provider.deliver(_charge(amount=str(2**63 - 1)))
    assert (status, json.loads(text)) == (200, {"outcome": "flagged"})
    assert await db.fetchval("SELECT flag_reason FROM provider_payments") == "amount_mismatch"


async def test_the_customers_email_is_not_stored_only_what_reconciliation_needs(
    endpoint: wh.Endpoint, db: asyncpg.Pool
) -> None:
    o = await wh.pending(db, 1)
    metadata = {"custom_fields": [{"phone": "+2348000000000"}]}
    charge = provider.charge_success(o.provider_reference, o.amount_minor, metadata=metadata)
    refund = json.loads(provider.refund_processed(o.provider_reference, 1_000))
    refund["data"]["customer"] = {"email": "investor@example.com", "first_name": "Ada"}
    dispute = json.loads(provider.dispute(o.provider_reference))
    dispute["data"]["messages"] = [{"sender": "investor@example.com", "body": "not me"}]
    bodies = [charge, provider.encode(refund), provider.encode(dispute)]
    for body in bodies:
        status, _ = await endpoint.provider.deliver(body)
        assert status == 200
    rows = await db.fetch(
        "SELECT body, body_sha256 FROM provider_payments"
        " UNION ALL SELECT body, body_sha256 FROM payment_adjustments"
    )
    assert [r["body_sha256"] for r in rows] == [hashlib.sha256(b).hexdigest() for b in bodies]
    for row in rows:
        assert "investor@example.com" not in row["body"]
        assert "+234" not in row["body"]
        assert "Ada" not in row["body"]
    sent = json.loads(charge)["data"]
    assert json.loads(rows[0]["body"]) == {
        "event": "charge.success",
        "data": {
            **{k: sent[k] for k in ("id", "domain", "status", "reference", "amount")},
            **{k: sent[k] for k in ("currency", "paid_at", "channel", "fees")},
            "customer": {"id": sent["customer"]["id"]},
        },
    }


async def test_the_migration_minimises_the_bodies_already_stored(stack: Services) -> None:
    """Rows written verbatim before 0005, then 0005 applied: their personal data goes."""
    admin = await asyncpg.connect(stack.database_url)
    name = f"t_mig_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(stack.database_url.rsplit("/", 1)[0] + f"/{name}")
    try:
        migrations = [sql for version, _, sql in db_module.migration_files() if version <= 5]
        for sql in migrations[:-1]:
            await conn.execute(sql)
        charge = provider.charge_success("PSK-1", 500_000).decode()
        with_nul = charge.replace('"metadata":null', '"metadata":"\\u0000"')
        assert "\\u0000" in with_nul
        for reference, body in (("PSK-1", charge), ("PSK-2", with_nul)):
            await conn.execute(
                "INSERT INTO provider_payments (provider, provider_reference, domain,"
                " amount_minor, currency, status, flag_reason, body) VALUES ('paystack', $1,"
                " 'live', 1, 'NGN', 'flagged', 'unknown_reference', $2)",
                reference,
                body,
            )
        await conn.execute(migrations[-1])
        rows = await conn.fetch("SELECT body, body_sha256 FROM provider_payments ORDER BY id")
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
    assert [r["body_sha256"] for r in rows] == [
        hashlib.sha256(b.encode()).hexdigest() for b in (charge, with_nul)
    ]
    for row in rows:
        kept = json.loads(row["body"])
        assert kept["data"]["reference"] in ("PSK-1", "PSK-2")
        assert kept["data"]["customer"] == {"id": 84312}
        assert "investor@example.com" not in row["body"]


async def test_five_sequential_deliveries_record_one_payment(
    endpoint: wh.Endpoint, db: asyncpg.Pool
) -> None:
    o = await wh.pending(db, 1)
    body = provider.charge_success(o.provider_reference, o.amount_minor)
    answers = [await endpoint.provider.deliver(body) for _ in range(5)]
    assert [s for s, _ in answers] == [200] * 5
    assert [json.loads(t)["outcome"] for _, t in answers] == ["confirmed"] + ["duplicate"] * 4
    assert await wh.counts(db) == {
        **wh.NOTHING,
        "provider_payments": 1,
        "payment_confirmations": 1,
        "outbox": 1,
    }


async def test_five_concurrent_deliveries_record_one_payment(
    endpoint: wh.Endpoint, db: asyncpg.Pool
) -> None:
    orders = [await wh.pending(db, i) for i in range(4)]
    for o in orders:  # four payments, each delivered five times at once
        body = provider.charge_success(o.provider_reference, o.amount_minor)
        answers = await wh.gather_deliveries(endpoint, body, 5)
        assert [s for s, _ in answers] == [200] * 5
        outcomes = sorted(json.loads(t)["outcome"] for _, t in answers)
        assert outcomes == ["confirmed"] + ["duplicate"] * 4
    assert await wh.counts(db) == {
        **wh.NOTHING,
        "provider_payments": 4,
        "payment_confirmations": 4,
        "outbox": 4,
    }


async def test_the_same_payment_under_concurrent_distinct_bodies_is_recorded_once(
    endpoint: wh.Endpoint, db: asyncpg.Pool
) -> None:
    """Re-deliveries need not be byte-identical: the reference decides, not the body."""
    o = await wh.pending(db, 1)
    bodies = [provider.charge_success(o.provider_reference, o.amount_minor) for _ in range(5)]
    assert len(set(bodies)) == 5  # distinct provider ids and timestamps
    answers = await asyncio.gather(*(endpoint.provider.deliver(b) for b in bodies))
    assert [s for s, _ in answers] == [200] * 5
    assert await wh.counts(db) == {
        **wh.NOTHING,
        "provider_payments": 1,
        "payment_confirmations": 1,
        "outbox": 1,
    }


async def test_a_database_failure_mid_request_answers_5xx_then_a_retry_succeeds_once(
    endpoint: wh.Endpoint, db: asyncpg.Pool
) -> None:
    """The outbox insert fails (a real PostgreSQL error) after the payment row was
    written in the same transaction: nothing of it may remain."""
    await db.execute("""
        CREATE TABLE fail_outbox (reason TEXT);
        INSERT INTO fail_outbox VALUES ('injected');
        CREATE FUNCTION fail_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM fail_outbox) THEN
                RAISE EXCEPTION 'injected failure of the outbox write';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER fail_outbox BEFORE INSERT ON outbox
            FOR EACH ROW EXECUTE FUNCTION fail_outbox();
    """)
    o = await wh.pending(db, 1)
    body = provider.charge_success(o.provider_reference, o.amount_minor)
    for _ in range(2):
        status, _ = await endpoint.provider.deliver(body)
        assert status == 500  # an unexpected error, not an outage: still retried
        assert await wh.counts(db) == wh.NOTHING
        assert await investment_status(db, o.investment_id) == "pending"
    await db.execute("DELETE FROM fail_outbox")
    retries = [await endpoint.provider.deliver(body) for _ in range(3)]
    assert [(s, json.loads(t)["outcome"]) for s, t in retries] == [
        (200, "confirmed"),
        (200, "duplicate"),
        (200, "duplicate"),
    ]
    assert await wh.counts(db) == {
        **wh.NOTHING,
        "provider_payments": 1,
        "payment_confirmations": 1,
        "outbox": 1,
    }


async def test_an_unreachable_database_answers_503_and_the_retry_succeeds(
    stack: Services, live: Settings, db: asyncpg.Pool
) -> None:
    o = await wh.pending(db, 1)
    body = provider.charge_success(o.provider_reference, o.amount_minor)
    with wh.free_socket() as closed:  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        down = live.model_copy(update={"database_url": f"postgresql://x@127.0.0.1:{port}/x"})
        async with wh.serving(down) as ep:
            status, _ = await ep.provider.deliver(body)
    assert status == 503
    assert await wh.counts(db) == wh.NOTHING
    async with wh.serving(live) as ep:
        status, text = await ep.provider.deliver(body)
    assert (status, json.loads(text)["outcome"]) == (200, "confirmed")


@pytest.mark.parametrize(
    ("reason", "charge"),
    [
        ("amount_mismatch", {"amount_minor": 499_999}),
        ("currency_mismatch", {"currency": "USD"}),
        ("domain_mismatch", {"domain": "test"}),
        ("unknown_reference", {"reference": "PSK-nobody"}),
    ],
)
async def test_mismatches_are_flagged_for_a_human_and_never_distributed(
    endpoint: wh.Endpoint, db: asyncpg.Pool, reason: str, charge: dict[str, object]
) -> None:
    o = await wh.pending(db, 1)
    terms = {"reference": o.provider_reference, "amount_minor": o.amount_minor, **charge}
    reference, amount = str(terms.pop("reference")), int(str(terms.pop("amount_minor")))
    body = provider.charge_success(reference, amount, **terms)  # type: ignore[arg-type]
    for expected in ("flagged", "duplicate"):  # a retry of a flagged payment changes nothing
        status, text = await endpoint.provider.deliver(body)
        assert (status, json.loads(text)["outcome"]) == (200, expected)
    row = await db.fetchrow("SELECT status, flag_reason, investment_id FROM provider_payments")
    assert row is not None
    assert (row["status"], row["flag_reason"]) == ("flagged", reason)
    assert row["investment_id"] == (None if reason == "unknown_reference" else o.investment_id)
    assert await wh.counts(db) == {**wh.NOTHING, "provider_payments": 1}
    assert await investment_status(db, o.investment_id) == "pending"


async def test_a_test_mode_notification_cannot_shadow_the_live_payment(
    endpoint: wh.Endpoint, db: asyncpg.Pool
) -> None:
    o = await wh.pending(db, 1)
    test = provider.charge_success(o.provider_reference, o.amount_minor, domain="test")
    live = provider.charge_success(o.provider_reference, o.amount_minor)
    outcomes = [json.loads((await endpoint.provider.deliver(b))[1]) for b in (test, live, live)]
    assert [x["outcome"] for x in outcomes] == ["flagged", "confirmed", "duplicate"]
    rows = await db.fetch("SELECT domain, status FROM provider_payments ORDER BY id")
    assert [tuple(r) for r in rows] == [("test", "flagged"), ("live", "accepted")]
    assert await wh.counts(db) == {
        **wh.NOTHING,
        "provider_payments": 2,
        "payment_confirmations": 1,
        "outbox": 1,
    }


async def test_a_payment_for_an_investment_no_longer_pending_is_flagged(
    endpoint: wh.Endpoint, db: asyncpg.Pool
) -> None:
    o = await wh.pending(db, 1)
    await db.execute("UPDATE investments SET status = 'failed' WHERE id = $1", o.investment_id)
    status, text = await endpoint.provider.deliver(
        provider.charge_success(o.provider_reference, o.amount_minor)
    )
    assert (status, json.loads(text)["outcome"]) == (200, "flagged")
    assert await db.fetchval("SELECT flag_reason FROM provider_payments") == (
        "investment_not_pending"
    )
    assert await wh.counts(db) == {**wh.NOTHING, "provider_payments": 1}


@pytest.mark.parametrize("metadata", [0, "", None, {"custom_fields": [], "investment": "x"}])
async def test_metadata_in_every_shape_paystack_sends_is_accepted(
    endpoint: wh.Endpoint, db: asyncpg.Pool, metadata: object
) -> None:
    o = await wh.pending(db, 1)
    body = provider.charge_success(o.provider_reference, o.amount_minor, metadata=metadata)
    status, text = await endpoint.provider.deliver(body)
    assert (status, json.loads(text)["outcome"]) == (200, "confirmed")
    assert await wh.counts(db) == {
        **wh.NOTHING,
        "provider_payments": 1,
        "payment_confirmations": 1,
        "outbox": 1,
    }


async def test_refunds_and_disputes_are_recorded_against_the_payment_and_alert(
    endpoint: wh.Endpoint, db: asyncpg.Pool
) -> None:
    o = await wh.pending(db, 1)
    await endpoint.provider.deliver(provider.charge_success(o.provider_reference, o.amount_minor))
    refund = provider.refund_processed(o.provider_reference, 200_000)  # amount as a string
    assert b'"amount":"200000"' in refund
    dispute = provider.dispute(o.provider_reference)
    for body, first in ((refund, "adjustment_recorded"), (dispute, "adjustment_recorded")):
        answers = [await endpoint.provider.deliver(body) for _ in range(2)]
        assert [(s, json.loads(t)["outcome"]) for s, t in answers] == [
            (200, first),
            (200, "duplicate"),
        ]
    rows = await db.fetch(
        "SELECT a.kind, a.event, a.amount_minor, a.payment_id = p.id AS linked"
        " FROM payment_adjustments a LEFT JOIN provider_payments p"
        " ON p.provider_reference = a.provider_reference ORDER BY a.id"
    )
    assert [tuple(r) for r in rows] == [
        ("refund", "refund.processed", 200_000, True),
        ("dispute", "charge.dispute.create", None, True),
    ]
    # Recorded, not acted on: the one event stays, the investment is not touched.
    assert await wh.counts(db) == {
        "provider_payments": 1,
        "payment_confirmations": 1,
        "outbox": 1,
        "payment_adjustments": 2,
    }
    assert await investment_status(db, o.investment_id) == "confirmed"


async def test_a_refund_of_a_payment_never_seen_is_still_recorded(
    endpoint: wh.Endpoint, db: asyncpg.Pool
) -> None:
    status, text = await endpoint.provider.deliver(provider.refund_processed("PSK-x", 1_000))
    assert (status, json.loads(text)["outcome"]) == (200, "adjustment_recorded")
    assert await db.fetchval("SELECT payment_id IS NULL FROM payment_adjustments") is True


@pytest.mark.parametrize(
    "event",
    [
        "transfer.success",
        "transfer.failed",
        "transfer.reversed",
        "subscription.create",
        "charge.failed",
        "paymentrequest.success",
    ],
)
async def test_other_events_answer_200_and_write_nothing(
    endpoint: wh.Endpoint, db: asyncpg.Pool, event: str
) -> None:
    await wh.pending(db, 1)
    body = provider.encode({"event": event, "data": {"reference": "PSK-1", "amount": 500_000}})
    status, text = await endpoint.provider.deliver(body)
    assert (status, json.loads(text)["outcome"]) == (200, "ignored")
    assert await wh.counts(db) == wh.NOTHING


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "HEAD"])
async def test_only_post_is_allowed(endpoint: wh.Endpoint, db: asyncpg.Pool, method: str) -> None:
    async with endpoint.session.request(method, endpoint.url) as resp:
        assert resp.status == 405
    assert await wh.counts(db) == wh.NOTHING


async def test_an_oversized_body_is_refused_before_it_is_read(
    endpoint: wh.Endpoint, db: asyncpg.Pool, live: Settings
) -> None:
    o = await wh.pending(db, 1)
    padding = "x" * live.webhook_max_body_bytes
    body = provider.charge_success(o.provider_reference, o.amount_minor, metadata=padding)
    status, _ = await endpoint.provider.deliver(body)
    assert status == 413
    assert await wh.counts(db) == wh.NOTHING


async def test_the_command_logs_alerts_and_never_secrets_or_signatures(
    live: Settings, db: asyncpg.Pool
) -> None:
    """``tokendist webhook`` as its own process, its JSON log lines read from its file."""
    with wh.free_socket() as probe:
        port = probe.getsockname()[1]
    served = live.model_copy(update={"webhook_port": port})
    proc = harness.Process(served, "--log-level", "DEBUG", "webhook")
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await harness.wait_until(lambda: wh.up(session, base), what="tokendist webhook")
            sender = Provider(f"{base}/webhooks/paystack", wh.LIVE_KEY, session)
            o = await wh.pending(db, 1)
            good = provider.charge_success(o.provider_reference, o.amount_minor)
            wrong = signature(wh.TEST_KEY.encode(), good)
            answers = [
                await sender.deliver(good, signed_as=wrong),
                await sender.deliver(good),
                await sender.deliver(provider.charge_success("PSK-unknown", 1)),
                await sender.deliver(provider.refund_processed(o.provider_reference, 1)),
                await sender.deliver(provider.encode({"event": "transfer.success", "data": {}})),
            ]
        assert [s for s, _ in answers] == [401, 200, 200, 200, 200]
    finally:
        proc.terminate()
    text = proc.tail(10_000)
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    events = {(e["event"], e.get("alert", False)) for e in lines}
    assert ("webhook_rejected", False) in events
    assert ("payment_received", False) in events
    assert ("payment_flagged", True) in events
    assert ("refund_recorded", True) in events
    assert ("webhook_event_ignored", False) in events
    for secret in (wh.LIVE_KEY, wrong, sender.sign(good), "5e5e5e5e"):
        assert secret not in text


async def test_the_event_reaches_the_chain_through_relay_and_consumer(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """The whole path once: signed webhook → outbox → Kafka → transfer → credit."""
    live = settings.model_copy(update={"paystack_secret_key": SecretStr(wh.LIVE_KEY)})
    o = wh.order(1).model_copy(update={"tokenization_id": "tok-1", "user_id": "user-0"})
    async with pool.acquire() as conn:
        await payments.register_user(conn, "user-0", harness.wallet(0))
        await create_pending_investment(conn, o)
    body = provider.charge_success(o.provider_reference, o.amount_minor)
    async with wh.serving(live) as ep, harness.relay(settings), harness.consumer(settings):
        answers = await wh.gather_deliveries(ep, body, 3)
        assert sorted(json.loads(t)["outcome"] for _, t in answers) == [
            "confirmed",
            "duplicate",
            "duplicate",
        ]
        await harness.wait_until(lambda: _credited(pool), what="the credit")
    assert await harness.paid_to(settings, tokenization) == [(harness.wallet(0).lower(), o.tokens)]
    assert await investment_status(pool, o.investment_id) == "tokens_distributed"


async def _credited(pool: asyncpg.Pool) -> bool:
    return await harness.credited(pool) == 1
