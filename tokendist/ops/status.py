"""``tokendist status``: one screen of what the system is doing, read-only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from tokendist.core import db, kafka
from tokendist.core.settings import Settings
from tokendist.ops.keys import KeyInfo, Node, eth, list_keys
from tokendist.ops.repository import ToolRepository


@dataclass
class Status:
    outbox_backlog: int = 0
    outbox_published: int = 0
    outbox_oldest_s: float | None = None
    lag: dict[int, int] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)
    parked_users: int = 0
    mined_not_final: tuple[int, float] = (0, 0.0)  # batches; the oldest's wait in seconds
    parked: list[str] = field(default_factory=list)
    dlq_depth: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    retrying: list[str] = field(default_factory=list)
    distributors: list[dict[str, Any]] = field(default_factory=list)
    keys: list[KeyInfo] = field(default_factory=list)
    last_failures: list[str] = field(default_factory=list)

    def render(self) -> str:
        oldest = "-" if self.outbox_oldest_s is None else f"{self.outbox_oldest_s:.1f}s"
        lag = ", ".join(f"p{p}={n}" for p, n in sorted(self.lag.items()) if n) or "none"
        lines = [
            f"outbox        backlog {self.outbox_backlog}, oldest {oldest}, "
            f"published {self.outbox_published}",
            f"consumer lag  {sum(self.lag.values())} ({lag})",
            f"distributions {dict(sorted(self.states.items()))}",
            f"parked users  {self.parked_users} (awaiting KYC)",
            f"batches       {self.mined_not_final[0]} mined, not final"
            + (f" (oldest {self.mined_not_final[1]:.0f}s)" if self.mined_not_final[0] else ""),
            f"parked users  {self.parked_users} (payments before signing)",
            *([f"parked        {p}" for p in self.parked] or ["parked        none"]),
            f"dead letters  {self.dead_letters.get('messages', 0)} messages "
            f"({self.dlq_depth} DLQ records: a replay or a crash copies a message again; "
            f"{self.dead_letters.get('stored', 0)} the DLQ could not take, kept in PostgreSQL)",
        ]
        lines += [f"waiting       {r}" for r in self.retrying] or ["waiting       none"]
        for d in self.distributors:
            lines.append(f"distributor   {d['tokenization_id']}: {d['tokens']} token units left")
        lines += [
            f"operator key  {k.address} {k.state}: {k.inflight} batches in flight, "
            f"gas {eth(k.gas_wei)}"
            for k in self.keys
        ]
        lines += [f"last failure  {f}" for f in self.last_failures] or ["last failure  none"]
        return "\n".join(lines)


class KafkaOffsets(kafka.Reader):
    """End offsets of a topic and a group's committed offsets, without joining the group."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, group=settings.consumer_group)
        self.settings = settings

    async def ends(self, topic: str) -> dict[int, int]:
        tps = await self.partitions(topic)
        if not tps:
            return {}
        ends = await self.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}

    async def lag(self) -> dict[int, int]:
        ends = await self.ends(self.settings.topic)
        result = {}
        for partition, end in ends.items():
            committed = await self.committed(TopicPartition(self.settings.topic, partition))
            result[partition] = end - (committed or 0)
        return result


async def gather(conn: db.Connection, offsets: KafkaOffsets, node: Node | None) -> Status:
    ops = ToolRepository(conn)
    status = Status()
    row = await ops.outbox_summary()
    if row is not None:
        status.outbox_backlog, status.outbox_published = row["backlog"], row["published"]
        status.outbox_oldest_s = row["oldest_s"]
    status.states = await ops.counts()
    status.parked_users = await ops.parked_users()
    status.mined_not_final = await ops.mined_not_final()
    status.parked = [
        f"{r['reason']}: {r['payments']} payments"
        + (f" (oldest: {r['oldest_detail']})" if r["oldest_detail"] else "")
        for r in await ops.parked_reasons()
    ]
    status.lag = await offsets.lag()
    status.dlq_depth = sum((await offsets.ends(offsets.settings.dlq_topic)).values())
    topic, group = offsets.settings.topic, offsets.settings.consumer_group
    parked = await ops.dead_letter_summary(topic)
    status.dead_letters = {} if parked is None else dict(parked)
    status.retrying = [
        f"p{r['kafka_partition']} at offset {r['kafka_offset']} for {r['for_s']:.0f}s, "
        f"{r['attempts']} attempts (reported {r['reported_s']:.0f}s ago): {r['error']}"
        for r in await ops.retrying(group, topic)
    ]
    status.last_failures = [
        f"{r['updated_at']:%Y-%m-%d %H:%M:%S} {r['event_id']}: {r['failure_reason']}"
        for r in await ops.last_failures()
    ]
    status.last_failures += [
        f"{r['last_parked_at']:%Y-%m-%d %H:%M:%S} record p{r['kafka_partition']}"
        f"@{r['kafka_offset']} parked: {r['reason']}"
        for r in await ops.last_dead_letters(topic)
    ]
    if node is not None:
        for tk in await ops.tokenizations():
            tokens = await node.token_balance(tk["token_address"], tk["distributor_address"])
            status.distributors.append({"tokenization_id": tk["id"], "tokens": tokens})
        status.keys = await list_keys(ops, node)
    return status
