"""The chain checker's lifecycle: it runs once, and a metrics server that cannot serve
stops it loudly instead of leaving a checker that no one scrapes (the check itself is
tested against PostgreSQL and anvil in tests/integration/test_deep_reorg.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest

from tokendist.core.settings import ChainCheckSettings
from tokendist.ops.chaincheck import ChainChecker, CheckerState
from tokendist.ops.repository import ToolRepository


class AnotherChecksNow:
    """Every turn is taken by another checker: nothing is read."""

    turns = 0

    @asynccontextmanager
    async def chain_check_turn(self) -> AsyncIterator[bool]:
        self.turns += 1
        yield False


def checker(stop: asyncio.Event, **settings: Any) -> tuple[ChainChecker, AnotherChecksNow]:
    ops = AnotherChecksNow()
    section = ChainCheckSettings(database_url="postgresql://nowhere/x", **settings)
    return ChainChecker(section, cast(ToolRepository, ops), cast(Any, None), stop), ops


async def test_a_checker_runs_once() -> None:
    stop = asyncio.Event()
    stop.set()
    one, _ = checker(stop)
    await one.run()
    assert one.state is CheckerState.STOPPED
    with pytest.raises(RuntimeError, match="runs once"):
        await one.run()


async def test_a_metrics_port_in_use_stops_the_checker() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 -- the address the metrics server binds
        taken.listen()
        port = taken.getsockname()[1]
        one, ops = checker(asyncio.Event(), metrics_port=port, chain_check_interval_s=0.01)
        with pytest.raises(OSError, match="address already in use"):
            await asyncio.wait_for(one.run(), 10)
    assert one.state is CheckerState.STOPPED
    assert ops.turns >= 1
