"""Each Kafka principal of the secured stack does its job and is refused the rest (issue 19):

    relay     writes the payments topic          refused: reading it, writing the DLQ
    consumer  reads it, commits its group,       refused: writing the payments topic,
              writes the DLQ                     reading the DLQ, another group's offsets
    operator  replays (moves the group's         -
              offsets), re-drives the DLQ
    nobody    -                                  refused: PLAINTEXT, TLS without SASL, an
                                                 unknown CA, a wrong password

and a payment goes end to end with the relay and the consumer each signed in as itself.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import asyncpg
import pytest
from aiokafka import TopicPartition
from pydantic import SecretStr

from tests.integration import harness
from tests.secured.conftest import Principal
from tokendist.core import kafka
from tokendist.core.errors import BrokerRefused, BrokerUnavailable
from tokendist.core.settings import Settings
from tokendist.ops import dlq_admin, replay
from tokendist.ops.deploy import Deployment
from tokendist.ops.keys import Node

pytestmark = [pytest.mark.integration, pytest.mark.secured]


def message() -> kafka.Message:
    return kafka.Message(uuid.uuid4().hex.encode(), b"{}", [])


async def produce(settings: Settings, topic: str, m: kafka.Message) -> None:
    producer = await kafka.start(kafka.producer(settings))
    try:
        await kafka.send(producer, topic, m)
    finally:
        await kafka.close(producer)


async def keys_in(settings: Settings, topic: str, since: dict[int, int]) -> list[bytes | None]:
    """The keys of ``topic``'s records past ``since`` (end offsets taken before), read as
    ``settings``' principal."""
    async with kafka.Reader(settings) as reader:
        tps = await reader.partitions(topic)
        reader.assign(tps)
        for tp in tps:
            reader.client.seek(tp, since.get(tp.partition, 0))
        ends = await reader.end_offsets(tps)
        found: list[bytes | None] = []
        while [tp for tp in tps if await reader.position(tp) < ends[tp]]:
            found += [r.key for r in await reader.getmany(timeout_ms=1000)]
        return found


async def commit(settings: Settings, group: str, offsets: dict[int, int]) -> None:
    """Commit ``group``'s offsets on the topic as ``settings``' principal."""
    async with kafka.Reader(settings, group=group) as reader:
        reader.assign(await reader.partitions(settings.topic))
        await reader.commit({TopicPartition(settings.topic, p): o for p, o in offsets.items()})


async def test_relay_writes_the_payments_topic_and_nothing_else(
    settings: Settings, as_principal: Principal
) -> None:
    relay = as_principal("relay")
    before = await harness.end_offsets(settings)
    m = message()
    await produce(relay, relay.topic, m)
    assert await keys_in(settings, settings.topic, before) == [m.key]

    dlq_before = await harness.end_offsets(settings, settings.dlq_topic)
    with pytest.raises(BrokerRefused, match="TopicAuthorizationFailed"):
        await produce(relay, relay.dlq_topic, message())
    with pytest.raises(BrokerRefused, match="TopicAuthorizationFailed"):
        await keys_in(relay, relay.topic, before)
    assert await harness.end_offsets(settings, settings.dlq_topic) == dlq_before


async def test_consumer_reads_commits_and_parks_but_cannot_publish(
    settings: Settings, as_principal: Principal
) -> None:
    consumer = as_principal("consumer")
    before = await harness.end_offsets(settings)
    m = message()
    await produce(settings, settings.topic, m)
    assert await keys_in(consumer, consumer.topic, before) == [m.key]

    after = await harness.end_offsets(settings)
    await commit(consumer, consumer.consumer_group, after)
    assert await harness.committed_offsets(settings) == after

    dlq_before = await harness.end_offsets(settings, settings.dlq_topic)
    parked = message()
    await produce(consumer, consumer.dlq_topic, parked)
    assert await keys_in(settings, settings.dlq_topic, dlq_before) == [parked.key]

    with pytest.raises(BrokerRefused, match="TopicAuthorizationFailed"):
        await produce(consumer, consumer.topic, message())
    with pytest.raises(BrokerRefused, match="TopicAuthorizationFailed"):
        await dlq_admin.read_all(consumer)
    with pytest.raises(BrokerRefused, match="GroupAuthorizationFailed"):
        await commit(consumer, "someone-else", {0: 0})
    assert await harness.end_offsets(settings) == after


async def test_operator_replays_the_group_and_redrives_the_dlq(
    settings: Settings, as_principal: Principal
) -> None:
    operator = as_principal("operator")
    moves = await replay.plan_and_apply(operator, operator.consumer_group, earliest=True)
    async with kafka.Reader(settings) as reader:
        tps = await reader.partitions(settings.topic)
        beginnings = {tp.partition: o for tp, o in (await reader.beginning_offsets(tps)).items()}
    assert {m.partition: m.target for m in moves} == beginnings
    assert await harness.committed_offsets(settings) == beginnings

    parked = message()
    await produce(settings, settings.dlq_topic, parked)
    chosen = [p for p in await dlq_admin.read_all(operator) if p.key == parked.key]
    assert len(chosen) == 1
    before = await harness.end_offsets(settings)
    assert await dlq_admin.redrive(operator, chosen) == 1
    assert await keys_in(settings, settings.topic, before) == [parked.key]


@pytest.mark.parametrize(
    ("who", "changes"),
    [
        ("no TLS, no SASL", {"kafka_security_protocol": "PLAINTEXT"}),
        ("TLS without SASL", {"kafka_security_protocol": "SSL"}),
        ("a CA other than the stack's", {"kafka_ca_file": None}),
        ("a wrong password", {"kafka_password": SecretStr("not-the-password")}),
        ("an unknown user", {"kafka_username": "webhook"}),
    ],
)
async def test_a_client_without_the_right_credentials_cannot_connect(
    settings: Settings, who: str, changes: dict[str, object]
) -> None:
    stranger = settings.model_copy(update=changes)
    with pytest.raises(BrokerUnavailable):
        await kafka.start(kafka.producer(stranger, request_timeout_ms=5_000))
    await kafka.close(await kafka.start(kafka.producer(settings)))  # the same, signed in


async def tokendist(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tokendist.cli", *args],
        env={**os.environ, **settings.as_env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line(run: subprocess.CompletedProcess[str], code: int) -> str:
    assert run.returncode == code, run.stderr[-2000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr[-2000:]
    assert lines[0].startswith("tokendist: error: ")
    return lines[0]


async def test_a_refused_command_says_so_in_one_line_and_exits_1(
    settings: Settings, as_principal: Principal
) -> None:
    relay = as_principal("relay")
    line = one_line(await tokendist(relay, "replay", "--earliest"), 1)
    assert "GroupAuthorizationFailed" in line
    assert "ACLs" in line

    wrong = settings.model_copy(update={"kafka_password": SecretStr("wrong-" + uuid.uuid4().hex)})
    line = one_line(await tokendist(wrong, "replay", "--earliest"), 1)
    assert "credentials" in line
    assert wrong.kafka_password is not None
    assert wrong.kafka_password.get_secret_value() not in line


async def test_payments_end_to_end_with_each_component_its_own_principal(
    settings: Settings, as_principal: Principal, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    # The group starts past whatever earlier tests and runs left on the stack's topic.
    ends = await harness.end_offsets(settings)
    await replay.plan_and_apply(as_principal("operator"), settings.consumer_group, offsets=ends)
    n = 20
    expected = await harness.confirm_payments(pool, tokenization, n, users=5)
    async with harness.relay(as_principal("relay")), harness.consumer(as_principal("consumer")):
        await harness.wait_until(
            lambda: _credited_is(pool, n), timeout=120, what=f"{n} credited distributions"
        )
    node = Node.connect(settings.rpc_url or "")
    try:
        on_chain = {w: await node.token_balance(tokenization.token_address, w) for w in expected}
    finally:
        await node.close()
    assert on_chain == expected
    holdings = {
        r["user_id"]: int(r["balance"])
        for r in await pool.fetch("SELECT user_id, balance FROM token_holdings")
    }
    assert holdings == {f"user-{u}": expected[harness.wallet(u)] for u in range(5)}
    assert len(await harness.payouts(settings, tokenization)) == n


async def _credited_is(pool: asyncpg.Pool, n: int) -> bool:
    return await harness.credited(pool) >= n
