"""The faults. Each one is an async function of the run's context and its *own* rng:
faults run concurrently with the payment stream, so sharing one rng would make the
draws depend on timing and a replayed seed would do something else.

Every fault that takes something down brings it back in ``finally``: when the run
reaches its checks, every service is up and the fleet is restored to its healthy size.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.faults import kafkaops
from tests.faults.context import Ctx
from tests.faults.members import Member
from tests.faults.retry import retrying
from tests.integration import harness
from tokendist.consumer import contracts
from tokendist.consumer.chain import Chain
from tokendist.custody import LocalSigner
from tokendist.ops.redrive import redrive_failed

Fault = Callable[[Ctx, random.Random], Awaitable[None]]

# Places the consumer can be made to SIGKILL itself (tokendist/failpoints.py).
FAILPOINTS = (
    "after:signed",
    "after:submitted",
    "after:confirmed",
    "after:credited",
    "after:awaiting_kyc",
    "before:offset_commit",
)
GWEI = 10**9
PINNED_BASE_FEE = 50 * GWEI
CHEAP_CAP = 10 * GWEI  # below the pinned base fee: the node refuses such a transaction


async def kill_consumer(ctx: Ctx, rng: random.Random) -> None:
    await _kill_and_replace(ctx, rng, ctx.fleet.consumers, ctx.fleet.start_consumer, 3)


async def _kill_and_replace(
    ctx: Ctx, rng: random.Random, members: list[Member], start: Callable[[], Member], down_s: float
) -> None:
    """SIGKILL one of ``members`` (starting one first if there is none), and start its
    replacement up to ``down_s`` later."""
    if not members:
        start()
    victim = rng.choice(members)
    down = rng.uniform(0, down_s)
    await ctx.fleet.kill(victim)
    ctx.note(f"SIGKILL {victim.name}; a replacement starts in {down:.1f}s")
    await asyncio.sleep(down)
    start()


async def crash_at_failpoint(ctx: Ctx, rng: random.Random) -> None:
    """A member that SIGKILLs itself at an exact step of the state machine, the windows a
    random kill rarely hits (signed but not broadcast, credited but not committed...)."""
    point = rng.choice(FAILPOINTS)
    crasher = ctx.fleet.start_other("fp", extra_env={"TOKENDIST_FAILPOINTS": point})
    crasher.stopped_by_us = True  # dying is its job
    # It may never get there: no event of its partitions reached that step in time.
    with contextlib.suppress(subprocess.TimeoutExpired):
        await asyncio.to_thread(crasher.proc.wait, 10)
    died = not crasher.alive()
    ctx.metrics["failpoint_crashes"] += died
    ctx.note(f"{crasher.name} armed with {point}: {'died there' if died else 'not reached'}")
    await ctx.fleet.kill(crasher)


async def kill_relay(ctx: Ctx, rng: random.Random) -> None:
    await _kill_and_replace(ctx, rng, ctx.fleet.relays, ctx.fleet.start_relay, 2)


async def rebalance_storm(ctx: Ctx, rng: random.Random) -> None:
    """Members join and leave (cleanly or not) faster than the group settles."""
    for _ in range(rng.randint(2, 5)):
        roll = rng.random()
        if roll < 0.45 or len(ctx.fleet.consumers) <= 1:
            member = ctx.fleet.start_consumer()
            ctx.note(f"storm: {member.name} joins")
        else:
            member = rng.choice(ctx.fleet.consumers)
            if roll < 0.8:
                await ctx.fleet.stop(member)
                ctx.note(f"storm: {member.name} leaves (SIGTERM)")
            else:
                await ctx.fleet.kill(member)
                ctx.note(f"storm: {member.name} dies (SIGKILL)")
        await asyncio.sleep(rng.uniform(0.3, 2.0))


async def duplicate_confirm(ctx: Ctx, rng: random.Random) -> None:
    """The provider delivers one payment's webhook many times at once."""
    payment = rng.choice(ctx.workload.payments)
    copies = rng.randint(3, 8)
    await ctx.workload.deliver(ctx.world.pool, payment, copies)
    ctx.metrics["duplicate_deliveries"] += copies - 1
    ctx.note(f"{payment.investment_id} confirmed {copies} times concurrently")


async def duplicate_messages(ctx: Ctx, rng: random.Random) -> None:
    sent = await retrying(
        lambda: kafkaops.reproduce(ctx.world.settings, rng), what="re-produce records"
    )
    ctx.metrics["records_reproduced"] += sent
    ctx.note(f"{sent} copies of records already on the topic produced again")


async def replay_fresh_group(ctx: Ctx, rng: random.Random) -> None:
    """A consumer in a brand-new group reads the topic from the start, racing the group."""
    group = f"{ctx.world.settings.consumer_group}.replay{len(ctx.replay_groups)}"
    settings = ctx.world.settings.model_copy(update={"consumer_group": group})
    member = ctx.fleet.start_replayer(settings)
    ctx.replay_groups.append(group)
    ctx.note(f"{member.name} replays the topic from the start in fresh group {group}")


async def rewind_group(ctx: Ctx, rng: random.Random) -> None:
    """Stop the group, commit its offsets back to the earliest, start it again."""
    group = ctx.world.settings.consumer_group
    restart = max(1, len(ctx.fleet.consumers))
    members = [*ctx.fleet.consumers]
    members += [m for m in ctx.fleet.others if m.settings.consumer_group == group]
    await asyncio.gather(*(ctx.fleet.stop(m) for m in members))
    try:
        await kafkaops.rewind_group(ctx.world.settings)
        ctx.note(f"group stopped ({len(members)} members) and rewound to the earliest offsets")
    finally:
        for _ in range(restart):
            ctx.fleet.start_consumer()


async def _outage(ctx: Ctx, rng: random.Random, service: str) -> None:
    down = rng.uniform(0.5, 3.0)
    await ctx.stack.ctl("stop-service", service)
    ctx.note(f"{service} stopped for {down:.1f}s")
    try:
        await asyncio.sleep(down)
    finally:
        await ctx.stack.ctl("start-service", service)
        ctx.note(f"{service} back")


async def restart_pg(ctx: Ctx, rng: random.Random) -> None:
    await _outage(ctx, rng, "pg")


async def restart_kafka(ctx: Ctx, rng: random.Random) -> None:
    await _outage(ctx, rng, "kafka")


async def restart_anvil(ctx: Ctx, rng: random.Random) -> None:
    await _outage(ctx, rng, "anvil")


async def kill_broker(ctx: Ctx, rng: random.Random) -> None:
    node = str(rng.randint(1, ctx.stack.brokers))
    down = rng.uniform(1.0, 5.0)
    await ctx.stack.ctl("kill-broker", node)
    ctx.note(f"broker {node} SIGKILLed for {down:.1f}s")
    try:
        await asyncio.sleep(down)
    finally:
        await ctx.stack.ctl("start-broker", node)
        ctx.note(f"broker {node} back")


# Every attempt of every batch in flight, lowest nonce of each key first.
DROPPABLE = """
SELECT t.tx_hash, t.sender, t.nonce FROM chain_transactions t JOIN batches b ON b.id = t.batch_id
WHERE b.state IN ('signed', 'submitted')
ORDER BY t.sender, t.nonce
"""


async def drop_batch(ctx: Ctx, rng: random.Random) -> None:
    """Evict our pending batches from the node's pool, as a node restart or a full pool
    does: only a re-broadcast of the stored bytes gets them mined."""
    deadline = time.monotonic() + rng.uniform(1.5, 4.0)
    dropped: set[str] = set()
    while time.monotonic() < deadline:
        rows = await retrying(lambda: ctx.world.pool.fetch(DROPPABLE), what="pending batches")
        for row in rows:
            if row["tx_hash"] not in dropped and await ctx.stack.rpc(
                "anvil_dropTransaction", row["tx_hash"]
            ):
                dropped.add(row["tx_hash"])
        await asyncio.sleep(0.05)
    ctx.metrics["txs_dropped"] += len(dropped)
    ctx.note(f"{len(dropped)} pending batch transactions dropped from the pool")


async def stuck_key(ctx: Ctx, rng: random.Random) -> None:
    """One key's lowest pending batch dropped from the pool, its later ones left there: a
    nonce gap that holds every later batch of that key (and only that key) until the
    resubmitter re-broadcasts the stored bytes."""
    key = rng.choice(ctx.world.operators)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = await retrying(lambda: ctx.world.pool.fetch(DROPPABLE), what="pending batches")
        mine = [r for r in rows if r["sender"] == key]
        if mine and await ctx.stack.rpc("anvil_dropTransaction", mine[0]["tx_hash"]):
            ctx.metrics["txs_dropped"] += 1
            ctx.note(f"key {key}: nonce {mine[0]['nonce']} dropped, later batches held behind")
            return
        await asyncio.sleep(0.05)
    ctx.note(f"key {key}: no pending batch to drop")


# A payment signed into a batch that is not mined yet, with what its batch pays it.
PENDING_PAYMENT = """
SELECT d.payment_id, d.payment_index, d.recipient, d.tokens, b.distributor_address
FROM distributions d JOIN batches b ON b.id = d.batch_id
WHERE d.state IN ('signed', 'submitted') AND b.state IN ('signed', 'submitted')
ORDER BY random() LIMIT 1
"""


async def already_paid(ctx: Ctx, rng: random.Random) -> None:
    """Another operator of the Distributor pays a payment the consumers have signed into a
    batch, under the same index, before that batch is mined: the batch meets a payment an
    earlier transaction already paid. It must skip it (``AlreadyPaid``), and the payment
    must be confirmed by the earlier payout and credited once."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        row = await retrying(lambda: ctx.world.pool.fetchrow(PENDING_PAYMENT), what="a payment")
        if row is not None:
            tx_hash = await _pay_behind_the_back(ctx, row)
            ctx.metrics["paid_behind_the_back"] += 1
            ctx.note(f"payment {row['payment_id'][:12]}… paid first by the nemesis ({tx_hash})")
            return
        await asyncio.sleep(0.05)
    ctx.note("no payment in a pending batch to pay first")


async def _pay_behind_the_back(ctx: Ctx, row: Any) -> str:
    chain = Chain(ctx.stack.rpc_url, LocalSigner(ctx.world.nemesis_key))
    try:
        await chain.chain_id()
        data = contracts.batch_calldata(
            int(row["payment_index"]),
            [(bytes.fromhex(row["payment_id"][2:]), row["recipient"], int(row["tokens"]))],
        )
        signed = await chain.sign(
            to=row["distributor_address"],
            data=data,
            gas=300_000,
            nonce=await chain.nonce(pending=True),
            max_fee=1_000 * GWEI,
            priority_fee=100 * GWEI,  # ahead of the consumers' batch in the next block
        )
        await chain.send_raw(signed.raw)
        return signed.tx_hash
    finally:
        await chain.close()


async def remove_key(ctx: Ctx, rng: random.Random) -> None:
    """An operator removes one key of the pool mid-run (``tokendist keys remove``: drain,
    then revoke its role), then adds it back: the other key goes on paying, the removed
    key's batches are finished first, nothing is lost or paid twice."""
    key = rng.choice(ctx.world.operators)
    removed = await _keys(ctx, "remove", key, "--wait", "60")
    ctx.note(f"keys remove {key}: exit {removed}")
    await asyncio.sleep(rng.uniform(1.0, 4.0))
    added = await _keys(ctx, "add", key)
    ctx.note(f"keys add {key}: exit {added}")


async def _keys(ctx: Ctx, *args: str) -> int:
    env = {**os.environ, **ctx.world.settings.as_env()}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tokendist.cli", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return done.returncode


async def stuck_underpriced(ctx: Ctx, rng: random.Random) -> None:
    """A member capped below the base fee signs transactions the node refuses; their nonces
    block every later one until another member's resubmitter fee-bumps them."""
    cheap = ctx.fleet.start_other("cheap", extra_env={"TOKENDIST_MAX_FEE_WEI": str(CHEAP_CAP)})
    pin_s = ctx.world.settings.fee_bump_after_s + rng.uniform(3.0, 6.0)
    ctx.note(f"{cheap.name} capped at {CHEAP_CAP} wei; base fee pinned for {pin_s:.1f}s")
    try:
        deadline = time.monotonic() + pin_s
        while time.monotonic() < deadline:
            # anvil lowers the base fee 12.5 % per empty block: keep setting it.
            await ctx.stack.rpc("anvil_setNextBlockBaseFeePerGas", hex(PINNED_BASE_FEE))
            await asyncio.sleep(0.15)
    finally:
        await ctx.fleet.stop(cheap)
        ctx.note(f"{cheap.name} stopped; base fee released")


# The newest block holding one of our batches, mined but not final yet.
MINED_BATCH = "SELECT max(block_number) FROM batches WHERE state = 'mined'"


async def reorg(ctx: Ctx, rng: random.Random) -> None:
    """A reorganisation 1 to k - 1 blocks deep (k: the consumers' finality rule, so it
    comes before finality) once one of our batches is in those blocks: ``anvil_reorg``
    (the blocks replaced by empty ones) or ``anvil_rollback`` (the blocks gone). anvil
    does not put their transactions back in its pool: only the consumers' sending the
    same bytes again gets them mined. Blocks holding anyone else's transaction (a
    top-up, a role grant, the nemesis's own payment) are left alone: losing those would
    fail the run for the test's sake, not the consumers'."""
    depth = rng.randint(1, ctx.world.settings.finality_rule.confirmations - 1)
    how = rng.choice(("anvil_reorg", "anvil_rollback"))
    operators = {o.lower() for o in ctx.world.operators}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        mined = await retrying(lambda: ctx.world.pool.fetchval(MINED_BATCH), what="a batch")
        head = int(await ctx.stack.rpc("eth_blockNumber"), 16)
        if mined is not None and mined > head - depth:
            blocks = [
                await ctx.stack.rpc("eth_getBlockByNumber", hex(n), True)
                for n in range(head - depth + 1, head + 1)
            ]
            senders = {tx["from"].lower() for b in blocks if b for tx in b["transactions"]}
            if senders <= operators:
                params = [depth, []] if how == "anvil_reorg" else [depth]
                try:
                    await ctx.stack.rpc(how, *params)
                except RuntimeError as exc:
                    # A restarted anvil keeps its state, not the blocks before the restart.
                    if "Required data unavailable" not in str(exc):
                        raise
                    ctx.note(f"{how} {depth} blocks from {head}: anvil restarted since")
                    return
                ctx.metrics["reorgs"] += 1
                ctx.note(f"{how} {depth} blocks from {head}: our batch of block {mined} out")
                return
        await asyncio.sleep(0.05)
    ctx.note(f"no batch mined in the last {depth} blocks to reorganise away")


async def top_up_and_redrive(ctx: Ctx) -> None:
    if not ctx.topped_up:
        await harness.top_up(ctx.world.settings, ctx.world.deployment, ctx.workload.total_tokens())
        ctx.topped_up = True
    await redrive_now(ctx)


async def redrive_now(ctx: Ctx) -> int:
    async def redrive() -> int:
        async with ctx.world.pool.acquire() as conn:
            return await redrive_failed(conn, None)

    count = await retrying(redrive, what="redrive")
    ctx.metrics["redriven"] += count
    if count:
        ctx.note(f"{count} failed distributions re-driven")
    return count


# Refused by simulation (the token's ERC20InsufficientBalance) or reverted on chain
# after another batch drained the Distributor first.
OUT_OF_TOKENS = """
SELECT count(*) FROM distributions WHERE state = 'failed'
  AND (failure_reason LIKE '%ERC20InsufficientBalance%' OR failure_reason LIKE 'reverted: batch%')
"""


async def out_of_tokens(ctx: Ctx, rng: random.Random) -> None:
    """The Distributor was funded short: wait to see a payment fail for it, top up from
    the treasury, re-drive the failures."""
    deadline = time.monotonic() + 20
    failed = 0
    while time.monotonic() < deadline:
        failed = await retrying(lambda: ctx.world.pool.fetchval(OUT_OF_TOKENS), what="failures")
        if failed:
            break
        await asyncio.sleep(0.3)
    ctx.metrics["out_of_tokens_failures"] += failed
    ctx.note(f"{failed} distributions failed for lack of tokens; topping up")
    await top_up_and_redrive(ctx)


FAULTS: dict[str, Fault] = {
    "kill_consumer": kill_consumer,
    "crash_at_failpoint": crash_at_failpoint,
    "kill_relay": kill_relay,
    "rebalance_storm": rebalance_storm,
    "duplicate_confirm": duplicate_confirm,
    "duplicate_messages": duplicate_messages,
    "replay_fresh_group": replay_fresh_group,
    "rewind_group": rewind_group,
    "restart_pg": restart_pg,
    "restart_kafka": restart_kafka,
    "kill_broker": kill_broker,
    "restart_anvil": restart_anvil,
    "drop_batch": drop_batch,
    "stuck_key": stuck_key,
    "stuck_underpriced": stuck_underpriced,
    "already_paid": already_paid,
    "remove_key": remove_key,
    "out_of_tokens": out_of_tokens,
    "reorg": reorg,
}
THREE_BROKERS_ONLY = frozenset({"kill_broker"})
LATE = frozenset({"out_of_tokens"})  # needs the fund drained first
ONCE = frozenset({"out_of_tokens"})  # a property of the deployment, not an event


def available(brokers: int) -> list[str]:
    return [k for k in FAULTS if brokers == 3 or k not in THREE_BROKERS_ONLY]
