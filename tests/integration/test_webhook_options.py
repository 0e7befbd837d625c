"""The receiver's options over real HTTP: the sender allowlist (and whom it believes about
X-Forwarded-For), the Verify Transaction API played by a local HTTP server, and the
checkout API that creates pending investments."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from tests.integration import webhook_harness as wh
from tests.services import Services
from tokendist.core.settings import Settings
from tokendist.sim import provider

PAYSTACK_IP = "52.31.139.75"


@pytest.fixture
async def db(stack: Services, database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    await wh.add_tokenization(pool)
    yield pool
    await pool.close()


MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(stack: Services, database_url: str) -> MakeSettings:
    return lambda **extra: wh.webhook_settings(database_url, stack.kafka_bootstrap, **extra)


# ---------------------------------------------------------------- sender allowlist


@pytest.mark.parametrize(
    ("proxies", "forwarded_for", "status"),
    [
        ("", None, 403),  # 127.0.0.1 is not Paystack
        ("", PAYSTACK_IP, 403),  # anyone can write the header: not believed
        ("127.0.0.1", PAYSTACK_IP, 200),  # our proxy says who connected to it
        ("127.0.0.1", f"{PAYSTACK_IP}, 10.9.9.9", 403),  # the hop our proxy saw is 10.9.9.9
        ("127.0.0.0/8", f"1.2.3.4, {PAYSTACK_IP}", 200),  # a forged left part is ignored
        ("127.0.0.1", "not-an-ip", 403),
    ],
)
async def test_the_sender_allowlist_believes_forwarded_for_only_from_trusted_proxies(
    make_settings: MakeSettings,
    db: asyncpg.Pool,
    proxies: str,
    forwarded_for: str | None,
    status: int,
) -> None:
    s = make_settings(
        webhook_allowed_ips="52.31.139.75,52.49.173.169,52.214.14.220",
        webhook_trusted_proxies=proxies,
    )
    o = await wh.pending(db, 1)
    headers = {} if forwarded_for is None else {"x-forwarded-for": forwarded_for}
    async with wh.serving(s) as ep:
        got, _ = await ep.provider.deliver(
            provider.charge_success(o.provider_reference, o.amount_minor), headers=headers
        )
    assert got == status
    assert await wh.counts(db) == (
        wh.NOTHING
        if status == 403
        else {**wh.NOTHING, "provider_payments": 1, "payment_confirmations": 1, "outbox": 1}
    )


# ---------------------------------------------------------------- Verify Transaction API


@dataclass
class FakePaystack:
    """A small HTTP server answering GET /transaction/verify/{reference}."""

    answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    seen: list[tuple[str, str]] = field(default_factory=list)  # (reference, authorization)

    async def verify(self, request: web.Request) -> web.Response:
        reference = request.match_info["reference"]
        self.seen.append((reference, request.headers.get("Authorization", "")))
        status, doc = self.answers.get(reference, (404, {"status": False}))
        return web.json_response(doc, status=status)


@pytest.fixture
async def fake_paystack() -> AsyncIterator[tuple[str, FakePaystack]]:
    fake = FakePaystack()
    app = web.Application()
    app.router.add_get("/transaction/verify/{reference}", fake.verify)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = wh.free_socket()
    site = web.SockSite(runner, sock)
    await site.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", fake
    await runner.cleanup()


def verified(status: str, amount: int | str, currency: str = "NGN") -> tuple[int, dict[str, Any]]:
    # The outer "status" is the API call's; the payment's is data.status.
    return 200, {"status": True, "data": {"status": status, "amount": amount, "currency": currency}}


@pytest.mark.parametrize(
    ("answer", "expect"),
    [
        (verified("success", 500_000), (200, "confirmed", None)),
        (verified("abandoned", 500_000), (200, "flagged", "not_verified")),
        (verified("success", 400_000), (200, "flagged", "not_verified")),
        (verified("success", 500_000, "USD"), (200, "flagged", "not_verified")),
        (
            (404, {"status": False, "message": "Transaction reference not found"}),
            (200, "flagged", "not_verified"),
        ),
        ((500, {"status": False}), (503, None, None)),  # ask again later: nothing written
    ],
    ids=["success", "abandoned", "other_amount", "other_currency", "not_found", "api_down"],
)
async def test_the_optional_verify_call_decides_with_data_status_amount_and_currency(
    make_settings: MakeSettings,
    db: asyncpg.Pool,
    fake_paystack: tuple[str, FakePaystack],
    answer: tuple[int, dict[str, Any]],
    expect: tuple[int, str | None, str | None],
) -> None:
    url, fake = fake_paystack
    fake.answers["PSK-1"] = answer
    http, outcome, flag = expect
    s = make_settings(paystack_verify=True, paystack_api_url=url)
    o = await wh.pending(db, 1)
    async with wh.serving(s) as ep:
        status, text = await ep.provider.deliver(
            provider.charge_success(o.provider_reference, o.amount_minor)
        )
    assert status == http
    assert fake.seen == [("PSK-1", f"Bearer {wh.LIVE_KEY}")]
    if outcome is None:
        assert await wh.counts(db) == wh.NOTHING
        return
    assert json.loads(text)["outcome"] == outcome
    assert await db.fetchval("SELECT flag_reason FROM provider_payments") == flag
    events = 1 if flag is None else 0
    assert await wh.counts(db) == {
        **wh.NOTHING,
        "provider_payments": 1,
        "payment_confirmations": events,
        "outbox": events,
    }


# ---------------------------------------------------------------- checkout API

API_KEY = "checkout-key-" + "7" * 20


async def post_investment(
    ep: wh.Endpoint, doc: dict[str, Any], key: str | None = API_KEY
) -> tuple[int, dict[str, Any]]:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    async with ep.session.post(f"{ep.base}/investments", json=doc, headers=headers) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text.startswith("{") else {"text": text}


async def test_the_checkout_api_creates_pending_investments_idempotently(
    make_settings: MakeSettings, db: asyncpg.Pool
) -> None:
    s = make_settings(checkout_api_key=API_KEY)
    doc = wh.order(1).model_dump(mode="json")
    async with wh.serving(s) as ep:
        assert await post_investment(ep, doc) == (
            201,
            {"investment_id": "inv-1", "status": "pending", "created": True},
        )
        assert (await post_investment(ep, doc))[0] == 200  # the platform retried
        assert (await post_investment(ep, {**doc, "amount_minor": 1}))[0] == 409
        assert (await post_investment(ep, {**doc, "investment_id": "inv-2"}))[0] == 409
        assert (await post_investment(ep, {**doc, "tokenization_id": "nope"}))[0] == 422
        assert (await post_investment(ep, {**doc, "tokens": 10}))[0] == 422  # not a string
        assert (await post_investment(ep, {**doc, "amount_minor": "5"}))[0] == 422
        assert (await post_investment(ep, {**doc, "extra": 1}))[0] == 422
        assert (await post_investment(ep, doc, key="wrong"))[0] == 401
        assert (await post_investment(ep, doc, key=None))[0] == 401
        # ...and the webhook confirms what the API created.
        status, text = await ep.provider.deliver(provider.charge_success("PSK-1", 500_000))
        assert (status, json.loads(text)["outcome"]) == (200, "confirmed")
    row = await db.fetchrow("SELECT status, amount_minor, tokens_requested FROM investments")
    assert row is not None
    assert tuple(row) == ("confirmed", 500_000, 10**18 * 2)
    assert await db.fetchval("SELECT kyc_status FROM users WHERE id = 'user-1'") == "pending"


async def post_raw(ep: wh.Endpoint, body: bytes, authorization: str) -> int:
    headers = {"Authorization": authorization, "content-type": "application/json"}
    async with ep.session.post(f"{ep.base}/investments", data=body, headers=headers) as resp:
        return resp.status


async def test_a_refused_checkout_writes_nothing_not_even_the_new_user(
    make_settings: MakeSettings, db: asyncpg.Pool
) -> None:
    s = make_settings(checkout_api_key=API_KEY)
    doc = wh.order(1).model_dump(mode="json")
    async with wh.serving(s) as ep:
        assert (await post_investment(ep, doc))[0] == 201
        users = await db.fetchval("SELECT count(*) FROM users")
        for taken in ({"user_id": "user-new"}, {"investment_id": "inv-9", "user_id": "user-n2"}):
            status, answer = await post_investment(ep, {**doc, **taken})
            assert (status, answer["error"]) == (409, "conflict")
        assert await db.fetchval("SELECT count(*) FROM users") == users
        assert await db.fetchval("SELECT count(*) FROM investments") == 1


@pytest.mark.parametrize(
    "authorization",
    [API_KEY, f"Token {API_KEY}", f"Bearer{API_KEY}", f"Bearer  {API_KEY}", f"{API_KEY} Bearer"],
)
async def test_the_checkout_key_counts_only_as_a_bearer_token(
    make_settings: MakeSettings, db: asyncpg.Pool, authorization: str
) -> None:
    body = json.dumps(wh.order(1).model_dump(mode="json")).encode()
    async with wh.serving(make_settings(checkout_api_key=API_KEY)) as ep:
        assert await post_raw(ep, body, authorization) == 401
        assert await post_raw(ep, body, f"bearer {API_KEY}") == 201  # the scheme is caseless
    assert await db.fetchval("SELECT count(*) FROM investments") == 1


async def test_a_checkout_body_with_a_duplicate_key_is_refused(
    make_settings: MakeSettings, db: asyncpg.Pool
) -> None:
    body = json.dumps(wh.order(1).model_dump(mode="json"))
    twice = body[:-1] + ', "amount_minor": 1}'
    async with wh.serving(make_settings(checkout_api_key=API_KEY)) as ep:
        assert await post_raw(ep, twice.encode(), f"Bearer {API_KEY}") == 422
    assert await db.fetchval("SELECT count(*) FROM investments") == 0


async def test_without_an_api_key_there_is_no_checkout_endpoint(
    make_settings: MakeSettings, db: asyncpg.Pool
) -> None:
    async with wh.serving(make_settings()) as ep:
        status, _ = await post_investment(ep, wh.order(1).model_dump(mode="json"))
    assert status == 404
    assert await db.fetchval("SELECT count(*) FROM investments") == 0
