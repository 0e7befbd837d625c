"""``tokendist demo``: the whole system on the configured services, end to end.

A fresh database, topic and consumer group per run (so a demo never mixes with earlier
ones), the contracts deployed, a relay and N consumers as separate processes, the payment
simulator feeding them, live progress every second, then a summary and verify's verdict.
Ctrl-C (or SIGTERM) stops the simulator, then the processes, cleanly.

``--standard erc3643``: the token is a T-REX suite (``ops.trex``); the investors whose
KYC is approved from the start get their on-chain identity before any payment, the late
ones when the compliance team approves them (``kyc approve``, which registers it).
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from pydantic import SecretStr

from tokendist.consumer.chain import Chain
from tokendist.core import db
from tokendist.core.settings import Settings
from tokendist.core.signals import pause
from tokendist.custody import LocalSigner
from tokendist.ops.deploy import Deployer, deploy_tokenization
from tokendist.ops.keys import Node
from tokendist.ops.kyc import approve
from tokendist.ops.status import KafkaOffsets, Status, gather
from tokendist.ops.trex import Trex, deploy_erc3643_tokenization
from tokendist.ops.verify import Report, verify
from tokendist.sim.simulator import Plan, Simulator, Tally, ThroughWebhook, demo_wallet

TOKENIZATION, PROPERTY = "lekki-towers", "lekki-towers-prop"
COUNTRY = 566  # ISO 3166-1 numeric: Nigeria, where Lekki is (ERC-3643 identities)
SUPPLY = 10**27


class Demo:
    def __init__(
        self,
        settings: Settings,
        plan: Plan,
        consumers: int,
        base_env: dict[str, str],
        log_dir: Path,
        *,
        standard: str = "erc20",
    ) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        self.name = f"tokendist_demo_{stamp}"
        self.base = settings
        self.plan = plan
        self.consumers = consumers
        self.base_env = base_env
        self.log_dir = log_dir / self.name
        self.settings = settings
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = time.monotonic()
        self.standard = standard
        self.trex: Trex | None = None  # erc3643: the deployer's T-REX side

    async def run(self, stop: asyncio.Event) -> int:
        rpc_url, operator_key = self.base.require_chain()
        self.base.require_deployer()
        dsn = await db.create_database(self.base.database_url, self.name)
        self.settings = self.base.in_database(dsn).model_copy(
            update={
                "topic": f"{self.name}.payments",
                "consumer_group": self.name,
                "topic_partitions": 8,
                # The receiver's keys exist for this run only: a test-mode Paystack key
                # that signs the simulated webhooks, and the checkout API's key.
                "paystack_secret_key": SecretStr(f"sk_test_{secrets.token_hex(20)}"),
                "paystack_mode": "test",
                "checkout_api_key": SecretStr(secrets.token_hex(20)),
                "webhook_host": "127.0.0.1",
                "webhook_port": free_port(),
            }
        )
        print(f"demo database {dsn}\nlogs in {self.log_dir}")
        async with AsyncExitStack() as stack:
            pool = await db.create_pool(dsn, max_size=8)
            stack.push_async_callback(pool.close)
            if self.standard == "erc3643":
                self.trex = Trex(*self.settings.require_deployer())
                stack.push_async_callback(self.trex.close)
            async with pool.acquire() as conn:
                await db.migrate(conn)
                await self._deploy(conn)
            chain = Chain(rpc_url, LocalSigner(operator_key))
            stack.push_async_callback(chain.close)
            offsets = await stack.enter_async_context(KafkaOffsets(self.settings))
            self._spawn_all()
            stack.callback(self._stop_all)
            session = await stack.enter_async_context(aiohttp.ClientSession())
            channel = await self._webhook(session, stop)
            simulator = Simulator(self.settings, pool, TOKENIZATION, PROPERTY, channel)
            progress = asyncio.create_task(self._progress(pool, offsets, simulator.tally))
            try:
                tally = await simulator.run(self.plan, stop)
                await self._release_parked(pool, tally, stop)
                await self._wait_quiescent(pool, offsets, tally, stop)
            finally:
                progress.cancel()
            async with pool.acquire() as conn:
                status = await gather(conn, offsets, Node(chain.w3))
                report = await verify(conn, chain, grace_s=0 if not stop.is_set() else 300)
        self._summary(tally, status, report, stopped=stop.is_set())
        return 0 if report.ok else 1

    async def _deploy(self, conn: db.Connection) -> None:
        rpc_url, deployer_key = self.settings.require_deployer()
        _, operator_key = self.settings.require_chain()
        operator = LocalSigner(operator_key).address
        token: dict[str, Any] = {
            "tokenization_id": TOKENIZATION,
            "property_id": PROPERTY,
            "operator": operator,
        }
        token |= {"name": "Lekki Towers", "symbol": "LEKKI", "decimals": 18, "supply": SUPPLY}
        if self.trex is not None:
            d = await deploy_erc3643_tokenization(self.trex, conn, country=COUNTRY, **token)
        else:
            deployer = Deployer(rpc_url, deployer_key)
            try:
                d = await deploy_tokenization(deployer, conn, **token)
            finally:
                await deployer.close()
        print(
            f"deployed token {d.token_address} ({self.standard}), "
            f"distributor {d.distributor_address}"
        )
        if self.trex is not None:
            await self._identities(conn, self.trex)

    async def _identities(self, conn: db.Connection, trex: Trex) -> None:
        """The investors approved from the start: their ONCHAINID, KYC claim and
        registration, as ``kyc approve`` makes them, before any payment arrives."""
        verified = [u for u in range(self.plan.users) if not self.plan.kyc_pending(u)]
        for u in verified:
            wallet = demo_wallet(self.plan.seed, u)
            await approve(conn, f"investor-{u}", wallet, trex=trex, country=COUNTRY)
        print(f"{len(verified)} investors' identities registered on-chain (country {COUNTRY})")

    def _spawn_all(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**self.base_env, **self.settings.as_env()}
        roles = ["webhook", "relay"] + [f"consume-{i}" for i in range(1, self.consumers + 1)]
        for role in roles:
            command = role.split("-")[0]
            # Static membership, an id per consumer: two sharing one would fence each other.
            args = ["--instance-id", role] if command == "consume" else []
            with (self.log_dir / f"{role}.log").open("wb") as out:
                self.procs.append(
                    subprocess.Popen(  # noqa: S603 -- our own CLI, fixed arguments
                        [sys.executable, "-m", "tokendist.cli", command, *args],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        print(
            f"started relay and {self.consumers} consumers and the webhook receiver (pids "
            f"{', '.join(str(p.pid) for p in self.procs)})"
        )

    async def _webhook(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> ThroughWebhook:
        """The payment service's channel: the receiver, once it answers."""
        base = f"http://127.0.0.1:{self.settings.webhook_port}"
        deadline = time.monotonic() + 30
        while not stop.is_set():
            try:
                async with session.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
            await pause(stop, 0.2)
        print(f"payments arrive as signed Paystack webhooks at {base}/webhooks/paystack")
        return ThroughWebhook(base, self.settings, session)

    def _stop_all(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    async def _release_parked(self, pool: asyncpg.Pool, tally: Tally, stop: asyncio.Event) -> None:
        """The compliance team approves the unverified investors a little later."""
        await pause(stop, 3)
        released = 0
        async with pool.acquire() as conn:
            for user in sorted(tally.unverified_users):
                released += await approve(conn, user, None, trex=self.trex, country=COUNTRY)
        print(
            f"KYC approved {len(tally.unverified_users)} investors; "
            f"{released} parked payments re-driven"
        )

    async def _wait_quiescent(
        self, pool: asyncpg.Pool, offsets: KafkaOffsets, tally: Tally, stop: asyncio.Event
    ) -> None:
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            async with pool.acquire() as conn:
                status = await gather(conn, offsets, None)
            done = status.states.get("credited", 0) + status.states.get("failed", 0)
            if (
                done >= tally.confirmed
                and not status.outbox_backlog
                and not sum(status.lag.values())
            ):
                return
            await pause(stop, 1)

    async def _progress(self, pool: asyncpg.Pool, offsets: KafkaOffsets, tally: Tally) -> None:
        while True:
            await asyncio.sleep(1)
            async with pool.acquire() as conn:
                s = await gather(conn, offsets, None)
            on_chain = sum(s.states.get(k, 0) for k in ("confirmed", "credited"))
            print(
                f"[{time.monotonic() - self.started:5.0f}s] confirmed {tally.confirmed:4d} | "
                f"published {s.outbox_published:4d} | on-chain {on_chain:4d} | "
                f"credited {s.states.get('credited', 0):4d} | "
                f"parked {s.states.get('awaiting_kyc', 0):3d} | DLQ {s.dlq_depth:3d} | "
                f"lag {sum(s.lag.values()):3d}",
                flush=True,
            )

    def _summary(self, tally: Tally, status: Status, report: Report, *, stopped: bool) -> None:
        rows = [
            ("payments confirmed (unique)", tally.confirmed),
            ("webhook re-deliveries (deduplicated)", tally.duplicates),
            ("malformed messages sent", tally.invalid),
            ("  → in the dead-letter topic", status.dlq_depth),
            (
                f"investors verified late (parked, released; {self.standard})",
                len(tally.unverified_users),
            ),
            ("distributions credited", status.states.get("credited", 0)),
            ("distributions failed", status.states.get("failed", 0)),
            ("tokens distributed (whole tokens)", tally.tokens // 10**18),
            ("elapsed seconds", round(time.monotonic() - self.started)),
        ]
        width = max(len(r[0]) for r in rows)
        print("\n" + ("stopped early: " if stopped else "") + "summary")
        for label, value in rows:
            print(f"  {label:<{width}}  {value:>10}")
        print("\ntokendist verify\n" + report.render())


def free_port() -> int:
    """A loopback port free now (probed and released: the child process binds it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
