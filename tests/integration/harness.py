"""Helpers shared by integration tests: funding, running relay/consumers, waiting."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer
from eth_account import Account

from tokendist.consumer import contracts
from tokendist.consumer.chain import Chain
from tokendist.consumer.runner import Runner
from tokendist.core import kafka
from tokendist.core.settings import Settings
from tokendist.custody import LocalSigner
from tokendist.ops.deploy import Deployer, Deployment, deploy_tokenization
from tokendist.ops.payouts import read_payouts
from tokendist.ops.trex import Trex
from tokendist.ops.verify import Report, verify
from tokendist.outbox import enqueue
from tokendist.outbox.relay import Relay
from tokendist.schemas import PaymentConfirmedV1
from tokendist.sim import payments

WALLETS = [Account.create() for _ in range(64)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wallet(i: int) -> str:
    return str(WALLETS[i % len(WALLETS)].address)


async def rpc(url: str, method: str, params: list[Any]) -> Any:
    async with aiohttp.ClientSession() as session:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        async with session.post(url, json=body) as resp:
            answer = await resp.json()
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


async def fund(rpc_url: str, *addresses: str) -> None:
    for address in addresses:
        await rpc(rpc_url, "anvil_setBalance", [address, hex(10**21)])


async def fund_keys(settings: Settings, rpc_url: str) -> None:
    """Gas money for the settings' operator and deployer keys on the chain at ``rpc_url``."""
    keys = (settings.require_chain()[1], settings.require_deployer()[1])
    await fund(rpc_url, *(Account.from_key(k.get_secret_value()).address for k in keys))


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float = 60.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


@asynccontextmanager
async def running(make: Callable[[asyncio.Event], Any]) -> AsyncIterator[Any]:
    """Run ``make(stop).run()`` in a task; stop it cleanly on exit, re-raising its error."""
    stop = asyncio.Event()
    service = make(stop)
    task = asyncio.create_task(service.run())
    try:
        yield service
        if task.done():
            task.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


def relay(settings: Settings) -> Any:
    return running(lambda stop: Relay(settings, stop))


def consumer(settings: Settings) -> Any:
    return running(lambda stop: Runner(settings, stop))


async def count(pool: asyncpg.Pool, sql: str, *args: Any) -> int:
    value: int = await pool.fetchval(sql, *args)
    return value


async def credited(pool: asyncpg.Pool) -> int:
    return await count(pool, "SELECT count(*) FROM distributions WHERE state = 'credited'")


async def run_verify(settings: Settings, pool: asyncpg.Pool, grace_s: float = 0.0) -> Report:
    rpc_url, key = settings.require_chain()
    chain = Chain(rpc_url, LocalSigner(key))
    try:
        async with pool.acquire() as conn:
            return await verify(conn, chain, grace_s=grace_s)
    finally:
        await chain.close()


async def deploy(
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    tokenization_id: str = "tok-1",
    property_id: str = "prop-1",
    name: str = "Lekki Towers",
    symbol: str = "LKT",
    supply: int = 10**31,
    fund: int = 10**28,
) -> Deployment:
    """A tokenization deployed on ``settings``' chain, the operator key granted, recorded."""
    rpc_url, key = settings.require_deployer()
    _, operator_key = settings.require_chain()
    deployer = Deployer(rpc_url, key)
    try:
        async with pool.acquire() as conn:
            return await deploy_tokenization(
                deployer,
                conn,
                tokenization_id=tokenization_id,
                property_id=property_id,
                operator=Account.from_key(operator_key.get_secret_value()).address,
                name=name,
                symbol=symbol,
                decimals=18,
                supply=supply,
                fund=fund,
            )
    finally:
        await deployer.close()


async def payouts(settings: Settings, tk: Deployment) -> list[contracts.Payout]:
    """Every payout of the tokenization's Distributor, read from the chain's logs."""
    rpc_url, key = settings.require_chain()
    chain = Chain(rpc_url, LocalSigner(key))
    try:
        return await read_payouts(
            chain.w3, distributor=tk.distributor_address, token=tk.token_address
        )
    finally:
        await chain.close()


async def committed_offsets(settings: Settings) -> dict[int, int]:
    """The group's committed offset per partition (missing: nothing committed)."""
    async with kafka.Reader(settings, group=settings.consumer_group) as reader:
        result = {}
        for tp in await reader.partitions(settings.topic):
            offset = await reader.committed(tp)
            if offset is not None:
                result[tp.partition] = offset
        return result


async def end_offsets(settings: Settings, topic: str | None = None) -> dict[int, int]:
    consumer = AIOKafkaConsumer(**kafka.connection(settings))
    await consumer.start()
    try:
        tps = await kafka.partitions(consumer, topic or settings.topic)
        ends = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def read_topic(
    settings: Settings, topic: str, expected: int, timeout: float = 30
) -> list[Any]:
    """Every record of ``topic`` from the start, until ``expected`` were read."""
    consumer = AIOKafkaConsumer(
        topic,
        **kafka.connection(settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


def run_demo(*args: str, timeout: float) -> str:
    """``tokendist demo ARGS`` as a user runs it, to its end: its output. Fails the test
    when it runs past ``timeout`` seconds or exits non-zero, with the output's tail."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "tokendist.cli", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = demo.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        demo.kill()
        out, _ = demo.communicate()
        raise AssertionError(f"the demo did not finish in {timeout:g} s:\n{out[-4000:]}") from None
    assert demo.returncode == 0, out[-4000:]
    return out


class Process:
    """A ``tokendist`` subcommand as a separate OS process (for SIGKILL tests)."""

    def __init__(
        self, settings: Settings, *args: str, extra_env: dict[str, str] | None = None
    ) -> None:
        env = {**os.environ, **env_of(settings), **(extra_env or {})}
        # A file, not a pipe: nobody reads a pipe until the end, and a full one (64 KiB of
        # logs) blocks the process mid-write, which looks exactly like a stalled consumer.
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 -- lives as long as the process
            prefix=f"tokendist-{args[0]}-", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tokendist.cli", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait; a non-zero exit fails with the process's last log lines."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        if self.proc.returncode != 0:
            raise AssertionError(f"exit {self.proc.returncode}:\n{self.tail()}")
        return self.proc.returncode

    async def logged(self, event: str, timeout: float = 120) -> None:
        """Wait until the process has logged ``event`` (a constant log event name)."""

        async def seen() -> bool:
            return event in await asyncio.to_thread(self.tail, 10_000)

        await wait_until(seen, timeout=timeout, what=f"{event} in the process's log")

    def tail(self, lines: int = 15) -> str:
        with open(self.log.name, encoding="utf-8", errors="replace") as log:
            return "\n".join(log.read().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc.poll() is None


def env_of(settings: Settings) -> dict[str, str]:
    return settings.as_env()


async def confirm_payments(
    pool: asyncpg.Pool,
    tk: Deployment,
    n: int,
    *,
    users: int = 25,
    start: int = 0,
    kyc: str = "approved",
) -> dict[str, int]:
    """Confirm ``n`` payments spread over ``users`` users; returns tokens per wallet."""
    expected: dict[str, int] = {}
    async with pool.acquire() as conn:
        for u in range(users):
            await payments.register_user(conn, f"user-{u}", wallet(u), kyc)
        for i in range(start, start + n):
            u = i % users
            p = payment(tk, i, u)
            await payments.confirm(conn, p)
            expected[wallet(u)] = expected.get(wallet(u), 0) + p.tokens
    return expected


def payment(tk: Deployment, i: int, user: int, tokens: int | None = None) -> payments.Payment:
    return payments.Payment(
        user_id=f"user-{user}",
        investment_id=f"inv-{i}",
        tokenization_id=tk.tokenization_id,
        property_id=tk.property_id,
        tokens=tokens or 10**18 + i,
        amount_minor=50_000 + i,
        reference=f"PSK-{i}",
        wallet_address=wallet(user),
    )


async def pay(pool: asyncpg.Pool, p: payments.Payment, *, kyc: str = "approved") -> None:
    async with pool.acquire() as conn:
        await payments.register_user(conn, p.user_id, p.wallet_address, kyc)
        await payments.confirm(conn, p)


async def fail_credits(pool: asyncpg.Pool, of_user: str) -> None:
    """Make every credit of ``of_user``'s holdings fail with a real PostgreSQL error, until
    the row in ``fail_credit`` is deleted."""
    await pool.execute(f"""
        CREATE TABLE fail_credit (user_id TEXT);
        INSERT INTO fail_credit VALUES ('{of_user}');
        CREATE FUNCTION fail_credit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM fail_credit WHERE user_id = NEW.user_id) THEN
                RAISE EXCEPTION 'injected failure of the credit write';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER fail_credit BEFORE INSERT OR UPDATE ON token_holdings
            FOR EACH ROW EXECUTE FUNCTION fail_credit();
    """)


async def confirm_event(pool: asyncpg.Pool, event: PaymentConfirmedV1) -> None:
    """Record ``event`` as a confirmed payment (as ``outbox.enqueue`` does in the payment's
    transaction), for tests that then write it to the topic themselves."""
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, event)


async def paid_to(settings: Settings, tk: Deployment) -> list[tuple[str, int]]:
    """(recipient, amount) of every payout of the tokenization's distributor."""
    return [(p.to, p.amount) for p in await payouts(settings, tk)]


async def holding(pool: asyncpg.Pool, user: int) -> int:
    value = await pool.fetchval(
        "SELECT balance FROM token_holdings WHERE user_id = $1", f"user-{user}"
    )
    return int(value or 0)


async def state_of(pool: asyncpg.Pool, investment: str) -> str | None:
    value: str | None = await pool.fetchval(
        "SELECT state FROM distributions WHERE investment_id = $1", investment
    )
    return value


async def committed_to_end(settings: Settings) -> bool:
    """Every partition holding records has its committed offset at the end."""
    committed = await committed_offsets(settings)
    ends = await end_offsets(settings)
    return all(committed.get(p, 0) == end for p, end in ends.items())


async def top_up(settings: Settings, tk: Deployment, amount: int) -> None:
    """Move more tokens from the treasury (the deployer) into the Distributor; an
    ERC-3643 token's agent (the deployer) mints them."""
    rpc_url, key = settings.require_deployer()
    deployer = (Trex if tk.standard == "erc3643" else Deployer)(rpc_url, key)
    try:
        await deployer.fund(tk.token_address, tk.distributor_address, amount)
    finally:
        await deployer.close()
