"""RPC endpoints that want credentials (issue 19): basic auth in the URL's user info, or a
header (``TOKENDIST_RPC_AUTH_HEADER``). A proxy of our own in front of anvil refuses any
request without them; the consumer pays through it, and its logs never show them."""

from __future__ import annotations

import base64
import uuid
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from pydantic import SecretStr

from tests.chainproxy import ChainProxy
from tests.integration import harness
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment

pytestmark = pytest.mark.integration

N = 4


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("way", ["basic_auth_in_url", "header"])
async def test_the_consumer_pays_through_an_endpoint_that_wants_credentials(
    settings: Settings,
    pool: asyncpg.Pool,
    tokenization: Deployment,
    capsys: pytest.CaptureFixture[str],
    way: str,
) -> None:
    assert settings.rpc_url is not None
    password = f"pw-{uuid.uuid4().hex}"
    required = ("Authorization", _basic("rpc", password))
    if way == "header":
        required = ("X-Api-Key", password)
    async with ChainProxy(settings.rpc_url, credentials=required) as proxy:
        async with aiohttp.ClientSession() as session:
            call = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
            async with session.post(proxy.url, json=call) as resp:
                assert resp.status == 401  # without credentials
        if way == "header":
            update = {"rpc_url": proxy.url, "rpc_auth_header": SecretStr(f"X-Api-Key: {password}")}
        else:
            netloc = f"rpc:{password}@{urlsplit(proxy.url).netloc}"
            update = {"rpc_url": urlunsplit(urlsplit(proxy.url)._replace(netloc=netloc))}
        s = settings.model_copy(update=update)
        expected = await harness.confirm_payments(pool, tokenization, N)
        async with harness.relay(s), harness.consumer(s):
            await harness.wait_until(lambda: _credited(pool), what="the payments credited")
    assert proxy.served["eth_sendRawTransaction"] > 0
    assert proxy.unauthorized == 1  # only the request above came without them
    paid: dict[str, int] = {}
    for p in await harness.payouts(settings, tokenization):
        paid[p.to] = paid.get(p.to, 0) + p.amount
    assert paid == {w.lower(): t for w, t in expected.items()}
    logged = capsys.readouterr()
    assert "rpc_endpoint_up" in logged.out
    assert password not in logged.out + logged.err


async def _credited(pool: asyncpg.Pool) -> bool:
    return await harness.credited(pool) == N
