"""One payment event through the distribution state machine.

``handle`` is idempotent: called again for the same event at any point (a redelivery, a
replay, a crash and restart, a second consumer after a rebalance) it resumes from the
state stored in PostgreSQL. Once a transaction is signed it is only ever re-broadcast
(the same bytes) or fee-bumped (same nonce): never signed anew.
"""

from __future__ import annotations

import asyncio
import enum
import time
from datetime import UTC, datetime
from typing import Any

import structlog

from tokendist.consumer import authority, contracts
from tokendist.consumer.chain import Receipt
from tokendist.consumer.head import Head, Receipts
from tokendist.consumer.ports import DeadLetterSink, DistributionStore, OperatorChain
from tokendist.consumer.repository import Distribution, StateConflict, Tokenization
from tokendist.consumer.states import State
from tokendist.core import metrics
from tokendist.core.errors import ChainRejected, ChainUnavailable, InvalidEvent
from tokendist.core.failpoints import Failpoints
from tokendist.core.settings import ConsumerSettings
from tokendist.schemas import PaymentConfirmedV1, parse_event

log = structlog.get_logger("tokendist.processor")

GAS_MARGIN_PERCENT = 25
NONCE_CONSUMED_STRIKES = 20


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
        chain: OperatorChain,
        dead_letters: DeadLetterSink,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.chain = chain
        self.dead_letters = dead_letters
        self.failpoints = Failpoints(settings.failpoints)
        self.head = Head(chain, settings.receipt_poll_s)
        self.receipts = Receipts(chain)
        # Signing is one at a time per sender anyway (the nonce row lock): taking this
        # lock first makes the in-flight cap exact within the process, and only its
        # holder polls the shared count. It guards signing alone: an event already on
        # the chain must never wait behind events that wait for it to finish.
        self._signing = asyncio.Lock()

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
            if dist.state is not before:
                self.failpoints.hit(f"after:{dist.state}")
                log.info(
                    "state_changed",
                    state=dist.state,
                    previous=before,
                    tx_hash=dist.tx_hash,
                    nonce=dist.nonce,
                )
            if dist.state is State.AWAITING_KYC:
                return Outcome.PARKED
        if dist.state is State.FAILED:
            log.error("distribution_failed", reason=dist.failure_reason, alert=True)
            return Outcome.FAILED
        return Outcome.CREDITED

    async def _step(
        self, dist: Distribution, tokenization: Tokenization, event_wallet: str | None
    ) -> Distribution:
        match dist.state:
            case State.RECEIVED | State.AWAITING_KYC:
                return await self._authorize_and_sign(dist, tokenization, event_wallet)
            case State.SIGNED:
                return await self._broadcast(dist)
            case State.SUBMITTED:
                return await self._await_confirmation(dist)
            case State.CONFIRMED:
                return await self.repo.credit(dist, tokenization.property_id)
        raise AssertionError(f"no step from {dist.state}")

    async def _authorize_and_sign(
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
        calldata = self.chain.distribute_calldata(
            bytes.fromhex(dist.payment_id[2:]), user.wallet_address, dist.tokens
        )
        try:
            gas = await self.chain.estimate(tokenization.distributor_address, calldata)
        except ChainRejected as exc:  # refused before signing: nothing was paid
            return await self.repo.transition(dist, State.FAILED, exc.reason, retryable=True)
        gas_limit = gas * (100 + GAS_MARGIN_PERCENT) // 100
        async with self._signing:
            await self._wait_for_capacity()
            max_fee, tip = await self._fees()
            return await self.repo.sign_and_store(
                dist,
                chain_id=await self.chain.chain_id(),
                sender=self.chain.sender,
                recipient=user.wallet_address,
                sign=lambda nonce: self.chain.sign(
                    to=tokenization.distributor_address,
                    data=calldata,
                    gas=gas_limit,
                    nonce=nonce,
                    max_fee=max_fee,
                    priority_fee=tip,
                ),
            )

    async def _wait_for_capacity(self) -> None:
        # Exact within a process (its holder signs before letting go of the signing lock);
        # several processes may overshoot it together by one each. The count lives in
        # PostgreSQL, shared by processes: polling it is the only way.
        while await self.repo.inflight(self.chain.sender) >= self.settings.max_inflight_per_sender:  # noqa: ASYNC110
            await asyncio.sleep(self.settings.receipt_poll_s)

    async def _fees(self) -> tuple[int, int]:
        tip = self.settings.priority_fee_wei
        base = (await self.head.latest()).base_fee
        return min(2 * base + tip, self.settings.max_fee_wei), tip

    async def _broadcast(self, dist: Distribution) -> Distribution:
        latest = (await self.repo.transactions(dist.event_id))[-1]
        try:
            result = await self.chain.send_raw(latest.raw)
        except ChainRejected as exc:
            # The nonce is spent in our books; failing here would leave a gap that blocks
            # every later transaction. Keep retrying and say so loudly.
            log.error("broadcast_refused", reason=exc.reason, tx_hash=latest.tx_hash, alert=True)
            raise ChainUnavailable(exc.reason) from exc
        await self.repo.mark_broadcast(latest.tx_hash)
        log.info(
            "transaction_broadcast", tx_hash=latest.tx_hash, nonce=latest.nonce, answer=result.value
        )
        return await self.repo.transition(dist, State.SUBMITTED)

    async def _await_confirmation(self, dist: Distribution) -> Distribution:
        assert dist.nonce is not None
        strikes = 0
        seen: int | None = None
        while True:
            head = (await self.head.advanced(seen)).number
            seen = head
            receipt = await self._receipt(dist)
            if receipt is not None:
                if not receipt.succeeded:  # a revert rolls the once-only flag back too
                    return await self.repo.transition(
                        dist,
                        State.FAILED,
                        f"reverted: tx {receipt.tx_hash} in block {receipt.block_number}",
                        retryable=True,
                    )
                if head - receipt.block_number + 1 >= self.settings.confirmations:
                    return await self.repo.confirm(dist, receipt.tx_hash, receipt.block_number)
            # No receipt: if the chain has moved past our nonce, none of our siblings was
            # mined (someone else used the key). Confirm by the mined nonce too.
            elif await self.head.mined_nonce() > dist.nonce:
                strikes += 1
                if strikes >= NONCE_CONSUMED_STRIKES:
                    return await self.repo.transition(
                        dist,
                        State.FAILED,
                        f"nonce {dist.nonce} consumed by a transaction we did not sign",
                    )

    async def _receipt(self, dist: Distribution) -> Receipt | None:
        """The receipt of whichever of the event's transactions (same nonce) was mined."""
        hashes = [tx.tx_hash for tx in await self.repo.transactions(dist.event_id)]
        found = await self.receipts.get(hashes)
        return next((r for r in found.values() if r is not None), None)
