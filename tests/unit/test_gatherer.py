"""The gatherer on the fakes: payments gathered into batches by size, by waiting time and
by Distributor; a payment the estimate refuses failed alone (bisection) while its
batch-mates are paid; a key the node refuses for itself rests and another key takes the
batch; a key never holds more than its cap of unconfirmed batches."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from tests.unit.fake_chain import SENDER, SENDER_2, decoded
from tests.unit.members import (
    PAID,
    REFUSED_BEFORE_SIGNING,
    TOKENIZATION,
    TOKENS,
    World,
    until,
    wallet,
)
from tokendist.consumer import contracts
from tokendist.consumer.processor import Outcome
from tokendist.consumer.repository import Tokenization
from tokendist.consumer.states import State

pytestmark = pytest.mark.usefixtures("fast_receipts")

# Long enough that no batch is signed for its age: only a full batch is.
NEVER = 60.0


async def test_payments_are_batched_by_size_under_contiguous_indices_and_consecutive_nonces() -> (
    None
):
    w = World()
    payments = w.approved(6)

    async with w.member(batch_max_size=3, batch_max_wait_s=NEVER) as m:
        outcomes = await asyncio.gather(*(m.processor.handle(r) for _, r in payments))

    assert outcomes == [Outcome.CREDITED] * 6
    first, second = w.node.signatures
    assert (first.nonce, second.nonce) == (0, 1)
    assert [decoded(s)[0] for s in (first, second)] == [0, 3]
    paid = [pid for s in (first, second) for pid, _, _ in decoded(s)[1]]
    assert sorted(paid) == sorted(contracts.payment_id(e.data.investment_id) for e, _ in payments)
    assert [b.size for b in w.repo.batches.values()] == [3, 3]
    for i, (event, _) in enumerate(payments, start=1):
        assert w.repo.path(event.event_id) == PAID
        assert w.distributor.paid_to(wallet(i)) == TOKENS
    assert len(w.repo.holdings) == 6


async def test_a_batch_that_never_fills_is_signed_once_its_oldest_payment_waited() -> None:
    w = World()
    [(event, record)] = w.approved()
    async with w.member(batch_max_size=200, batch_max_wait_s=0.01) as m:
        assert await m.processor.handle(record) is Outcome.CREDITED
    [batch] = w.repo.batches.values()
    assert batch.size == 1
    assert w.repo.path(event.event_id) == PAID


async def test_a_batch_pays_through_one_distributor() -> None:
    w = World()
    other = Tokenization(
        "tok-2", "prop-2", TOKENIZATION.chain_id, "0x" + "33" * 20, 18, "0x" + "44" * 20
    )
    w.repo.tokenizations[other.id] = other
    second = w.node.deploy(other.distributor_address, operators=[SENDER])
    records = []
    for i in range(1, 5):
        w.approve(f"user-{i}", wallet(i))
        tokenization = TOKENIZATION if i % 2 else other
        _, record = w.confirmed(
            user_id=f"user-{i}",
            investment_id=f"inv-{i}",
            wallet_address=wallet(i),
            tokenization_id=tokenization.id,
            property_id=tokenization.property_id,
        )
        records.append(record)

    async with w.member(batch_max_size=2, batch_max_wait_s=NEVER) as m:
        outcomes = await asyncio.gather(*(m.processor.handle(r) for r in records))

    assert outcomes == [Outcome.CREDITED] * 4
    by_distributor = {b.distributor_address: b for b in w.repo.batches.values()}
    assert set(by_distributor) == {TOKENIZATION.distributor_address, other.distributor_address}
    assert {b.first_index for b in by_distributor.values()} == {0}  # an index range each
    assert [w.distributor.paid_to(wallet(i)) for i in (1, 3)] == [TOKENS, TOKENS]
    assert [second.paid_to(wallet(i)) for i in (2, 4)] == [TOKENS, TOKENS]
    assert w.distributor.paid_to(wallet(2)) == second.paid_to(wallet(1)) == 0


async def test_a_payment_the_estimate_refuses_fails_alone_and_its_batch_mates_are_paid() -> None:
    w = World()
    payments = w.approved(5)
    w.distributor.refused[wallet(4).lower()] = "ERC20InvalidReceiver"

    async with w.member(batch_max_size=5, batch_max_wait_s=NEVER) as m:
        outcomes = await asyncio.gather(*(m.processor.handle(r) for _, r in payments))

    assert outcomes == [Outcome.CREDITED] * 3 + [Outcome.FAILED, Outcome.CREDITED]
    refused = w.repo.rows[payments[3][0].event_id]
    assert (refused.dist.failure_reason, refused.retryable) == (
        "reverted: ERC20InvalidReceiver",
        True,
    )
    assert w.repo.path(payments[3][0].event_id) == REFUSED_BEFORE_SIGNING
    [signed] = w.node.signatures
    first, paid = decoded(signed)
    assert (first, [to for _, to, _ in paid]) == (0, [wallet(i).lower() for i in (1, 2, 3, 5)])
    assert [w.distributor.paid_to(wallet(i)) for i in range(1, 6)] == [TOKENS] * 3 + [0, TOKENS]


async def test_a_batch_beyond_the_distributors_tokens_pays_what_fits_and_fails_the_rest() -> None:
    w = World()
    payments = w.approved(3)
    w.distributor.tokens = 2 * TOKENS

    async with w.member(batch_max_size=3, batch_max_wait_s=NEVER) as m:
        outcomes = await asyncio.gather(
            *(m.processor.handle(r) for _, r in payments), return_exceptions=True
        )

    assert sorted(map(str, outcomes)) == sorted(
        map(str, [Outcome.CREDITED, Outcome.CREDITED, Outcome.FAILED])
    )
    assert sum(w.distributor.paid_to(wallet(i)) for i in range(1, 4)) == 2 * TOKENS


@pytest.mark.parametrize("refusal", ["no operator role", "no gas money"])
async def test_a_key_the_node_refuses_for_itself_rests_and_another_key_takes_the_batch(
    refusal: str,
) -> None:
    w = World(
        senders=[SENDER, SENDER_2],
        operators=[SENDER_2] if refusal == "no operator role" else None,
    )
    if refusal == "no gas money":
        w.node.gas_wei[SENDER.lower()] = 0
    [(event, record)] = w.approved()

    with capture_logs() as logs:
        async with w.member() as m:
            assert await m.processor.handle(record) is Outcome.CREDITED

    [batch] = w.repo.batches.values()
    assert batch.sender == SENDER_2
    assert [e["sender"] for e in logs if e["event"] == "operator_key_resting"] == [SENDER]
    assert [s.nonce for s in w.node.signatures] == [0]
    assert w.repo.nonces[(TOKENIZATION.chain_id, SENDER)] == 0
    assert w.repo.path(event.event_id) == PAID
    assert w.distributor.paid_to(wallet(1)) == TOKENS


async def test_a_key_never_holds_more_unconfirmed_batches_than_its_cap() -> None:
    w = World(senders=[SENDER, SENDER_2])
    payments = w.approved(5)
    w.node.auto_mine = False

    async with w.member(batch_max_size=1, max_inflight_per_sender=1) as m:
        handling = [asyncio.create_task(m.processor.handle(r)) for _, r in payments]
        await until(lambda: len(w.repo.batches) == 2)
        await asyncio.sleep(0.05)  # room for a third batch to be signed, were the cap ignored
        assert len(w.repo.batches) == 2
        w.node.auto_mine = True
        outcomes = await asyncio.gather(*handling)

    assert outcomes == [Outcome.CREDITED] * 5
    assert len(w.repo.batches) == 5
    assert {sender for sender, _ in w.repo.signed_at_inflight} == {SENDER, SENDER_2}
    assert all(inflight == 0 for _, inflight in w.repo.signed_at_inflight)
    assert [w.distributor.paid_to(wallet(i)) for i in range(1, 6)] == [TOKENS] * 5
    assert all(w.repo.state_of(e.event_id) is State.CREDITED for e, _ in payments)


async def test_a_payment_submitted_twice_at_once_is_paid_once() -> None:
    w = World()
    [(_, record)] = w.approved()

    async with w.member(batch_max_size=2, batch_max_wait_s=NEVER) as m:
        outcomes = await asyncio.gather(m.processor.handle(record), m.processor.handle(record))

    assert set(outcomes) <= {Outcome.CREDITED, Outcome.ALREADY_DONE}
    assert w.distributor.paid_to(wallet(1)) == TOKENS
