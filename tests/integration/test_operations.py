"""Operating it: reconcile beside live consumers, replay modes, DLQ re-drive, status,
metrics and health, and the demo command a new user runs first."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from eth_account import Account
from pydantic import SecretStr

from tests.integration import harness
from tokendist.consumer import contracts
from tokendist.consumer.chain import Chain
from tokendist.consumer.repository import Repository
from tokendist.core import kafka
from tokendist.core.errors import GroupActive, KeyRejected
from tokendist.core.settings import Settings
from tokendist.custody import LocalSigner
from tokendist.ops import dlq_admin
from tokendist.ops.deploy import Deployment
from tokendist.ops.keys import Node
from tokendist.ops.reconcile import Reconciler
from tokendist.ops.replay import plan_and_apply
from tokendist.ops.repository import ToolRepository
from tokendist.ops.status import KafkaOffsets, gather

pytestmark = pytest.mark.integration


def reconciler(settings: Settings, pool: asyncpg.Pool) -> tuple[Reconciler, Chain]:
    chain = Chain(settings.require_rpc(), LocalSigner(settings.require_chain()[1]))
    rec = Reconciler(Repository(pool), ToolRepository(pool), chain, settings.chain_check())
    return rec, chain


async def credited_is(pool: asyncpg.Pool, n: int) -> bool:
    return await harness.credited(pool) == n


async def test_reconcile_in_a_loop_beside_live_consumers_never_duplicates(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """Defect 5 of the investigation, with grace 0: reconcile races the consumer on
    every in-flight row it can see."""
    n = 80
    expected = await harness.confirm_payments(pool, tokenization, n, users=8)
    rec, chain = reconciler(settings, pool)
    rounds = 0
    try:
        async with harness.relay(settings), harness.consumer(settings):
            while await harness.credited(pool) < n:
                await rec.run(grace_s=0)
                rounds += 1
    finally:
        await chain.close()
    assert rounds > 1
    paid = await harness.paid_to(settings, tokenization)
    assert len(paid) == n
    assert sum(a for _, a in paid) == sum(expected.values())
    assert await harness.count(pool, "SELECT count(*) FROM ledger_entries") == 2 * n
    assert (await harness.run_verify(settings, pool)).ok


async def test_reconcile_credits_what_the_chain_confirmed_and_redrives_lost_events(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    await harness.pay(pool, harness.payment(tokenization, 1, user=0, tokens=10**18))
    async with harness.relay(settings):
        crashing = harness.Process(
            settings, "consume", extra_env={"TOKENDIST_FAILPOINTS": "after:confirmed"}
        )
        await asyncio.to_thread(crashing.proc.wait, 60)
    assert await harness.state_of(pool, "inv-1") == "confirmed"
    # A second payment whose outbox row is lost before any relay saw it.
    await harness.pay(pool, harness.payment(tokenization, 2, user=1, tokens=2 * 10**18))
    await pool.execute("DELETE FROM outbox WHERE published_at IS NULL")
    rec, chain = reconciler(settings, pool)
    try:
        dry = await rec.run(grace_s=0, dry_run=True)
        assert (len(dry.credited), len(dry.redriven)) == (1, 1)
        assert await harness.state_of(pool, "inv-1") == "confirmed", "dry run changed nothing"
        done = await rec.run(grace_s=0)
        assert (len(done.credited), len(done.redriven)) == (1, 1)
    finally:
        await chain.close()
    assert await harness.state_of(pool, "inv-1") == "credited"
    assert await harness.holding(pool, 0) == 10**18
    async with harness.relay(settings), harness.consumer(settings):
        await harness.wait_until(lambda: credited_is(pool, 2), what="re-driven payment")
        await harness.wait_until(lambda: harness.committed_to_end(settings), what="all read")
    assert sorted(await harness.paid_to(settings, tokenization)) == sorted(
        [(harness.wallet(0).lower(), 10**18), (harness.wallet(1).lower(), 2 * 10**18)]
    )
    assert (await harness.run_verify(settings, pool)).ok


async def test_replay_refuses_a_live_group_and_every_mode_pays_nobody_twice(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    n = 20
    await harness.confirm_payments(pool, tokenization, n, users=4)
    async with harness.relay(settings), harness.consumer(settings):
        await harness.wait_until(lambda: credited_is(pool, n), what="first pass")
        await harness.wait_until(lambda: harness.committed_to_end(settings), what="commits")
        with pytest.raises(GroupActive, match="live member"):
            await plan_and_apply(settings, settings.consumer_group, earliest=True)
    txs = await harness.count(pool, "SELECT count(*) FROM chain_transactions")
    ends = await harness.end_offsets(settings)
    group = settings.consumer_group
    dry = await plan_and_apply(settings, group, earliest=True, dry_run=True)
    assert sum(m.reprocessed for m in dry) == n
    assert await harness.committed_offsets(settings) == {p: e for p, e in ends.items() if e}
    await plan_and_apply(settings, group, timestamp_ms=int(datetime.now(UTC).timestamp() * 1000))
    assert await harness.committed_offsets(settings) == ends, "a time after every record: ends"
    busiest = max(ends, key=lambda p: ends[p])
    await plan_and_apply(settings, group, offsets={busiest: 1})
    assert (await harness.committed_offsets(settings))[busiest] == 1
    await plan_and_apply(settings, group, earliest=True)
    fresh = settings.model_copy(update={"consumer_group": group + ".fresh"})
    await plan_and_apply(fresh, fresh.consumer_group, earliest=True)
    async with harness.consumer(settings), harness.consumer(fresh):
        await harness.wait_until(lambda: harness.committed_to_end(settings), what="replay")
        await harness.wait_until(lambda: harness.committed_to_end(fresh), what="fresh group")
    assert await harness.count(pool, "SELECT count(*) FROM chain_transactions") == txs
    assert len(await harness.paid_to(settings, tokenization)) == n
    assert (await harness.run_verify(settings, pool)).ok


async def test_dlq_list_and_redrive_after_the_fix(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """An event for a tokenization not yet recorded is parked; once the tokenization is
    known, re-driving it from the DLQ pays it (and re-driving twice pays once)."""
    p = harness.payment(tokenization, 1, user=0, tokens=10**18)
    event = p.event().model_copy(
        update={"data": p.event().data.model_copy(update={"tokenization_id": "tok-late"})}
    )
    await harness.confirm_event(pool, event)
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO users VALUES ('user-0','approved',$1)", p.wallet_address)
    producer = AIOKafkaProducer(**kafka.connection(settings))
    async with harness.consumer(settings):
        await producer.start()
        try:
            await producer.send_and_wait(settings.topic, event.to_json(), key=b"user-0")
            await producer.send_and_wait(settings.topic, b"garbage", key=b"user-0")
        finally:
            await producer.stop()
        await harness.wait_until(lambda: harness.committed_to_end(settings), what="parking")
        parked = await dlq_admin.read_all(settings)
        assert [x.meta["dlq.reason"] for x in parked] == ["unknown_tokenization", "malformed_json"]
        assert "tok-late" in parked[0].summary()
        await pool.execute(
            "INSERT INTO tokenizations SELECT 'tok-late', property_id, chain_id, token_address,"
            " decimals, distributor_address FROM tokenizations WHERE id = $1",
            tokenization.tokenization_id,
        )
        chosen = dlq_admin.select(parked, positions=[], reason="unknown_tokenization")
        assert await dlq_admin.redrive(settings, chosen) == 1
        assert await dlq_admin.redrive(settings, chosen) == 1
        await harness.wait_until(lambda: credited_is(pool, 1), what="the re-driven credit")
        await harness.wait_until(lambda: harness.committed_to_end(settings), what="all read")
    assert await harness.paid_to(settings, tokenization) == [(harness.wallet(0).lower(), 10**18)]
    assert len(await dlq_admin.read_all(settings)) == 2, "nothing new was parked"


async def test_status_metrics_and_health_report_what_happened(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    n = 12
    await harness.confirm_payments(pool, tokenization, n, users=3)
    port = harness.free_port()
    async with harness.relay(settings):
        member = harness.Process(
            settings, "consume", extra_env={"TOKENDIST_METRICS_PORT": str(port)}
        )
        try:
            await harness.wait_until(lambda: credited_is(pool, n), what="credits")
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                    assert r.status == 200
                async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                    assert r.status == 200
                async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                    body = await r.text()
        finally:
            member.terminate()
    assert f'tokendist_events_total{{outcome="credited"}} {float(n)}' in body
    assert "tokendist_end_to_end_seconds_count" in body
    assert "tokendist_inflight_transactions" in body
    node = Node.connect(settings.require_chain()[0])
    try:
        async with pool.acquire() as conn, KafkaOffsets(settings) as offsets:
            status = await gather(conn, offsets, node)
    finally:
        await node.close()
    assert status.states == {"credited": n}
    assert sum(status.lag.values()) == 0
    assert status.outbox_backlog == 0
    assert status.distributors[0]["tokens"] == 10**28 - sum(10**18 + i for i in range(n))
    assert "distributions {'credited': 12}" in status.render()
    assert "batches       0 mined, not final\n" in status.render()
    operator = Account.from_key(settings.require_chain()[1].get_secret_value()).address
    assert [(k.address, k.state, k.inflight) for k in status.keys] == [(operator, "active", 0)]
    assert f"operator key  {operator} active: 0 batches in flight, gas " in status.render()


def test_the_demo_runs_to_a_green_verify(stack: object) -> None:
    """The README's first command for a new user, end to end, as a user runs it."""
    out = harness.run_demo("--payments", "40", "--rate", "40", "--users", "10", timeout=180)
    assert "verdict: all invariants hold" in out
    assert "payments confirmed (unique)" in out


def test_ctrl_c_stops_the_demo_and_everything_it_started(stack: object) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "tokendist.cli", "demo", "--payments", "400", "--rate", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    pids: list[int] = []
    for line in demo.stdout:
        if "started relay and" in line:
            pids = [int(p) for p in line.split("pids ")[1].rstrip(")\n").split(", ")]
        if pids and "confirmed" in line and "| published" in line:
            break  # the system is running and reporting progress
    demo.send_signal(signal.SIGINT)
    out, _ = demo.communicate(timeout=120)
    assert demo.returncode in (0, 1), out[-3000:]
    assert "stopped early: summary" in out
    assert len(pids) == 4  # the webhook receiver, the relay and two consumers
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # all of them are gone, not orphaned


async def test_rotating_the_operator_key_as_the_runbook_says(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    await harness.pay(pool, harness.payment(tokenization, 1, user=0, tokens=10**18))
    async with harness.relay(settings), harness.consumer(settings):
        await harness.wait_until(lambda: credited_is(pool, 1), what="paid by the old key")
    new = Account.create()
    await harness.fund(settings.rpc_url or "", new.address)
    rotate = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "tokendist.cli",
            "chain",
            "rotate-operator",
            "--tokenization-id",
            tokenization.tokenization_id,
            "--new-operator",
            new.address,
        ],
        env={**os.environ, **settings.as_env()},
        capture_output=True,
        text=True,
        check=False,
    )
    assert rotate.returncode == 0, rotate.stderr
    rotated = settings.model_copy(update={"operator_key": SecretStr(new.key.hex())})
    old = Chain(settings.require_rpc(), LocalSigner(settings.require_chain()[1]))
    try:
        data = contracts.batch_calldata(
            10**9, [(contracts.payment_id("probe"), harness.wallet(2), 1)]
        )
        with pytest.raises(KeyRejected, match="AccessControlUnauthorizedAccount"):
            await old.estimate(tokenization.distributor_address, data)
    finally:
        await old.close()
    await harness.pay(pool, harness.payment(tokenization, 2, user=1, tokens=2 * 10**18))
    async with harness.relay(rotated), harness.consumer(rotated):
        await harness.wait_until(lambda: credited_is(pool, 2), what="paid by the new key")
    assert sorted(await harness.paid_to(settings, tokenization)) == sorted(
        [(harness.wallet(0).lower(), 10**18), (harness.wallet(1).lower(), 2 * 10**18)]
    )
    assert (await harness.run_verify(rotated, pool)).ok
