"""The receiver's connection bounds over raw sockets (uvicorn on a free port): a client
that sends its head or body slowly, or not at all, is cut off; connections past the cap
are answered 503 at once; a client that leaves before sending its body costs no
traceback, only a count.

The bounds are set to 1 s here; each test waits up to WAIT_S for the server to act, a
deadline for a hung test, not a measurement.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from tests.integration import harness
from tests.integration import webhook_harness as wh
from tests.services import Services
from tokendist.core.settings import Settings

WAIT_S = 30
HEAD = b"POST /webhooks/paystack HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.fixture
def bounded(stack: Services, database_url: str) -> Settings:
    return wh.webhook_settings(
        database_url,
        stack.kafka_bootstrap,
        webhook_header_timeout_s=1.0,
        webhook_body_timeout_s=1.0,
        webhook_keepalive_s=60,  # longer than the others: they are what is tested
        webhook_max_connections=3,
    )


@pytest.fixture
async def endpoint(bounded: Settings) -> AsyncIterator[wh.Endpoint]:
    async with wh.serving(bounded) as ep:
        yield ep


async def connect(ep: wh.Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = ep.base.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (fails if it never does)."""
    return await asyncio.wait_for(reader.read(), WAIT_S)


async def test_a_connection_that_sends_nothing_is_closed(endpoint: wh.Endpoint) -> None:
    reader, writer = await connect(endpoint)
    assert await until_closed(reader) == b""
    writer.close()


async def test_a_half_sent_head_is_closed(endpoint: wh.Endpoint) -> None:
    reader, writer = await connect(endpoint)
    writer.write(HEAD)  # no blank line: the head never ends
    assert await until_closed(reader) == b""
    writer.close()


async def test_a_half_sent_head_after_a_keep_alive_response_is_closed(
    endpoint: wh.Endpoint,
) -> None:
    """uvicorn's keep-alive timer stops at the first byte of the next request."""
    reader, writer = await connect(endpoint)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
    writer.write(b"GET /healthz HTTP/1.1\r\n")
    assert await until_closed(reader) == b""
    writer.close()


async def test_a_slow_body_is_answered_408_and_closed(
    endpoint: wh.Endpoint, db: asyncpg.Pool
) -> None:
    reader, writer = await connect(endpoint)
    writer.write(HEAD + b"Content-Length: 1000\r\n\r\n" + b'{"event":')
    answer = await until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 408")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"error": "body_timeout"}
    writer.close()
    assert await wh.counts(db) == wh.NOTHING


async def test_a_body_still_coming_after_an_early_answer_is_closed(
    endpoint: wh.Endpoint,
) -> None:
    """A route that answers without reading the body (here 404) does not wait for it,
    however steadily it keeps coming."""
    reader, writer = await connect(endpoint)
    writer.write(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")

    async def trickle() -> None:
        for _ in range(100_000):
            writer.write(b"x")
            await asyncio.sleep(0.1)

    trickling = asyncio.create_task(trickle())
    try:
        answer = await until_closed(reader)
    finally:
        trickling.cancel()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 404")


async def test_connections_past_the_cap_are_answered_503_at_once(
    stack: Services, bounded: Settings
) -> None:
    patient = bounded.model_copy(update={"webhook_header_timeout_s": 120.0})
    async with wh.serving(patient) as ep:
        # The harness's own session holds one idle keep-alive connection: close it first.
        await ep.session.connector.close()  # type: ignore[union-attr]
        held = [await connect(ep) for _ in range(3)]
        reader, writer = await connect(ep)
        answer = await until_closed(reader)
        assert answer.startswith(b"HTTP/1.1 503")
        assert answer.endswith(b'{"error":"too_many_connections"}')
        writer.close()
        first_reader, first_writer = held[0]  # the connections within the cap still serve
        first_writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await first_reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
        for _, w in held:
            w.close()
        async with aiohttp.ClientSession() as session:  # a freed slot serves again
            await harness.wait_until(lambda: wh.up(session, ep.base), timeout=WAIT_S)


async def test_a_client_that_leaves_before_its_body_costs_no_traceback_only_a_count(
    bounded: Settings, db: asyncpg.Pool
) -> None:
    """``tokendist webhook`` as its own process: its log file and its /metrics."""
    with wh.free_socket() as a, wh.free_socket() as b:
        port, metrics_port = a.getsockname()[1], b.getsockname()[1]
    # The connection cap is not what is tested: the session's kept-alive connection and
    # a closed socket the server has not yet noticed must not make one of these a 503.
    served = bounded.model_copy(
        update={
            "webhook_port": port,
            "metrics_port": metrics_port,
            "webhook_body_timeout_s": 60,
            "webhook_max_connections": 64,
        }
    )
    proc = harness.Process(served, "webhook")
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await harness.wait_until(lambda: wh.up(session, base), what="tokendist webhook")
            for _ in range(3):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(HEAD + b"Content-Length: 5000\r\n\r\n" + b'{"event":')
                await writer.drain()
                writer.close()
                await writer.wait_closed()

            async def counted() -> bool:
                async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                    text = await resp.text()
                return 'tokendist_webhook_dropped_total{reason="client_disconnected"} 3.0' in text

            await harness.wait_until(counted, timeout=WAIT_S, what="the count")
    finally:
        proc.terminate()
    log = proc.tail(10_000)
    assert "Traceback" not in log
    assert "Exception in ASGI application" not in log
    assert await wh.counts(db) == wh.NOTHING


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()
