"""``python -m bench.webhook``: how fast ``tokendist webhook`` takes valid deliveries.

The receiver runs as its own process (``tokendist webhook``, as in production, INFO
logs to a file) on a database of its own; N pending investments are created through the
checkout function, then N signed ``charge.success`` webhooks are posted by C concurrent
senders over HTTP. Each must answer 200 ``confirmed`` and leave one payment row and one
outbox row; then the same N bodies are replayed (each must answer ``duplicate``).
Prints requests/s and latency percentiles of both phases, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
from pydantic import SecretStr

from tokendist.bench import procs, sandbox
from tokendist.core.settings import Settings, SettingsError, load_settings
from tokendist.sim import provider
from tokendist.sim.demo import free_port
from tokendist.webhook import PendingInvestment, create_pending_investment

TOKENIZATION = "bench-tok"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook", description=__doc__)
    parser.add_argument("--payments", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16, help="senders in flight")
    parser.add_argument("--log-level", default="INFO", help="the receiver's log level")
    return parser.parse_args(argv)


async def prepare(url: str, n: int) -> list[bytes]:
    """N pending investments and the signed-to-be bodies that pay them."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO tokenizations (id, property_id, chain_id, token_address, decimals,"
            " distributor_address) VALUES ($1, 'bench-prop', 31337, $2, 18, $3)",
            TOKENIZATION,
            "0x" + "11" * 20,
            "0x" + "22" * 20,
        )
        bodies = []
        for i in range(n):
            order = PendingInvestment(
                investment_id=f"inv-{i}",
                user_id=f"user-{i % 100}",
                tokenization_id=TOKENIZATION,
                tokens=str(10**18 * (1 + i % 50)),
                amount_minor=50_000 + i,
                currency="NGN",
                provider_reference=f"PSK-bench-{i:07d}",
            )
            await create_pending_investment(conn, order)
            bodies.append(provider.charge_success(order.provider_reference, order.amount_minor))
        return bodies
    finally:
        await conn.close()


async def deliver_all(
    sender: provider.Provider, bodies: list[bytes], concurrency: int, expected: str
) -> tuple[float, list[float]]:
    """(seconds, per-request latencies) for delivering every body once."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            body = queue.get_nowait()
            began = time.perf_counter()
            status, text = await sender.deliver(body)
            latencies.append(time.perf_counter() - began)
            if status != 200 or f'"{expected}"' not in text:
                raise RuntimeError(f"expected 200 {expected}, got {status} {text}")

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - began, latencies


def line(phase: str, seconds: float, latencies: list[float]) -> str:
    cuts = statistics.quantiles([x * 1000 for x in latencies], n=100, method="inclusive")
    return (
        f"{phase:<22} {len(latencies) / seconds:8.1f} req/s   "
        f"p50 {cuts[49]:6.1f} ms   p95 {cuts[94]:6.1f} ms   p99 {cuts[98]:6.1f} ms   "
        f"max {max(latencies) * 1000:6.1f} ms"
    )


async def run(args: argparse.Namespace, base: Settings) -> None:
    async with sandbox.isolated_database(base.database_url) as url:
        bodies = await prepare(url, args.payments)
        port, key = free_port(), f"sk_live_{secrets.token_hex(20)}"
        settings = base.in_database(url).model_copy(
            update={
                "paystack_secret_key": SecretStr(key),
                "paystack_mode": "live",
                "webhook_host": "127.0.0.1",
                "webhook_port": port,
            }
        )
        log = Path(tempfile.gettempdir()) / f"bench-webhook-{os.getpid()}.log"
        service = procs.Service(settings, "webhook", log, args.log_level)
        try:
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=args.concurrency)
            ) as session:
                await wait_up(session, f"http://127.0.0.1:{port}", service)
                sender = provider.Provider(
                    f"http://127.0.0.1:{port}/webhooks/paystack", key, session
                )
                first = await deliver_all(sender, bodies, args.concurrency, "confirmed")
                replay = await deliver_all(sender, bodies, args.concurrency, "duplicate")
            await check_rows(url, args.payments)
            rss = service.peak_rss_kib()
        finally:
            await service.stop(30)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"tokendist webhook: {args.payments} payments, {args.concurrency} concurrent senders")
    print(line("valid deliveries", *first))
    print(line("replays (duplicates)", *replay))
    print(f"receiver peak RSS {0 if rss is None else rss // 1024} MiB; load average {load}")


async def wait_up(session: aiohttp.ClientSession, base: str, service: procs.Service) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        procs.check_alive([service])
        try:
            async with session.get(f"{base}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("tokendist webhook did not answer /healthz in 30 s")


async def check_rows(url: str, n: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        payments = await conn.fetchval("SELECT count(*) FROM provider_payments")
        outbox = await conn.fetchval("SELECT count(*) FROM outbox")
    finally:
        await conn.close()
    if payments != n or outbox != n:
        raise RuntimeError(f"expected {n} payments and outbox rows, found {payments}, {outbox}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"bench.webhook: {exc}", file=sys.stderr)
        return 2
    asyncio.run(run(args, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
