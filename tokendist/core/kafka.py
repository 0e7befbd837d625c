"""The Kafka adapter: client construction, topic creation, and the calls the relay and
the operator tools make (sends, offsets, group descriptions), each mapping aiokafka's
errors to ours here, once.

Every client the project makes is built here (``producer``, ``consumer``, ``admin``,
``client``), so each carries the same connection settings: bootstrap servers, TLS and
SASL (``connection``)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeAlias, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    CorruptRecordException,
    GroupAuthorizationFailedError,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from tokendist.core.errors import BrokerRefused, BrokerUnavailable, RecordRejected, SettingsError
from tokendist.core.settings import KafkaSettings

log = structlog.get_logger("tokendist.kafka")

T = TypeVar("T")

Headers = list[tuple[str, bytes]]


# Answers about the record itself (the client's own size check included): retrying the
# same bytes gets the same answer, so they must not be mistaken for an outage.
RECORD_ERRORS = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidTimestampError,
)
# The broker's answer about who we are or what we may do (a wrong password seen while
# bootstrapping is only logged by aiokafka: that start fails as unreachable).
REFUSALS = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)


@contextlib.contextmanager
def mapped() -> Iterator[None]:
    """Client errors inside the block become ``RecordRejected`` (this record can never be
    sent), ``BrokerRefused`` (credentials or ACLs) or ``BrokerUnavailable`` (anything
    else: retry later)."""
    try:
        yield
    except RECORD_ERRORS as exc:
        raise RecordRejected(f"{type(exc).__name__}: {exc}") from exc
    except REFUSALS as exc:
        raise BrokerRefused(f"{type(exc).__name__}: {exc}") from exc
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc


async def guarded(op: Callable[[], Awaitable[T]]) -> T:
    """Run a Kafka operation with its errors mapped (see ``mapped``)."""
    with mapped():
        return await op()


@dataclass(frozen=True, slots=True)
class Message:
    key: bytes | None
    value: bytes | None
    headers: Headers


async def send(producer: AIOKafkaProducer, topic: str, message: Message) -> None:
    """Send one record and wait for the broker's ack."""
    with mapped():
        await producer.send_and_wait(
            topic, value=message.value, key=message.key, headers=message.headers
        )


async def send_batch(producer: AIOKafkaProducer, topic: str, messages: Sequence[Message]) -> None:
    """Send every record, then wait for every ack: the producer batches them meanwhile."""
    with mapped():
        acks = [
            await producer.send(topic, value=m.value, key=m.key, headers=m.headers)
            for m in messages
        ]
        await asyncio.gather(*acks)


async def group_members(admin: AIOKafkaAdminClient, group: str) -> int:
    """How many members ``group`` has right now (0: empty, dead or unknown)."""
    with mapped():
        described = await admin.describe_consumer_groups([group])
    members = 0
    for response in described:
        for entry in response.groups:
            members += len(entry[5])  # (error, group, state, protocol_type, protocol, members…)
    return members


START_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 15.0

Client: TypeAlias = AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient
C = TypeVar("C", AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient)


async def start(client: C) -> C:
    """Start a client, or close it and raise ``BrokerUnavailable``. Bounded: an idempotent
    producer whose broker vanished mid-start retries InitProducerId forever (seen in the
    fault runs), so a hung start is abandoned and the caller builds a fresh client."""
    try:
        await asyncio.wait_for(client.start(), START_TIMEOUT_S)
    except (KafkaError, OSError, TimeoutError) as exc:
        await close(client)
        kind = BrokerRefused if isinstance(exc, REFUSALS) else BrokerUnavailable
        raise kind(f"starting {type(client).__name__}: {exc!r}") from exc
    return client


async def close(client: Client) -> None:
    """Close a client without letting a broker outage turn a clean shutdown into a crash.

    Bounded, because a producer flushing to a dead broker waits out every retry (nothing is
    lost by abandoning it: unacknowledged outbox rows stay unpublished and unfinished
    offsets uncommitted). And during an outage aiokafka 0.14's ``Fetcher.close`` cancels
    its in-flight fetch tasks and re-raises their ``CancelledError`` (fault seed 2142):
    that one is swallowed unless our own task really is being cancelled."""
    closing = client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop()
    try:
        await asyncio.wait_for(closing, CLOSE_TIMEOUT_S)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("kafka_close_failed", client=type(client).__name__, error="CancelledError")
    except Exception as exc:  # closing is best effort; the outage is the news
        log.warning("kafka_close_failed", client=type(client).__name__, error=repr(exc))


def connection(settings: KafkaSettings) -> dict[str, Any]:
    """The options every client shares: where the brokers are and how to reach them."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_tls:
        options["ssl_context"] = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_password is not None  # the settings' validator saw to it
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_username
        options["sasl_plain_password"] = settings.kafka_password.get_secret_value()
    return options


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """Verifies the broker against ``kafka_ca_file`` (or the system's CAs); presents a
    client certificate when one is set. An unreadable file is a settings error."""
    try:
        context = ssl.create_default_context(cafile=settings.kafka_ca_file)
        if settings.kafka_cert_file is not None:
            context.load_cert_chain(settings.kafka_cert_file, settings.kafka_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            f"cannot load the Kafka TLS files (TOKENDIST_KAFKA_CA_FILE, _CERT_FILE, "
            f"_KEY_FILE): {exc}"
        ) from exc
    context.check_hostname = settings.kafka_check_hostname
    return context


def consumer(settings: KafkaSettings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **connection(settings), **options)


def admin(settings: KafkaSettings, **options: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**connection(settings), **options)


def client(settings: KafkaSettings, **options: Any) -> AIOKafkaClient:
    """The low-level client, for a request aiokafka has no method for."""
    return AIOKafkaClient(**connection(settings), **options)


def producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer: acks from all in-sync replicas, no reordering on retry."""
    options: dict[str, Any] = {
        **connection(settings),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "request_timeout_ms": 15_000,
        "max_batch_size": 256 * 1024,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


async def ensure_topics(settings: KafkaSettings) -> None:
    """Create the event topic and its dead-letter topic when missing."""
    topics = await start(admin(settings, request_timeout_ms=15_000))

    async def create() -> None:
        try:
            existing = set(await topics.list_topics())
            wanted = [
                NewTopic(
                    name,
                    num_partitions=settings.topic_partitions,
                    replication_factor=settings.topic_replication,
                    topic_configs={"min.insync.replicas": str(min(2, settings.topic_replication))},
                )
                for name in (settings.topic, settings.dlq_topic)
                if name not in existing
            ]
            if wanted:
                # Another relay or consumer may have created it first.
                with contextlib.suppress(TopicAlreadyExistsError):
                    await topics.create_topics(wanted)
        finally:
            await topics.close()

    await guarded(create)


async def partitions(client: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions, refreshing metadata when the client has none cached yet."""
    found = client.partitions_for_topic(topic)
    if not found:
        # aiokafka offers no public refresh; a client that never subscribed has no metadata.
        await guarded(client._client.force_metadata_update)
        found = client.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(found)]


class Reader:
    """A consumer client used outside any group's membership: to read a topic from its
    start, and to read (or, for a stopped group, move) ``group``'s committed offsets.
    Started on entering ``async with``, stopped on leaving it."""

    def __init__(
        self, settings: KafkaSettings, *, group: str | None = None, **options: Any
    ) -> None:
        self.client = consumer(settings, group_id=group, enable_auto_commit=False, **options)

    async def __aenter__(self) -> Self:
        await start(self.client)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.client.stop()

    async def partitions(self, topic: str) -> list[TopicPartition]:
        return await partitions(self.client, topic)

    def assign(self, tps: list[TopicPartition]) -> None:
        self.client.assign(tps)

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        with mapped():
            found: dict[TopicPartition, int] = await self.client.beginning_offsets(tps)
        return found

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        with mapped():
            found: dict[TopicPartition, int] = await self.client.end_offsets(tps)
        return found

    async def offsets_for_times(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int | None]:
        """The first offset at or after each time; None past a partition's last record."""
        with mapped():
            found = await self.client.offsets_for_times(timestamps)
        return {tp: None if at is None else int(at.offset) for tp, at in found.items()}

    async def committed(self, tp: TopicPartition) -> int | None:
        with mapped():
            offset: int | None = await self.client.committed(tp)
        return offset

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        with mapped():
            await self.client.commit(offsets)

    async def seek_to_beginning(self, tps: list[TopicPartition]) -> None:
        with mapped():
            await self.client.seek_to_beginning(*tps)

    async def position(self, tp: TopicPartition) -> int:
        with mapped():
            offset: int = await self.client.position(tp)
        return offset

    async def getmany(self, timeout_ms: int) -> list[Any]:
        """The records fetched within ``timeout_ms``, of every assigned partition."""
        with mapped():
            batches = await self.client.getmany(timeout_ms=timeout_ms)
        return [record for records in batches.values() for record in records]


def header_map(headers: Any) -> dict[str, str]:
    """Kafka record headers as text, undecodable values replaced (they are only metadata)."""
    return {key: value.decode("utf-8", "replace") for key, value in (headers or ())}
