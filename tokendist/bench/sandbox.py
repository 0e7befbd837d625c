"""Everything the benchmark owns on the shared stack, and nothing else.

The local stack is shared with other engineers' tests, so the benchmark brings its own
database, keys, topics, consumer groups and contracts, and removes what it can at the end
(consumer groups cannot be deleted with aiokafka's admin client; empty ones expire).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from eth_account import Account
from pydantic import SecretStr

from tokendist.core import db, kafka
from tokendist.core.settings import Settings
from tokendist.custody import LocalSigner
from tokendist.ops.deploy import Deployer, Deployment, deploy_tokenization

# anvil_setBalance: enough ether for thousands of distribute calls at the capped fee.
FUNDING_WEI = 10**21
TOKEN_SUPPLY = 10**30


def with_database(url: str, name: str) -> str:
    """The same server and credentials, another database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def isolated_database(server_url: str) -> AsyncIterator[str]:
    """A freshly migrated database of our own, dropped on the way out (even on error)."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = with_database(server_url, name)
        try:
            async with db.connect(url) as conn:
                await db.migrate(conn)
            yield url
        finally:
            # FORCE: a consumer killed on a timeout may still hold a session.
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def rpc(url: str, method: str, params: list[object]) -> object:
    """One raw JSON-RPC call, for the anvil_* methods web3 does not wrap."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        answer = await resp.json()
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    result: object = answer["result"]
    return result


async def funded_key(rpc_url: str) -> SecretStr:
    """A brand-new key with ether: its nonces are ours alone, unlike anvil's dev keys."""
    account = Account.create()
    await rpc(rpc_url, "anvil_setBalance", [account.address, hex(FUNDING_WEI)])
    return SecretStr("0x" + bytes(account.key).hex())


async def block_gas_limit(url: str) -> int:
    """The newest block's gas limit: what one block can spend, at most."""
    block = await rpc(url, "eth_getBlockByNumber", ["latest", False])
    assert isinstance(block, dict)
    return int(block["gasLimit"], 16)


def address_of(key: SecretStr) -> str:
    return str(LocalSigner(key).address)


def bench_settings(shared: Settings, run_id: str) -> Settings:
    """``shared`` (the environment's settings, so TOKENDIST_* tuning still applies) with
    topic and group names of our own; its database URL names the server, where the
    benchmark creates databases of its own. ``run_id`` makes the names unique. Keys and
    the node come per chain (``on_chain``)."""
    return shared.model_copy(
        update={"topic": f"bench.{run_id}", "consumer_group": f"bench.{run_id}"}
    )


async def on_chain(settings: Settings, rpc_url: str) -> Settings:
    """``settings`` pointed at the node ``rpc_url``, with a fresh operator and deployer
    funded there."""
    return settings.model_copy(
        update={
            "rpc_url": rpc_url,
            "operator_key": await funded_key(rpc_url),
            "operator_keys": None,
            # The benchmark's own keys only: none of the environment's keystores or KMS
            # keys is an operator of the benchmark's Distributors.
            "operator_keystores": "",
            "operator_kms_key_ids": "",
            "deployer_key": await funded_key(rpc_url),
        }
    )


async def with_keys(settings: Settings, count: int) -> Settings:
    """``settings`` whose key pool is ``count`` fresh funded keys: nonces of their own."""
    rpc_url, _ = settings.require_chain()
    keys = [(await funded_key(rpc_url)).get_secret_value() for _ in range(count)]
    more = SecretStr(",".join(keys[1:])) if count > 1 else None
    return settings.model_copy(
        update={
            "operator_key": SecretStr(keys[0]),
            "operator_keys": more,
            "operator_keystores": "",
            "operator_kms_key_ids": "",
        }
    )


def renamed(settings: Settings, suffix: str, **update: object) -> Settings:
    """A copy with its own topic and consumer group (each stage reads only its events)."""
    return settings.model_copy(
        update={
            "topic": f"{settings.topic}.{suffix}",
            "consumer_group": f"{settings.consumer_group}.{suffix}",
            **update,
        }
    )


async def deploy(settings: Settings, tokenization_id: str) -> Deployment:
    """A token and Distributor of our own, operated by every key of the settings' pool."""
    rpc_url, deployer_key = settings.require_deployer()
    _, keys = settings.require_keys()
    deployer = Deployer(rpc_url, deployer_key)
    try:
        async with db.connect(settings.database_url) as conn:
            return await deploy_tokenization(
                deployer,
                conn,
                tokenization_id=tokenization_id,
                property_id=f"prop-{tokenization_id}",
                operator=[address_of(k) for k in keys],
                name="Bench Token",
                symbol="BNCH",
                decimals=18,
                supply=TOKEN_SUPPLY,
            )
    finally:
        await deployer.close()


async def warmed_topic(settings: Settings) -> None:
    """Create the settings' topic and write one record to each partition.

    Right after creation the broker answers NotLeaderForPartition for a moment and the
    producer retries: timed, that start-up would count as Kafka's throughput. Only for
    topics nothing consumes (the records are not events).
    """
    await kafka.ensure_topics(settings)
    producer = kafka.producer(settings)
    # Those expected retries would print a warning per partition: quiet them here only,
    # so a retry during a timed section still shows.
    sender_log = logging.getLogger("aiokafka.producer.sender")
    level = sender_log.level
    sender_log.setLevel(logging.ERROR)
    await producer.start()
    try:
        acks = [
            await producer.send(settings.topic, value=b"warm-up", partition=p)
            for p in range(settings.topic_partitions)
        ]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
        sender_log.setLevel(level)


async def delete_topics(settings: Settings, topics: list[str]) -> None:
    """Best effort: a leftover topic is untidy, not wrong, so errors are swallowed."""
    admin = kafka.admin(settings)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    except Exception as exc:  # cleanup must never hide the report
        print(f"bench: could not delete topics {topics}: {exc}", file=sys.stderr)
    finally:
        await admin.close()


async def group_members(settings: Settings) -> tuple[str, int]:
    """(state, member count) of the settings' consumer group, e.g. ("Stable", 3)."""
    admin = kafka.admin(settings)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([settings.consumer_group])
        (group,) = response.to_object()["groups"]
        return str(group["state"]), len(group["members"])
    finally:
        await admin.close()
