"""Consumers on the fakes: a ``World`` (one fake database, one fake node with a
Distributor, the dead-letter sink) and its ``member``s, each a fresh process built as
``consumer.wiring`` builds one (key pool registered, nonces and index floor rebuilt,
the gatherer running), so that a crash is followed by a process that remembers
nothing but what the database and the chain hold."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eth_utils.address import to_checksum_address

from tests.unit.fake_chain import CHAIN_ID, DISTRIBUTOR, SENDER, FakeChain, FakeNode
from tests.unit.fakes import FakeDeadLetters, FakeRecord, FakeRepository
from tokendist.consumer.batching import indices
from tokendist.consumer.batching.gatherer import Gatherer
from tokendist.consumer.batching.settler import Settler
from tokendist.consumer.batching.states import BatchState
from tokendist.consumer.keypool import KeyPool
from tokendist.consumer.processor import Processor
from tokendist.consumer.repository import Confirmation, Tokenization
from tokendist.consumer.resubmitter import Resubmitter
from tokendist.consumer.states import State
from tokendist.core.failpoints import Failpoints
from tokendist.core.settings import ConsumerSettings
from tokendist.schemas import PaymentConfirmedV1

WALLET = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OTHER_WALLET = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
TOKENS = 5 * 10**18

TOKENIZATION = Tokenization(
    id="tok-1",
    property_id="prop-1",
    chain_id=CHAIN_ID,
    token_address="0x" + "11" * 20,
    decimals=18,
    distributor_address=DISTRIBUTOR,
)


def wallet(i: int) -> str:
    """Investor ``i``'s wallet (the first one's is ``WALLET``)."""
    return WALLET if i == 1 else to_checksum_address(f"0x{0xA11CE000 + i:040x}")


def settings(**changes: Any) -> ConsumerSettings:
    """Settings for the state machine on fakes: polls and back-offs in milliseconds, a
    batch signed as soon as its first payment waited a millisecond."""
    values: dict[str, Any] = {
        "database_url": "postgresql://unused",
        "kafka_bootstrap": "unused:9092",
        "receipt_poll_s": 0.001,
        "retry_base_s": 0.001,
        "retry_cap_s": 0.005,
        "batch_max_wait_s": 0.001,
    }
    return ConsumerSettings(**(values | changes))


def payment(
    user_id: str = "user-1", investment_id: str = "inv-1", **data: Any
) -> PaymentConfirmedV1:
    values: dict[str, Any] = {
        "user_id": user_id,
        "investment_id": investment_id,
        "tokenization_id": TOKENIZATION.id,
        "property_id": TOKENIZATION.property_id,
        "tokens": TOKENS,
        "amount_minor": 500_000,
        "currency": "NGN",
        "wallet_address": WALLET,
        "provider": "paystack",
        "provider_reference": f"ref-{investment_id}",
    }
    return PaymentConfirmedV1.new(occurred_at=datetime.now(UTC), **(values | data))


def confirmation_of(event: PaymentConfirmedV1, *, keep_payload: bool = True) -> Confirmation:
    """The row ``outbox.enqueue`` writes for ``event`` (rows older than migration 0002
    have no payload: ``keep_payload=False``)."""
    d = event.data
    return Confirmation(
        d.investment_id,
        d.user_id,
        d.tokenization_id,
        d.tokens,
        d.provider,
        d.provider_reference,
        event.model_dump_json() if keep_payload else None,
    )


def record_of(event: PaymentConfirmedV1, offset: int = 0) -> FakeRecord:
    return FakeRecord(key=event.data.user_id.encode(), value=event.to_json(), offset=offset)


@dataclass
class Member:
    """One consumer process on the fakes."""

    settings: ConsumerSettings
    keys: list[FakeChain]
    pool: KeyPool
    settler: Settler
    gatherer: Gatherer
    processor: Processor
    resubmitter: Resubmitter


@dataclass
class World:
    repo: FakeRepository = field(default_factory=FakeRepository)
    node: FakeNode = field(default_factory=FakeNode)
    dlq: FakeDeadLetters = field(default_factory=FakeDeadLetters)
    senders: list[str] = field(default_factory=lambda: [SENDER])
    operators: list[str] | None = None  # None: every sender holds the role

    def __post_init__(self) -> None:
        self.repo.tokenizations[TOKENIZATION.id] = TOKENIZATION
        operators = self.senders if self.operators is None else self.operators
        self.distributor = self.node.deploy(DISTRIBUTOR, operators=operators)

    def approve(self, user_id: str = "user-1", wallet: str | None = WALLET) -> None:
        self.repo.approve(user_id, wallet)

    def confirmed(self, **data: Any) -> tuple[PaymentConfirmedV1, FakeRecord]:
        """A payment as the payment service confirms it: its confirmation row, its record."""
        event = payment(**data)
        self.repo.confirmations[event.event_id] = confirmation_of(event)
        return event, record_of(event)

    def approved(self, n: int = 1) -> list[tuple[PaymentConfirmedV1, FakeRecord]]:
        """``n`` approved investors with one confirmed payment each."""
        found = []
        for i in range(1, n + 1):
            self.approve(f"user-{i}", wallet(i))
            found.append(
                self.confirmed(
                    user_id=f"user-{i}", investment_id=f"inv-{i}", wallet_address=wallet(i)
                )
            )
        return found

    @contextlib.asynccontextmanager
    async def member(
        self, senders: list[str] | None = None, **changes: Any
    ) -> AsyncIterator[Member]:
        """A fresh process: new connections, nothing in memory from the previous one."""
        s = settings(**changes)
        keys = [FakeChain(self.node, sender) for sender in senders or self.senders]
        pool = KeyPool(keys, self.repo, cap=s.max_inflight_per_sender, poll_s=s.receipt_poll_s)
        await pool.register()
        await indices.rebuild(s, self.repo, pool)
        failpoints = Failpoints("")
        settler = Settler(s, self.repo, pool, failpoints)
        gatherer = Gatherer(s, self.repo, pool, settler, failpoints)
        processor = Processor(
            s, self.repo, pool.node, dead_letters=self.dlq, gatherer=gatherer, settler=settler
        )
        member = Member(
            s, keys, pool, settler, gatherer, processor, Resubmitter(s, self.repo, pool)
        )
        gathering = asyncio.create_task(gatherer.run(), name="gatherer")
        try:
            yield member
        finally:
            gathering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gathering
            await settler.close()


async def until(condition: Callable[[], bool]) -> None:
    """Wait for something the fakes do in the background (never a timing assertion: the
    bound only turns a hang into a failure)."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 -- the fakes have no event to wait on
            await asyncio.sleep(0.001)


R, KYC, SIGNED, SUBMITTED, CONFIRMED, CREDITED, FAILED = (
    State.RECEIVED,
    State.AWAITING_KYC,
    State.SIGNED,
    State.SUBMITTED,
    State.CONFIRMED,
    State.CREDITED,
    State.FAILED,
)

# The paths an event takes, each asserted by a test (``FakeRepository.path``).
PAID = [R, SIGNED, SUBMITTED, CONFIRMED, CREDITED]
PARKED_THEN_PAID = [R, KYC, SIGNED, SUBMITTED, CONFIRMED, CREDITED]
REFUSED_BEFORE_SIGNING = [R, FAILED]
REFUSED_AFTER_PARKING = [R, KYC, FAILED]
FAILED_ON_CHAIN = [R, SIGNED, SUBMITTED, FAILED]
REDRIVEN_THEN_PAID = [R, FAILED, R, SIGNED, SUBMITTED, CONFIRMED, CREDITED]
ABANDONED_THEN_PAID = [R, SIGNED, SUBMITTED, R, SIGNED, SUBMITTED, CONFIRMED, CREDITED]
FOUND_ON_CHAIN = [R, CONFIRMED, CREDITED]
PARKED_THEN_FOUND_ON_CHAIN = [R, KYC, CONFIRMED, CREDITED]
PATHS = [
    PAID,
    PARKED_THEN_PAID,
    REFUSED_BEFORE_SIGNING,
    REFUSED_AFTER_PARKING,
    FAILED_ON_CHAIN,
    REDRIVEN_THEN_PAID,
    ABANDONED_THEN_PAID,
    FOUND_ON_CHAIN,
    PARKED_THEN_FOUND_ON_CHAIN,
]

# The paths a batch takes (``FakeRepository.batch_path``).
B_SIGNED, B_SUBMITTED, B_CONFIRMED, B_CREDITED, B_REVERTED, B_ABANDONED = (
    BatchState.SIGNED,
    BatchState.SUBMITTED,
    BatchState.CONFIRMED,
    BatchState.CREDITED,
    BatchState.REVERTED,
    BatchState.ABANDONED,
)
B_MINED = BatchState.MINED
BATCH_PAID = [B_SIGNED, B_SUBMITTED, B_CONFIRMED, B_CREDITED]
BATCH_REVERTED = [B_SIGNED, B_SUBMITTED, B_REVERTED]
BATCH_ABANDONED = [B_SIGNED, B_SUBMITTED, B_ABANDONED]
# With a finality rule of more than one block:
BATCH_PAID_ONCE_FINAL = [B_SIGNED, B_SUBMITTED, B_MINED, B_CONFIRMED, B_CREDITED]
BATCH_REVERTED_ONCE_FINAL = [B_SIGNED, B_SUBMITTED, B_MINED, B_REVERTED]
# Its block replaced before final: broadcast again, mined again (or moved to another block).
BATCH_REORGED = [B_SIGNED, B_SUBMITTED, B_MINED, *BATCH_PAID_ONCE_FINAL[1:]]
BATCH_MOVED = [B_SIGNED, B_SUBMITTED, B_MINED, *BATCH_PAID_ONCE_FINAL[2:]]
BATCH_PATHS = [
    BATCH_PAID,
    BATCH_REVERTED,
    BATCH_ABANDONED,
    BATCH_PAID_ONCE_FINAL,
    BATCH_REVERTED_ONCE_FINAL,
    BATCH_REORGED,
    BATCH_MOVED,
]
