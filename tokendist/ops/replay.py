"""``tokendist replay``: move a stopped consumer group's offsets for recovery.

Targets: the earliest offset, a timestamp, or explicit per-partition offsets; or a fresh
group starting from the earliest offset. A group with live members is refused: moving
offsets under running consumers is undefined (they would commit over it). Replaying is
always safe for money: every event id already processed is a no-op (``already_done``).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import TopicPartition

from tokendist.core import kafka
from tokendist.core.errors import GroupActive, InvalidInput
from tokendist.core.settings import Settings


@dataclass(frozen=True)
class Move:
    partition: int
    committed: int | None
    target: int
    end: int

    @property
    def reprocessed(self) -> int:
        """Records that will be read again (or skipped, when moving forward: negative)."""
        return (self.committed if self.committed is not None else self.target) - self.target


async def live_members(settings: Settings, group: str) -> int:
    admin = kafka.admin(settings)
    await kafka.start(admin)
    try:
        return await kafka.group_members(admin, group)
    finally:
        await admin.close()


async def plan_and_apply(
    settings: Settings,
    group: str,
    *,
    earliest: bool = False,
    timestamp_ms: int | None = None,
    offsets: dict[int, int] | None = None,
    dry_run: bool = False,
) -> list[Move]:
    if (members := await live_members(settings, group)) and not dry_run:
        raise GroupActive(
            f"consumer group {group} has {members} live member(s): stop every "
            "`tokendist consume` of this group first (or replay into a fresh group)"
        )
    async with kafka.Reader(settings, group=group) as client:
        tps = await client.partitions(settings.topic)
        if not tps:
            raise InvalidInput(f"topic {settings.topic} has no partitions (does it exist?)")
        targets = await _targets(client, tps, earliest, timestamp_ms, offsets)
        ends = await client.end_offsets(tps)
        moves = [
            Move(tp.partition, await client.committed(tp), targets[tp], ends[tp]) for tp in tps
        ]
        if not dry_run:
            client.assign(tps)
            await client.commit(targets)
        return moves


async def _targets(
    client: kafka.Reader,
    tps: list[TopicPartition],
    earliest: bool,
    timestamp_ms: int | None,
    offsets: dict[int, int] | None,
) -> dict[TopicPartition, int]:
    if earliest:
        return await client.beginning_offsets(tps)
    if timestamp_ms is not None:
        found = await client.offsets_for_times({tp: timestamp_ms for tp in tps})
        ends = await client.end_offsets(tps)
        return {tp: ends[tp] if (at := found[tp]) is None else at for tp in tps}
    assert offsets is not None
    unknown = set(offsets) - {tp.partition for tp in tps}
    if unknown:
        raise InvalidInput(f"no such partitions: {sorted(unknown)}")
    starts, ends = await client.beginning_offsets(tps), await client.end_offsets(tps)
    outside = [
        f"{tp.partition}:{offsets[tp.partition]} (has {starts[tp]}..{ends[tp]})"
        for tp in tps
        if tp.partition in offsets and not starts[tp] <= offsets[tp.partition] <= ends[tp]
    ]
    if outside:
        raise InvalidInput(f"offsets outside their partition: {', '.join(outside)}")
    current = {tp: await client.committed(tp) for tp in tps}
    return {tp: offsets.get(tp.partition, current[tp] or 0) for tp in tps}


def render(group: str, moves: list[Move], *, dry_run: bool) -> str:
    verb = "would move" if dry_run else "moved"
    lines = [f"group {group}: {verb} offsets"]
    for m in moves:
        lines.append(
            f"  partition {m.partition}: {m.committed} -> {m.target} "
            f"(end {m.end}; {m.reprocessed:+d} records to read again)"
        )
    total = sum(max(0, m.reprocessed) for m in moves)
    lines.append(
        f"{total} records will be read again; each already processed event is a "
        "no-op (same event id): no transaction is sent twice"
    )
    return "\n".join(lines)
