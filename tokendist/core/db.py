"""The PostgreSQL adapter: connections, ``Database`` (the one place asyncpg's errors are
mapped to ours) and the migration runner.

Migrations are numbered SQL files applied in order, each in its own transaction, recorded
with a checksum so an edited file is refused instead of silently diverging. The component
roles' privileges (``grants.sql``) are not a migration: they are applied again after every
run, so they always equal that one file.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from typing import Any, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from tokendist.core.errors import DatabaseUnavailable, MigrationError

T = TypeVar("T")

TRY_NAMED_LOCK = "SELECT pg_try_advisory_lock(hashtext($1))"
NAMED_UNLOCK = "SELECT pg_advisory_unlock(hashtext($1))"

# What callers hand us: a plain connection or one borrowed from a pool.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

# asyncpg raises these when the server is down, restarting or the socket broke.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.SerializationError,
    # A query sent while the protocol is still consuming the server's FATAL (the backend
    # was terminated, e.g. pg_ctl stop -m fast) surfaces as an internal client error.
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.DeadlockDetectedError,
    TimeoutError,
)

MIGRATION_LOCK = 7_117_001  # advisory lock key: one migrator at a time


@contextmanager
def mapped() -> Iterator[None]:
    """Connectivity failures inside the block become ``DatabaseUnavailable``."""
    try:
        yield
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc


async def guarded(op: Callable[[], Awaitable[T]]) -> T:
    """Run a DB operation, mapping connectivity failures to ``DatabaseUnavailable``."""
    with mapped():
        return await op()


class Database:
    """A pool, or one connection, behind this project's errors: every call and every block
    below maps a connectivity failure to ``DatabaseUnavailable`` here, so no caller does.
    Anything else (a constraint violation, a refusal raised by the caller's own block)
    passes through unchanged."""

    def __init__(self, target: asyncpg.Pool | Connection) -> None:
        self._target = target

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        with mapped():
            return await self._target.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        with mapped():
            return await self._target.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        with mapped():
            return await self._target.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        with mapped():
            return await self._target.execute(query, *args)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """One connection for several statements (the pool's borrowed for the block)."""
        with mapped():
            if isinstance(self._target, asyncpg.Pool):
                async with self._target.acquire() as conn:
                    yield conn
            else:
                yield self._target

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One connection in a transaction: committed when the block ends, rolled back when
        it raises. The commit is inside the mapping too."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def try_lock(self, name: str) -> AsyncIterator[bool]:
        """The session advisory lock ``name``, tried, never waited for: True while this
        block holds it, False when another session does (one member at a time does a
        task, whichever gets there first)."""
        async with self.connection() as conn:
            held = bool(await conn.fetchval(TRY_NAMED_LOCK, name))
            try:
                yield held
            finally:
                if held:
                    await conn.fetchval(NAMED_UNLOCK, name)


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    return await guarded(
        lambda: asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, timeout=10)
    )


@asynccontextmanager
async def connect(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn: asyncpg.Connection = await guarded(lambda: asyncpg.connect(dsn, timeout=10))
    try:
        yield conn
    finally:
        await conn.close()


async def create_database(dsn: str, name: str) -> str:
    """Create database ``name`` on ``dsn``'s server; returns its DSN."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"unsafe database name {name!r}")
    async with connect(dsn) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every bundled migration, in order."""
    found = []
    for entry in resources.files("tokendist.core.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def grants_sql() -> str:
    """The component roles' privileges (``tokendist/core/grants.sql``)."""
    return resources.files("tokendist.core").joinpath("grants.sql").read_text(encoding="utf-8")


def schema_digest() -> str:
    """The SHA-256 of everything ``migrate`` applies: a migrated copy (a test template)
    named by it is current."""
    sqls = [sql for _, _, sql in migration_files()] + [grants_sql()]
    return hashlib.sha256("".join(sqls).encode()).hexdigest()


async def migrate(conn: Connection) -> list[str]:
    """Apply pending migrations, then the grants; returns the names of the migrations
    applied. Safe to run concurrently, and again."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,
                   applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {r["version"]: r for r in rows}
        done = []
        for version, name, sql in migration_files():
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if version in applied:
                if applied[version]["checksum"] != checksum:
                    raise MigrationError(f"{name} changed after it was applied; add a new one")
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    version,
                    name,
                    checksum,
                )
            done.append(name)
        async with conn.transaction():
            await conn.execute(grants_sql())
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
