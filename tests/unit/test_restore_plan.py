"""Which stored batches ``reconcile`` sends again after a reorganisation deeper than the
finality rule: every nonce from the key's next on the chain up to the last batch whose
payouts are gone, each by its own stored batch, and never a batch whose payments may have
been batched again under other indices."""

from __future__ import annotations

from tokendist.consumer.batching.states import BatchState
from tokendist.ops.restore import Attempt, plan_resend


def attempt(nonce: int, state: BatchState = BatchState.CREDITED) -> Attempt:
    return Attempt(100 + nonce, nonce, state, f"0x{nonce:064x}", bytes([nonce]))


def test_every_nonce_from_the_chains_to_the_last_is_sent_in_order() -> None:
    stored = {n: attempt(n) for n in (7, 5, 6, 4)}
    plan = plan_resend(5, 7, stored)
    assert [a.nonce for a in plan.sends] == [5, 6, 7]
    assert plan.blocked is None


def test_batches_in_flight_fill_the_gap_too() -> None:
    stored = {5: attempt(5, BatchState.SUBMITTED), 6: attempt(6, BatchState.SIGNED), 7: attempt(7)}
    assert [a.nonce for a in plan_resend(5, 7, stored).sends] == [5, 6, 7]


def test_a_missing_nonce_stops_the_plan_before_it() -> None:
    plan = plan_resend(5, 8, {5: attempt(5), 7: attempt(7), 8: attempt(8)})
    assert [a.nonce for a in plan.sends] == [5]
    assert plan.blocked is not None
    assert plan.blocked.startswith("nonce 6 has no stored batch")


def test_a_reverted_or_abandoned_batch_is_never_sent_again() -> None:
    for state in (BatchState.REVERTED, BatchState.ABANDONED):
        plan = plan_resend(5, 7, {5: attempt(5), 6: attempt(6, state), 7: attempt(7)})
        assert [a.nonce for a in plan.sends] == [5]
        assert plan.blocked is not None
        assert f"batch 106, {state}" in plan.blocked


def test_nothing_to_send_when_the_chain_is_past_the_last_nonce() -> None:
    assert plan_resend(9, 7, {7: attempt(7)}).sends == []
