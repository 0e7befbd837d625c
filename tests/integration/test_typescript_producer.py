"""A payment service in TypeScript (node's ``pg`` client) confirms payments through the
SQL producer API; the relay and the consumer distribute exactly what it committed.

The TypeScript side (tests/producers/typescript, run with node's own test runner) commits
payment A, rolls payment B back after enqueueing it, and delivers payment C five times
concurrently. Here: A and C are paid on-chain and credited once each, B never."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import asyncpg
import pytest

from tests.integration import harness
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment
from tokendist.sim import payments

pytestmark = pytest.mark.integration

PRODUCER = Path(__file__).parents[1] / "producers" / "typescript"
INSTALL = "install Node.js 20 or later with npm (apt-get install nodejs npm)"
TOKENS = {"inv-ts-A": 10**18 + 1, "inv-ts-C": 2**70}


def run_typescript_producer(settings: Settings, fixture: dict[str, str]) -> None:
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.fail(f"the TypeScript producer test needs node and npm: {INSTALL}")
    if not (PRODUCER / "node_modules").is_dir():
        pytest.fail(f"its npm packages are missing: run `make producer-deps` ({PRODUCER})")
    env = {
        **os.environ,
        "TOKENDIST_DATABASE_URL": settings.database_url,
        "TOKENDIST_PRODUCER_FIXTURE": json.dumps(fixture),
    }
    done = subprocess.run(
        [npm, "test", "--silent"],
        cwd=PRODUCER,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (
        f"node --test failed:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    )
    assert "# pass 4" in done.stdout, done.stdout[-3000:]  # every test ran, none was skipped


async def test_typescript_producer_pays_exactly_what_it_committed(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    wallet = harness.wallet(5)
    async with pool.acquire() as conn:
        await payments.register_user(conn, "user-ts", wallet)
    run_typescript_producer(
        settings,
        {
            "userId": "user-ts",
            "walletAddress": wallet,
            "tokenizationId": tokenization.tokenization_id,
            "propertyId": tokenization.property_id,
        },
    )
    assert await harness.count(pool, "SELECT count(*) FROM outbox") == len(TOKENS)

    async def both_credited() -> bool:
        return await harness.credited(pool) >= len(TOKENS)

    async with harness.relay(settings), harness.consumer(settings):
        await harness.wait_until(both_credited, timeout=120, what="payments A and C credited")
    states = {
        r["investment_id"]: r["state"]
        for r in await pool.fetch("SELECT investment_id, state FROM distributions")
    }
    assert states == {"inv-ts-A": "credited", "inv-ts-C": "credited"}
    paid = sorted(await harness.paid_to(settings, tokenization))
    assert paid == sorted((wallet.lower(), tokens) for tokens in TOKENS.values())
    assert await pool.fetchval(
        "SELECT balance FROM token_holdings WHERE user_id = 'user-ts'"
    ) == sum(TOKENS.values())
    report = await harness.run_verify(settings, pool)
    assert report.ok, report.render()
