"""The harness's own reads and writes must survive the outages it causes: a PostgreSQL
restart breaks every pooled connection, a Kafka restart every client. Retrying here is
the harness being patient, never the system under test being helped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from aiokafka.errors import KafkaError

from tokendist.core.db import CONNECTION_ERRORS
from tokendist.core.errors import TransientError

T = TypeVar("T")

PATIENT: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    asyncpg.PostgresConnectionError,
    KafkaError,
    TransientError,
)


async def retrying(
    op: Callable[[], Awaitable[T]], *, what: str, timeout: float = 120.0, every: float = 0.5
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncio.wait_for(op(), timeout=max(5.0, every * 20))
        except PATIENT as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: still failing after {timeout}s: {exc!r}") from exc
        await asyncio.sleep(every)
