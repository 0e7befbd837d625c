"""The faults. Each one is an async function of the run's context and its *own* rng:
faults run concurrently with the payment stream, so sharing one rng would make the
draws depend on timing and a replayed seed would do something else.

Every fault that takes something down brings it back in ``finally``: when the run
reaches its checks, every service is up and the fleet is restored to its healthy size.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import time
from collections.abc import Awaitable, Callable

from tests.faults import kafkaops
from tests.faults.context import Ctx
from tests.faults.members import Member
from tests.faults.retry import retrying
from tests.integration import harness
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


DROPPABLE = """
SELECT t.tx_hash FROM chain_transactions t JOIN distributions d USING (event_id)
WHERE d.state IN ('signed', 'submitted')
"""


async def drop_tx(ctx: Ctx, rng: random.Random) -> None:
    """Evict our pending transactions from the node's pool, as a node restart or a full
    pool does: only a re-broadcast of the stored bytes gets them mined."""
    deadline = time.monotonic() + rng.uniform(1.5, 4.0)
    dropped: set[str] = set()
    while time.monotonic() < deadline:
        rows = await retrying(lambda: ctx.world.pool.fetch(DROPPABLE), what="pending txs")
        for row in rows:
            if row["tx_hash"] not in dropped and await ctx.stack.rpc(
                "anvil_dropTransaction", row["tx_hash"]
            ):
                dropped.add(row["tx_hash"])
        await asyncio.sleep(0.05)
    ctx.metrics["txs_dropped"] += len(dropped)
    ctx.note(f"{len(dropped)} pending transactions dropped from the pool")


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


# Refused by simulation (TokenTransferFailed) or reverted on chain after a sibling
# transfer drained the Distributor first.
OUT_OF_TOKENS = """
SELECT count(*) FROM distributions WHERE state = 'failed'
  AND (failure_reason LIKE '%TokenTransferFailed%' OR failure_reason LIKE 'reverted: tx%')
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
    "drop_tx": drop_tx,
    "stuck_underpriced": stuck_underpriced,
    "out_of_tokens": out_of_tokens,
}
THREE_BROKERS_ONLY = frozenset({"kill_broker"})
LATE = frozenset({"out_of_tokens"})  # needs the fund drained first
ONCE = frozenset({"out_of_tokens"})  # a property of the deployment, not an event


def available(brokers: int) -> list[str]:
    return [k for k in FAULTS if brokers == 3 or k not in THREE_BROKERS_ONLY]
