"""The distribution state machine (``Processor``, with the real gatherer, settler and key
pool) on in-memory fakes of its ports: every transition of ``consumer.states``, every
error class it handles, and a resume from every stored state, counting signatures and
broadcasts on the fake node and what the Distributor paid.

Each test asserts the path its event took (the fake repository journals every guarded
move); ``test_the_paths_walk_every_transition_of_the_table`` checks that the paths the
tests assert walk the whole transition table but for the moves only other tools make.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from tests.unit.fake_chain import CHAIN_ID, GAS_PER_BATCH, GAS_PER_PAYMENT, SENDER, decoded
from tests.unit.fakes import Crashed
from tests.unit.members import (
    BATCH_PAID,
    BATCH_PATHS,
    CONFIRMED,
    CREDITED,
    FAILED,
    KYC,
    OTHER_WALLET,
    PAID,
    PARKED_THEN_PAID,
    PATHS,
    REDRIVEN_THEN_PAID,
    REFUSED_AFTER_PARKING,
    REFUSED_BEFORE_SIGNING,
    SIGNED,
    SUBMITTED,
    TOKENIZATION,
    TOKENS,
    WALLET,
    R,
    World,
    confirmation_of,
    record_of,
    settings,
    until,
)
from tokendist.consumer import contracts
from tokendist.consumer.batching.gatherer import GAS_MARGIN_FIXED, GAS_MARGIN_PERCENT
from tokendist.consumer.batching.states import BATCH_TRANSITIONS, BatchState
from tokendist.consumer.processor import Outcome
from tokendist.consumer.repository import Batch, BatchOutcome, User
from tokendist.consumer.states import TRANSITIONS, State
from tokendist.core.errors import ChainUnavailable, DatabaseUnavailable

pytestmark = pytest.mark.usefixtures("fast_receipts")


def edges(paths: list[list[Any]]) -> set[tuple[Any, Any]]:
    return set().union(*(set(itertools.pairwise(p)) for p in paths))


def test_the_paths_walk_every_transition_of_the_table() -> None:
    """From signed, an event and its batch meet their outcome only through submitted:
    the settler stores the broadcast before it reads any receipt. The moves straight
    from signed belong to ``tokendist reconcile`` (a payment found paid on-chain) and to
    a batch settled by another member after its broadcast; a parked payment's release to
    received to the re-check (``consumer.release``, tested on anvil)."""
    table = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    others = {(SIGNED, CONFIRMED), (SIGNED, FAILED), (SIGNED, R), (KYC, R)}
    assert table - edges(PATHS) == others
    assert edges(PATHS) <= table
    batch_table = {(old, new) for old, targets in BATCH_TRANSITIONS.items() for new in targets}
    assert batch_table - edges(BATCH_PATHS) == {
        (BatchState.SIGNED, new)
        for new in (
            BatchState.MINED,
            BatchState.CONFIRMED,
            BatchState.REVERTED,
            BatchState.ABANDONED,
        )
    }
    assert edges(BATCH_PATHS) <= batch_table


async def test_a_confirmed_payment_is_batched_signed_once_sent_confirmed_and_credited() -> None:
    w = World()
    [(event, record)] = w.approved()

    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.CREDITED

    assert w.repo.path(event.event_id) == PAID
    assert w.repo.batch_path(1) == BATCH_PAID
    [signed] = w.node.signatures
    assert w.node.broadcasts == [signed.tx_hash]
    pid = contracts.payment_id(event.data.investment_id)
    assert decoded(signed) == (0, [(pid, WALLET.lower(), TOKENS)])
    assert signed.nonce == 0
    assert w.repo.nonces[(CHAIN_ID, SENDER)] == 1
    assert w.repo.indices[TOKENIZATION.distributor_address][0] == 1
    estimate = GAS_PER_BATCH + GAS_PER_PAYMENT
    assert signed.gas == estimate * (100 + GAS_MARGIN_PERCENT) // 100 + GAS_MARGIN_FIXED
    tip = settings().priority_fee_wei
    assert (signed.priority_fee, signed.max_fee_per_gas) == (tip, 2 * w.node.base_fee + tip)
    dist = await w.repo.get(event.event_id)
    assert (dist.recipient, dist.sender, dist.tx_hash) == (WALLET, SENDER, signed.tx_hash)
    assert (dist.batch_id, dist.payment_index) == (1, 0)
    assert w.distributor.paid_to(WALLET) == TOKENS
    assert w.repo.holdings == {("user-1", TOKENIZATION.id): TOKENS}
    assert sorted(amount for _, _, amount in w.repo.ledger) == [-TOKENS, TOKENS]
    assert w.repo.distributed == {"inv-1"}
    assert w.dlq.parked == []


async def test_an_event_without_a_wallet_pays_the_wallet_of_the_user_record() -> None:
    w = World()
    w.approve("user-1", OTHER_WALLET)
    event, record = w.confirmed(wallet_address=None)
    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.CREDITED
    assert (await w.repo.get(event.event_id)).recipient == OTHER_WALLET
    assert w.distributor.paid_to(OTHER_WALLET) == TOKENS


async def fee_above_cap() -> None:
    for _ in range(10_000):
        if REGISTRY.get_sample_value("tokendist_fee_above_cap") == 1:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("signing never paused")


async def test_signing_waits_while_fees_are_above_the_cap_and_resumes_when_they_fall() -> None:
    w = World()
    [(_, record)] = w.approved()
    tip = 10**9
    cap = 2 * w.node.base_fee + tip
    w.node.base_fee = cap  # twice the base fee plus the tip is above the cap
    async with w.member(max_fee_wei=cap, priority_fee_wei=tip) as m:
        handled = asyncio.create_task(m.processor.handle(record))
        await fee_above_cap()
        await asyncio.sleep(0.05)  # a few more attempts of the gatherer, all refused
        assert w.node.signatures == []
        w.node.base_fee = (cap - tip) // 2
        assert await handled is Outcome.CREDITED
    assert [s.max_fee_per_gas for s in w.node.signatures] == [cap]
    assert REGISTRY.get_sample_value("tokendist_fee_above_cap") == 0


async def test_a_batch_is_confirmed_only_once_enough_blocks_are_on_top(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = World()
    [(_, record)] = w.approved()
    depths: list[int] = []
    confirm = w.repo.batch_confirmed

    async def confirm_at_depth(
        batch: Batch, tx_hash: str, block: int, outcome: BatchOutcome
    ) -> Batch:
        depths.append(w.node.block - block + 1)
        return await confirm(batch, tx_hash, block, outcome)

    monkeypatch.setattr(w.repo, "batch_confirmed", confirm_at_depth)
    async with w.member(confirmations=3) as m:
        assert await m.processor.handle(record) is Outcome.CREDITED
    [depth] = depths
    assert depth >= 3


@pytest.mark.parametrize("crashed_after", [R, SIGNED, SUBMITTED, CONFIRMED])
async def test_a_restart_resumes_from_the_stored_state_and_sends_the_same_bytes(
    crashed_after: State,
) -> None:
    w = World()
    [(event, record)] = w.approved()
    w.repo.crash_after = crashed_after
    async with w.member() as m:
        with pytest.raises(Crashed):
            await m.processor.handle(record)
    assert (await w.repo.get(event.event_id)).state is crashed_after

    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.CREDITED

    assert w.repo.path(event.event_id) == PAID
    [signed] = w.node.signatures
    assert w.node.broadcasts == [signed.tx_hash]  # crashed before sending: the stored bytes
    assert w.distributor.paid_to(WALLET) == TOKENS
    assert w.repo.holdings == {("user-1", TOKENIZATION.id): TOKENS}


async def test_a_restart_resumes_a_parked_event_once_the_user_is_approved() -> None:
    w = World()
    event, record = w.confirmed()
    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.PARKED
    w.approve("user-1")
    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.CREDITED
    assert w.repo.path(event.event_id) == PARKED_THEN_PAID
    assert len(w.node.signatures) == len(w.node.broadcasts) == 1


@pytest.mark.parametrize("end", [CREDITED, FAILED])
async def test_a_finished_event_delivered_again_is_already_done_and_untouched(end: State) -> None:
    w = World()
    [(_, record)] = w.approved()
    if end is FAILED:
        w.distributor.refused[WALLET.lower()] = "ERC20InvalidReceiver"
    async with w.member() as m:
        await m.processor.handle(record)
    moves, signatures, broadcasts = (
        len(w.repo.moves),
        len(w.node.signatures),
        len(w.node.broadcasts),
    )

    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.ALREADY_DONE

    assert (len(w.repo.moves), len(w.node.signatures), len(w.node.broadcasts)) == (
        moves,
        signatures,
        broadcasts,
    )
    assert w.distributor.paid_to(WALLET) == (TOKENS if end is CREDITED else 0)


@pytest.mark.parametrize(
    "user",
    [None, ("pending", WALLET), ("approved", None)],
    ids=["no user record", "kyc pending", "approved without a wallet"],
)
async def test_a_user_who_cannot_be_paid_parks_the_event_and_nothing_is_signed(
    user: tuple[str, str | None] | None,
) -> None:
    w = World()
    if user is not None:
        w.repo.users["user-1"] = User("user-1", *user)
    event, record = w.confirmed()

    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.PARKED
        assert await m.processor.handle(record) is Outcome.PARKED  # still waiting

    assert w.repo.path(event.event_id) == [R, KYC]
    assert w.node.signatures == []
    assert w.dlq.parked == []


async def test_a_wallet_that_differs_from_the_user_record_fails_retryably_then_redrives() -> None:
    w = World()
    w.approve("user-1", OTHER_WALLET)
    event, record = w.confirmed()

    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.FAILED
        failed = w.repo.rows[event.event_id]
        assert failed.dist.failure_reason is not None
        assert failed.dist.failure_reason.startswith("wallet_mismatch:")
        assert failed.retryable
        assert w.node.signatures == []

        w.approve("user-1", WALLET)  # the record fixed; then ``tokendist redrive``
        assert w.repo.redrive(event.event_id)
        assert await m.processor.handle(record) is Outcome.CREDITED

    assert w.repo.path(event.event_id) == REDRIVEN_THEN_PAID
    assert len(w.node.signatures) == 1
    assert w.distributor.paid_to(OTHER_WALLET) == 0


async def test_an_approval_with_another_wallet_fails_the_parked_event() -> None:
    w = World()
    event, record = w.confirmed()
    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.PARKED
        w.approve("user-1", OTHER_WALLET)
        assert await m.processor.handle(record) is Outcome.FAILED
    assert w.repo.path(event.event_id) == REFUSED_AFTER_PARKING
    assert w.node.signatures == []


async def test_a_payment_the_chain_would_revert_fails_before_signing_and_spends_nothing() -> None:
    w = World()
    [(event, record)] = w.approved()
    w.distributor.refused[WALLET.lower()] = "ERC20InvalidReceiver"

    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.FAILED

    row = w.repo.rows[event.event_id]
    assert (row.dist.failure_reason, row.retryable) == ("reverted: ERC20InvalidReceiver", True)
    assert w.repo.path(event.event_id) == REFUSED_BEFORE_SIGNING
    assert w.node.signatures == []
    assert w.repo.nonces[(CHAIN_ID, SENDER)] == 0
    assert w.repo.indices[TOKENIZATION.distributor_address][0] == 0
    assert w.repo.batches == {}


async def test_an_amount_no_batch_can_carry_fails_before_signing() -> None:
    w = World()
    w.approve()
    event, record = w.confirmed(tokens=contracts.AMOUNT_LIMIT)
    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.FAILED
    row = w.repo.rows[event.event_id]
    assert row.dist.failure_reason is not None
    assert row.dist.failure_reason.startswith("amount_too_large:")
    assert not row.retryable
    assert w.repo.path(event.event_id) == REFUSED_BEFORE_SIGNING
    assert w.node.signatures == []


async def test_a_refused_broadcast_is_retried_as_an_outage_never_signed_again() -> None:
    w = World()
    [(event, record)] = w.approved()
    w.node.send_refusal = "insufficient funds for gas"

    async with w.member() as m:
        with pytest.raises(ChainUnavailable, match="insufficient funds"):
            await m.processor.handle(record)
        assert (await w.repo.get(event.event_id)).state is SIGNED

        w.node.send_refusal = None
        assert await m.processor.handle(record) is Outcome.CREDITED

    assert w.repo.path(event.event_id) == PAID
    assert len(w.node.signatures) == 1


@pytest.mark.parametrize("outage", ["database down", "node down after signing"])
async def test_an_outage_propagates_for_the_worker_to_retry_and_moves_nothing(
    outage: str,
) -> None:
    w = World()
    [(event, record)] = w.approved()
    if outage == "node down after signing":
        w.repo.crash_after = SIGNED
        async with w.member() as m:
            with pytest.raises(Crashed):
                await m.processor.handle(record)
    moves = list(w.repo.moves)

    async with w.member() as m:
        w.repo.down = outage == "database down"
        w.node.down = not w.repo.down
        expected = DatabaseUnavailable if w.repo.down else ChainUnavailable
        with pytest.raises(expected):
            await m.processor.handle(record)
        assert w.repo.moves == moves
        assert w.dlq.parked == []

        w.repo.down = w.node.down = False
        assert await m.processor.handle(record) is Outcome.CREDITED

    assert w.repo.path(event.event_id) == PAID
    assert len(w.node.signatures) == 1


async def test_a_node_down_before_signing_holds_the_payment_in_the_gatherer_until_it_is_back() -> (
    None
):
    w = World()
    [(event, record)] = w.approved()
    async with w.member() as m:
        w.node.down = True
        with capture_logs() as logs:
            handling = asyncio.create_task(m.processor.handle(record))
            await until(lambda: any(e["event"] == "batch_signing_retrying" for e in logs))
        assert w.node.signatures == []
        assert w.repo.state_of(event.event_id) is R

        w.node.down = False
        assert await handling is Outcome.CREDITED

    assert w.repo.path(event.event_id) == PAID
    assert len(w.node.signatures) == 1
    assert w.repo.nonces[(CHAIN_ID, SENDER)] == 1


async def test_a_stale_state_is_reloaded_and_driven_from_what_is_stored() -> None:
    w = World()
    event, record = w.confirmed()
    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.PARKED
        stale = replace(await w.repo.get(event.event_id), state=R)  # a slow worker's view

        with capture_logs() as logs:
            outcome = await m.processor.drive(stale, TOKENIZATION, WALLET)

    assert outcome is Outcome.PARKED
    assert [e["state"] for e in logs if e["event"] == "state_conflict_reloaded"] == [KYC]
    assert w.repo.path(event.event_id) == [R, KYC]


async def test_two_members_racing_on_one_event_sign_and_credit_it_once() -> None:
    w = World()
    [(event, record)] = w.approved()

    async with w.member() as first, w.member() as second:
        outcomes = await asyncio.gather(
            first.processor.handle(record), second.processor.handle(record)
        )

    assert set(outcomes) <= {Outcome.CREDITED, Outcome.ALREADY_DONE}
    assert w.repo.path(event.event_id) == PAID
    [signed] = w.node.signatures
    assert set(w.node.broadcasts) == {signed.tx_hash}
    assert w.distributor.paid_to(WALLET) == TOKENS
    assert w.repo.holdings == {("user-1", TOKENIZATION.id): TOKENS}


@pytest.mark.parametrize(
    ("reason", "forge"),
    [
        ("malformed_json", lambda r, repo: replace(r, value=b"{not json")),
        ("missing_key", lambda r, repo: replace(r, key=None)),
        ("key_mismatch", lambda r, repo: replace(r, key=b"user-2")),
        ("unconfirmed_payment", lambda r, repo: (repo.confirmations.clear(), r)[1]),
    ],
)
async def test_an_invalid_record_is_dead_lettered_with_its_reason_before_any_claim(
    reason: str, forge: Any
) -> None:
    w = World()
    [(_, record)] = w.approved()
    record = forge(record, w.repo)

    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.DEAD_LETTERED

    assert w.dlq.parked == [(record, reason, w.dlq.parked[0][2])]
    assert w.repo.rows == {}
    assert w.node.signatures == []


async def test_an_event_that_differs_from_its_confirmed_payment_is_refused_and_nothing_signed() -> (
    None
):
    w = World()
    [(event, _)] = w.approved()
    forged = event.model_copy(
        update={"data": event.data.model_copy(update={"tokens": 10 * TOKENS})}
    )

    async with w.member() as m:
        assert await m.processor.handle(record_of(forged)) is Outcome.DEAD_LETTERED

    assert w.dlq.reasons == ["payment_mismatch"]
    assert "tokens" in w.dlq.parked[0][2]
    assert w.repo.rows == {}
    assert w.node.signatures == []


@pytest.mark.parametrize(
    ("reason", "tokenization"),
    [("unknown_tokenization", None), ("wrong_chain", replace(TOKENIZATION, chain_id=1))],
)
async def test_a_tokenization_this_chain_cannot_pay_dead_letters_the_event(
    reason: str, tokenization: Any
) -> None:
    w = World()
    [(_, record)] = w.approved()
    async with w.member() as m:
        w.repo.tokenizations.clear()
        if tokenization is not None:
            w.repo.tokenizations[tokenization.id] = tokenization
        assert await m.processor.handle(record) is Outcome.DEAD_LETTERED
    assert w.dlq.reasons == [reason]
    assert w.repo.rows == {}
    assert w.node.signatures == []


async def test_a_second_event_for_a_paid_investment_is_dead_lettered() -> None:
    w = World()
    w.approve()
    _, first = w.confirmed()
    _, second = w.confirmed()  # same investment, another event id
    async with w.member() as m:
        assert await m.processor.handle(first) is Outcome.CREDITED
        assert await m.processor.handle(second) is Outcome.DEAD_LETTERED
    assert w.dlq.reasons == ["duplicate_investment"]
    assert len(w.node.signatures) == 1
    assert len(w.repo.rows) == 1
    assert w.distributor.paid_to(WALLET) == TOKENS


async def test_an_event_id_seen_before_with_other_content_is_dead_lettered() -> None:
    w = World()
    [(event, record)] = w.approved()
    async with w.member() as m:
        assert await m.processor.handle(record) is Outcome.CREDITED
        other = event.model_copy(update={"data": event.data.model_copy(update={"tokens": 1})})
        w.repo.confirmations[event.event_id] = confirmation_of(other)
        assert await m.processor.handle(record_of(other)) is Outcome.DEAD_LETTERED
    assert w.dlq.reasons == ["conflicting_event"]
    assert len(w.node.signatures) == 1
    assert w.distributor.paid_to(WALLET) == TOKENS
