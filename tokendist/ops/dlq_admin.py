"""``tokendist dlq list | redrive``: inspect the dead-letter topic and send chosen
messages back to their original topic after a fix. A re-driven message goes through full
validation again; if it is still bad it returns to the DLQ with its (new) reason.

A DLQ record that only points to PostgreSQL (the original was too large for the DLQ, see
``consumer.dlq``) is re-driven with the original's bytes, read back from ``dead_letters``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tokendist.consumer.dlq import STORED_HEADER, STORED_IN, headers_from_json
from tokendist.core import db, kafka
from tokendist.core.errors import InvalidInput
from tokendist.core.settings import Settings
from tokendist.ops.repository import ToolRepository
from tokendist.schemas.events import MAX_EVENT_BYTES

SUMMARY_CHARS = 80
# An event is two objects deep; json.loads recurses once per level, so a dead letter
# nested thousands deep (one of the things a DLQ exists to hold) is not handed to it.
MAX_SUMMARY_DEPTH = 8
# An original kept in PostgreSQL fitted its topic: give it the room it had there.
MAX_REDRIVE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Parked:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @property
    def meta(self) -> dict[str, str]:
        return kafka.header_map(self.headers)

    @property
    def stored(self) -> bool:
        """Whether this record only points to its original, kept in PostgreSQL."""
        return self.meta.get(STORED_HEADER) == STORED_IN

    @property
    def origin(self) -> tuple[str, int, int] | None:
        """(topic, partition, offset) of the parked original; one message parked several
        times (a replay, a crash before the commit) has several records, one origin."""
        m = self.meta
        try:
            return (
                m["dlq.original.topic"],
                int(m["dlq.original.partition"]),
                int(m["dlq.original.offset"]),
            )
        except (KeyError, ValueError):
            return None

    def summary(self) -> str:
        if self.stored:
            return "<original kept in PostgreSQL: table dead_letters>"
        if self.value is None:
            return "<no value>"
        try:
            text = self.value.decode("utf-8")
        except UnicodeDecodeError:
            return f"<{len(self.value)} bytes, not UTF-8>"
        return _event_summary(text) or _truncate(" ".join(text.split()))

    def line(self) -> str:
        m = self.meta
        origin = (
            f"{m.get('dlq.original.topic')}[{m.get('dlq.original.partition')}]"
            f"@{m.get('dlq.original.offset')}"
        )
        return (
            f"{self.partition}:{self.offset}  {m.get('dlq.reason', '?'):<26} {origin:<32} "
            f"key={self.key!r}  {self.summary()}"
        )


def _event_summary(text: str) -> str | None:
    """The fields an operator looks for first, when the payload is an event-shaped object."""
    if len(text) > MAX_EVENT_BYTES or _deeper_than(text, MAX_SUMMARY_DEPTH):
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        return None
    data = doc["data"]
    fields = ("user_id", "investment_id", "tokenization_id", "tokens")
    parts = [f"{doc.get('event_type')} v{doc.get('schema_version')} {doc.get('event_id')}"]
    parts += [f"{name}={data.get(name)}" for name in fields if name in data]
    return _truncate(" ".join(str(p) for p in parts), limit=3 * SUMMARY_CHARS)


def _deeper_than(text: str, limit: int) -> bool:
    """Whether JSON ``text`` nests arrays or objects more than ``limit`` deep (brackets
    inside strings do not count). One pass, no recursion."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _truncate(text: str, limit: int = SUMMARY_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def read_all(settings: Settings) -> list[Parked]:
    async with kafka.Reader(settings, isolation_level="read_committed") as client:
        tps = await client.partitions(settings.dlq_topic)
        if not tps:
            return []
        client.assign(tps)
        await client.seek_to_beginning(tps)
        ends = await client.end_offsets(tps)
        found: list[Parked] = []
        while [tp for tp in tps if await client.position(tp) < ends[tp]]:
            found += [
                Parked(r.partition, r.offset, r.key, r.value, list(r.headers))
                for r in await client.getmany(timeout_ms=1000)
            ]
        return sorted(found, key=lambda p: (p.partition, p.offset))


def distinct(parked: list[Parked]) -> int:
    """How many messages ``parked`` holds (records without an origin count one each)."""
    return len({p.origin or (p.partition, p.offset) for p in parked})


async def with_originals(settings: Settings, chosen: list[Parked]) -> list[Parked]:
    """``chosen`` with every pointer record replaced by its original from PostgreSQL."""
    if not any(p.stored for p in chosen):
        return chosen
    async with db.connect(settings.database_url) as conn:
        ops = ToolRepository(conn)
        found: list[Parked] = []
        for p in chosen:
            origin = p.origin
            if not p.stored or origin is None:
                found.append(p)
                continue
            row = await ops.stored_dead_letter(*origin)
            if row is None:
                raise InvalidInput(
                    f"dead letter {p.partition}:{p.offset} points to PostgreSQL, "
                    "but dead_letters holds no original for it"
                )
            key, value = row["stored_key"], row["stored_value"]
            dlq_only = [(k, v) for k, v in p.headers if k.startswith("dlq.")]
            found.append(
                Parked(
                    p.partition,
                    p.offset,
                    None if key is None else bytes(key),
                    None if value is None else bytes(value),
                    headers_from_json(row["stored_headers"]) + dlq_only,
                )
            )
    return found


def select(
    parked: list[Parked], *, positions: list[tuple[int, int]], reason: str | None
) -> list[Parked]:
    """``positions`` are (partition, offset) of DLQ records, every one of which must exist
    (a typo re-drives nothing rather than part of what was meant); ``reason`` a
    dlq.reason code, which may match nothing (all of that kind may be re-driven already)."""
    if positions:
        wanted = set(positions)
        chosen = [p for p in parked if (p.partition, p.offset) in wanted]
        missing = wanted - {(p.partition, p.offset) for p in chosen}
        if missing:
            names = ", ".join(f"{p}:{o}" for p, o in sorted(missing)[:10])
            raise InvalidInput(f"no dead letter at {names}: see `tokendist dlq list`")
    else:
        chosen = parked
    return [p for p in chosen if reason is None or p.meta.get("dlq.reason") == reason]


async def redrive(settings: Settings, chosen: list[Parked]) -> int:
    """Re-drive ``chosen``; returns how many were sent. A message with neither key nor
    value carries nothing to process and cannot be produced: it is left parked."""
    sendable = [
        p for p in await with_originals(settings, chosen) if (p.key, p.value) != (None, None)
    ]
    producer = await kafka.start(kafka.producer(settings, max_request_size=MAX_REDRIVE_BYTES))
    try:
        for p in sendable:
            headers = [(k, v) for k, v in p.headers if not k.startswith("dlq.")]
            headers.append(("dlq.redriven_from", f"{p.partition}:{p.offset}".encode()))
            topic = p.meta.get("dlq.original.topic") or settings.topic
            await kafka.send(producer, topic, kafka.Message(p.key, p.value, headers))
    finally:
        await producer.stop()
    return len(sendable)
