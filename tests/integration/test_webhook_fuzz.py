"""Property-based fuzzing of the receiver's boundaries, in-process against a real
PostgreSQL database: any signed webhook body, any provider in the route, any checkout
request.

For every input: no exception escapes the app, the status is one of a defined set, the
answer is JSON naming an outcome or an error, and a refusal writes nothing (the row
counts of every table the app writes are unchanged). Each test prints how many cases ran.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from tests.integration import webhook_harness as wh
from tests.services import Services
from tokendist.sim import provider
from tokendist.webhook.paystack import SIGNATURE_HEADER, signature

WEBHOOK_CASES = 2000
CHECKOUT_CASES = 2000
ROUTE_CASES = 300
API_KEY = "checkout-key-" + "9" * 20
REFERENCES = [f"PSK-{i}" for i in range(4)]  # pending investments of 500000 NGN
TABLES = (
    "provider_payments",
    "payment_confirmations",
    "outbox",
    "payment_adjustments",
    "investments",
    "users",
)
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@pytest.fixture
def app(stack: Services, database_url: str) -> Iterator[tuple[asyncio.Runner, wh.InProcess, Any]]:
    """The app and a pool on the test's database, on a loop of their own: hypothesis runs
    each example synchronously, so each one is ``runner.run`` of a coroutine."""
    s = wh.webhook_settings(
        database_url, stack.kafka_bootstrap, checkout_api_key=SecretStr(API_KEY)
    )
    with asyncio.Runner() as runner:
        pool = runner.run(seed(database_url))
        serving = wh.in_process(s)
        client = runner.run(serving.__aenter__())
        try:
            yield runner, client, pool
        finally:
            runner.run(serving.__aexit__(None, None, None))
            runner.run(pool.close())


async def seed(database_url: str) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    await wh.add_tokenization(pool)
    for i in range(len(REFERENCES)):
        await wh.pending(pool, i)
    return pool


async def row_counts(pool: asyncpg.Pool) -> dict[str, int]:
    sql = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in TABLES)
    row = await pool.fetchrow(sql)
    assert row is not None
    return dict(row)


# ---------------------------------------------------------------- what to send

ODD = ["", "\x00", "a\x00b", "\ud800", "\udfff", "é", "\n", " PSK-1", "PSK-1\n", "x" * 200]
texts = st.text(st.characters() | st.sampled_from(["\x00", "\ud800", "\udfff"]), max_size=12)
odd_text = texts | st.sampled_from(ODD)
integers = (
    st.integers(-(2**70), 2**70)
    | st.sampled_from([0, -1, 500_000, 2**53, 2**63 - 1, 2**63, 2**64])
    | st.integers(10**31, 10**40)
)
scalars = st.none() | st.booleans() | integers | st.floats(allow_nan=False) | odd_text
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3),
    max_leaves=12,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The field's value, or left out of the document (``...``)."""
    return st.just(...) | strategy


@st.composite
def mutated(
    draw: st.DrawFn,
    valid: dict[str, st.SearchStrategy[Any]],
    odd: dict[str, st.SearchStrategy[Any]],
) -> dict[str, Any]:
    """A document of valid values with up to two fields made odd or left out."""
    doc = {key: draw(value) for key, value in valid.items()}
    for key in draw(st.lists(st.sampled_from(sorted(odd)), max_size=2, unique=True)):
        value = draw(maybe(odd[key]))
        if value is ...:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


references = st.sampled_from(REFERENCES)
amounts = integers | st.integers(1, 10**6).map(str) | st.sampled_from(["9" * 19, "9" * 5000])
data = mutated(
    {
        "reference": references,
        "transaction_reference": references,
        "transaction": references.map(lambda r: {"reference": r}),
        "amount": st.sampled_from([500_000, 499_999, "200000"]),
        "currency": st.sampled_from(["NGN", "NGN", "USD"]),
        "domain": st.sampled_from(["live", "live", "test"]),
        "paid_at": st.just("2026-01-01T00:00:00Z"),
        "customer": st.just({"id": 1, "email": "investor@example.com"}),
        "metadata": values,
    },
    {
        "reference": odd_text | values,
        "transaction_reference": odd_text | values,
        "transaction": values,
        "amount": amounts | values,
        "currency": odd_text | values,
        "domain": odd_text | values,
        "paid_at": st.sampled_from(["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
        | odd_text,
    },
)
payloads = mutated(
    {
        "event": st.sampled_from(
            ["charge.success", "refund.processed", "charge.dispute.create", "transfer.success"]
        ),
        "data": data,
    },
    {"event": odd_text | values, "data": values},
)


def pairs_json(pairs: list[tuple[str, str]]) -> str:
    """An object from (key, JSON value) pairs, duplicates kept as written."""
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}"


@st.composite
def duplicated(draw: st.DrawFn) -> bytes:
    """A charge whose data repeats a key (``amount`` twice: "last one wins")."""
    data = [
        ("reference", json.dumps(draw(st.sampled_from(REFERENCES)))),
        ("amount", "500000"),
        ("currency", '"NGN"'),
        ("domain", '"live"'),
    ]
    key, _ = draw(st.sampled_from(data))
    data.insert(draw(st.integers(0, len(data))), (key, json.dumps(draw(scalars))))
    return pairs_json([("event", '"charge.success"'), ("data", pairs_json(data))]).encode()


@st.composite
def textual(draw: st.DrawFn) -> bytes:
    """What json.dumps cannot produce: endless integers, deep nesting."""
    digits = "9" * draw(st.integers(1, 6000))
    depth = draw(st.integers(1, 20_000))
    nest = draw(st.sampled_from([("[" * depth, "]" * depth), ('{"a":' * depth, "}" * depth)]))
    inner = draw(st.sampled_from(["1", "[]", digits]))
    return draw(
        st.sampled_from(
            [
                '{"event":"charge.success","data":{"reference":"PSK-1","amount":'
                + digits
                + ',"currency":"NGN","domain":"live"}}',
                '{"event":"refund.processed","data":{"transaction_reference":"PSK-1",'
                + f'"amount":"{digits}"}}}}',
                '{"event":"charge.success","data":{"metadata":' + nest[0] + inner + nest[1] + "}}",
                nest[0] + inner + nest[1],
            ]
        )
    ).encode()


webhook_bodies = (
    payloads.map(lambda d: json.dumps(d).encode())
    | values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
    | duplicated()
    | textual()
)


# ---------------------------------------------------------------- the properties

WEBHOOK_STATUSES = {200, 400, 413}
OUTCOMES = {"confirmed", "duplicate", "flagged", "adjustment_recorded", "ignored"}


def test_any_signed_webhook_body_gets_a_defined_answer_and_refusals_write_nothing(
    app: tuple[asyncio.Runner, wh.InProcess, asyncpg.Pool],
) -> None:
    runner, client, pool = app
    seen: Counter[str] = Counter()

    async def check(body: bytes) -> None:
        before = await row_counts(pool)
        headers = {SIGNATURE_HEADER: signature(wh.LIVE_KEY.encode(), body)}
        status, text = await client.post("/webhooks/paystack", body, headers)
        assert status in WEBHOOK_STATUSES, (status, text)
        answer = json.loads(text)
        if status == 200:
            assert answer["outcome"] in OUTCOMES
            seen[answer["outcome"]] += 1
        else:
            assert isinstance(answer["error"], str)
            seen[answer["error"]] += 1
        if status != 200 or answer["outcome"] in ("duplicate", "ignored"):
            assert await row_counts(pool) == before

    @settings(FUZZ, max_examples=WEBHOOK_CASES)
    @given(body=webhook_bodies)
    def case(body: bytes) -> None:
        runner.run(check(body))

    case()
    print(f"webhook fuzz: {sum(seen.values())} cases; {dict(seen)}")  # noqa: T201 -- reported
    assert sum(seen.values()) >= WEBHOOK_CASES // 2
    assert seen["confirmed"] + seen["flagged"] > 0  # the fuzz reached the database


# Any route segment but an enabled provider's (a slash would make it another route).
segments = st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1).filter(
    lambda segment: segment != "paystack"
)


def test_any_other_provider_segment_is_404_unknown_provider_and_writes_nothing(
    app: tuple[asyncio.Runner, wh.InProcess, asyncpg.Pool],
) -> None:
    runner, client, pool = app
    body = provider.charge_success(REFERENCES[0], 500_000)
    headers = {SIGNATURE_HEADER: signature(wh.LIVE_KEY.encode(), body)}
    before = runner.run(row_counts(pool))
    ran = 0

    async def check(segment: str) -> None:
        status, text = await client.post(f"/webhooks/{segment}", body, headers)
        assert (status, json.loads(text)) == (404, {"error": "unknown_provider"}), segment

    @settings(FUZZ, max_examples=ROUTE_CASES)
    @given(segment=segments)
    def case(segment: str) -> None:
        nonlocal ran
        ran += 1
        runner.run(check(segment))

    case()
    print(f"route fuzz: {ran} cases")  # noqa: T201 -- reported
    assert ran >= ROUTE_CASES // 2
    assert runner.run(row_counts(pool)) == before


orders = mutated(
    {
        "investment_id": st.sampled_from(["inv-0", "inv-1"])
        | st.integers(0, 10**6).map(lambda n: f"inv-f{n}"),
        "user_id": st.sampled_from(["user-0", "user-1"])
        | st.integers(0, 10**6).map(lambda n: f"user-f{n}"),
        "tokenization_id": st.just(wh.TOKENIZATION),
        "tokens": st.just(str(10**18)),
        "amount_minor": st.just(500_000),
        "currency": st.just("NGN"),
        "provider_reference": references | st.integers(0, 10**6).map(lambda n: f"PSK-f{n}"),
    },
    {
        "investment_id": odd_text | values,
        "user_id": odd_text | values,
        "tokenization_id": st.just("nope") | odd_text | values,
        "tokens": st.sampled_from(["0", "01", "9" * 80, "9" * 5000]) | values,
        "amount_minor": integers | odd_text | values,
        "currency": odd_text | values,
        "provider_reference": odd_text | values,
        "provider": st.sampled_from(["paystack", "other_psp"]) | odd_text | values,
        "extra": values,
    },
)
authorizations = st.sampled_from(
    [f"Bearer {API_KEY}", f"bearer {API_KEY}", API_KEY, f"Bearer {API_KEY}x", "Bearer", ""]
) | st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=40)
checkout_bodies = (
    orders.map(lambda d: json.dumps(d).encode())
    | values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
    | textual()
    | duplicated()
)
CHECKOUT_STATUSES = {200, 201, 401, 409, 413, 422}


def test_any_checkout_request_gets_a_defined_answer_and_refusals_write_nothing(
    app: tuple[asyncio.Runner, wh.InProcess, asyncpg.Pool],
) -> None:
    runner, client, pool = app
    seen: Counter[int] = Counter()

    async def check(body: bytes, authorization: str) -> None:
        before = await row_counts(pool)
        headers = {"authorization": authorization, "content-type": "application/json"}
        status, text = await client.post("/investments", body, headers)
        assert status in CHECKOUT_STATUSES, (status, text)
        answer = json.loads(text)
        seen[status] += 1
        after = await row_counts(pool)
        if status == 201:
            assert answer["created"] is True
            assert after["investments"] == before["investments"] + 1
        else:
            assert status == 200 or isinstance(answer["error"], str)
            assert after == before

    @settings(FUZZ, max_examples=CHECKOUT_CASES)
    @given(body=checkout_bodies, authorization=st.just(f"Bearer {API_KEY}") | authorizations)
    def case(body: bytes, authorization: str) -> None:
        runner.run(check(body, authorization))

    case()
    print(f"checkout fuzz: {sum(seen.values())} cases; {dict(seen)}")  # noqa: T201 -- reported
    assert sum(seen.values()) >= CHECKOUT_CASES // 2
    assert seen[201] > 0  # the fuzz reached the database...
    assert seen[409] > 0  # ...and its refusals


def test_the_provider_stand_in_still_sends_what_the_fuzz_starts_from() -> None:
    doc = json.loads(provider.charge_success("PSK-1", 500_000))
    assert doc["data"]["customer"]["email"] == "investor@example.com"
