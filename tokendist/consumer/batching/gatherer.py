"""Gathers the payments ready to sign, from every partition this process owns, into
batches: up to ``batch_max_size`` payments of one Distributor, or what arrived within
``batch_max_wait_s`` of the oldest. One task signs them one batch at a time (a key from
the pool, the key's next nonce, a contiguous range of indices) and hands each stored
batch to the settler at once.

A payment's processor awaits ``submit``: it learns the batch its payment went into (and
then awaits that batch's end), or None when the payment was not taken (another member
holds it, or it was found paid on-chain): it reloads its row and goes on from there.
One user's payments keep their order because a processor submits a user's next payment
only once the previous one finished.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass, field

import structlog
from eth_typing import HexStr

from tokendist.consumer import compliance, contracts
from tokendist.consumer.batching.settler import Settler
from tokendist.consumer.chain import Signed
from tokendist.consumer.fees import FeeCap
from tokendist.consumer.keypool import KeyPool
from tokendist.consumer.ports import BatchStore, OperatorChain
from tokendist.consumer.repository import BatchRequest, PaymentToSign, SignBatch
from tokendist.consumer.states import State
from tokendist.core import metrics
from tokendist.core.errors import (
    BatchDeferred,
    ChainRejected,
    KeyRejected,
    StateConflict,
    TransientError,
)
from tokendist.core.failpoints import Failpoints
from tokendist.core.retry import backoff
from tokendist.core.settings import ConsumerSettings

log = structlog.get_logger("tokendist.gatherer")

GAS_MARGIN_PERCENT = 25
GAS_MARGIN_FIXED = 50_000
# A batch is estimated before its indices are taken, at indices no payment can hold: an
# index the estimate met already paid costs no transfer, and other members take indices
# between any look at the floor and this batch's own (found by the benchmark: batches of
# three members ran out of gas). Bits there are unset, their words fresh: the costliest
# case, so the estimate is an upper bound whatever range the batch gets.
ESTIMATE_FIRST_INDEX = 2**255


@dataclass(slots=True)
class _Waiting:
    payment: PaymentToSign
    distributor: str
    since: float
    future: asyncio.Future[int | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Gatherer:
    def __init__(
        self,
        settings: ConsumerSettings,
        repo: BatchStore,
        keys: KeyPool,
        settler: Settler,
        failpoints: Failpoints,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.keys = keys
        self.settler = settler
        self.failpoints = failpoints
        self.fee_cap = FeeCap(settings)
        self._queue: collections.deque[_Waiting] = collections.deque()
        self._arrived = asyncio.Event()

    async def submit(self, payment: PaymentToSign, distributor: str) -> int | None:
        """The id of the batch ``payment`` was signed into; None if it was not taken."""
        queued = next((w for w in self._queue if w.payment.event_id == payment.event_id), None)
        if queued is not None:  # submitted twice at once: one entry, or one batch pays it twice
            return await asyncio.shield(queued.future)
        waiting = _Waiting(payment, distributor, time.monotonic())
        self._queue.append(waiting)
        self._arrived.set()
        try:
            return await asyncio.shield(waiting.future)
        except asyncio.CancelledError:
            # Its worker is stopping: leave it out of the next batch (if it is signed
            # already, its row says so and whoever processes the event next resumes).
            if waiting in self._queue:
                self._queue.remove(waiting)
            raise

    async def run(self) -> None:
        failures = 0
        while True:
            batch = await self._next_batch()
            try:
                await self._sign(batch)
                failures = 0
            except TransientError as exc:
                failures += 1
                log.warning("batch_signing_retrying", error=str(exc), payments=len(batch))
                # Not those the pre-flight already parked or refused: they have their answer.
                self._queue.extendleft(reversed([w for w in batch if not w.future.done()]))
                await asyncio.sleep(
                    backoff(failures, self.settings.retry_base_s, self.settings.retry_cap_s)
                )
            except Exception as exc:  # the processors retry, and park what keeps failing
                log.exception("batch_signing_failed", error=repr(exc), alert=True)
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(exc)

    async def _next_batch(self) -> list[_Waiting]:
        """Wait until the oldest payment's batch is full or has waited long enough."""
        s = self.settings
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            oldest = self._queue[0]
            same = [w for w in self._queue if w.distributor == oldest.distributor]
            left = oldest.since + s.batch_max_wait_s - time.monotonic()
            if len(same) >= s.batch_max_size or left <= 0:
                batch = same[: s.batch_max_size]
                for waiting in batch:
                    self._queue.remove(waiting)
                return batch
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def _sign(self, batch: list[_Waiting]) -> None:
        distributor = batch[0].distributor
        key = await self.keys.acquire()
        token = await self.repo.erc3643_token(distributor)
        if token is not None:
            batch = await self._preflight(key, token, distributor, batch)
            if not batch:
                return
        try:
            gas, payable = await self._estimate(key, distributor, batch)
        except KeyRejected as exc:
            self.keys.rest(key.sender, exc.reason)
            raise BatchDeferred(exc.reason) from exc
        if not payable:
            return
        gas_limit = gas * (100 + GAS_MARGIN_PERCENT) // 100 + GAS_MARGIN_FIXED
        max_fee, tip = await self._fees()

        request = BatchRequest(
            await key.chain_id(), key.sender, distributor, [w.payment for w in payable]
        )
        try:
            sign = self._signing(key, distributor, gas_limit, max_fee, tip)
            stored = await self.repo.sign_batch(request, sign)
        except KeyRejected as exc:  # drained meanwhile: the next acquire skips it
            raise BatchDeferred(exc.reason) from exc
        if stored.batch_id is not None:
            self.failpoints.hit("after:signed")
            metrics.BATCH_SIZE.observe(len(stored.members))
            log.info(
                "batch_signed",
                batch_id=stored.batch_id,
                sender=key.sender,
                payments=len(stored.members),
                recovered=len(stored.recovered),
            )
            self.settler.start(stored.batch_id)
        members = set(stored.members)
        for waiting in payable:
            if not waiting.future.done():
                taken = waiting.payment.event_id in members
                waiting.future.set_result(stored.batch_id if taken else None)

    def _signing(
        self, key: OperatorChain, distributor: str, gas: int, max_fee: int, tip: int
    ) -> SignBatch:
        """What ``sign_batch`` calls with the nonce and the indices it reserved."""

        async def sign(nonce: int, first: int, kept: list[PaymentToSign]) -> tuple[Signed, bytes]:
            data = contracts.batch_calldata(first, [_entry(p) for p in kept])
            try:
                signed = await key.sign(
                    to=distributor,
                    data=data,
                    gas=gas,
                    nonce=nonce,
                    max_fee=max_fee,
                    priority_fee=tip,
                )
            except KeyRejected as exc:  # its custody refused it (disabled, access denied)
                self.keys.rest(key.sender, exc.reason)
                raise
            return signed, bytes.fromhex(data[2:])

        return sign

    async def _estimate(
        self, key: OperatorChain, distributor: str, batch: list[_Waiting]
    ) -> tuple[int, list[_Waiting]]:
        """Gas for the payments the Distributor would pay now, and those payments; a
        refused payment fails (retryable: nothing was paid) before anything is signed.
        Payments payable alone but not together (the Distributor's tokens cover each, not
        all) go one now and the rest back to the queue: after it they are refused alone."""
        try:
            return await key.estimate(distributor, _estimate_calldata(batch)), batch
        except KeyRejected:
            raise
        except ChainRejected:
            payable = await self._payable(key, distributor, batch)
        if not payable:
            return 0, []
        try:
            gas = await key.estimate(distributor, _estimate_calldata(payable))
        except KeyRejected:
            raise
        except ChainRejected:
            payable, later = payable[:1], payable[1:]
            self._queue.extendleft(reversed(later))
            gas = await key.estimate(distributor, _estimate_calldata(payable))
        return gas, payable

    async def _payable(
        self, key: OperatorChain, distributor: str, batch: list[_Waiting]
    ) -> list[_Waiting]:
        """Halves a refused batch until each refusal is pinned to one payment."""
        try:
            await key.estimate(distributor, _estimate_calldata(batch))
            return batch
        except KeyRejected:
            raise
        except ChainRejected as exc:
            if len(batch) == 1:
                await self._refuse(batch[0], exc.reason)
                return []
        middle = len(batch) // 2
        left = await self._payable(key, distributor, batch[:middle])
        return left + await self._payable(key, distributor, batch[middle:])

    async def _preflight(
        self, key: OperatorChain, token: str, distributor: str, batch: list[_Waiting]
    ) -> list[_Waiting]:
        """An ERC-3643 token reverts a transfer to an unverified, frozen or non-compliant
        wallet, and one revert reverts the whole batch: each payment is asked first. A
        refused one is parked unsigned with its reason (no nonce, no gas), until ``kyc
        approve`` or the re-check (``consumer.release``) finds its condition cleared."""
        refused = await compliance.preflight(
            key.call,
            token,
            distributor,
            [(w.payment.event_id, w.payment.recipient, w.payment.tokens) for w in batch],
        )
        for waiting in batch:
            refusal = refused.get(waiting.payment.event_id)
            if refusal is not None:
                await self._park(waiting, refusal)
        return [w for w in batch if w.payment.event_id not in refused]

    async def _park(self, waiting: _Waiting, refusal: compliance.Refusal) -> None:
        dist = await self.repo.get(waiting.payment.event_id)
        if dist.state.before_signing:
            with contextlib.suppress(StateConflict):  # moved meanwhile: the processor sees
                await self.repo.park(dist, refusal.reason, refusal.detail)
        log.info(
            "payment_parked_before_signing",
            event_id=str(dist.event_id),
            reason=refusal.reason,
            detail=refusal.detail,
        )
        if not waiting.future.done():
            waiting.future.set_result(None)

    async def _refuse(self, waiting: _Waiting, reason: str) -> None:
        dist = await self.repo.get(waiting.payment.event_id)
        if dist.state.before_signing:
            # StateConflict: another member moved it; the processor reloads and sees.
            with contextlib.suppress(StateConflict):
                await self.repo.transition(dist, State.FAILED, reason, retryable=True)
        log.warning("payment_refused_before_signing", event_id=str(dist.event_id), reason=reason)
        if not waiting.future.done():
            waiting.future.set_result(None)

    async def _fees(self) -> tuple[int, int]:
        return self.fee_cap.fees(await self.keys.node.base_fee())


def _estimate_calldata(batch: list[_Waiting]) -> HexStr:
    """The batch's calldata for its estimate (see ``ESTIMATE_FIRST_INDEX``)."""
    return contracts.batch_calldata(ESTIMATE_FIRST_INDEX, [_entry(w.payment) for w in batch])


def _entry(payment: PaymentToSign) -> tuple[bytes, str, int]:
    return bytes.fromhex(payment.payment_id[2:]), payment.recipient, payment.tokens
