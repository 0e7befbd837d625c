"""The resubmitter on the fakes: each key's stored, unconfirmed batches re-sent as stored
after the re-broadcast delay, in nonce order per key; stuck ones replaced after the
fee-bump delay by a sibling of the same nonce and calldata with fees raised by the
percent, never above the cap; nothing done for a nonce already mined; a key whose node
answers fail is skipped while the others are swept. Time is the attempts' stored age,
backdated."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.unit.fake_chain import SENDER, SENDER_2, decoded
from tests.unit.fakes import Crashed, FakeRecord
from tests.unit.members import (
    PAID,
    SIGNED,
    SUBMITTED,
    TOKENS,
    World,
    settings,
    until,
    wallet,
)
from tokendist.consumer.chain import Signed
from tokendist.consumer.processor import Outcome

pytestmark = pytest.mark.usefixtures("fast_receipts")


async def stuck(w: World, record: FakeRecord, *, sent: bool = True) -> Signed:
    """A payment whose batch is stored (and ``sent``) but not mined: the consumer that
    signed it died right after."""
    w.node.auto_mine = False
    w.repo.crash_after = SUBMITTED if sent else SIGNED
    async with w.member() as m:
        with pytest.raises(Crashed):
            await m.processor.handle(record)
    return w.node.signatures[-1]


async def sweep(w: World, **changes: Any) -> int:
    async with w.member(**changes) as m:
        return await m.resubmitter.sweep()


async def test_nothing_pending_sends_nothing() -> None:
    w = World()
    assert await sweep(w) == 0
    assert w.node.broadcasts == []


async def test_a_batch_sent_within_the_delay_is_left_alone() -> None:
    w = World()
    [(_, record)] = w.approved()
    await stuck(w, record)
    assert await sweep(w) == 0
    assert len(w.node.broadcasts) == len(w.node.signatures) == 1


async def test_a_batch_unsent_for_the_delay_is_sent_as_stored_and_its_payment_credited() -> None:
    w = World()
    [(event, record)] = w.approved()
    signed = await stuck(w, record, sent=False)
    w.repo.backdate(signed.tx_hash, settings().rebroadcast_after_s)
    w.node.auto_mine = True

    assert await sweep(w) == 1

    assert w.node.broadcasts == [signed.tx_hash]
    assert w.node.signatures == [signed]
    assert w.repo.attempts_by_hash[signed.tx_hash].broadcast_at is not None
    assert await sweep(w) == 0  # just sent: the delay starts again
    async with w.member() as m:  # the event redelivered: its batch is found mined
        assert await m.processor.handle(record) is Outcome.CREDITED
    assert w.repo.path(event.event_id) == PAID
    assert w.distributor.paid_to(wallet(1)) == TOKENS


async def test_each_keys_batches_are_resent_in_nonce_order() -> None:
    w = World(senders=[SENDER, SENDER_2])
    payments = w.approved(4)
    stored = [await stuck(w, record, sent=False) for _, record in payments]
    for signed in stored:
        w.repo.backdate(signed.tx_hash, settings().rebroadcast_after_s)
    by_key = {
        sender: [b.nonce for b in w.repo.batches.values() if b.sender == sender]
        for sender in (SENDER, SENDER_2)
    }
    assert by_key == {SENDER: [0, 1], SENDER_2: [0, 1]}
    w.node.auto_mine = True

    assert await sweep(w) == 4

    sent = [w.repo.attempts_by_hash[h] for h in w.node.broadcasts]
    assert [(a.sender, a.signed.nonce) for a in sent] == [
        (SENDER, 0),
        (SENDER, 1),
        (SENDER_2, 0),
        (SENDER_2, 1),
    ]
    async with w.member() as m:
        outcomes = await asyncio.gather(*(m.processor.handle(r) for _, r in payments))
    assert outcomes == [Outcome.CREDITED] * 4
    assert len(w.node.signatures) == 4
    assert [w.distributor.paid_to(wallet(i)) for i in range(1, 5)] == [TOKENS] * 4


async def test_a_stuck_batch_is_replaced_with_the_same_nonce_and_calldata_and_fees_raised() -> None:
    w = World()
    [(event, record)] = w.approved()
    old = await stuck(w, record)
    w.node.base_fee = old.max_fee_per_gas + 1  # the base fee rose: the pool holds it back
    w.node.auto_mine = True
    w.node.mine()
    assert old.tx_hash in w.node.pool
    s = settings()
    w.repo.backdate(old.tx_hash, s.fee_bump_after_s)

    assert await sweep(w) == 1

    [_, new] = w.node.signatures
    factor = 100 + s.fee_bump_percent
    tip = old.priority_fee * factor // 100 + 1
    assert (new.nonce, new.gas, new.priority_fee) == (old.nonce, old.gas, tip)
    assert new.max_fee_per_gas == max(
        old.max_fee_per_gas * factor // 100 + 1, 2 * w.node.base_fee + tip
    )
    assert decoded(new) == decoded(old)  # the same payments under the same indices
    assert [a.tx_hash for a in await w.repo.attempts(1)] == [old.tx_hash, new.tx_hash]
    assert w.node.broadcasts[-1] == new.tx_hash
    assert new.tx_hash in w.node.mined
    assert old.tx_hash not in w.node.mined

    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.CREDITED
    assert (await w.repo.get(event.event_id)).tx_hash == new.tx_hash
    assert w.repo.batches[1].tx_hash == new.tx_hash
    assert w.distributor.paid_to(wallet(1)) == TOKENS


async def test_a_bump_above_the_fee_cap_is_not_signed_and_the_old_one_is_resent() -> None:
    w = World()
    [(_, record)] = w.approved()
    old = await stuck(w, record)
    s = settings(max_fee_wei=old.max_fee_per_gas)
    w.repo.backdate(old.tx_hash, s.fee_bump_after_s)

    with capture_logs() as logs:
        assert await sweep(w, max_fee_wei=old.max_fee_per_gas) == 1

    assert w.node.signatures == [old]
    assert w.node.broadcasts == [old.tx_hash, old.tx_hash]
    assert [e["cap"] for e in logs if e["event"] == "fee_bump_capped"] == [old.max_fee_per_gas]
    assert len(w.repo.attempts_by_hash) == 1


async def test_nothing_is_done_for_a_batch_whose_nonce_is_mined() -> None:
    w = World()
    [(_, record)] = w.approved()
    old = await stuck(w, record)
    w.node.mine()  # mined; its settler has not confirmed it yet
    w.repo.backdate(old.tx_hash, settings().fee_bump_after_s)

    assert await sweep(w) == 0

    assert w.node.signatures == [old]
    assert w.node.broadcasts == [old.tx_hash]


async def test_a_batch_the_node_dropped_from_its_pool_is_sent_again() -> None:
    w = World()
    [(event, record)] = w.approved()
    old = await stuck(w, record)
    w.node.drop(old.tx_hash)
    w.node.auto_mine = True
    w.repo.backdate(old.tx_hash, settings().rebroadcast_after_s)

    assert await sweep(w) == 1

    assert w.node.broadcasts == [old.tx_hash, old.tx_hash]
    assert old.tx_hash in w.node.mined
    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.CREDITED
    assert w.repo.path(event.event_id) == PAID
    assert len(w.node.signatures) == 1


async def test_a_refused_rebroadcast_is_reported_and_not_marked_sent() -> None:
    w = World()
    [(_, record)] = w.approved()
    signed = await stuck(w, record, sent=False)
    w.repo.backdate(signed.tx_hash, settings().rebroadcast_after_s)
    w.node.send_refusal = "insufficient funds for gas"
    broadcast_at = w.repo.attempts_by_hash[signed.tx_hash].broadcast_at

    with capture_logs() as logs:
        assert await sweep(w) == 0

    assert [e["tx_hash"] for e in logs if e["event"] == "rebroadcast_refused"] == [signed.tx_hash]
    assert w.repo.attempts_by_hash[signed.tx_hash].broadcast_at == broadcast_at


async def test_of_two_members_bumping_at_once_one_replaces_and_the_other_stands_down() -> None:
    w = World()
    [(_, record)] = w.approved()
    old = await stuck(w, record)
    w.repo.backdate(old.tx_hash, settings().fee_bump_after_s)

    async with w.member() as first, w.member() as second:
        acted = await asyncio.gather(first.resubmitter.sweep(), second.resubmitter.sweep())

    assert sorted(acted) == [0, 1]
    assert len(w.repo.attempts_by_hash) == 2  # the old one and one replacement


async def test_a_key_whose_node_fails_is_skipped_and_the_other_keys_are_swept() -> None:
    w = World(senders=[SENDER, SENDER_2])
    payments = w.approved(2)
    stored = [await stuck(w, record, sent=False) for _, record in payments]
    for signed in stored:
        w.repo.backdate(signed.tx_hash, settings().rebroadcast_after_s)

    with capture_logs() as logs:
        async with w.member() as m:
            m.keys[0].down = True  # SENDER's connection
            assert await m.resubmitter.sweep() == 1

    assert [e["sender"] for e in logs if e["event"] == "resubmit_sweep_failed"] == [SENDER]
    [sent] = w.node.broadcasts
    assert w.repo.attempts_by_hash[sent].sender == SENDER_2


async def test_an_outage_during_a_sweep_is_survived_and_the_next_sweep_runs() -> None:
    w = World()
    [(_, record)] = w.approved()
    signed = await stuck(w, record, sent=False)
    w.repo.backdate(signed.tx_hash, settings().rebroadcast_after_s)

    with capture_logs() as logs:
        async with w.member(resubmit_interval_s=0.001) as m:
            w.node.down = True
            running = asyncio.create_task(m.resubmitter.run())
            await until(lambda: any(e["event"] == "resubmit_sweep_failed" for e in logs))
            w.node.down = False
            await until(lambda: bool(w.node.broadcasts))
            running.cancel()
    assert w.node.broadcasts == [signed.tx_hash]
