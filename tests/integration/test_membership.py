"""Static group membership against the real broker: a SIGKILLed member restarted with its
instance id takes its partitions back without a rebalance; a cleanly stopped static
member leaves at once (aiokafka alone would leave it in the group until the session
timeout), while a SIGKILLed one counts as live, so ``replay`` is refused, until then.

The session timeout is two minutes, far beyond each test's path (a process start, a few
credits): anything that waited for it would run into the waits' own, shorter, timeouts.
"""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration import harness
from tokendist.consumer.runner import Runner
from tokendist.core import kafka
from tokendist.core.errors import GroupActive
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment
from tokendist.ops.replay import live_members, plan_and_apply

pytestmark = pytest.mark.integration

SESSION_TIMEOUT_MS = 120_000
# Well under SESSION_TIMEOUT_MS, yet ample for a process start on a loaded machine.
WITHIN_S = 75.0


@pytest.fixture
def static(settings: Settings) -> Settings:
    return settings.model_copy(update={"session_timeout_ms": SESSION_TIMEOUT_MS})


async def test_a_killed_static_member_restarted_resumes_its_partitions_without_a_rebalance(
    static: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    in_process = static.model_copy(update={"consumer_instance_id": "member-b"})
    first = 20
    await harness.confirm_payments(pool, tokenization, first, users=first)
    member_a = harness.Process(static, "consume", "--instance-id", "member-a")
    restarted: harness.Process | None = None
    try:
        async with harness.relay(static), harness.consumer(in_process) as runner:
            await harness.wait_until(lambda: _split(static, runner), what="two members")
            await harness.wait_until(lambda: _all_done(static, pool, first), what="first")
            revocations, kept = runner.revocations, _assignment(runner)
            a_partitions = {tp.partition for tp in _all_partitions(static)} - {
                tp.partition for tp in kept
            }
            before = await harness.committed_offsets(static)

            member_a.kill()
            await harness.confirm_payments(pool, tokenization, 40, users=first, start=first)
            restarted = harness.Process(static, "consume", "--instance-id", "member-a")
            # Only member-a can credit what lies on its partitions: without static
            # membership they would wait for the dead member's session to time out.
            await harness.wait_until(
                lambda: _all_done(static, pool, first + 40), timeout=WITHIN_S, what="resumed"
            )
            assert runner.revocations == revocations, "the other member saw no rebalance"
            assert _assignment(runner) == kept
            after = await harness.committed_offsets(static)
            assert all(after[p] > before.get(p, 0) for p in a_partitions), (
                "the restarted member's partitions made progress"
            )
            assert sorted(m.split("-")[1] for m in await _member_ids(static)) == ["a", "b"]
            assert restarted.terminate() == 0
    finally:
        for process in (member_a, restarted):
            if process is not None and process.alive():
                process.kill()
    assert len(await harness.paid_to(static, tokenization)) == first + 40
    assert (await harness.run_verify(static, pool)).ok
    # Both static members stopped cleanly: both left, none lingers for the session timeout.
    assert await live_members(static, static.consumer_group) == 0


async def test_replay_waits_for_a_killed_static_member_but_not_for_a_stopped_one(
    static: Settings,
) -> None:
    member = harness.Process(static, "consume", "--instance-id", "replayed-0")
    successor: harness.Process | None = None
    try:
        await harness.wait_until(lambda: _joined(static, set()), timeout=WITHIN_S, what="join")
        killed = set(await _member_ids(static))
        member.kill()
        with pytest.raises(GroupActive, match="1 live member"):
            await plan_and_apply(static, static.consumer_group, earliest=True)
        successor = harness.Process(static, "consume", "--instance-id", "replayed-0")
        await harness.wait_until(
            lambda: _joined(static, killed), timeout=WITHIN_S, what="the id taken over"
        )
        assert successor.terminate() == 0
        moves = await plan_and_apply(static, static.consumer_group, earliest=True)
        assert {m.target for m in moves} == {0}
    finally:
        for process in (member, successor):
            if process is not None and process.alive():
                process.kill()


async def _split(settings: Settings, runner: Runner) -> bool:
    """Two members in a settled group, each with partitions of its own."""
    mine = _assignment(runner)
    return 0 < len(mine) < settings.topic_partitions and len(await _member_ids(settings)) == 2


async def _all_done(settings: Settings, pool: asyncpg.Pool, n: int) -> bool:
    return await harness.credited(pool) == n and await harness.committed_to_end(settings)


async def _joined(settings: Settings, old: set[str]) -> bool:
    """One member, other than those in ``old``, in a settled group."""
    ids = await _member_ids(settings)
    return len(ids) == 1 and not set(ids) & old


def _assignment(runner: Runner) -> frozenset[TopicPartition]:
    return frozenset() if runner.consumer is None else frozenset(runner.consumer.assignment())


def _all_partitions(settings: Settings) -> list[TopicPartition]:
    return [TopicPartition(settings.topic, p) for p in range(settings.topic_partitions)]


async def _member_ids(settings: Settings) -> list[str]:
    """Member ids of the group while it is Stable (none otherwise). A static member's id
    is its instance id followed by '-' and a fresh UUID per process."""
    admin = AIOKafkaAdminClient(**kafka.connection(settings))
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([settings.consumer_group])
    finally:
        await admin.close()
    (group,) = response.to_object()["groups"]
    if group["state"] != "Stable":
        return []
    return [str(m["member_id"]) for m in group["members"]]
