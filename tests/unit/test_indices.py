"""The index floor rebuilt at start-up, on the fakes: a database restored from a backup
learns from the Distributor's logs which indices are used and which payments are paid,
so that none is paid twice and no index is given to a second payment; the keys' nonces
follow the chain; transactions the database does not know are waited for, up to a
bound."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.unit.fake_chain import CHAIN_ID, SENDER, SENDER_2, FakeChain, decoded
from tests.unit.fakes import FakeRepository
from tests.unit.members import (
    FOUND_ON_CHAIN,
    PAID,
    PARKED_THEN_FOUND_ON_CHAIN,
    TOKENIZATION,
    TOKENS,
    World,
    settings,
    until,
    wallet,
)
from tokendist.consumer import contracts
from tokendist.consumer.batching import indices
from tokendist.consumer.keypool import KeyPool
from tokendist.consumer.processor import Outcome
from tokendist.core.errors import SettingsError

pytestmark = pytest.mark.usefixtures("fast_receipts")

DISTRIBUTOR = TOKENIZATION.distributor_address


def restore(w: World) -> None:
    """The database restored from a backup taken before any payment was distributed:
    the confirmed payments and the users' records are back, nothing else."""
    restored = FakeRepository()
    restored.tokenizations = dict(w.repo.tokenizations)
    restored.confirmations = dict(w.repo.confirmations)
    w.repo = restored


async def test_a_restored_database_confirms_payouts_found_on_chain_and_signs_above_the_floor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(indices, "SCAN_CHUNK", 2)  # several requests, each remembered
    w = World()
    payments = w.approved(3)
    async with w.member() as m:
        for _, record in payments[:2]:
            assert await m.processor.handle(record) is Outcome.CREDITED
    restore(w)
    w.approve("user-1", wallet(1))  # user-2's approval is not in the backup
    w.approve("user-3", wallet(3))

    async with w.member() as m:
        assert w.repo.indices[DISTRIBUTOR] == [2, w.node.block]
        assert sorted(p.index for p in w.repo.onchain.values()) == [0, 1]
        assert w.repo.nonces[(CHAIN_ID, SENDER)] == 2
        outcomes = [await m.processor.handle(record) for _, record in payments]
        assert outcomes == [Outcome.CREDITED, Outcome.PARKED, Outcome.CREDITED]
        w.approve("user-2", wallet(2))
        assert await m.processor.handle(payments[1][1]) is Outcome.CREDITED

    assert w.repo.path(payments[0][0].event_id) == FOUND_ON_CHAIN
    assert w.repo.path(payments[1][0].event_id) == PARKED_THEN_FOUND_ON_CHAIN
    assert w.repo.path(payments[2][0].event_id) == PAID
    for event, _ in payments[:2]:
        dist = await w.repo.get(event.event_id)
        assert dist.batch_id is None
        assert dist.tx_hash == w.repo.onchain[(DISTRIBUTOR, dist.payment_id)].tx_hash
    signatures = w.node.signatures
    assert [s.nonce for s in signatures] == [0, 1, 2]  # the third payment alone: a new batch
    assert decoded(signatures[-1])[0] == 2
    assert [w.distributor.paid_to(wallet(i)) for i in (1, 2, 3)] == [TOKENS] * 3
    assert len(w.repo.holdings) == 3


async def test_a_rescan_starts_after_the_last_block_scanned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = World()
    [(_, record)] = w.approved()
    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.CREDITED
    scanned = w.repo.indices[DISTRIBUTOR][1]
    asked: list[tuple[int, int | None]] = []
    chain = FakeChain(w.node)
    logs = chain.distributed_logs

    async def distributed_logs(
        distributor: str, start: int = 0, end: int | None = None
    ) -> list[dict[str, Any]]:
        asked.append((start, end))
        return await logs(distributor, start, end)

    monkeypatch.setattr(chain, "distributed_logs", distributed_logs)
    pool = KeyPool([chain], w.repo, cap=1, poll_s=0.001)
    await indices.rebuild(settings(), w.repo, pool)
    assert [start for start, _ in asked] == [scanned + 1]
    assert w.repo.indices[DISTRIBUTOR][0] == 1


async def test_a_nonce_is_synchronised_up_to_the_chain_and_never_down() -> None:
    w = World()
    w.node.mined_nonces[SENDER.lower()] = 5  # the key was used elsewhere
    async with w.member():
        assert w.repo.nonces[(CHAIN_ID, SENDER)] == 5
    w.node.mined_nonces[SENDER.lower()] = 3  # a node that lags
    async with w.member():
        assert w.repo.nonces[(CHAIN_ID, SENDER)] == 5


async def unknown_pending(w: World) -> bytes:
    """A batch of our key that this database does not know (it was signed after the
    backup) sits in the node's pool, paying a payment at index 0; returns its id."""
    w.node.auto_mine = False
    other = FakeChain(w.node)
    await other.chain_id()
    payment_id = b"\x42" * 32
    signed = await other.sign(
        to=DISTRIBUTOR,
        data=contracts.batch_calldata(0, [(payment_id, wallet(9), TOKENS)]),
        gas=10**6,
        nonce=0,
        max_fee=10 * w.node.base_fee,
        priority_fee=1,
    )
    await other.send_raw(signed.raw)
    return payment_id


async def test_the_rebuild_waits_for_transactions_the_database_does_not_know() -> None:
    w = World()
    payment_id = await unknown_pending(w)
    pool = KeyPool([FakeChain(w.node)], w.repo, cap=1, poll_s=0.001)

    with capture_logs() as logs:
        rebuilding = asyncio.create_task(indices.rebuild(settings(), w.repo, pool))
        await until(lambda: any(e["event"] == "unknown_transactions_pending" for e in logs))
        w.node.mine()
        await rebuilding

    assert w.repo.nonces[(CHAIN_ID, SENDER)] == 1
    assert w.repo.indices[DISTRIBUTOR][0] == 1  # its payout was scanned: index 0 is used
    assert (DISTRIBUTOR, "0x" + payment_id.hex()) in w.repo.onchain


async def test_the_rebuild_refuses_to_guess_past_its_wait() -> None:
    w = World()
    await unknown_pending(w)
    pool = KeyPool([FakeChain(w.node)], w.repo, cap=1, poll_s=0.001)
    with pytest.raises(SettingsError, match="TOKENDIST_INDEX_REBUILD_WAIT_S"):
        await indices.rebuild(settings(index_rebuild_wait_s=0.01), w.repo, pool)
    assert w.repo.nonces == {}
    assert DISTRIBUTOR not in w.repo.indices


async def paid_then_restored(w: World) -> tuple[Any, Any, int]:
    """One payment paid and credited by the second key, then the database restored from
    before it: its payout is on-chain in a block, unknown to the database. Returns
    (event, record, block). The members after it sign with the first key."""
    [(event, record)] = w.approved()
    async with w.member([SENDER_2]) as m:
        assert await m.processor.handle(record) is Outcome.CREDITED
    [paid] = w.node.included
    restore(w)
    w.approve()
    return event, record, paid.block


async def rebuild_waiting(w: World, rule: str) -> asyncio.Task[None]:
    pool = KeyPool([FakeChain(w.node, SENDER)], w.repo, cap=1, poll_s=0.001)
    await pool.register()
    with capture_logs() as logs:
        rebuilding = asyncio.create_task(indices.rebuild(settings(finality=rule), w.repo, pool))
        await until(lambda: any(e["event"] == "unknown_payouts_not_final" for e in logs))
    await asyncio.sleep(0.01)
    assert not rebuilding.done()
    assert w.repo.onchain == {}  # not final: not remembered
    assert w.repo.indices[DISTRIBUTOR][0] == 1  # its index is skipped all the same
    return rebuilding


async def test_a_payout_not_final_that_the_database_does_not_know_is_awaited_until_final() -> None:
    w = World(senders=[SENDER, SENDER_2])
    event, record, block = await paid_then_restored(w)
    rule = f"confirmations:{w.node.block - block + 2}"  # final one block from now
    rebuilding = await rebuild_waiting(w, rule)
    w.node.new_block()
    await rebuilding

    assert [p.block_number for p in w.repo.onchain.values()] == [block]
    async with w.member([SENDER], finality=rule) as m:
        assert await m.processor.handle(record) is Outcome.CREDITED
    assert w.repo.path(event.event_id) == FOUND_ON_CHAIN
    assert w.distributor.paid_to(wallet(1)) == TOKENS


async def test_a_payout_not_final_that_a_reorganisation_removes_is_paid_again_once() -> None:
    w = World(senders=[SENDER, SENDER_2])
    event, record, block = await paid_then_restored(w)
    rule = f"confirmations:{w.node.block - block + 2}"
    rebuilding = await rebuild_waiting(w, rule)
    w.node.rollback(w.node.block - block + 1)  # the payout's block gone, the tx dropped
    await rebuilding

    assert w.repo.onchain == {}
    assert w.repo.indices[DISTRIBUTOR][0] == 1  # a raised floor stays raised
    async with w.member([SENDER], finality=rule) as m:
        assert await m.processor.handle(record) is Outcome.CREDITED
    assert w.repo.path(event.event_id) == PAID
    assert w.distributor.paid_to(wallet(1)) == TOKENS
