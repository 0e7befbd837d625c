"""The webhook receiver over real HTTP: a uvicorn server on a free port, a provider
stand-in that signs what it sends, and pending investments created through the API; and
the same ASGI app driven in-process (no sockets) where many requests must be cheap."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
from pydantic import SecretStr

from tests.integration import harness
from tokendist.core.settings import Settings
from tokendist.sim.provider import Provider
from tokendist.webhook import PendingInvestment, create_pending_investment
from tokendist.webhook.app import create_app
from tokendist.webhook.providers.base import PaymentProvider
from tokendist.webhook.server import WebhookServer

LIVE_KEY = "sk_live_" + "5e" * 20
TEST_KEY = "sk_test_" + "5e" * 20
TOKENIZATION = "tok-w"
PROPERTY = "prop-w"


@dataclass
class Endpoint:
    base: str
    session: aiohttp.ClientSession
    provider: Provider  # signs with the receiver's own key

    @property
    def url(self) -> str:
        return self.provider.url


def webhook_settings(database_url: str, kafka_bootstrap: str, **extra: Any) -> Settings:
    return Settings(
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        paystack_secret_key=SecretStr(LIVE_KEY),
        **extra,
    )


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serving(
    settings: Settings, *, providers: Sequence[PaymentProvider] | None = None
) -> AsyncIterator[Endpoint]:
    """A running receiver; stopped (drained) on exit."""
    sock = free_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    key = settings.require_webhook().get_secret_value()
    async with (
        harness.running(lambda stop: WebhookServer(settings, stop, sock=sock, providers=providers)),
        aiohttp.ClientSession() as session,
    ):
        await harness.wait_until(lambda: up(session, base), timeout=30, what="the receiver")
        yield Endpoint(base, session, Provider(f"{base}/webhooks/paystack", key, session))


async def up(session: aiohttp.ClientSession, base: str) -> bool:
    try:
        async with session.get(f"{base}/healthz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def add_tokenization(pool: asyncpg.Pool) -> None:
    """A tokenization row only: the receiver never touches the chain."""
    await pool.execute(
        "INSERT INTO tokenizations (id, property_id, chain_id, token_address, decimals,"
        " distributor_address) VALUES ($1, $2, 31337, $3, 18, $4) ON CONFLICT DO NOTHING",
        TOKENIZATION,
        PROPERTY,
        "0x" + "11" * 20,
        "0x" + "22" * 20,
    )


def order(i: int, *, amount_minor: int = 500_000, currency: str = "NGN") -> PendingInvestment:
    return PendingInvestment(
        investment_id=f"inv-{i}",
        user_id=f"user-{i % 7}",
        tokenization_id=TOKENIZATION,
        tokens=str(10**18 * (i + 1)),
        amount_minor=amount_minor,
        currency=currency,
        provider_reference=f"PSK-{i}",
    )


async def pending(pool: asyncpg.Pool, i: int, **terms: Any) -> PendingInvestment:
    o = order(i, **terms)
    async with pool.acquire() as conn:
        await create_pending_investment(conn, o)
    return o


async def counts(pool: asyncpg.Pool) -> dict[str, int]:
    """Rows the receiver may write, per table."""
    tables = ("provider_payments", "payment_confirmations", "outbox", "payment_adjustments")
    return {t: await harness.count(pool, f"SELECT count(*) FROM {t}") for t in tables}


NOTHING = {
    "provider_payments": 0,
    "payment_confirmations": 0,
    "outbox": 0,
    "payment_adjustments": 0,
}


async def gather_deliveries(endpoint: Endpoint, body: bytes, n: int) -> list[tuple[int, str]]:
    return list(await asyncio.gather(*(endpoint.provider.deliver(body) for _ in range(n))))


@dataclass
class InProcess:
    """Requests straight into the ASGI app: what uvicorn would pass it, minus the socket."""

    app: Any

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """The answer's status and body; an exception the app lets out is raised here."""
        raw = [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [*raw, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8088),
        }
        requests = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return requests.pop() if requests else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        return status, b"".join(
            m.get("body", b"") for m in sent if m["type"] != "http.response.start"
        )


@asynccontextmanager
async def in_process(
    settings: Settings, *, providers: Sequence[PaymentProvider] | None = None
) -> AsyncIterator[InProcess]:
    """The app with its lifespan (its database pool) running."""
    app = create_app(settings, providers=providers)
    async with app.router.lifespan_context(app):
        yield InProcess(app)
