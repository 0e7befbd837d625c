"""Backoff, and retrying a start-up step until its dependency answers.

A relay or consumer started while PostgreSQL, Kafka or the node is down waits for it
(with capped, jittered backoff) instead of exiting: a supervisor restart loop would do
the same, slower and louder.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from tokendist.core.errors import StoppedWhileWaiting as StoppedWhileWaiting  # noqa: PLC0414 -- still importable from here
from tokendist.core.errors import TransientError
from tokendist.core.settings import ServiceSettings
from tokendist.core.signals import pause

log = structlog.get_logger("tokendist.retry")

T = TypeVar("T")


def backoff(attempt: int, base_s: float, cap_s: float) -> float:
    """Capped exponential backoff with full jitter (AWS architecture blog's variant)."""
    ceiling: float = min(cap_s, base_s * 2 ** min(attempt, 30))
    return random.uniform(0, ceiling)  # noqa: S311 -- jitter, not cryptography


async def until_available(
    what: str, op: Callable[[], Awaitable[T]], settings: ServiceSettings, stop: asyncio.Event
) -> T:
    """``op()`` retried on ``TransientError`` until it succeeds or ``stop`` is set (then
    ``StoppedWhileWaiting``: SIGTERM during an outage is a clean exit, not an error)."""
    attempt = 0
    while True:
        try:
            return await op()
        except TransientError as exc:
            if stop.is_set():
                raise StoppedWhileWaiting(what) from exc
            attempt += 1
            delay = backoff(attempt, settings.retry_base_s, settings.retry_cap_s)
            log.warning("startup_waiting", step=what, error=str(exc), delay_s=round(delay, 2))
            await pause(stop, delay)
