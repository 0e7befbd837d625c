"""Keeps the operator's transactions moving: at start-up and every few seconds it
re-broadcasts stored, unconfirmed transactions in nonce order (so a gap left by a crash
between store and broadcast never blocks later nonces) and replaces stuck ones with a
fee-bumped sibling of the same nonce (so at most one of them can ever be mined)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import structlog

from tokendist.consumer.ports import DistributionStore, OperatorChain
from tokendist.core import metrics
from tokendist.core.errors import ChainRejected, TransientError
from tokendist.core.settings import ConsumerSettings

log = structlog.get_logger("tokendist.resubmitter")


class Resubmitter:
    def __init__(
        self, settings: ConsumerSettings, repo: DistributionStore, chain: OperatorChain
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.chain = chain

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except TransientError as exc:
                log.warning("resubmit_sweep_failed", error=str(exc))
            await asyncio.sleep(self.settings.resubmit_interval_s)

    async def sweep(self) -> int:
        """One pass; returns how many transactions were re-sent or replaced."""
        chain_id = await self.chain.chain_id()
        pending = await self.repo.pending_transactions(chain_id, self.chain.sender)
        reserved = await self.repo.next_nonce(chain_id, self.chain.sender)
        node_pending = await self.chain.nonce(pending=True)
        metrics.INFLIGHT.set(len(pending))
        metrics.INFLIGHT_CAP.set(self.settings.max_inflight_per_sender)
        metrics.NONCE_GAP.set(max(0, reserved - node_pending))
        metrics.OPERATOR_GAS.set(await self.chain.gas_balance())
        if not pending:
            return 0
        mined = await self.chain.nonce(pending=False)
        now = datetime.now(UTC)
        acted = 0
        for tx in pending:
            if tx["nonce"] < mined:
                continue  # a sibling was mined; its owner confirms it
            age = (now - tx["created_at"]).total_seconds()
            last_sent = tx["broadcast_at"] or tx["created_at"]
            if age >= self.settings.fee_bump_after_s:
                acted += await self._bump(chain_id, tx)
            elif (now - last_sent).total_seconds() >= self.settings.rebroadcast_after_s:
                acted += await self._send(tx["tx_hash"], bytes(tx["raw_tx"]), tx["nonce"])
        return acted

    async def _send(self, tx_hash: str, raw: bytes, nonce: int) -> int:
        try:
            answer = await self.chain.send_raw(raw)
        except ChainRejected as exc:
            log.error(
                "rebroadcast_refused", tx_hash=tx_hash, nonce=nonce, reason=exc.reason, alert=True
            )
            return 0
        await self.repo.mark_broadcast(tx_hash)
        log.info("transaction_rebroadcast", tx_hash=tx_hash, nonce=nonce, answer=answer.value)
        return 1

    async def _bump(self, chain_id: int, tx: dict[str, Any]) -> int:
        factor = 100 + self.settings.fee_bump_percent
        tip = int(tx["priority_fee"]) * factor // 100 + 1
        base = await self.chain.base_fee()
        max_fee = max(int(tx["max_fee_per_gas"]) * factor // 100 + 1, 2 * base + tip)
        if max_fee > self.settings.max_fee_wei:
            log.error(
                "fee_bump_capped",
                tx_hash=tx["tx_hash"],
                nonce=tx["nonce"],
                wanted=max_fee,
                cap=self.settings.max_fee_wei,
                alert=True,
            )
            return await self._send(tx["tx_hash"], bytes(tx["raw_tx"]), tx["nonce"])
        calldata = self.chain.distribute_calldata(
            bytes.fromhex(tx["payment_id"][2:]), tx["recipient"], int(tx["tokens"])
        )
        signed = self.chain.sign(
            to=tx["distributor_address"],
            data=calldata,
            gas=tx["gas_limit"],
            nonce=tx["nonce"],
            max_fee=max_fee,
            priority_fee=tip,
        )
        stored = await self.repo.store_replacement(
            tx["event_id"],
            tx["tx_hash"],
            chain_id=chain_id,
            sender=self.chain.sender,
            signed=signed,
        )
        if not stored:
            return 0
        log.warning(
            "transaction_fee_bumped",
            replaced=tx["tx_hash"],
            tx_hash=signed.tx_hash,
            nonce=tx["nonce"],
            max_fee=max_fee,
            priority_fee=tip,
        )
        return await self._send(signed.tx_hash, signed.raw, signed.nonce)
