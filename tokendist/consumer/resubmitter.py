"""Keeps every key's batches moving: at start-up and every few seconds it re-broadcasts
each key's stored, unconfirmed batches in nonce order (so a gap left by a crash between
store and broadcast never blocks later nonces) and replaces stuck ones with a fee-bumped
sibling of the same nonce and calldata (so at most one of them can ever be mined). Keys
are swept one after another: a key whose node answers fail is skipped this round, and
the others are swept."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NoReturn

import structlog
from eth_typing import HexStr

from tokendist.consumer.keypool import KeyPool
from tokendist.consumer.ports import BatchStore, OperatorChain
from tokendist.core import metrics, periodic
from tokendist.core.errors import ChainRejected, KeyRejected, TransientError
from tokendist.core.settings import ConsumerSettings

log = structlog.get_logger("tokendist.resubmitter")


class Resubmitter:
    def __init__(self, settings: ConsumerSettings, repo: BatchStore, keys: KeyPool) -> None:
        self.settings = settings
        self.repo = repo
        self.keys = keys

    async def run(self) -> NoReturn:
        await periodic.every(
            self.settings.resubmit_interval_s, self.sweep, log, "resubmit_sweep_failed"
        )

    async def sweep(self) -> int:
        """One pass over every key; returns how many attempts were re-sent or replaced."""
        acted = 0
        states = await self.repo.key_states(await self.keys.node.chain_id())
        for key in self.keys.keys.values():
            if states.get(key.sender) == "removed":
                continue  # no batch left, and its gas is nobody's concern any more
            try:
                acted += await self._sweep(key)
            except TransientError as exc:
                log.warning("resubmit_sweep_failed", sender=key.sender, error=str(exc))
        return acted

    async def _sweep(self, key: OperatorChain) -> int:
        chain_id = await key.chain_id()
        pending = await self.repo.pending_batches(chain_id, key.sender)
        reserved = await self.repo.next_nonce(chain_id, key.sender)
        node_pending = await key.nonce(pending=True)
        metrics.INFLIGHT.labels(sender=key.sender).set(len(pending))
        metrics.INFLIGHT_CAP.set(self.settings.max_inflight_per_sender)
        metrics.NONCE_GAP.labels(sender=key.sender).set(max(0, reserved - node_pending))
        metrics.OPERATOR_GAS.labels(sender=key.sender).set(await key.gas_balance())
        if not pending:
            return 0
        mined = await key.nonce(pending=False)
        now = datetime.now(UTC)
        acted = 0
        for tx in pending:
            if tx["nonce"] < mined:
                continue  # an attempt was mined; the batch's settler confirms it
            age = (now - tx["created_at"]).total_seconds()  # of the newest attempt
            last_sent = tx["broadcast_at"] or tx["created_at"]
            if age >= self.settings.fee_bump_after_s:
                acted += await self._bump(key, tx)
            elif (now - last_sent).total_seconds() >= self.settings.rebroadcast_after_s:
                acted += await self._send(key, tx["tx_hash"], bytes(tx["raw_tx"]), tx["nonce"])
        return acted

    async def _send(self, key: OperatorChain, tx_hash: str, raw: bytes, nonce: int) -> int:
        try:
            answer = await key.send_raw(raw)
        except ChainRejected as exc:
            log.error(
                "rebroadcast_refused", tx_hash=tx_hash, nonce=nonce, reason=exc.reason, alert=True
            )
            return 0
        await self.repo.mark_broadcast(tx_hash)
        log.info("transaction_rebroadcast", tx_hash=tx_hash, nonce=nonce, answer=answer.value)
        return 1

    async def _bump(self, key: OperatorChain, tx: dict[str, Any]) -> int:
        factor = 100 + self.settings.fee_bump_percent
        tip = int(tx["priority_fee"]) * factor // 100 + 1
        base = await key.base_fee()
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
            return await self._send(key, tx["tx_hash"], bytes(tx["raw_tx"]), tx["nonce"])
        try:
            signed = await key.sign(
                to=tx["distributor_address"],
                data=HexStr("0x" + bytes(tx["calldata"]).hex()),
                gas=tx["gas_limit"],
                nonce=tx["nonce"],
                max_fee=max_fee,
                priority_fee=tip,
            )
        except KeyRejected as exc:  # its custody refused it: the old attempt is all we have
            self.keys.rest(key.sender, exc.reason)
            return await self._send(key, tx["tx_hash"], bytes(tx["raw_tx"]), tx["nonce"])
        if not await self.repo.store_attempt(tx["batch_id"], tx["tx_hash"], signed):
            return 0
        log.warning(
            "transaction_fee_bumped",
            batch_id=tx["batch_id"],
            replaced=tx["tx_hash"],
            tx_hash=signed.tx_hash,
            nonce=tx["nonce"],
            max_fee=max_fee,
            priority_fee=tip,
        )
        return await self._send(key, signed.tx_hash, signed.raw, signed.nonce)
