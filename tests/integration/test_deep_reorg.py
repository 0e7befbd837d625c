"""A reorganisation deeper than the finality rule (issue 15, part 2) on a chain of the
test's own (a private anvil mining a block per transaction; ``anvil_rollback`` there
touches no one else): payments credited at one confirmation lose their payouts to a
rollback; one chain check finds every one of them, and ``reconcile`` puts them back: by
re-sending the batches' own bytes while their nonces are free, or, once another
transaction took the nonces, by signing the batches' calldata again. Either way one
payout per payment, token balances and holdings exact, and a second reconcile does
nothing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from eth_account import Account
from prometheus_client import REGISTRY

from tests.integration import harness
from tokendist.bench import anvil
from tokendist.consumer.chain import Chain
from tokendist.consumer.repository import Repository
from tokendist.core.settings import Settings
from tokendist.custody import LocalSigner
from tokendist.ops.chaincheck import ChainChecker, NodeReader
from tokendist.ops.deploy import Deployment
from tokendist.ops.reconcile import Reconciler
from tokendist.ops.repository import ToolRepository

pytestmark = pytest.mark.integration

ROUND = 3  # payments per round: two rounds, two batches at consecutive nonces
USERS = 2


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def paid_exactly(s: Settings, tk: Deployment, expected: dict[str, int]) -> None:
    """One payout per payment, and each wallet's tokens on the chain what it bought."""
    payouts = await harness.payouts(s, tk)
    assert len(payouts) == len({p.payment_id for p in payouts}) == 2 * ROUND
    rpc_url, key = s.require_chain()
    chain = Chain(rpc_url, LocalSigner(key))
    try:
        for wallet, tokens in expected.items():
            assert await chain.token_balance(tk.token_address, wallet) == tokens
    finally:
        await chain.close()


@pytest.mark.parametrize("nonces", ["free", "taken"])
async def test_a_reorg_deeper_than_finality_is_found_and_repaired_without_a_second_payout(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, nonces: str
) -> None:
    binary = anvil.find_binary(None, os.environ.get("TOKENDIST_STACK_DIR"))
    async with anvil.started(binary, None, tmp_path / "anvil.log") as url:
        s = settings.model_copy(update={"rpc_url": url, "confirmations": 1})
        await harness.fund_keys(s, url)
        tk = await harness.deploy(
            s, pool, tokenization_id="tok-reorg", property_id="prop-reorg", name="Deep Reorg",
            symbol="DRG", supply=10**30,
        )  # fmt: skip
        ops = ToolRepository(pool)
        chain = Chain(s.require_rpc(), LocalSigner(s.require_chain()[1]))
        checker = ChainChecker(s.chain_check(), ops, NodeReader(chain.rpc), asyncio.Event())
        try:
            async with harness.relay(s), harness.consumer(s):
                expected = await harness.confirm_payments(pool, tk, ROUND, users=USERS)
                await harness.wait_until(lambda: credited_is(pool, ROUND), what="round 1")
                more = await harness.confirm_payments(pool, tk, ROUND, users=USERS, start=ROUND)
                await harness.wait_until(lambda: credited_is(pool, 2 * ROUND), what="round 2")
            expected = {w: expected.get(w, 0) + more.get(w, 0) for w in expected | more}
            assert await harness.count(pool, "SELECT count(DISTINCT nonce) FROM batches") >= 2
            before = await checker.turn()
            assert before is not None
            assert before.missing == []
            assert before.checked == 2 * ROUND

            # Deeper than one confirmation: every block from the first batch's on.
            first = await harness.count(pool, "SELECT min(block_number) FROM distributions")
            head = int(await harness.rpc(url, "eth_blockNumber", []), 16)
            await harness.rpc(url, "anvil_rollback", [head - first + 1])
            assert await harness.payouts(s, tk) == []
            batches = await harness.count(pool, "SELECT count(*) FROM batches")
            if nonces == "taken":  # as if the key had sent other transactions since
                sender = Account.from_key(s.require_chain()[1].get_secret_value()).address
                taken = await harness.count(pool, "SELECT max(next_nonce) FROM sender_nonces")
                await harness.rpc(url, "anvil_setNonce", [sender, hex(taken)])

            reorgs = sample("tokendist_deep_reorgs_total")
            found = await checker.turn()
            assert found is not None
            assert len(found.missing) == len(found.new) == 2 * ROUND
            assert sample("tokendist_credited_not_on_chain") == 2 * ROUND
            assert sample("tokendist_deep_reorgs_total") == reorgs + 1
            holdings = await pool.fetch("SELECT user_id, balance FROM token_holdings")

            reconciler = Reconciler(Repository(pool), ops, chain, s.chain_check())
            repaired = await reconciler.run(grace_s=0)
            assert repaired.restored.found == 2 * ROUND, repaired.render()
            assert repaired.restored.for_a_human == [], repaired.render()
            assert len(repaired.restored.resent) == batches, repaired.render()
            assert all("mined in block" in line for line in repaired.restored.resent)
            resigned = "SELECT count(*) FROM batches WHERE resigns IS NOT NULL AND state = $1"
            expect_resigned = batches if nonces == "taken" else 0
            assert await harness.count(pool, resigned, "credited") == expect_resigned
            assert repaired.report is not None
            assert repaired.report.ok, repaired.render()
            await paid_exactly(s, tk, expected)
            assert await pool.fetch("SELECT user_id, balance FROM token_holdings") == holdings
            for u in range(USERS):
                bought = expected[harness.wallet(u)]
                assert await harness.holding(pool, u) == bought

            again = await reconciler.run(grace_s=0)
            assert again.restored.found == 0, again.render()
            assert again.restored.resent == [], again.render()
            await paid_exactly(s, tk, expected)
            after = await checker.turn()
            assert after is not None
            assert after.missing == []
            assert sample("tokendist_credited_not_on_chain") == 0
        finally:
            await chain.close()


async def credited_is(pool: asyncpg.Pool, n: int) -> bool:
    return await harness.credited(pool) == n


class CountingReader(NodeReader):
    """The node, and how many blocks of logs each check asked it for."""

    blocks_read = 0

    async def distributed_logs(
        self, distributor: str, from_block: int, to_block: int
    ) -> list[dict[str, Any]]:
        self.blocks_read += to_block - from_block + 1
        return await super().distributed_logs(distributor, from_block, to_block)


async def test_a_check_reads_the_recent_window_not_the_history(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    binary = anvil.find_binary(None, os.environ.get("TOKENDIST_STACK_DIR"))
    async with anvil.started(binary, None, tmp_path / "anvil.log") as url:
        s = settings.model_copy(update={"rpc_url": url, "chain_check_window_blocks": 10})
        await harness.fund_keys(s, url)
        tk = await harness.deploy(
            s, pool, tokenization_id="tok-window", property_id="prop-window", name="Window",
            symbol="WIN", supply=10**30,
        )  # fmt: skip
        async with harness.relay(s), harness.consumer(s):
            await harness.confirm_payments(pool, tk, ROUND, users=USERS)
            await harness.wait_until(lambda: credited_is(pool, ROUND), what="credited")
        # Credited long ago: only their blocks can bring them into a check.
        await pool.execute("UPDATE distributions SET credited_at = now() - interval '1 day'")
        chain = Chain(s.require_rpc(), LocalSigner(s.require_chain()[1]))
        reader = CountingReader(chain.rpc)
        checker = ChainChecker(s.chain_check(), ToolRepository(pool), reader, asyncio.Event())
        try:
            first = await checker.turn()
            assert first is not None
            assert first.checked == ROUND
            assert first.missing == []
            # Each check re-reads the window below the previous check's head (so a checker
            # that was down misses nothing): the next one still sees them, then none does.
            heads = []
            for seen in (ROUND, 0):
                await harness.rpc(url, "anvil_mine", [hex(100)])
                reader.blocks_read = 0
                later = await checker.turn()
                assert later is not None
                assert later.checked == seen
                heads.append(later.head)
            assert heads[-1] >= first.head + 200
            assert reader.blocks_read == 0
        finally:
            await chain.close()
