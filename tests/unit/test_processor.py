"""The distribution state machine (``Processor``) on in-memory fakes of its ports: every
transition of ``consumer.states``, every error class it handles, and a resume from every
stored state, counting signatures and broadcasts on the fake chain.

Each test asserts the path its event took (the fake repository journals every guarded
move); ``test_the_paths_walk_every_transition_of_the_table`` checks that those paths
together walk the whole transition table.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from typing import Any, cast

import pytest
from structlog.testing import capture_logs

from tests.unit.fakes import (
    CHAIN_ID,
    OTHER_WALLET,
    TOKENIZATION,
    TOKENS,
    WALLET,
    Crashed,
    FakeChain,
    FakeDeadLetters,
    FakeRecord,
    FakeRepository,
    confirmation_of,
    confirmed_payment,
    record_of,
    settings,
    world,
)
from tokendist.consumer import head
from tokendist.consumer.chain import Chain
from tokendist.consumer.processor import GAS_MARGIN_PERCENT, Outcome, Processor
from tokendist.consumer.repository import Distribution, Repository, User
from tokendist.consumer.resubmitter import Resubmitter
from tokendist.consumer.states import TRANSITIONS, State
from tokendist.core.errors import ChainUnavailable, DatabaseUnavailable, TransientError
from tokendist.ops.reconcile import Reconciler, Reconciliation
from tokendist.ops.repository import ToolRepository
from tokendist.schemas import PaymentConfirmedV1

R, KYC, SIGNED, SUBMITTED, CONFIRMED, CREDITED, FAILED = (
    State.RECEIVED,
    State.AWAITING_KYC,
    State.SIGNED,
    State.SUBMITTED,
    State.CONFIRMED,
    State.CREDITED,
    State.FAILED,
)

PAID = [R, SIGNED, SUBMITTED, CONFIRMED, CREDITED]
PARKED_THEN_PAID = [R, KYC, SIGNED, SUBMITTED, CONFIRMED, CREDITED]
REFUSED_BEFORE_SIGNING = [R, FAILED]
REFUSED_AFTER_PARKING = [R, KYC, FAILED]
FAILED_ON_CHAIN = [R, SIGNED, SUBMITTED, FAILED]
REDRIVEN_THEN_PAID = [R, FAILED, R, SIGNED, SUBMITTED, CONFIRMED, CREDITED]
SETTLED_BY_RECONCILE = [R, SIGNED, CONFIRMED, CREDITED]
PATHS = [
    PAID,
    PARKED_THEN_PAID,
    REFUSED_BEFORE_SIGNING,
    REFUSED_AFTER_PARKING,
    FAILED_ON_CHAIN,
    REDRIVEN_THEN_PAID,
    SETTLED_BY_RECONCILE,
]


@pytest.fixture(autouse=True)
def _no_receipt_gathering(monkeypatch: pytest.MonkeyPatch) -> None:
    # One event at a time here: nothing to gather a receipt batch with.
    monkeypatch.setattr(head, "GATHER_S", 0)


def approved_payment() -> tuple[
    FakeRepository, FakeChain, FakeDeadLetters, PaymentConfirmedV1, FakeRecord
]:
    """The usual start: an approved investor and one confirmed payment of theirs."""
    repo, chain, dlq = world()
    repo.approve("user-1")
    event, record = confirmed_payment(repo)
    return repo, chain, dlq, event, record


def processor(
    repo: FakeRepository, chain: FakeChain, dlq: FakeDeadLetters, **changes: Any
) -> Processor:
    """A fresh one is a fresh process: nothing in memory survives from the previous."""
    return Processor(settings(**changes), repo, chain, dlq)


def edges(path: list[State]) -> set[tuple[State, State]]:
    return set(itertools.pairwise(path))


def test_the_paths_walk_every_transition_of_the_table() -> None:
    table = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    walked = set().union(*(edges(p) for p in PATHS))
    assert walked <= table
    assert walked == table


async def test_a_confirmed_payment_is_signed_once_sent_confirmed_and_credited() -> None:
    repo, chain, dlq, event, record = approved_payment()

    assert await processor(repo, chain, dlq).handle(record) is Outcome.CREDITED

    assert repo.path(event.event_id) == PAID
    [signed] = chain.signatures
    assert chain.broadcasts == [signed.tx_hash]
    assert signed.nonce == 0
    assert repo.nonces[(CHAIN_ID, chain.sender)] == 1
    assert signed.gas == chain.gas * (100 + GAS_MARGIN_PERCENT) // 100
    tip = settings().priority_fee_wei
    assert (signed.priority_fee, signed.max_fee_per_gas) == (tip, 2 * chain.base + tip)
    dist = await repo.get(event.event_id)
    assert (dist.recipient, dist.sender, dist.tx_hash) == (WALLET, chain.sender, signed.tx_hash)
    assert repo.holdings == {("user-1", TOKENIZATION.id): TOKENS}
    assert sorted(amount for _, _, amount in repo.ledger) == [-TOKENS, TOKENS]
    assert repo.distributed == {"inv-1"}
    assert dlq.parked == []


async def test_an_event_without_a_wallet_pays_the_wallet_of_the_user_record() -> None:
    repo, chain, dlq = world()
    repo.approve("user-1", OTHER_WALLET)
    event, record = confirmed_payment(repo, wallet_address=None)
    assert await processor(repo, chain, dlq).handle(record) is Outcome.CREDITED
    assert (await repo.get(event.event_id)).recipient == OTHER_WALLET


async def test_fees_never_exceed_the_cap() -> None:
    repo, chain, dlq = world()
    repo.approve("user-1")
    _, record = confirmed_payment(repo)
    cap = chain.base  # below twice the base fee plus the tip
    assert await processor(repo, chain, dlq, max_fee_wei=cap).handle(record) is Outcome.CREDITED
    assert chain.signatures[0].max_fee_per_gas == cap


async def test_a_receipt_is_confirmed_only_once_enough_blocks_are_on_top(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo, chain, dlq = world()
    repo.approve("user-1")
    _, record = confirmed_payment(repo)
    depths: list[int] = []
    confirm = repo.confirm

    async def confirm_at_depth(dist: Distribution, tx_hash: str, block: int) -> Distribution:
        depths.append(chain.block - block + 1)
        return await confirm(dist, tx_hash, block)

    monkeypatch.setattr(repo, "confirm", confirm_at_depth)
    outcome = await processor(repo, chain, dlq, confirmations=3).handle(record)
    assert outcome is Outcome.CREDITED
    [depth] = depths
    assert depth >= 3


@pytest.mark.parametrize("crashed_after", [R, SIGNED, SUBMITTED, CONFIRMED])
async def test_a_restart_resumes_from_the_stored_state_without_signing_again(
    crashed_after: State,
) -> None:
    repo, chain, dlq, event, record = approved_payment()
    repo.crash_after = crashed_after
    with pytest.raises(Crashed):
        await processor(repo, chain, dlq).handle(record)
    assert (await repo.get(event.event_id)).state is crashed_after

    assert await processor(repo, chain, dlq).handle(record) is Outcome.CREDITED

    assert repo.path(event.event_id) == PAID
    [signed] = chain.signatures
    assert chain.broadcasts == [signed.tx_hash]  # after a crash at signed: the stored bytes
    assert repo.holdings == {("user-1", TOKENIZATION.id): TOKENS}


async def test_a_restart_resumes_a_parked_event_once_the_user_is_approved() -> None:
    repo, chain, dlq = world()
    event, record = confirmed_payment(repo)
    assert await processor(repo, chain, dlq).handle(record) is Outcome.PARKED
    repo.approve("user-1")
    assert await processor(repo, chain, dlq).handle(record) is Outcome.CREDITED
    assert repo.path(event.event_id) == PARKED_THEN_PAID
    assert len(chain.signatures) == len(chain.broadcasts) == 1


async def finished_by(
    repo: FakeRepository, chain: FakeChain, dlq: FakeDeadLetters, end: State
) -> FakeRecord:
    repo.approve("user-1")
    _, record = confirmed_payment(repo)
    if end is FAILED:
        chain.estimate_refusal = "reverted: DistributorPaused"
    await processor(repo, chain, dlq).handle(record)
    chain.estimate_refusal = None
    return record


@pytest.mark.parametrize("end", [CREDITED, FAILED])
async def test_a_finished_event_delivered_again_is_already_done_and_untouched(end: State) -> None:
    repo, chain, dlq = world()
    record = await finished_by(repo, chain, dlq, end)
    moves, signatures, broadcasts = len(repo.moves), len(chain.signatures), len(chain.broadcasts)

    assert await processor(repo, chain, dlq).handle(record) is Outcome.ALREADY_DONE

    assert (len(repo.moves), len(chain.signatures), len(chain.broadcasts)) == (
        moves,
        signatures,
        broadcasts,
    )


@pytest.mark.parametrize(
    "user",
    [None, ("pending", WALLET), ("approved", None)],
    ids=["no user record", "kyc pending", "approved without a wallet"],
)
async def test_a_user_who_cannot_be_paid_parks_the_event_and_nothing_is_signed(
    user: tuple[str, str | None] | None,
) -> None:
    repo, chain, dlq = world()
    if user is not None:
        repo.users["user-1"] = User("user-1", *user)
    event, record = confirmed_payment(repo)

    assert await processor(repo, chain, dlq).handle(record) is Outcome.PARKED
    assert await processor(repo, chain, dlq).handle(record) is Outcome.PARKED  # still waiting

    assert repo.path(event.event_id) == [R, KYC]
    assert chain.signatures == []
    assert dlq.parked == []


async def test_a_wallet_that_differs_from_the_user_record_fails_retryably_then_redrives() -> None:
    repo, chain, dlq = world()
    repo.approve("user-1", OTHER_WALLET)
    event, record = confirmed_payment(repo)

    assert await processor(repo, chain, dlq).handle(record) is Outcome.FAILED
    failed = repo.rows[event.event_id]
    assert failed.dist.failure_reason is not None
    assert failed.dist.failure_reason.startswith("wallet_mismatch:")
    assert failed.retryable
    assert chain.signatures == []

    repo.approve("user-1", WALLET)  # the record fixed; then ``tokendist redrive``
    assert repo.redrive(event.event_id)
    assert await processor(repo, chain, dlq).handle(record) is Outcome.CREDITED
    assert repo.path(event.event_id) == REDRIVEN_THEN_PAID
    assert len(chain.signatures) == 1


async def test_an_approval_with_another_wallet_fails_the_parked_event() -> None:
    repo, chain, dlq = world()
    event, record = confirmed_payment(repo)
    assert await processor(repo, chain, dlq).handle(record) is Outcome.PARKED
    repo.approve("user-1", OTHER_WALLET)
    assert await processor(repo, chain, dlq).handle(record) is Outcome.FAILED
    assert repo.path(event.event_id) == REFUSED_AFTER_PARKING
    assert chain.signatures == []


async def test_a_call_the_chain_would_revert_fails_before_signing_and_spends_no_nonce() -> None:
    repo, chain, dlq, event, record = approved_payment()
    chain.estimate_refusal = "reverted: AlreadyPaid"

    assert await processor(repo, chain, dlq).handle(record) is Outcome.FAILED

    row = repo.rows[event.event_id]
    assert (row.dist.failure_reason, row.retryable) == ("reverted: AlreadyPaid", True)
    assert repo.path(event.event_id) == REFUSED_BEFORE_SIGNING
    assert chain.signatures == []
    assert repo.nonces[(CHAIN_ID, chain.sender)] == 0


async def test_a_refused_broadcast_is_retried_as_an_outage_never_signed_again() -> None:
    repo, chain, dlq, event, record = approved_payment()
    chain.send_refusal = "insufficient funds for gas"

    with pytest.raises(ChainUnavailable, match="insufficient funds"):
        await processor(repo, chain, dlq).handle(record)
    assert (await repo.get(event.event_id)).state is SIGNED

    chain.send_refusal = None
    assert await processor(repo, chain, dlq).handle(record) is Outcome.CREDITED
    assert repo.path(event.event_id) == PAID
    assert len(chain.signatures) == 1


async def test_a_reverted_transaction_fails_retryably() -> None:
    repo, chain, dlq, event, record = approved_payment()
    chain.reverting = True

    assert await processor(repo, chain, dlq).handle(record) is Outcome.FAILED

    row = repo.rows[event.event_id]
    [receipt] = chain.mined.values()
    assert row.dist.failure_reason == (
        f"reverted: tx {receipt.tx_hash} in block {receipt.block_number}"
    )
    assert row.retryable
    assert repo.path(event.event_id) == FAILED_ON_CHAIN
    assert repo.holdings == {}


async def test_a_nonce_consumed_by_a_transaction_we_did_not_sign_fails_for_a_human() -> None:
    repo, chain, dlq, event, record = approved_payment()
    chain.mined_nonce = 1  # someone else used the key: nonce 0 is mined, not by us
    chain.mine_on_send = False

    assert await processor(repo, chain, dlq).handle(record) is Outcome.FAILED

    row = repo.rows[event.event_id]
    assert row.dist.failure_reason == "nonce 0 consumed by a transaction we did not sign"
    assert not row.retryable
    assert not repo.redrive(event.event_id)
    assert repo.path(event.event_id) == FAILED_ON_CHAIN
    assert len(chain.signatures) == 1


@pytest.mark.parametrize("outage", ["node down", "database down", "node down after signing"])
async def test_an_outage_propagates_for_the_worker_to_retry_and_moves_nothing(
    outage: str,
) -> None:
    repo, chain, dlq, event, record = approved_payment()
    if outage == "node down after signing":
        repo.crash_after = SIGNED
        with pytest.raises(Crashed):
            await processor(repo, chain, dlq).handle(record)
    moves = list(repo.moves)
    if outage == "database down":
        repo.down = True
    else:
        chain.down = True

    with pytest.raises(TransientError) as raised:
        await processor(repo, chain, dlq).handle(record)
    expected = DatabaseUnavailable if outage == "database down" else ChainUnavailable
    assert isinstance(raised.value, expected)
    assert repo.moves == moves
    assert dlq.parked == []

    repo.down = chain.down = False
    assert await processor(repo, chain, dlq).handle(record) is Outcome.CREDITED
    assert repo.path(event.event_id) == PAID
    assert len(chain.signatures) == 1


async def test_a_stale_state_is_reloaded_and_driven_from_what_is_stored() -> None:
    repo, chain, dlq, event, record = approved_payment()
    repo.crash_after = SIGNED
    with pytest.raises(Crashed):
        await processor(repo, chain, dlq).handle(record)
    stale = await repo.get(event.event_id)  # a slow worker's view: signed
    assert await processor(repo, chain, dlq).handle(record) is Outcome.CREDITED

    with capture_logs() as logs:
        outcome = await processor(repo, chain, dlq).drive(stale, TOKENIZATION, WALLET)

    assert outcome is Outcome.CREDITED
    assert [e["state"] for e in logs if e["event"] == "state_conflict_reloaded"] == [CREDITED]
    assert repo.path(event.event_id) == PAID
    assert len(chain.signatures) == 1
    assert repo.holdings == {("user-1", TOKENIZATION.id): TOKENS}


async def test_two_workers_racing_on_one_event_sign_and_credit_it_once() -> None:
    repo, chain, dlq, event, record = approved_payment()
    first, second = processor(repo, chain, dlq), processor(repo, chain, dlq)

    with capture_logs() as logs:
        outcomes = await asyncio.gather(first.handle(record), second.handle(record))

    assert set(outcomes) <= {Outcome.CREDITED, Outcome.ALREADY_DONE}
    assert any(e["event"] == "state_conflict_reloaded" for e in logs)
    assert repo.path(event.event_id) == PAID
    assert len(chain.signatures) == 1
    assert repo.holdings == {("user-1", TOKENIZATION.id): TOKENS}


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
    repo, chain, dlq = world()
    repo.approve("user-1")
    _, record = confirmed_payment(repo)
    record = forge(record, repo)

    assert await processor(repo, chain, dlq).handle(record) is Outcome.DEAD_LETTERED

    assert dlq.parked == [(record, reason, dlq.parked[0][2])]
    assert repo.rows == {}
    assert chain.signatures == []


async def test_an_event_that_differs_from_its_confirmed_payment_is_refused_and_nothing_signed() -> (
    None
):
    repo, chain, dlq = world()
    repo.approve("user-1")
    event, _ = confirmed_payment(repo)
    forged = event.model_copy(
        update={"data": event.data.model_copy(update={"tokens": 10 * TOKENS})}
    )

    outcome = await processor(repo, chain, dlq).handle(record_of(forged))

    assert outcome is Outcome.DEAD_LETTERED
    assert dlq.reasons == ["payment_mismatch"]
    assert "tokens" in dlq.parked[0][2]
    assert repo.rows == {}
    assert chain.signatures == []


@pytest.mark.parametrize(
    ("reason", "tokenization"),
    [
        ("unknown_tokenization", None),
        ("wrong_chain", replace(TOKENIZATION, chain_id=1)),
    ],
)
async def test_a_tokenization_this_chain_cannot_pay_dead_letters_the_event(
    reason: str, tokenization: Any
) -> None:
    repo, chain, dlq = world()
    repo.approve("user-1")
    repo.tokenizations.clear()
    if tokenization is not None:
        repo.tokenizations[tokenization.id] = tokenization
    _, record = confirmed_payment(repo)

    assert await processor(repo, chain, dlq).handle(record) is Outcome.DEAD_LETTERED
    assert dlq.reasons == [reason]
    assert repo.rows == {}
    assert chain.signatures == []


async def test_a_second_event_for_a_paid_investment_is_dead_lettered() -> None:
    repo, chain, dlq = world()
    repo.approve("user-1")
    _, first = confirmed_payment(repo)
    _, second = confirmed_payment(repo)  # same investment, another event id
    assert await processor(repo, chain, dlq).handle(first) is Outcome.CREDITED

    assert await processor(repo, chain, dlq).handle(second) is Outcome.DEAD_LETTERED
    assert dlq.reasons == ["duplicate_investment"]
    assert len(chain.signatures) == 1
    assert len(repo.rows) == 1


async def test_an_event_id_seen_before_with_other_content_is_dead_lettered() -> None:
    repo, chain, dlq, event, record = approved_payment()
    assert await processor(repo, chain, dlq).handle(record) is Outcome.CREDITED
    other = event.model_copy(update={"data": event.data.model_copy(update={"tokens": 1})})
    repo.confirmations[event.event_id] = confirmation_of(other)

    assert await processor(repo, chain, dlq).handle(record_of(other)) is Outcome.DEAD_LETTERED
    assert dlq.reasons == ["conflicting_event"]
    assert len(chain.signatures) == 1


async def test_a_transaction_mined_while_the_event_stayed_signed_is_settled_by_reconcile() -> None:
    """A crash between storing and broadcasting: the resubmitter sends the stored bytes, and
    ``tokendist reconcile`` (or the event's redelivery) finds them mined."""
    repo, chain, dlq, event, record = approved_payment()
    repo.crash_after = SIGNED
    with pytest.raises(Crashed):
        await processor(repo, chain, dlq).handle(record)
    s = settings()
    repo.backdate(chain.signatures[0].tx_hash, s.rebroadcast_after_s)
    assert await Resubmitter(s, repo, chain).sweep() == 1

    # ``run`` reads its candidates through the tools' repository (PostgreSQL); settling one
    # is the move, and it needs only the consumer's repository and the chain.
    reconciler = Reconciler(
        cast(Repository, repo), cast(ToolRepository, None), cast(Chain, chain), confirmations=1
    )
    await reconciler._settle(await repo.get(event.event_id), Reconciliation(), dry_run=False)

    assert repo.path(event.event_id) == SETTLED_BY_RECONCILE
    assert await processor(repo, chain, dlq).handle(record) is Outcome.ALREADY_DONE
    assert len(chain.signatures) == 1
    assert repo.holdings == {("user-1", TOKENIZATION.id): TOKENS}
