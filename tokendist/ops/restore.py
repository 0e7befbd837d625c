"""Reconcile's repair of a reorganisation deeper than the finality rule: credited
distributions whose payout the chain no longer has (``ops.chaincheck``) are paid again by
the very transaction that paid them, never by a new payout.

Why re-sending is the repair, and why it cannot pay twice: a batch's signed bytes carry
its key's nonce; after the reorg the key's nonce on the chain is back at or below it, so
the same bytes (same nonce, same payment indices) can be mined again, and only one
transaction per nonce ever is. The holdings stay as they are: the investor was credited
once, for a payout that is back once it is mined; nothing is un-credited or credited
again. Every nonce between the chain's and the batch's must be filled first, in order,
each by the batch stored for it.

Left for a human, each with its one line: a nonce already taken on the chain by another
transaction (the stored bytes can never be mined; the payment indices are unpaid, so the
batch's calldata must be signed again under a new nonce, which the Distributor's bitmap
makes safe), a nonce in between held by a reverted or abandoned batch (its payments were
batched again under other indices: re-sending it could pay them twice), a nonce with no
stored batch, a node that refuses the bytes (fees have risen), and a distribution paid
before batches existed.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

from tokendist.consumer.batching.states import BatchState
from tokendist.consumer.chain import Chain
from tokendist.core.errors import ChainRejected
from tokendist.ops.chaincheck import CheckResult, Missing, check_once
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
    """What the repair did: one line per batch re-sent, one per case left for a human."""

    found: int = 0
    resent: list[str] = field(default_factory=list)
    for_a_human: list[str] = field(default_factory=list)
    after: CheckResult | None = None


@dataclass
class _Run:
    """One repair's state: the missing payments by batch, the attempts sent (hash -> the
    line that reports them), and whether it only says what it would do."""

    missing: dict[int, list[Missing]]
    done: Restored
    dry_run: bool
    sent: dict[str, str] = field(default_factory=dict)


class Restorer:
    def __init__(
        self,
        ops: ToolRepository,
        chain: Chain,
        *,
        window_blocks: int,
        wait_s: float = RECEIPT_WAIT_S,
    ) -> None:
        self.ops = ops
        self.chain = chain
        self.window_blocks = window_blocks
        self.wait_s = wait_s

    async def run(self, *, dry_run: bool) -> Restored:
        done = Restored()
        check = await check_once(self.ops, self.chain, window_blocks=self.window_blocks)
        done.found = len(check.missing)
        if not check.missing:
            return done
        by_batch: dict[int, list[Missing]] = defaultdict(list)
        for m in check.missing:
            if m.batch_id is None:
                done.for_a_human.append(
                    f"payment {m.event_id}: credited, not on chain, paid before batches "
                    "existed (no stored batch to re-send)"
                )
            else:
                by_batch[m.batch_id].append(m)
        by_key: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)
        for row in await self.ops.batches_of(list(by_batch)):
            by_key[(row["chain_id"], row["sender"])].append((row["nonce"], row["id"]))
        run = _Run(dict(by_batch), done, dry_run)
        for (chain_id, sender), batches in sorted(by_key.items()):
            await self._key(chain_id, sender, dict(batches), run)
        if run.sent:
            await self._await_mined(run.sent, done)
            done.after = await check_once(self.ops, self.chain, window_blocks=self.window_blocks)
        return done

    async def _key(self, chain_id: int, sender: str, batches: dict[int, int], run: _Run) -> None:
        """Re-send ``sender``'s batches (nonce -> batch id) whose payouts are gone."""
        missing, done = run.missing, run.done
        chain_nonce = await self.chain.nonce_of(sender, pending=False)
        for nonce, batch_id in sorted(batches.items()):
            if nonce < chain_nonce:
                done.for_a_human.append(
                    f"batch {batch_id} (nonce {nonce} of {sender}): the nonce is taken on the "
                    f"chain, its {len(missing[batch_id])} payment(s) unpaid: sign its calldata "
                    "again under a new nonce"
                )
        open_ = [n for n in batches if n >= chain_nonce]
        if not open_:
            return
        rows = await self.ops.sender_attempts(chain_id, sender, chain_nonce, max(open_))
        stored = {
            r["nonce"]: Attempt(
                r["batch_id"], r["nonce"], BatchState(r["state"]), r["tx_hash"], bytes(r["raw_tx"])
            )
            for r in rows
        }
        plan = plan_resend(chain_nonce, max(open_), stored)
        for attempt in plan.sends:
            restores = len(missing.get(attempt.batch_id, []))
            what = f"{restores} payment(s) restored" if restores else "fills the nonce gap"
            line = f"batch {attempt.batch_id} (nonce {attempt.nonce} of {sender}): {what}"
            if run.dry_run:
                done.resent.append(f"{line}: would re-send {attempt.tx_hash}")
                continue
            try:
                answer = await self.chain.send_raw(attempt.raw)
            except ChainRejected as exc:
                done.for_a_human.append(f"{line}: the node refused {attempt.tx_hash}: {exc}")
                return
            run.sent[attempt.tx_hash] = line
            log.warning(
                "credited_batch_resent",
                batch_id=attempt.batch_id,
                nonce=attempt.nonce,
                tx_hash=attempt.tx_hash,
                answer=answer.value,
            )
        if plan.blocked is not None:
            done.for_a_human.append(f"key {sender}: {plan.blocked}")

    async def _await_mined(self, sent: dict[str, str], done: Restored) -> None:
        deadline = time.monotonic() + self.wait_s
        waiting = dict(sent)
        while waiting and time.monotonic() < deadline:
            for tx_hash, receipt in (await self.chain.receipts(list(waiting))).items():
                if receipt is not None:
                    done.resent.append(
                        f"{waiting.pop(tx_hash)}: re-sent {tx_hash}, mined in block "
                        f"{receipt.block_number}"
                    )
            if waiting:
                await asyncio.sleep(RECEIPT_POLL_S)
        done.resent += [
            f"{line}: re-sent {tx_hash}, not mined yet (run reconcile again)"
            for tx_hash, line in waiting.items()
        ]
