"""The settler on the fakes: each payment's outcome read from the batch's receipt
(paid by it, paid earlier under its own index, or an index collision for a human), a
reverted batch failing its payments retryable, and an abandoned batch (its nonce taken
by a transaction we did not sign) putting its payments back to be paid once under fresh
indices."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from tests.unit.fake_chain import SENDER, SENDER_2, FakeChain, decoded
from tests.unit.members import (
    ABANDONED_THEN_PAID,
    BATCH_ABANDONED,
    BATCH_PAID,
    BATCH_PAID_ONCE_FINAL,
    BATCH_REVERTED,
    FAILED_ON_CHAIN,
    PAID,
    TOKENIZATION,
    TOKENS,
    World,
    until,
    wallet,
)
from tokendist.consumer import contracts
from tokendist.consumer.batching.settler import NONCE_CONSUMED_STRIKES
from tokendist.consumer.batching.states import BatchState
from tokendist.consumer.chain import Signed
from tokendist.consumer.processor import Outcome
from tokendist.consumer.repository import Batch
from tokendist.consumer.states import State
from tokendist.schemas import PaymentConfirmedV1

pytestmark = pytest.mark.usefixtures("fast_receipts")

NEVER = 60.0


async def pay_elsewhere(w: World, first: int, payments: list[tuple[bytes, str, int]]) -> Signed:
    """A batch this database never heard of (another operator's tool) mined at ``first``."""
    other = FakeChain(w.node, SENDER_2)
    await other.chain_id()
    signed = await other.sign(
        to=TOKENIZATION.distributor_address,
        data=contracts.batch_calldata(first, payments),
        gas=10**6,
        nonce=await other.nonce(pending=True),
        max_fee=10 * w.node.base_fee,
        priority_fee=1,
    )
    await other.send_raw(signed.raw)
    assert w.node.receipt_of(signed.tx_hash).succeeded
    return signed


def submitted(w: World) -> bool:
    """The first batch was broadcast."""
    return 1 in w.repo.batches and w.repo.batches[1].state is BatchState.SUBMITTED


def entry(event: PaymentConfirmedV1, to: str) -> tuple[bytes, str, int]:
    return contracts.payment_id(event.data.investment_id), to, event.data.tokens


async def test_a_payment_skipped_as_already_paid_is_confirmed_by_the_payout_that_paid_it() -> None:
    w = World(senders=[SENDER], operators=[SENDER, SENDER_2])
    [(early, early_record), (late, late_record)] = w.approved(2)

    async with w.member(batch_max_size=2, batch_max_wait_s=NEVER) as m:
        # After the index floor was rebuilt: the floor does not know index 0 is used.
        earlier = await pay_elsewhere(w, 0, [entry(early, wallet(1))])
        outcomes = await asyncio.gather(
            m.processor.handle(early_record), m.processor.handle(late_record)
        )

    assert list(outcomes) == [Outcome.CREDITED, Outcome.CREDITED]
    [ours] = [s for s in w.node.signatures if s.tx_hash != earlier.tx_hash]
    assert decoded(ours)[0] == 0
    paid_early = await w.repo.get(early.event_id)
    assert (paid_early.tx_hash, paid_early.payment_index) == (earlier.tx_hash, 0)
    assert (await w.repo.get(late.event_id)).tx_hash == ours.tx_hash
    assert [w.distributor.paid_to(wallet(i)) for i in (1, 2)] == [TOKENS, TOKENS]
    assert w.repo.holdings == {
        ("user-1", TOKENIZATION.id): TOKENS,
        ("user-2", TOKENIZATION.id): TOKENS,
    }
    assert w.repo.batch_path(1) == BATCH_PAID


async def test_an_index_used_by_another_payment_fails_for_a_human_its_batch_mates_are_paid() -> (
    None
):
    w = World(senders=[SENDER], operators=[SENDER, SENDER_2])
    [(collided, collided_record), (mate, mate_record)] = w.approved(2)
    stranger = b"\x99" * 32, "0x" + "77" * 20, 1

    with capture_logs() as logs:
        async with w.member(batch_max_size=2, batch_max_wait_s=NEVER) as m:
            await pay_elsewhere(w, 0, [stranger])
            outcomes = await asyncio.gather(
                m.processor.handle(collided_record), m.processor.handle(mate_record)
            )

    assert list(outcomes) == [Outcome.FAILED, Outcome.CREDITED]
    row = w.repo.rows[collided.event_id]
    assert row.dist.failure_reason == "index_collision: index 0 was used by another payment"
    assert not row.retryable
    assert not w.repo.redrive(collided.event_id)
    assert [e["event_id"] for e in logs if e["event"] == "payment_index_collision"] == [
        str(collided.event_id)
    ]
    assert [w.distributor.paid_to(wallet(i)) for i in (1, 2)] == [0, TOKENS]
    assert w.repo.holdings == {("user-2", TOKENIZATION.id): TOKENS}
    assert w.repo.path(mate.event_id) == PAID


async def test_a_reverted_batch_fails_its_payments_retryably_and_a_redrive_pays_them_once() -> None:
    w = World()
    payments = w.approved(2)
    w.node.auto_mine = False

    async with w.member(batch_max_size=2, batch_max_wait_s=NEVER) as m:
        handling = [asyncio.create_task(m.processor.handle(r)) for _, r in payments]
        await until(lambda: submitted(w))
        tokens, w.distributor.tokens = w.distributor.tokens, TOKENS  # not enough for both
        w.node.auto_mine = True
        assert await asyncio.gather(*handling) == [Outcome.FAILED, Outcome.FAILED]

        receipt = w.node.receipt_of(w.repo.batches[1].tx_hash or "")
        assert not receipt.succeeded
        for event, _ in payments:
            row = w.repo.rows[event.event_id]
            assert row.dist.failure_reason == (
                f"reverted: batch 1 tx {receipt.tx_hash} in block {receipt.block_number}"
            )
            assert row.retryable
            assert w.repo.path(event.event_id) == FAILED_ON_CHAIN
        assert w.repo.batch_path(1) == BATCH_REVERTED
        assert w.repo.holdings == {}
        assert w.distributor.bits == set()  # the revert rolled every bit back

        w.distributor.tokens = tokens
        for event, _ in payments:
            assert w.repo.redrive(event.event_id)
        outcomes = await asyncio.gather(*(m.processor.handle(r) for _, r in payments))

    assert outcomes == [Outcome.CREDITED, Outcome.CREDITED]
    assert decoded(w.node.signatures[-1])[0] == 2  # fresh indices: the floor never goes back
    assert [w.distributor.paid_to(wallet(i)) for i in (1, 2)] == [TOKENS, TOKENS]


async def test_an_abandoned_batch_puts_its_payments_back_and_they_are_paid_once_anew() -> None:
    w = World()
    payments = w.approved(2)
    w.node.auto_mine = False

    with capture_logs() as logs:
        async with w.member(batch_max_size=2, batch_max_wait_s=NEVER) as m:
            handling = [asyncio.create_task(m.processor.handle(r)) for _, r in payments]
            await until(lambda: submitted(w))
            first = w.node.signatures[0]
            w.node.take_nonce(SENDER)  # the key used elsewhere: our nonce 0 is gone
            w.node.auto_mine = True
            outcomes = await asyncio.gather(*handling)

    assert outcomes == [Outcome.CREDITED, Outcome.CREDITED]
    assert [e["nonce"] for e in logs if e["event"] == "batch_nonce_taken"] == [0]
    assert w.repo.batch_path(1) == BATCH_ABANDONED
    assert w.repo.batch_path(2) == BATCH_PAID
    assert first.tx_hash not in w.node.mined
    [_, second] = w.node.signatures
    assert (second.nonce, decoded(second)[0]) == (1, 2)  # a fresh nonce, fresh indices
    for i, (event, _) in enumerate(payments, start=1):
        assert w.repo.path(event.event_id) == ABANDONED_THEN_PAID
        assert (await w.repo.get(event.event_id)).batch_id == 2
        assert w.distributor.paid_to(wallet(i)) == TOKENS
    assert len(w.repo.holdings) == 2


async def test_a_batch_is_abandoned_only_after_its_nonce_stayed_taken_for_the_strikes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A receipt that lags its block must not abandon a batch that was in fact mined."""
    w = World()
    [(event, record)] = w.approved()
    w.node.auto_mine = False
    heads: list[int] = []

    async with w.member() as m:
        handling = asyncio.create_task(m.processor.handle(record))
        await until(lambda: submitted(w))
        abandon = w.repo.batch_abandoned

        async def abandoned(batch: Batch, reason: str) -> Batch:
            heads.append(w.node.block)
            return await abandon(batch, reason)

        monkeypatch.setattr(w.repo, "batch_abandoned", abandoned)
        taken_at = w.node.block
        w.node.take_nonce(SENDER)
        w.node.auto_mine = True
        assert await handling is Outcome.CREDITED

    [head] = heads
    assert head - taken_at >= NONCE_CONSUMED_STRIKES
    assert w.repo.state_of(event.event_id) is State.CREDITED


async def test_a_nonce_taken_in_a_block_not_final_abandons_nothing_a_reorg_may_mine_ours() -> None:
    """Abandoned while the other transaction could still be reorganised away, the batch's
    payments would be batched again under fresh indices, and our signed bytes, sent again
    by anyone who saw them, would pay them a second time."""
    w = World()
    [(event, record)] = w.approved()
    w.node.auto_mine = False

    async with w.member(finality="confirmations:60") as m:
        handling = asyncio.create_task(m.processor.handle(record))
        await until(lambda: submitted(w))
        [ours] = w.node.signatures
        w.node.take_nonce(SENDER)
        taken = w.node.block
        w.node.auto_mine = True
        await until(lambda: w.node.block >= taken + NONCE_CONSUMED_STRIKES + 5)
        assert w.repo.batches[1].state is BatchState.SUBMITTED  # struck, not final: kept
        w.node.rollback(w.node.block - taken + 1)  # the other transaction's block gone
        w.node.send(ours.raw)  # anyone who saw our bytes sends them again
        assert await handling is Outcome.CREDITED

    assert w.repo.batch_path(1) == BATCH_PAID_ONCE_FINAL
    assert w.repo.path(event.event_id) == PAID
    assert w.node.signatures == [ours]
    assert w.distributor.paid_to(wallet(1)) == TOKENS


async def test_a_crash_right_after_abandoning_resumes_and_pays_once_anew() -> None:
    w = World()
    payments = w.approved(2)
    w.node.auto_mine = False
    w.repo.crash_after = BatchState.ABANDONED

    async with w.member(batch_max_size=2, batch_max_wait_s=NEVER) as m:
        handling = [asyncio.create_task(m.processor.handle(r)) for _, r in payments]
        await until(lambda: submitted(w))
        w.node.take_nonce(SENDER)
        results = await asyncio.gather(*handling, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["Crashed", "Crashed"]
    assert all(w.repo.state_of(e.event_id) is State.RECEIVED for e, _ in payments)

    w.node.auto_mine = True
    async with w.member(batch_max_size=2, batch_max_wait_s=NEVER) as m:
        outcomes = await asyncio.gather(*(m.processor.handle(r) for _, r in payments))

    assert outcomes == [Outcome.CREDITED, Outcome.CREDITED]
    assert [s.nonce for s in w.node.signatures] == [0, 1]
    for i, (event, _) in enumerate(payments, start=1):
        assert w.repo.path(event.event_id) == ABANDONED_THEN_PAID
        assert w.distributor.paid_to(wallet(i)) == TOKENS
