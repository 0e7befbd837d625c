"""The loop of a side task that does one thing every few seconds (the consumer's gauges,
resubmitter and parked re-check): an outage skips a round, logged under the task's own
event name; anything else is a bug and ends the task, loudly, through its owner."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NoReturn

import structlog

from tokendist.core.errors import TransientError


async def every(
    interval_s: float,
    round_: Callable[[], Awaitable[object]],
    log: structlog.stdlib.BoundLogger,
    failed_event: str,
) -> NoReturn:
    while True:
        try:
            await round_()
        except TransientError as exc:
            log.warning(failed_event, error=str(exc))
        await asyncio.sleep(interval_s)
