"""Outages of the shared services: broker, database and node restarted under load.

These restart services every other test uses, so they are marked ``disruptive`` and run
alone, after the parallel suite (see the Makefile)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.faults.stack import local_stack
from tests.integration import harness
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment

pytestmark = [pytest.mark.integration, pytest.mark.disruptive]


async def outage(service: str, *, down_s: float) -> None:
    await local_stack().ctl("stop-service", service)
    await asyncio.sleep(down_s)
    await local_stack().ctl("start-service", service)


async def test_broker_down_then_back_relay_catches_up_and_nothing_is_lost(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    n = 60
    first = await harness.confirm_payments(pool, tokenization, n // 2, users=10)
    async with harness.relay(settings), harness.consumer(settings):
        await harness.wait_until(lambda: _credited_at_least(pool, 5), what="some credits")
        stop = asyncio.create_task(outage("kafka", down_s=5))
        await asyncio.sleep(1)  # payments keep being confirmed while the broker is away
        second = await harness.confirm_payments(pool, tokenization, n // 2, users=10, start=n // 2)
        await stop
        await _all_credited(pool, n, after="the broker came back", timeout=180)
    await _each_paid_once(
        settings, pool, tokenization, n, sum(first.values()) + sum(second.values())
    )


@pytest.mark.parametrize("service", ["pg", "anvil"])
async def test_service_restart_under_load_loses_and_doubles_nothing(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment, service: str
) -> None:
    """The database, or the node (its pool is lost; the resubmitter refills it)."""
    n = 60
    expected = await harness.confirm_payments(pool, tokenization, n, users=10)
    async with harness.relay(settings), harness.consumer(settings):
        await harness.wait_until(lambda: _credited_at_least(pool, 5), what="some credits")
        await outage(service, down_s=2)
        await _all_credited(pool, n, after=f"{service} came back", timeout=180)
    await _each_paid_once(settings, pool, tokenization, n, sum(expected.values()))


async def test_a_node_restart_with_the_in_flight_cap_full_never_stalls_the_consumer(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """Found by the 200,000-event benchmark: with the cap full of submitted transactions,
    a node restart sent them into retry; events not yet signed took every in-process slot
    and waited for the cap to drain, which needed those very slots: no RPC, no progress,
    forever. Only signing waits for capacity now."""
    capped = settings.model_copy(update={"max_inflight_per_sender": 2})
    n = 40
    expected = await harness.confirm_payments(pool, tokenization, n, users=20)
    async with harness.relay(capped), harness.consumer(capped):
        await harness.wait_until(lambda: _credited_at_least(pool, 4), what="some credits")
        await outage("anvil", down_s=2)
        await _all_credited(pool, n, after="the node came back", timeout=120)
    await _each_paid_once(settings, pool, tokenization, n, sum(expected.values()))


async def _all_credited(pool: asyncpg.Pool, n: int, *, after: str, timeout: float) -> None:
    await harness.wait_until(
        lambda: _credited_at_least(pool, n),
        timeout=timeout,
        what=f"every payment credited after {after}",
    )


async def _each_paid_once(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment, n: int, tokens: int
) -> None:
    """One ``Distributed`` log per payment, the tokens confirmed, and ``verify`` green."""
    paid = await harness.paid_to(settings, tokenization)
    assert len(paid) == n
    assert sum(a for _, a in paid) == tokens
    assert (await harness.run_verify(settings, pool)).ok


async def _credited_at_least(pool: asyncpg.Pool, n: int) -> bool:
    try:
        return await harness.credited(pool) >= n
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False  # the database is the thing restarting


async def test_a_consumer_started_while_the_node_is_down_waits_for_it(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """Found by the fault runs: a member (re)started during an outage exited instead of
    waiting for the dependency, like a crash loop without a supervisor."""
    await harness.pay(pool, harness.payment(tokenization, 1, user=0, tokens=10**18))
    await local_stack().ctl("stop-service", "anvil")
    try:
        member = harness.Process(settings, "consume")
        await asyncio.sleep(4)
        assert member.alive(), member.tail()
    finally:
        await local_stack().ctl("start-service", "anvil")
    try:
        async with harness.relay(settings):
            await harness.wait_until(lambda: _credited_at_least(pool, 1), what="the credit")
    finally:
        assert member.terminate() == 0
    assert await harness.paid_to(settings, tokenization) == [(harness.wallet(0).lower(), 10**18)]
