"""``tokendist reconcile``: compare chain, distributions, holdings and ledger (verify's
checks) and repair only what is provably safe, leaving everything else to a human.

Safe repairs, and why they are safe beside live consumers (the investigation's defect 5):

- a credited distribution whose payout a reorganisation deeper than the finality rule
  removed (``ops.chaincheck`` finds it) is paid again under its batch's own payment
  indices: the batch's signed bytes re-sent in nonce order, or, its nonce taken, its
  calldata signed again (``ops.restore``: the Distributor pays an index once);
- a distribution whose transaction is mined and confirmed but which is not credited yet
  is moved on (``confirmed``, then ``credited``) through the same guarded transitions the
  consumer uses: whoever comes second finds the state moved and does nothing;
- a confirmed payment without any distribution is re-published through the outbox with
  its original event id: the consumer's claim is idempotent, so a copy of an event that
  was only late is a no-op;
- an investor's on-chain identity whose ``kyc approve`` or ``kyc revoke`` was interrupted
  between PostgreSQL and the chain is finished (``ops.kyc``: each step checks before it
  acts), with the deployer key; without it, each is left for a human.

Nothing else here signs or sends a transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from tokendist.consumer.chain import Chain
from tokendist.consumer.repository import Distribution, Repository, Tokenization
from tokendist.consumer.states import State
from tokendist.core.errors import StateConflict
from tokendist.core.settings import ChainCheckSettings
from tokendist.ops import kyc
from tokendist.ops.payouts import read_payouts
from tokendist.ops.repository import ToolRepository
from tokendist.ops.restore import Restored, Restorer
from tokendist.ops.trex import Trex
from tokendist.ops.verify import Report, check_all

log = structlog.get_logger("tokendist.reconcile")


@dataclass
class Reconciliation:
    credited: list[str] = field(default_factory=list)
    redriven: list[str] = field(default_factory=list)
    identities: int = 0
    for_a_human: list[str] = field(default_factory=list)
    restored: Restored = field(default_factory=Restored)
    report: Report | None = None

    def render(self) -> str:
        gone = self.restored
        lines = [
            f"credited, payout gone from the chain (a deep reorg): {gone.found}",
            *(f"  - {line}" for line in gone.resent),
            f"credited (confirmed on-chain, not yet credited): {len(self.credited)}",
            f"re-driven through the outbox (confirmed, never distributed): {len(self.redriven)}",
            f"on-chain identities finished (a kyc command interrupted): {self.identities}",
            f"left for a human: {len(gone.for_a_human) + len(self.for_a_human)}",
        ]
        lines += [f"  - {item}" for item in (gone.for_a_human + self.for_a_human)[:50]]
        if self.report is not None:
            lines += ["", self.report.render()]
        return "\n".join(lines)


class Reconciler:
    """``repo``: the consumer's repository (its guarded transitions); ``ops``: the tools';
    ``settings``: the chain's finality and fees, and the chain check's window; ``trex``:
    the deployer's ERC-3643 adapter, when its key is set."""

    def __init__(
        self,
        repo: Repository,
        ops: ToolRepository,
        chain: Chain,
        settings: ChainCheckSettings,
        trex: Trex | None = None,
    ) -> None:
        self.repo = repo
        self.ops = ops
        self.chain = chain
        self.trex = trex
        self.finality = settings.finality_rule
        self.restorer = Restorer(repo, ops, chain, settings)

    async def run(self, *, grace_s: float, dry_run: bool = False) -> Reconciliation:
        result = Reconciliation()
        result.restored = await self.restorer.run(dry_run=dry_run)
        for dist in await self.ops.stale_on_chain(grace_s):
            await self._settle(dist, result, dry_run)
        for row in await self.ops.lost_events(grace_s):
            await self._redrive(row["event_id"], row["payload"], result, dry_run)
        await self._identities(result, grace_s, dry_run)
        result.report = await check_all(self.ops, self.chain, grace_s=grace_s)
        return result

    async def _identities(self, result: Reconciliation, grace_s: float, dry_run: bool) -> None:
        unfinished = await self.ops.unfinished_identities(grace_s)
        if not unfinished:
            return
        if self.trex is None:
            result.for_a_human += [
                f"user {r['user_id']}: on-chain identity {r['state']}; set "
                "TOKENDIST_DEPLOYER_KEY and reconcile again"
                for r in unfinished
            ]
        elif dry_run:
            for row in unfinished:
                log.info("reconcile_would_finish_identity", user_id=row["user_id"])
            result.identities = len(unfinished)
        else:
            result.identities = await kyc.finish_unfinished(
                self.ops, self.trex, older_than_s=grace_s
            )
            log.info("reconcile_identities_finished", count=result.identities)

    async def _settle(self, dist: Distribution, result: Reconciliation, dry_run: bool) -> None:
        tokenization = await self.repo.tokenization(dist.tokenization_id)
        assert tokenization is not None  # a foreign key
        try:
            if dist.state is not State.CONFIRMED:
                found = await self._mined(dist, tokenization)
                if found is None:
                    return  # in flight: the owner and the resubmitter take care of it
                if not dry_run:
                    dist = await self.repo.confirm_paid(dist, *found)
            if dry_run:
                result.credited.append(str(dist.event_id))
                log.info("reconcile_would_credit", event_id=str(dist.event_id))
                return
            await self.repo.credit([dist.event_id])
            result.credited.append(str(dist.event_id))
            log.info("reconcile_credited", event_id=str(dist.event_id))
        except StateConflict:
            pass  # a consumer moved it first: exactly what we wanted

    async def _mined(
        self, dist: Distribution, tokenization: Tokenization
    ) -> tuple[str, int] | None:
        """(tx hash, block) of the confirmed transaction that paid the event, if any.

        Read from the chain's logs, not from the event's own transactions: in a batch a
        mined, successful transaction may have skipped the payment as already paid, and
        then the payout is in whichever transaction paid it (its ``Distributed`` log,
        found by the payment id's topic)."""
        paid = await read_payouts(
            self.chain.w3,
            distributor=tokenization.distributor_address,
            token=tokenization.token_address,
            payment_id=bytes.fromhex(dist.payment_id.removeprefix("0x")),
        )
        if len(paid) != 1:
            return None  # not yet paid (in flight), or twice: verify reports it, a human acts
        if not await self.chain.final(self.finality, paid[0].block_number):
            return None  # too fresh: the consumer decides
        return paid[0].tx_hash, paid[0].block_number

    async def _redrive(
        self, event_id: object, payload: str | None, result: Reconciliation, dry_run: bool
    ) -> None:
        if payload is None:
            result.for_a_human.append(f"payment {event_id}: confirmed, no payload to re-drive")
            return
        result.redriven.append(str(event_id))
        if dry_run:
            log.info("reconcile_would_redrive", event_id=str(event_id))
            return
        await self.ops.republish(payload)
        log.info("reconcile_redriven", event_id=str(event_id))
