"""Takes a stored batch to its end: broadcast its newest attempt, wait for a receipt of
any of its attempts (they share one nonce, so at most one is ever mined) and for that
receipt to be final by the finality rule (``core.finality``), read each payment's outcome
from the receipt's logs, and credit the whole batch in one DB transaction.

A receipt counts only while its block is canonical (the node's block at its number has
its hash). Between mined and final, each new head re-checks it: a reorganisation that
removed it (receipt gone, or its block replaced) sends the batch back to submitted and
broadcasts the very bytes that were mined again (same nonce: a node does not put
re-orged transactions back in its pool, anvil certainly not); one that moved it to
another block leaves it mined, at that block.

Idempotent and safe beside other members: every step is guarded by the batch's stored
state, so a member resuming a batch after a crash or a rebalance, or two members
settling it at once, move it once. Within a process one task settles a batch; every
processor whose payment is in it awaits that task.
"""

from __future__ import annotations

import asyncio

import structlog

from tokendist.consumer import contracts
from tokendist.consumer.batching.states import BatchState
from tokendist.consumer.chain import Block, Receipt
from tokendist.consumer.head import Head, Receipts
from tokendist.consumer.keypool import KeyPool
from tokendist.consumer.ports import BatchStore
from tokendist.consumer.repository import Batch, BatchOutcome
from tokendist.core import metrics
from tokendist.core.errors import ChainRejected, ChainUnavailable, StateConflict, TransientError
from tokendist.core.failpoints import Failpoints
from tokendist.core.finality import is_final
from tokendist.core.settings import ConsumerSettings

log = structlog.get_logger("tokendist.settler")

# Head advances with our nonce mined by something else and none of our attempts mined,
# before the batch counts as abandoned (a receipt may lag its block on a busy node). The
# head at which the nonce was first seen spent must also be final: a reorganisation may
# still remove the other transaction, and anyone holding our signed bytes could then get
# them mined after the payments were batched again under fresh indices (paid twice).
NONCE_CONSUMED_STRIKES = 20


class Settler:
    def __init__(
        self,
        settings: ConsumerSettings,
        repo: BatchStore,
        keys: KeyPool,
        failpoints: Failpoints,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.keys = keys
        self.failpoints = failpoints
        self.head = Head(keys.node, settings.receipt_poll_s)
        self.receipts = Receipts(keys.node)
        self._settling: dict[int, asyncio.Task[Batch]] = {}

    def start(self, batch_id: int) -> asyncio.Task[Batch]:
        task = self._settling.get(batch_id)
        if task is None:
            task = asyncio.create_task(self._settle(batch_id), name=f"batch-{batch_id}")
            self._settling[batch_id] = task
            task.add_done_callback(lambda t: self._done(batch_id, t))
        return task

    async def settle(self, batch_id: int) -> Batch:
        """The batch once it ended; a failure (an outage) reaches every waiter, and the
        next call starts again from the stored state."""
        return await asyncio.shield(self.start(batch_id))

    async def close(self) -> None:
        tasks = list(self._settling.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, batch_id: int, task: asyncio.Task[Batch]) -> None:
        if self._settling.get(batch_id) is task:
            del self._settling[batch_id]
        if not task.cancelled() and task.exception() is not None:
            log.warning("batch_settle_interrupted", batch_id=batch_id, error=str(task.exception()))

    async def _settle(self, batch_id: int) -> Batch:
        batch = await self.repo.batch(batch_id)
        with structlog.contextvars.bound_contextvars(batch_id=batch_id, sender=batch.sender):
            while not batch.state.settled:
                before = batch.state
                try:
                    batch = await self._step(batch)
                except StateConflict:
                    batch = await self.repo.batch(batch_id)
                    continue
                if batch.state is not before:
                    self.failpoints.hit(f"after:{batch.state}")
                    log.info(
                        "batch_state_changed",
                        state=batch.state,
                        previous=before,
                        tx_hash=batch.tx_hash,
                        nonce=batch.nonce,
                    )
            metrics.BATCHES.labels(outcome=batch.state.value).inc()
        return batch

    async def _step(self, batch: Batch) -> Batch:
        match batch.state:
            case BatchState.SIGNED:
                return await self._broadcast(batch)
            case BatchState.SUBMITTED | BatchState.MINED:
                return await self._await_final(batch)
            case BatchState.CONFIRMED:
                return await self._credit(batch)
        raise AssertionError(f"no step from batch state {batch.state}")

    async def _credit(self, batch: Batch) -> Batch:
        """The whole batch in one transaction; if that fails for a reason other than an
        outage (one member's row refuses the write), one by one, so that only the
        refusing member waits (its own record retries it, and is parked if it keeps
        failing) while its batch-mates are credited."""
        members = [m.event_id for m in await self.repo.batch_members(batch.id)]
        try:
            await self.repo.credit(members, batch)
        except (TransientError, StateConflict):  # an outage; another member credited it
            raise
        except Exception as exc:
            log.error("batch_credit_failed", error=repr(exc)[:300], alert=True)
            for event_id in members:
                try:
                    await self.repo.credit([event_id])
                except TransientError:
                    raise
                except Exception as one:
                    log.error(
                        "credit_failed", event_id=str(event_id), error=repr(one)[:300], alert=True
                    )
            await self.repo.credit([], batch)
        return await self.repo.batch(batch.id)

    async def _broadcast(self, batch: Batch) -> Batch:
        newest = (await self.repo.attempts(batch.id))[-1]
        try:
            answer = await self.keys.node.send_raw(newest.raw)
        except ChainRejected as exc:
            # The nonce is spent in our books: giving up here would leave a gap that
            # blocks every later batch of the key. Keep trying, loudly.
            log.error("broadcast_refused", reason=exc.reason, tx_hash=newest.tx_hash, alert=True)
            raise ChainUnavailable(exc.reason) from exc
        await self.repo.mark_broadcast(newest.tx_hash)
        log.info("batch_broadcast", tx_hash=newest.tx_hash, nonce=newest.nonce, answer=answer.value)
        return await self.repo.batch_submitted(batch)

    async def _await_final(self, batch: Batch) -> Batch:
        """The batch's next state: mined (again), back to submitted after a
        reorganisation, or, once its receipt is final, confirmed or reverted (a revert
        waits for finality too: a reorganisation may yet mine the same bytes
        successfully, and re-batching its payments would then pay them twice)."""
        strikes = 0
        taken_at: int | None = None  # the head our nonce was first seen spent at, unmined
        seen: Block | None = None
        while True:
            head = seen = await self.head.advanced(seen)
            receipt = await self._canonical_receipt(batch)
            if receipt is not None:
                strikes, taken_at = 0, None
                moved = await self._moved(batch, receipt, head)
                if moved is not None:
                    return moved
            elif batch.state is BatchState.MINED:
                return await self._reorged(batch)
            elif await self.keys.node.nonce_of(batch.sender, pending=False) > batch.nonce:
                strikes += 1
                taken_at = head.number if taken_at is None else taken_at
                if strikes >= NONCE_CONSUMED_STRIKES and await self._final(taken_at, head):
                    log.error("batch_nonce_taken", nonce=batch.nonce, alert=True)
                    return await self.repo.batch_abandoned(
                        batch, f"nonce {batch.nonce} taken by a transaction we did not sign"
                    )
            else:  # the other transaction reorganised away: our bytes may be mined yet
                strikes, taken_at = 0, None

    async def _final(self, block: int, head: Block) -> bool:
        rule = self.settings.finality_rule
        tagged = None if rule.tag is None else await self.head.tagged(rule.tag)
        return is_final(rule, block, head.number, tagged)

    async def _moved(self, batch: Batch, receipt: Receipt, head: Block) -> Batch | None:
        """The batch moved on by its canonical receipt; None: still mined where it was,
        not final yet."""
        final = await self._final(receipt.block_number, head)
        elsewhere = batch.state is BatchState.MINED and batch.block_hash != receipt.block_hash
        if elsewhere:
            log.warning(
                "batch_reorged",
                tx_hash=receipt.tx_hash,
                block_number=batch.block_number,
                now_in_block=receipt.block_number,
            )
        if not final and not elsewhere and batch.state is BatchState.MINED:
            return None
        if not final:
            batch = await self.repo.batch_mined(batch, receipt)
        elif not receipt.succeeded:  # a revert rolls every payment's bit back too
            batch = await self.repo.batch_reverted(batch, receipt.tx_hash, receipt.block_number)
        else:
            outcome = await self._outcome(batch, receipt)
            batch = await self.repo.batch_confirmed(
                batch, receipt.tx_hash, receipt.block_number, outcome
            )
        if elsewhere:  # counted once stored: of members racing, the one that moved it
            metrics.REORGS.inc()
        return batch

    async def _canonical_receipt(self, batch: Batch) -> Receipt | None:
        """The receipt of whichever attempt was mined, if its block is canonical. A
        receipt read just before a reorganisation and a block hash read just after it
        disagree: the receipt is read once more before it counts as gone."""
        hashes = [tx.tx_hash for tx in await self.repo.attempts(batch.id)]
        for lookup in (self.receipts.get, self.keys.node.receipts):
            found = await lookup(hashes)
            receipt = next((r for r in found.values() if r is not None), None)
            if receipt is None:
                return None
            if await self.head.block_hash(receipt.block_number) == receipt.block_hash:
                return receipt
            log.info("receipt_not_canonical", tx_hash=receipt.tx_hash)
        return None

    async def _reorged(self, batch: Batch) -> Batch:
        """Its block is gone: submitted again, and the attempt that was mined sent again."""
        log.warning(
            "batch_reorged",
            tx_hash=batch.tx_hash,
            block_number=batch.block_number,
            block_hash=batch.block_hash,
        )
        submitted = await self.repo.batch_reorged(batch)
        metrics.REORGS.inc()
        mined = next(a for a in await self.repo.attempts(batch.id) if a.tx_hash == batch.tx_hash)
        try:
            answer = await self.keys.node.send_raw(mined.raw)
        except ChainRejected as exc:
            # Submitted again: the resubmitter sends its newest attempt in a few seconds.
            log.error("broadcast_refused", reason=exc.reason, tx_hash=mined.tx_hash, alert=True)
            return submitted
        await self.repo.mark_broadcast(mined.tx_hash)
        log.info("batch_broadcast", tx_hash=mined.tx_hash, nonce=mined.nonce, answer=answer.value)
        return submitted

    async def _outcome(self, batch: Batch, receipt: Receipt) -> BatchOutcome:
        """Each member paid by this transaction, paid earlier under its own index (an
        ``AlreadyPaid`` log: its bit was set), or failed for a human (its index was used
        by another payment: only a database restored past the index floor does that)."""
        members = {m.payment_id: m for m in await self.repo.batch_members(batch.id)}
        paid, earlier, failed = [], {}, {}
        outcomes = {"0x" + o.payment_id.hex(): o for o in contracts.batch_outcomes(receipt.logs)}
        for payment_id, member in members.items():
            outcome = outcomes.get(payment_id)
            if outcome is not None and outcome.result is contracts.Result.PAID:
                paid.append(member.event_id)
                continue
            logs = await self.keys.node.payment_logs(batch.distributor_address, payment_id)
            previous = [p for p in contracts.paid(logs) if p.index == member.payment_index]
            if previous:
                earlier[member.event_id] = (previous[0].tx_hash, previous[0].block_number)
                log.warning("payment_paid_earlier", event_id=str(member.event_id))
            else:
                failed[member.event_id] = (
                    f"index_collision: index {member.payment_index} was used by another payment"
                )
                log.error("payment_index_collision", event_id=str(member.event_id), alert=True)
        return BatchOutcome(paid, earlier, failed)
