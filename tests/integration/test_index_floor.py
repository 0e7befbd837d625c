"""The on-chain guard is a bit per index, and a payment's index is kept in PostgreSQL. A
database restored from an older backup forgets the indices given since: the consumer
rebuilds them from the chain's logs before it gives any more (consumer.batching.indices),
so no index used on-chain goes to another payment and no payment paid since the backup
is paid again under a new one."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import asyncpg
import pytest

from tests.integration import harness
from tokendist.consumer import contracts
from tokendist.core import db
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment

pytestmark = pytest.mark.integration


async def _pg(*argv: str) -> None:
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True)
    assert done.returncode == 0, f"{argv[0]} failed: {done.stderr[-2000:]}"


async def _credited(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM distributions WHERE state = 'credited'"))


async def test_a_database_restored_from_an_older_backup_reuses_no_index_and_pays_no_one_twice(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment, tmp_path: Path
) -> None:
    expected = await harness.confirm_payments(pool, tokenization, 20, users=10)
    async with harness.relay(settings), harness.consumer(settings):
        await harness.wait_until(lambda: _is(pool, 20), what="the first 20 credited")
    # 20 more payments confirmed; then the backup: it holds their confirmations, not
    # their distributions nor the indices they are about to be given.
    more = await harness.confirm_payments(pool, tokenization, 20, users=10, start=20)
    backup = tmp_path / "backup.dump"
    await _pg("pg_dump", "--format=custom", f"--file={backup}", settings.database_url)
    async with harness.relay(settings), harness.consumer(settings):
        await harness.wait_until(lambda: _is(pool, 40), what="40 credited before the restore")
    paid_before = {p.payment_id: p.index for p in await harness.payouts(settings, tokenization)}
    assert len(paid_before) == 40

    await pool.close()
    await _pg(
        "pg_restore", "--clean", "--if-exists", "--single-transaction",
        f"--dbname={settings.database_url}", str(backup),
    )  # fmt: skip
    restored = await db.create_pool(settings.database_url, max_size=10)
    try:
        assert await _credited(restored) == 20, "the backup knew only the first 20"
        late = await harness.confirm_payments(restored, tokenization, 20, users=10, start=40)
        # A replay from the start in a group of its own (the old group's offsets are past
        # the 20 the restored database forgot): every event is handled again.
        replay = settings.model_copy(update={"consumer_group": settings.consumer_group + ".r"})
        async with harness.relay(replay), harness.consumer(replay):
            await harness.wait_until(lambda: _is(restored, 60), timeout=120, what="all 60")
        payouts = await harness.payouts(settings, tokenization)
        already_paid = await harness.rpc(
            settings.rpc_url or "",
            "eth_getLogs",
            [
                {
                    "address": tokenization.distributor_address,
                    "fromBlock": "0x0",
                    "topics": [contracts.ALREADY_PAID_TOPIC],
                }
            ],
        )
        recovered = await restored.fetchval(
            "SELECT count(*) FROM distributions WHERE batch_id IS NULL AND state = 'credited'"
        )
        report = await harness.run_verify(settings, restored)
    finally:
        await restored.close()

    assert len(payouts) == 60, "one payout each"
    assert len({p.payment_id for p in payouts}) == 60
    # The 20 paid after the backup were confirmed from their payouts, not paid again.
    assert recovered == 20
    assert {p.payment_id: p.index for p in payouts if p.payment_id in paid_before} == paid_before
    # No batch met an index another payment had used.
    assert already_paid == []
    assert min(p.index for p in payouts if p.payment_id not in paid_before) == 40
    paid: dict[str, int] = {}
    for p in payouts:
        paid[p.to] = paid.get(p.to, 0) + p.amount
    bought: dict[str, int] = {}
    for part in (expected, more, late):
        for wallet, tokens in part.items():
            bought[wallet.lower()] = bought.get(wallet.lower(), 0) + tokens
    assert paid == bought
    assert report.ok, report.render()


async def _is(pool: asyncpg.Pool, n: int) -> bool:
    return await _credited(pool) >= n
