"""One payment event through the distribution state machine.

``handle`` is idempotent: called again for the same event at any point (a redelivery, a
replay, a crash and restart, a second consumer after a rebalance) it resumes from the
state stored in PostgreSQL. A payment ready to be paid goes to the gatherer, which signs
it into a batch; from then on the batch is what moves (``consumer.batching``): re-
broadcast (the same bytes) or fee-bumped (same nonce), never signed anew, and the event
awaits its batch's end.
"""

from __future__ import annotations

import asyncio
import enum
import time
from datetime import UTC, datetime
from typing import Any

import structlog

from tokendist.consumer import authority, contracts
from tokendist.consumer.batching.gatherer import Gatherer
from tokendist.consumer.batching.settler import Settler
from tokendist.consumer.ports import ChainClient, DeadLetterSink, DistributionStore
from tokendist.consumer.repository import (
    Distribution,
    PaymentToSign,
    StateConflict,
    Tokenization,
)
from tokendist.consumer.states import State
from tokendist.core import metrics
from tokendist.core.errors import InvalidEvent
from tokendist.core.failpoints import Failpoints
from tokendist.core.settings import ConsumerSettings
from tokendist.schemas import PaymentConfirmedV1, parse_event

log = structlog.get_logger("tokendist.processor")


class Outcome(enum.StrEnum):
    ALREADY_DONE = "already_done"  # a redelivery or replay of a finished event
    CREDITED = "credited"
    PARKED = "parked"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"


class Processor:
    def __init__(
        self,
        settings: ConsumerSettings,
        repo: DistributionStore,
        chain: ChainClient,
        *,
        dead_letters: DeadLetterSink,
        gatherer: Gatherer,
        settler: Settler,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.chain = chain
        self.dead_letters = dead_letters
        self.gatherer = gatherer
        self.settler = settler
        self.failpoints = Failpoints(settings.failpoints)

    async def handle(self, record: Any) -> Outcome:
        started = time.monotonic()
        outcome = await self._handle(record)
        metrics.EVENTS.labels(outcome=outcome.value).inc()
        metrics.PROCESSING.observe(time.monotonic() - started)
        return outcome

    async def _handle(self, record: Any) -> Outcome:
        try:
            event, tokenization = await self._validate(record)
            dist = await self._claim(event, record)
        except InvalidEvent as exc:
            if exc.reason in authority.REFUSALS:
                log.error("event_refused", reason=exc.reason, detail=exc.detail, alert=True)
            await self.dead_letters.park(record, exc.reason, exc.detail)
            return Outcome.DEAD_LETTERED
        with structlog.contextvars.bound_contextvars(
            event_id=str(event.event_id), user_id=event.data.user_id
        ):
            if dist.state.terminal:
                log.info("event_already_done", state=dist.state)
                return Outcome.ALREADY_DONE
            outcome = await self.drive(dist, tokenization, event.data.wallet_address)
        if outcome is Outcome.CREDITED:
            age = datetime.now(UTC) - event.occurred_at
            metrics.END_TO_END.observe(age.total_seconds())
        return outcome

    async def _validate(self, record: Any) -> tuple[PaymentConfirmedV1, Tokenization]:
        event = parse_event(record.value)
        if record.key is None:
            raise InvalidEvent("missing_key", "message has no key; expected the user id")
        if record.key != event.data.user_id.encode():
            raise InvalidEvent("key_mismatch", f"key {record.key[:80]!r} is not the user id")
        authority.check(await self.repo.confirmation(event.event_id), event)
        tokenization = await self.repo.tokenization(event.data.tokenization_id)
        if tokenization is None:
            raise InvalidEvent("unknown_tokenization", event.data.tokenization_id)
        if tokenization.chain_id != await self.chain.chain_id():
            raise InvalidEvent("wrong_chain", f"tokenization is on chain {tokenization.chain_id}")
        return event, tokenization

    async def _claim(self, event: PaymentConfirmedV1, record: Any) -> Distribution:
        data = event.data
        by_event, by_investment = await self.repo.claim(
            event_id=event.event_id,
            investment_id=data.investment_id,
            payment_id="0x" + contracts.payment_id(data.investment_id).hex(),
            user_id=data.user_id,
            tokenization_id=data.tokenization_id,
            tokens=data.tokens,
            payload=event.model_dump_json(),
            partition=record.partition,
            offset=record.offset,
        )
        if by_event is None:
            assert by_investment is not None
            raise InvalidEvent(
                "duplicate_investment",
                f"investment {data.investment_id} belongs to event {by_investment.event_id}",
            )
        same = (by_event.investment_id, by_event.user_id, by_event.tokenization_id, by_event.tokens)
        if same != (data.investment_id, data.user_id, data.tokenization_id, data.tokens):
            raise InvalidEvent("conflicting_event", "event id seen before with other content")
        return by_event

    async def drive(
        self, dist: Distribution, tokenization: Tokenization, event_wallet: str | None
    ) -> Outcome:
        while not dist.state.terminal:
            before = dist.state
            try:
                dist = await self._step(dist, tokenization, event_wallet)
            except StateConflict:
                dist = await self.repo.get(dist.event_id)
                log.info("state_conflict_reloaded", state=dist.state)
                continue
            if dist.state is State.AWAITING_KYC:
                if before is not State.AWAITING_KYC:
                    self.failpoints.hit("after:awaiting_kyc")
                    log.info("state_changed", state=dist.state, previous=before)
                return Outcome.PARKED
            if dist.state is before:
                # Not taken (another member holds the row right now): ask again shortly.
                await asyncio.sleep(self.settings.receipt_poll_s)
        if dist.state is State.FAILED:
            log.error("distribution_failed", reason=dist.failure_reason, alert=True)
            return Outcome.FAILED
        return Outcome.CREDITED

    async def _step(
        self, dist: Distribution, tokenization: Tokenization, event_wallet: str | None
    ) -> Distribution:
        match dist.state:
            case State.RECEIVED | State.AWAITING_KYC:
                return await self._authorize_and_batch(dist, tokenization, event_wallet)
            case State.SIGNED | State.SUBMITTED:
                assert dist.batch_id is not None
                await self.settler.settle(dist.batch_id)
            case State.CONFIRMED:
                if dist.batch_id is not None:  # None: found paid on-chain by the index scan
                    await self.settler.settle(dist.batch_id)
                # Still confirmed once its batch is settled: its own credit failed there.
                if (await self.repo.get(dist.event_id)).state is State.CONFIRMED:
                    await self.repo.credit([dist.event_id])
            case _:
                raise AssertionError(f"no step from {dist.state}")
        return await self.repo.get(dist.event_id)

    async def _authorize_and_batch(
        self, dist: Distribution, tokenization: Tokenization, event_wallet: str | None
    ) -> Distribution:
        user, dist = await self.repo.payable_user_or_park(dist)
        if user is None or user.wallet_address is None:
            return dist
        if event_wallet is not None and event_wallet.lower() != user.wallet_address.lower():
            return await self.repo.transition(  # fix the user record, then re-drive
                dist,
                State.FAILED,
                f"wallet_mismatch: event {event_wallet}, user record differs",
                retryable=True,
            )
        if dist.tokens >= contracts.AMOUNT_LIMIT:
            return await self.repo.transition(
                dist,
                State.FAILED,
                f"amount_too_large: a batch carries less than {contracts.AMOUNT_LIMIT}",
            )
        payment = PaymentToSign(dist.event_id, dist.payment_id, user.wallet_address, dist.tokens)
        batch_id = await self.gatherer.submit(payment, tokenization.distributor_address)
        if batch_id is not None:
            await self.settler.settle(batch_id)
        return await self.repo.get(dist.event_id)
