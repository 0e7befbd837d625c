"""Reconcile's repair of a reorganisation deeper than the finality rule: credited
distributions whose payout the chain no longer has (``ops.chaincheck``) are paid again
under the payment indices their batch was signed with, so never twice. The holdings stay
as they are: the investor was credited once, for a payout that is back once mined;
nothing is un-credited or credited again.

Per batch that paid them, by its key's nonce on the chain now:

- the nonce is free again (the chain's is at or below it): the batch's own signed bytes
  are re-sent, and with them every stored batch of the key between the chain's nonce and
  it, in nonce order (a nonce can only be mined after the one before). Same bytes: at
  most one transaction per nonce is ever mined.
- the nonce is taken (another transaction used it): those bytes can never be mined. The
  batch's calldata (the same first index, payment ids, recipients, amounts) is signed
  again under the signing key's next nonce, stored as a new batch that names the original
  (``batches.resigns``), and sent. Safe because the Distributor pays an index at most once
  (its bitmap): were the old bytes ever mined too, one of the two skips every payment
  with ``AlreadyPaid``. Reconcile settles these batches (confirmed, then credited with no
  member to credit) once mined; until then the consumer's resubmitter keeps them moving.

Left for a human, each with its one line: a nonce in between held by a reverted or
abandoned batch (its payments were batched again under other indices: re-sending it
could pay them twice), a nonce without a stored batch, a node that refuses the bytes, fees
above the cap, a signing key not active, and a distribution paid before batches existed.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog
from eth_typing import HexStr

from tokendist.consumer.batching.states import BatchState
from tokendist.consumer.chain import Chain, Signed
from tokendist.consumer.fees import FeeCap
from tokendist.consumer.repository import BatchOutcome, Repository
from tokendist.core.errors import BatchDeferred, ChainRejected, KeyRejected
from tokendist.core.settings import ChainCheckSettings
from tokendist.ops.chaincheck import CheckResult, Missing, NodeReader, check_once
from tokendist.ops.repository import ToolRepository

log = structlog.get_logger("tokendist.restore")

# Its bytes pay nothing twice: its payments were never batched again under other indices.
RESENDABLE = frozenset(
    {BatchState.SIGNED, BatchState.SUBMITTED, BatchState.CONFIRMED, BatchState.CREDITED}
)
RECEIPT_WAIT_S = 60.0
RECEIPT_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class Attempt:
    batch_id: int
    nonce: int
    state: BatchState
    tx_hash: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Plan:
    """The attempts to send, in nonce order, and why it stops short (None: it does not)."""

    sends: list[Attempt]
    blocked: str | None


def plan_resend(chain_nonce: int, last_nonce: int, stored: Mapping[int, Attempt]) -> Plan:
    """Every nonce from the key's next on the chain up to ``last_nonce``, each by its
    stored batch; stops at the first that cannot be re-sent safely."""
    sends: list[Attempt] = []
    for nonce in range(chain_nonce, last_nonce + 1):
        attempt = stored.get(nonce)
        if attempt is None:
            return Plan(sends, f"nonce {nonce} has no stored batch: nothing to fill it with")
        if attempt.state not in RESENDABLE:
            return Plan(
                sends,
                f"nonce {nonce} is batch {attempt.batch_id}, {attempt.state}: its payments "
                "were batched again, re-sending it could pay them twice",
            )
        sends.append(attempt)
    return Plan(sends, None)


@dataclass
class Restored:
    """What the repair did: one line per batch sent, one per case left for a human."""

    found: int = 0
    resent: list[str] = field(default_factory=list)
    for_a_human: list[str] = field(default_factory=list)
    after: CheckResult | None = None


@dataclass(frozen=True, slots=True)
class _Carrier:
    """The batch that carries an original batch's calldata now: itself or its newest
    re-signing."""

    id: int
    original: int
    nonce: int
    state: BatchState


@dataclass
class _Run:
    """One repair: the missing payments by original batch, the attempts sent (hash -> the
    line that reports them), and whether it only says what it would do."""

    missing: dict[int, list[Missing]]
    done: Restored
    dry_run: bool
    sent: dict[str, str] = field(default_factory=dict)
    original: dict[int, int] = field(default_factory=dict)  # carrier id -> original id


class Restorer:
    def __init__(
        self,
        repo: Repository,
        ops: ToolRepository,
        chain: Chain,
        settings: ChainCheckSettings,
        *,
        wait_s: float = RECEIPT_WAIT_S,
    ) -> None:
        self.repo = repo
        self.ops = ops
        self.chain = chain
        self.reader = NodeReader(chain.rpc)
        self.finality = settings.finality_rule
        self.fees = FeeCap(settings)
        self.window_blocks = settings.chain_check_window_blocks
        self.wait_s = wait_s

    async def run(self, *, dry_run: bool) -> Restored:
        done = Restored()
        check = await check_once(
            self.ops, self.reader, window_blocks=self.window_blocks, record=not dry_run
        )
        done.found = len(check.missing)
        run = _Run({}, done, dry_run)
        for m in check.missing:
            if m.batch_id is None:
                done.for_a_human.append(
                    f"payment {m.event_id}: credited, not on chain, paid before batches "
                    "existed (no stored batch to send again)"
                )
            else:
                run.missing.setdefault(m.batch_id, []).append(m)
        by_key: dict[tuple[int, str], list[_Carrier]] = defaultdict(list)
        for row in await self.ops.batches_of(list(run.missing)):
            carrier = _Carrier(row["id"], row["original"], row["nonce"], BatchState(row["state"]))
            run.original[carrier.id] = carrier.original
            by_key[(row["chain_id"], row["sender"])].append(carrier)
        for (chain_id, sender), carriers in sorted(by_key.items()):
            await self._key(chain_id, sender, carriers, run)
        if run.sent:
            await self._await_mined(run)
        if not dry_run:
            await self._settle_resigned(done)
        if run.sent:
            done.after = await check_once(self.ops, self.reader, window_blocks=self.window_blocks)
        return done

    async def _key(self, chain_id: int, sender: str, carriers: list[_Carrier], run: _Run) -> None:
        chain_nonce = await self.chain.nonce_of(sender, pending=False)
        for carrier in sorted(carriers, key=lambda c: c.nonce):
            if carrier.nonce < chain_nonce:
                await self._resign(chain_id, carrier, run)
        open_ = [c.nonce for c in carriers if c.nonce >= chain_nonce]
        if open_:
            await self._resend(chain_id, sender, chain_nonce, max(open_), run)

    def _line(self, batch_id: int, nonce: int, sender: str, run: _Run) -> str:
        restores = len(run.missing.get(run.original.get(batch_id, batch_id), []))
        what = f"{restores} payment(s) restored" if restores else "fills the nonce gap"
        return f"batch {batch_id} (nonce {nonce} of {sender}): {what}"

    async def _resend(
        self, chain_id: int, sender: str, chain_nonce: int, last: int, run: _Run
    ) -> None:
        """The key's stored batches from its nonce on the chain up to ``last``, in order."""
        rows = await self.ops.sender_attempts(chain_id, sender, chain_nonce, last)
        stored = {
            r["nonce"]: Attempt(
                r["batch_id"], r["nonce"], BatchState(r["state"]), r["tx_hash"], bytes(r["raw_tx"])
            )
            for r in rows
        }
        plan = plan_resend(chain_nonce, last, stored)
        for attempt in plan.sends:
            line = self._line(attempt.batch_id, attempt.nonce, sender, run)
            if run.dry_run:
                run.done.resent.append(f"{line}: would re-send {attempt.tx_hash}")
                continue
            if not await self._send(attempt.tx_hash, attempt.raw, f"{line}: re-sent", run):
                return
        if plan.blocked is not None:
            run.done.for_a_human.append(f"key {sender}: {plan.blocked}")

    async def _resign(self, chain_id: int, carrier: _Carrier, run: _Run) -> None:
        """Sign the carrier's calldata again under the signing key's next nonce."""
        line = f"batch {carrier.original}: its nonce is taken on the chain"
        if carrier.state not in (BatchState.CONFIRMED, BatchState.CREDITED):
            run.done.for_a_human.append(f"{line}; batch {carrier.id} is {carrier.state}")
            return
        if run.dry_run:
            run.done.resent.append(f"{line}: would sign its calldata again")
            return
        await self.chain.chain_id()  # what ``sign`` signs for, read once
        try:
            max_fee, tip = self.fees.fees(await self.chain.base_fee())

            async def sign(nonce: int, to: str, data: bytes, gas: int) -> Signed:
                return await self.chain.sign(
                    to=to,
                    data=HexStr("0x" + data.hex()),
                    gas=gas,
                    nonce=nonce,
                    max_fee=max_fee,
                    priority_fee=tip,
                )

            new_id, signed = await self.ops.resign(
                carrier.id,
                carrier.original,
                chain_id=chain_id,
                sender=self.chain.sender,
                chain_pending=await self.chain.nonce(pending=True),
                sign=sign,
            )
        except (BatchDeferred, KeyRejected) as exc:
            run.done.for_a_human.append(f"{line}; not signed again: {exc}")
            return
        run.original[new_id] = carrier.original
        log.warning(
            "credited_batch_resigned",
            batch_id=carrier.original,
            new_batch_id=new_id,
            nonce=signed.nonce,
            tx_hash=signed.tx_hash,
        )
        restores = len(run.missing.get(carrier.original, []))
        what = (
            f"batch {carrier.original}: its nonce taken, signed again as batch {new_id} "
            f"(nonce {signed.nonce} of {self.chain.sender}), {restores} payment(s) restored:"
        )
        await self._send(signed.tx_hash, signed.raw, what, run)

    async def _send(self, tx_hash: str, raw: bytes, line: str, run: _Run) -> bool:
        try:
            answer = await self.chain.send_raw(raw)
        except ChainRejected as exc:
            run.done.for_a_human.append(f"{line} {tx_hash}, refused by the node: {exc}")
            return False
        run.sent[tx_hash] = line
        log.warning("credited_batch_sent", tx_hash=tx_hash, answer=answer.value)
        return True

    async def _await_mined(self, run: _Run) -> None:
        deadline = time.monotonic() + self.wait_s
        waiting = dict(run.sent)
        while waiting and time.monotonic() < deadline:
            for tx_hash, receipt in (await self.chain.receipts(list(waiting))).items():
                if receipt is not None:
                    line = waiting.pop(tx_hash)
                    run.done.resent.append(
                        f"{line} {tx_hash}, mined in block {receipt.block_number}"
                    )
            if waiting:
                await asyncio.sleep(RECEIPT_POLL_S)
        run.done.resent += [
            f"{line} {tx_hash}, not mined yet (run reconcile again)"
            for tx_hash, line in waiting.items()
        ]

    async def _settle_resigned(self, done: Restored) -> None:
        """Re-signed batches mined by now (this run's or an earlier one's): confirmed and
        credited (no member: the payments they carry were credited once already), or
        reverted for a human."""
        rows = await self.ops.resigned_in_flight()
        for row in rows:
            found = await self.chain.receipts(list(row["tx_hashes"]))
            receipt = next((r for r in found.values() if r is not None), None)
            if receipt is None or not await self.chain.final(self.finality, receipt.block_number):
                continue  # the next reconcile settles it
            batch = await self.repo.batch(row["id"])
            if not receipt.succeeded:
                await self.repo.batch_reverted(batch, receipt.tx_hash, receipt.block_number)
                done.for_a_human.append(f"re-signed batch {batch.id} reverted: {receipt.tx_hash}")
                continue
            empty = BatchOutcome([], {}, {})
            batch = await self.repo.batch_confirmed(
                batch, receipt.tx_hash, receipt.block_number, empty
            )
            await self.repo.credit([], batch)
