"""How a member joins its consumer group, and how a static member leaves it.

Static membership (KIP-345): a member with ``consumer_instance_id`` set joins under that
id. Restarted with the same id before the session timeout, it takes its partitions back
at once and nobody else notices: no rebalance. A dynamic member (no id) is a stranger at
each start: the group waits out the session timeout for its dead predecessor, then
rebalances, and again when the new process joins.

What aiokafka 0.14.0 does not do: send LeaveGroup for a static member. Its
``_maybe_leave_group`` skips members with an instance id, and it knows only LeaveGroup
v0 and v1, which cannot name one (Java's consumer behaves alike by default). A cleanly
stopped static member would therefore stay in the group, its partitions unread, until
the session timeout, and ``tokendist replay`` would count it as live. So ``close`` sends
the LeaveGroup v3 of KIP-345 itself, naming both the member id and the instance id: the
broker removes the member only while it is still that id's current holder, so a stale
leave can never remove a successor that already took the id over.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.client import CoordinationType
from aiokafka.errors import KafkaError
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int16, Int32, Schema, String

from tokendist.core import kafka
from tokendist.core.settings import ConsumerSettings

log = structlog.get_logger("tokendist.consumer")

HEARTBEAT_INTERVAL_MS = 2_000
LEAVE_TIMEOUT_MS = 5_000  # a leave that cannot be sent is only a session timeout's wait


def group_options(settings: ConsumerSettings) -> dict[str, Any]:
    """The consumer's group arguments (``AIOKafkaConsumer``'s names)."""
    return {
        "group_id": settings.consumer_group,
        "group_instance_id": settings.consumer_instance_id,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
    }


async def close(consumer: AIOKafkaConsumer, settings: ConsumerSettings) -> None:
    """Close the consumer; a static member then leaves the group explicitly."""
    # aiokafka forgets the member id on close and offers no public getter for it.
    member_id: str = consumer._coordinator.member_id if consumer._coordinator else ""
    await kafka.close(consumer)
    instance = settings.consumer_instance_id
    if instance is not None and member_id:
        await leave(settings, member_id, instance)


async def leave(settings: ConsumerSettings, member_id: str, instance: str) -> None:
    """Best effort: a member that could not leave is dropped at the session timeout."""
    client = kafka.client(settings, request_timeout_ms=LEAVE_TIMEOUT_MS)
    try:
        await client.bootstrap()
        node = await client.coordinator_lookup(CoordinationType.GROUP, settings.consumer_group)
        answer = await client.send(node, _Leave(settings.consumer_group, member_id, instance))
    except (KafkaError, OSError, TimeoutError) as exc:
        log.warning("group_leave_failed", instance_id=instance, error=repr(exc))
        return
    finally:
        await client.close()
    # 82 FENCED_INSTANCE_ID (another process holds the id now) and 25 UNKNOWN_MEMBER_ID
    # (the session timed out first) are answers aiokafka has no names for.
    code = answer.error_code or next((m[2] for m in answer.members if m[2]), 0)
    if code:
        log.warning("group_leave_refused", instance_id=instance, error_code=code)
        return
    log.info("group_left", instance_id=instance, member_id=member_id)


class _LeaveResponseV3(Response):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        (
            "members",
            Array(("member_id", String()), ("group_instance_id", String()), ("error_code", Int16)),
        ),
    )


class _LeaveV3(RequestStruct):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = _LeaveResponseV3
    SCHEMA = Schema(
        ("group_id", String()),
        ("members", Array(("member_id", String()), ("group_instance_id", String()))),
    )


class _Leave(Request[_LeaveV3]):  # type: ignore[misc]  # aiokafka is untyped
    """KIP-345's LeaveGroup: members named by member id and instance id (v3, the first
    version that can; Kafka 2.4 and later, including 4.x, accept it)."""

    API_KEY = 13

    def __init__(self, group: str, member_id: str, instance: str) -> None:
        self._group = group
        self._member = (member_id, instance)

    def build(self, request_struct_class: type[_LeaveV3]) -> _LeaveV3:
        return request_struct_class(self._group, [self._member])
