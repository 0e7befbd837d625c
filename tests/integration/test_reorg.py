"""Reorganisations before finality (issue 15, part 2), on a chain of the test's own (a
private anvil mining a block per transaction, and otherwise only when the test says):
with ``confirmations:4`` a batch in a block is ``mined`` and nothing is credited; then
``anvil_reorg`` (blocks replaced, the height kept) or ``anvil_rollback`` (blocks gone)
takes its transaction out, and anvil does not put it back in its pool. The consumer sees
it, sends the very bytes that were mined again (one signed attempt, one nonce), and once
they are final every payment is paid once on-chain (one ``Distributed`` log each) and
credited once. A ``finalized`` rule credits only once anvil's finalized block (head - 64)
reaches the batch's block."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY

from tests.integration import harness
from tokendist.bench import anvil
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment
from tokendist.ops.status import KafkaOffsets, gather

pytestmark = pytest.mark.integration

N = 6
K = 4  # confirmations: reorganisations of up to K - 1 blocks come before finality
ANVIL_FINALIZED_LAG = 64  # anvil's finalized block: two epochs of 32 slots behind the head


@dataclass
class Chain:
    url: str
    settings: Settings
    tk: Deployment
    expected: dict[str, int]


@asynccontextmanager
async def private_chain(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, **rule: object
) -> AsyncIterator[Chain]:
    """A fresh anvil, the tokenization deployed on it, N payments confirmed; every
    payment gathered into one batch (one each of N users: a user's next payment would
    wait for the previous one to be credited)."""
    binary = anvil.find_binary(None, os.environ.get("TOKENDIST_STACK_DIR"))
    async with anvil.started(binary, None, tmp_path / "anvil.log") as url:
        s = settings.model_copy(
            update={"rpc_url": url, "batch_max_size": N, "batch_max_wait_s": 5.0, **rule}
        )
        await harness.fund_keys(s, url)
        tk = await harness.deploy(
            s, pool, tokenization_id="tok-reorg", property_id="prop-reorg", name="Reorg",
            symbol="RRG", supply=10**30,
        )  # fmt: skip
        expected = await harness.confirm_payments(pool, tk, N, users=N)
        yield Chain(url, s, tk, expected)


async def batch_is_mined(pool: asyncpg.Pool) -> bool:
    return await mined_batch(pool) is not None


async def mined_batch(pool: asyncpg.Pool) -> asyncpg.Record | None:
    """The batch, once every payment is in it and it is mined (not final)."""
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT id, tx_hash, block_number, block_hash FROM batches WHERE state = 'mined'"
    )
    if row is None:
        return None
    members = await harness.count(
        pool, "SELECT count(*) FROM distributions WHERE batch_id = $1", row["id"]
    )
    return row if members == N else None


async def mine(url: str, blocks: int) -> None:
    await harness.rpc(url, "anvil_mine", [hex(blocks)])


def reorgs() -> float:
    return REGISTRY.get_sample_value("tokendist_reorgs_total") or 0.0


async def paid_once(c: Chain, pool: asyncpg.Pool) -> None:
    """One payout per payment on-chain, each wallet its tokens, holdings credited once."""
    payouts = await harness.payouts(c.settings, c.tk)
    assert len(payouts) == len({p.payment_id for p in payouts}) == N
    paid: dict[str, int] = {}
    for p in payouts:
        paid[p.to] = paid.get(p.to, 0) + p.amount
    assert paid == {w.lower(): t for w, t in c.expected.items()}
    holdings = {u: await harness.holding(pool, u) for u in range(N)}
    assert {harness.wallet(u): t for u, t in holdings.items()} == c.expected
    assert await harness.count(pool, "SELECT count(*) FROM ledger_entries") == 2 * N
    report = await harness.run_verify(c.settings, pool)
    assert report.ok, report.render()


async def all_credited(pool: asyncpg.Pool) -> bool:
    return await harness.credited(pool) == N


@pytest.mark.parametrize("how", ["reorg", "rollback", "reorg_reincluding"])
async def test_a_batch_reorganised_before_finality_is_sent_again_and_paid_once(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, how: str
) -> None:
    async with private_chain(settings, pool, tmp_path, confirmations=K) as c:
        async with harness.relay(c.settings), harness.consumer(c.settings):
            await harness.wait_until(lambda: batch_is_mined(pool), what="the batch mined")
            assert await harness.credited(pool) == 0  # mined, not final: nothing credited
            before = reorgs()
            await mine(c.url, 1)  # two blocks on it now: still K - 2 short of final
            depth = 2
            if how == "rollback":
                await harness.rpc(c.url, "anvil_rollback", [depth])
            elif how == "reorg":
                await harness.rpc(c.url, "anvil_reorg", [depth, []])
            else:  # the same transaction, in the first of the blocks that replace its own
                raw = await pool.fetchval("SELECT raw_tx FROM chain_transactions")
                await harness.rpc(c.url, "anvil_reorg", [depth, [["0x" + bytes(raw).hex(), 0]]])

            async def mined_again() -> bool:
                # Counted once the batch moved (back to submitted, or to its new block): mined
                # now is mined again. Its new block may even have the old hash (a rollback
                # mined again within the same second rebuilds the same block).
                return reorgs() == before + 1 and await mined_batch(pool) is not None

            await harness.wait_until(mined_again, what="the batch mined again")
            assert await harness.credited(pool) == 0
            assert reorgs() == before + 1
            await mine(c.url, K)
            await harness.wait_until(lambda: all_credited(pool), what="every payment credited")

        # Never signed again: the one attempt, its bytes sent again (or re-included).
        assert await harness.count(pool, "SELECT count(*) FROM chain_transactions") == 1
        assert await harness.count(pool, "SELECT count(*) FROM batches") == 1
        assert await pool.fetchval("SELECT state FROM batches") == "credited"
        await paid_once(c, pool)


async def test_with_the_finalized_tag_a_batch_is_credited_once_the_tag_reaches_it(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with private_chain(settings, pool, tmp_path, finality="finalized") as c:
        async with harness.relay(c.settings), harness.consumer(c.settings):
            await harness.wait_until(lambda: batch_is_mined(pool), what="the batch mined")
            # The finalized block is head - 64: after 63 more blocks it is one short.
            await mine(c.url, ANVIL_FINALIZED_LAG - 1)
            batch = await mined_batch(pool)
            assert batch is not None
            finalized = await harness.rpc(c.url, "eth_getBlockByNumber", ["finalized", False])
            assert int(finalized["number"], 16) == batch["block_number"] - 1
            assert await harness.credited(pool) == 0
            assert await status_line(c.settings, pool) == "batches       1 mined, not final"
            await mine(c.url, 1)
            await harness.wait_until(lambda: all_credited(pool), what="every payment credited")
        await paid_once(c, pool)


async def status_line(settings: Settings, pool: asyncpg.Pool) -> str:
    """``tokendist status``'s line about batches, the oldest's age left out."""
    async with pool.acquire() as conn, KafkaOffsets(settings) as offsets:
        status = await gather(conn, offsets, None)
    [line] = [line for line in status.render().splitlines() if line.startswith("batches ")]
    return line.split(" (oldest")[0]
