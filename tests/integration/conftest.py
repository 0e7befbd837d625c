"""Fixtures over the real services. Every test gets its own database (cloned from a
migrated template), its own topic and consumer group, its own freshly funded operator
and deployer keys and its own contracts: tests run in parallel without sharing state."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.integration import harness
from tests.services import Services, services, settings_for_tests
from tokendist.core import db
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def stack() -> Iterator[Services]:
    with services() as found:
        yield found


@pytest.fixture(scope="session")
def template_db(stack: Services) -> str:
    """A migrated database to clone; its name carries the hash of the migrations and the
    grants."""
    name = f"tokendist_tpl_{db.schema_digest()[:12]}"

    async def build() -> None:
        admin = await asyncpg.connect(stack.database_url)
        try:
            await admin.execute("SELECT pg_advisory_lock(7117099)")
            exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await admin.execute(f'CREATE DATABASE "{name}"')
                conn = await asyncpg.connect(_with_db(stack.database_url, name))
                try:
                    await db.migrate(conn)
                finally:
                    await conn.close()
            await admin.execute("SELECT pg_advisory_unlock(7117099)")
        finally:
            await admin.close()

    asyncio.run(build())
    return name


@pytest.fixture
async def database_url(stack: Services, template_db: str) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    for attempt in range(20):
        try:
            await _admin(stack, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
            break
        except asyncpg.ObjectInUseError:  # another worker is cloning it right now
            await asyncio.sleep(0.1 * (attempt + 1))
    yield _with_db(stack.database_url, name)
    # A fresh connection: outage tests restart the server under the test's feet.
    await _admin(stack, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin(stack: Services, sql: str) -> None:
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def settings(stack: Services, database_url: str) -> Settings:
    settings = settings_for_tests(
        database_url,
        stack.kafka_bootstrap,
        stack.rpc_url,
        name=uuid.uuid4().hex[:12],
        receipt_poll_s=0.1,
        rebroadcast_after_s=3.0,
        fee_bump_after_s=20.0,
    )
    await harness.fund_keys(settings, stack.rpc_url)
    return settings


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(settings.database_url, max_size=20)
    yield p
    await p.close()


@pytest.fixture
async def tokenization(settings: Settings, pool: asyncpg.Pool) -> Deployment:
    return await harness.deploy(settings, pool)
