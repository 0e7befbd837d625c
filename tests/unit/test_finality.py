"""Finality: the rule and its settings, and the settler on the fakes with a rule of more
than one block. A batch in a block is ``mined`` and nothing is credited until it is
final; a reorganisation before that (its block replaced, or rolled back) sends the very
bytes that were mined again, and the payment is paid, and credited, once; one that moves
the transaction to another block leaves it mined there; a revert waits for finality too.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from tests.unit.members import (
    BATCH_MOVED,
    BATCH_PAID_ONCE_FINAL,
    BATCH_REORGED,
    BATCH_REVERTED_ONCE_FINAL,
    PAID,
    TOKENS,
    World,
    until,
    wallet,
)
from tokendist.consumer.batching.states import BatchState
from tokendist.consumer.processor import Outcome
from tokendist.core.finality import PRESETS, FinalityRule, Tag, is_final
from tokendist.core.settings import SettingsError, load_settings

pytestmark = pytest.mark.usefixtures("fast_receipts")

FUZZ_EXAMPLES = 500
K = 4  # confirmations: a reorganisation of up to K - 1 blocks happens before finality


# --- the rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "block", "head", "tagged", "final"),
    [
        (FinalityRule(1), 10, 10, None, True),
        (FinalityRule(4), 10, 12, None, False),
        (FinalityRule(4), 10, 13, None, True),
        (FinalityRule(tag=Tag.FINALIZED), 10, 100, None, False),  # the node has none yet
        (FinalityRule(tag=Tag.FINALIZED), 10, 100, 9, False),
        (FinalityRule(tag=Tag.FINALIZED), 10, 100, 10, True),
        (FinalityRule(tag=Tag.SAFE), 10, 10, 11, True),
    ],
)
def test_is_final(
    rule: FinalityRule, block: int, head: int, tagged: int | None, final: bool
) -> None:
    assert is_final(rule, block, head, tagged) is final


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(
    n=st.integers(1, 10_000),
    block=st.integers(0, 10**9),
    depth=st.integers(-5, 20_000),
    more=st.integers(0, 100),
)
def test_a_final_block_stays_final_as_the_head_grows(
    n: int, block: int, depth: int, more: int
) -> None:
    """Final exactly once ``n`` blocks (its own included) are on top; more never undoes it."""
    rule, head = FinalityRule(n), block + depth
    assert is_final(rule, block, head, None) is (depth + 1 >= n)
    if is_final(rule, block, head, None):
        assert is_final(rule, block, head + more, None)


@pytest.mark.parametrize("text", ["confirmations:12", "finalized", "SAFE", " confirmations:1 "])
def test_a_rule_reads_back_as_written(text: str) -> None:
    assert str(FinalityRule.parse(text)) == text.strip().lower()


@pytest.mark.parametrize(
    "text", ["", "confirmations", "confirmations:0", "confirmations:-1", "latest", "12"]
)
def test_a_bad_rule_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"confirmations:N .* finalized or safe"):
        FinalityRule.parse(text)


def test_the_rule_comes_from_finality_else_confirmations_else_the_preset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOKENDIST_DATABASE_URL", "postgresql://x")
    monkeypatch.setenv("TOKENDIST_KAFKA_BOOTSTRAP", "k:9092")
    assert load_settings().finality_rule == FinalityRule(1)  # anvil: as before
    assert load_settings(chain_preset="ethereum").finality_rule == FinalityRule(tag=Tag.FINALIZED)
    assert load_settings(chain_preset="polygon").finality_rule == FinalityRule(500)
    assert load_settings(chain_preset="polygon", confirmations=3).finality_rule == FinalityRule(3)
    rule = load_settings(chain_preset="polygon", finality="safe").consumer().finality_rule
    assert rule == FinalityRule(tag=Tag.SAFE)
    child = load_settings(**{k.removeprefix("TOKENDIST_").lower(): v for k, v in load_settings(
        confirmations=7).as_env().items()})  # fmt: skip
    assert child.finality_rule == FinalityRule(7)
    assert set(PRESETS) >= {"anvil", "ethereum", "polygon", "arbitrum", "base", "optimism"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"finality": "confirmations:0"}, "TOKENDIST_FINALITY: Value error, 'confirmations:0'"),
        ({"chain_preset": "solana"}, "TOKENDIST_CHAIN_PRESET: Value error, 'solana' is not"),
        ({"finality": "finalized", "confirmations": 3}, "disagree: set one"),
    ],
)
def test_a_bad_finality_setting_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, changes: dict[str, object], message: str
) -> None:
    monkeypatch.setenv("TOKENDIST_DATABASE_URL", "postgresql://x")
    monkeypatch.setenv("TOKENDIST_KAFKA_BOOTSTRAP", "k:9092")
    with pytest.raises(SettingsError, match=message):
        load_settings(**changes)


# --- the settler ------------------------------------------------------------------------


def batch_state(w: World, batch_id: int = 1) -> BatchState | None:
    batch = w.repo.batches.get(batch_id)
    return None if batch is None else batch.state


def reorgs() -> float:
    return REGISTRY.get_sample_value("tokendist_reorgs_total") or 0.0


async def test_a_mined_batch_is_credited_only_once_final() -> None:
    w = World()
    [(event, record)] = w.approved()
    w.node.halted = True  # the head stays at the block that mined it
    async with w.member(confirmations=K) as m:
        handling = asyncio.create_task(m.processor.handle(record))
        await until(lambda: batch_state(w) is BatchState.MINED)
        assert w.repo.holdings == {}
        assert w.repo.batches[1].block_hash == w.node.hash_of(w.node.block)
        w.node.halted = False
        assert await handling is Outcome.CREDITED
    assert w.repo.batch_path(1) == BATCH_PAID_ONCE_FINAL
    assert w.repo.path(event.event_id) == PAID  # a payment's own states are unchanged
    batch = w.repo.batches[1]
    assert batch.block_number is not None
    assert w.node.block - batch.block_number + 1 >= K


@pytest.mark.parametrize("how", ["reorg", "rollback"])
async def test_a_reorganisation_before_finality_sends_the_same_bytes_again_and_pays_once(
    how: str,
) -> None:
    w = World()
    payments = w.approved(2)
    w.node.halted = True
    before = reorgs()
    with capture_logs() as logs:
        async with w.member(confirmations=K, batch_max_size=2, batch_max_wait_s=60) as m:
            handling = [asyncio.create_task(m.processor.handle(r)) for _, r in payments]
            await until(lambda: batch_state(w) is BatchState.MINED)
            [signed] = w.node.signatures
            mined_in = w.repo.batches[1].block_hash
            # K - 1 blocks deep: the deepest reorganisation the rule is meant to survive.
            w.node.new_block()
            w.node.new_block()
            dropped = w.node.reorg(K - 1) if how == "reorg" else w.node.rollback(K - 1)
            assert [tx.tx_hash for tx in dropped] == [signed.tx_hash]
            assert w.distributor.bits == set()  # undone: the payments are unpaid again
            await until(
                lambda: (
                    batch_state(w) is BatchState.MINED and w.repo.batches[1].block_hash != mined_in
                )
            )
            w.node.halted = False
            outcomes = await asyncio.gather(*handling)

    assert outcomes == [Outcome.CREDITED, Outcome.CREDITED]
    assert w.repo.batch_path(1) == BATCH_REORGED
    assert w.node.signatures == [signed]  # never signed again: the same bytes, same nonce
    assert w.node.broadcasts.count(signed.tx_hash) == 2
    assert [e["tx_hash"] for e in logs if e["event"] == "batch_reorged"] == [signed.tx_hash]
    assert reorgs() == before + 1
    for i, (event, _) in enumerate(payments, start=1):
        assert w.distributor.paid_to(wallet(i)) == TOKENS
        assert w.repo.path(event.event_id) == PAID
    assert sorted(w.repo.holdings.values()) == [TOKENS, TOKENS]
    assert len(w.repo.batches) == 1


async def test_a_reorganisation_that_mines_it_again_elsewhere_leaves_it_mined_there() -> None:
    w = World()
    [(_, record)] = w.approved()
    w.node.halted = True
    before = reorgs()
    async with w.member(confirmations=K) as m:
        handling = asyncio.create_task(m.processor.handle(record))
        await until(lambda: batch_state(w) is BatchState.MINED)
        first = w.repo.batches[1]
        w.node.new_block()
        w.node.reorg(2, reinclude=True)  # one block lower than before
        await until(lambda: w.repo.batches[1].block_hash != first.block_hash)
        assert batch_state(w) is BatchState.MINED
        assert w.repo.batches[1].block_number == (first.block_number or 0)
        w.node.halted = False
        assert await handling is Outcome.CREDITED
    assert w.repo.batch_path(1) == BATCH_MOVED
    assert len(w.node.broadcasts) == 1  # nothing to send again: it is in a block
    assert reorgs() == before + 1
    assert w.distributor.paid_to(wallet(1)) == TOKENS


async def test_a_revert_waits_for_finality_too() -> None:
    """A reverted receipt fails its payments retryable, to be signed again under fresh
    indices; if a reorganisation then mined the first bytes successfully, they would be
    paid twice. So it waits for finality like a success."""
    w = World()
    [(event, record)] = w.approved()
    w.node.auto_mine = False
    async with w.member(confirmations=K) as m:
        handling = asyncio.create_task(m.processor.handle(record))
        await until(lambda: batch_state(w) is BatchState.SUBMITTED)
        w.distributor.tokens = TOKENS - 1  # spent meanwhile: the transfer reverts
        w.node.halted = True
        w.node.mine()
        await until(lambda: batch_state(w) is BatchState.MINED)
        assert not w.node.receipt_of(w.node.signatures[0].tx_hash).succeeded
        assert w.repo.state_of(event.event_id).value == "submitted"
        w.node.halted = False
        assert await handling is Outcome.FAILED
    assert w.repo.batch_path(1) == BATCH_REVERTED_ONCE_FINAL


async def test_with_the_finalized_tag_a_batch_is_final_once_the_tag_reaches_its_block() -> None:
    w = World()
    [(_, record)] = w.approved()
    w.node.tag_lag = {Tag.FINALIZED: 3}
    w.node.halted = True
    async with w.member(finality="finalized") as m:
        handling = asyncio.create_task(m.processor.handle(record))
        await until(lambda: batch_state(w) is BatchState.MINED)
        mined_at = w.repo.batches[1].block_number or 0
        for _ in range(2):  # finalized = head - 3 < the batch's block: still not final
            w.node.new_block()
        await asyncio.sleep(0.05)
        assert batch_state(w) is BatchState.MINED
        w.node.halted = False
        assert await handling is Outcome.CREDITED
    assert (w.node.tagged(Tag.FINALIZED) or 0) >= mined_at
    assert w.repo.batch_path(1) == BATCH_PAID_ONCE_FINAL
