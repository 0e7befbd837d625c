"""The operator keys a process signs with: each owns its nonce sequence (in PostgreSQL),
its in-flight cap and its resubmission, so a stuck key stops only itself.

A batch goes to the active key with the fewest unconfirmed batches, least recently used
first on a tie (Chainlink's rule: scale by adding keys). A key at its cap waits; a key
the node refuses for itself (no gas money, no operator role) rests for ``REST_S`` while
the others go on. Which keys are active is decided by operators (``tokendist keys``) in
PostgreSQL, shared by every member; a member holds the secrets of the keys it was given.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Sequence

import structlog

from tokendist.consumer.ports import KeyBook, OperatorChain
from tokendist.core import metrics

log = structlog.get_logger("tokendist.keypool")

# How long a key the node refused for itself sits out before it is tried again.
REST_S = 30.0


class KeyState(enum.StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"  # finishes its batches, takes no new ones
    REMOVED = "removed"  # its role revoked on the Distributors


class KeyPool:
    def __init__(
        self, keys: Sequence[OperatorChain], repo: KeyBook, *, cap: int, poll_s: float
    ) -> None:
        if not keys:
            raise ValueError("a key pool needs at least one key")
        self.keys: dict[str, OperatorChain] = {k.sender: k for k in keys}
        self.node = keys[0]  # reads that do not depend on a key
        self._repo = repo
        self._cap = cap
        self._poll_s = poll_s
        self._last_used: dict[str, float] = dict.fromkeys(self.keys, 0.0)
        self._resting: dict[str, float] = {}

    async def register(self) -> None:
        """Make the configured keys known (active unless an operator said otherwise)."""
        chain_id = await self.node.chain_id()
        await self._repo.register_keys(chain_id, list(self.keys))

    async def acquire(self) -> OperatorChain:
        """The key the next batch goes to; waits while every key is at its cap, resting
        or not active."""
        chain_id = await self.node.chain_id()
        while True:
            states = await self._repo.key_states(chain_id)
            inflight = await self._repo.inflight_batches(chain_id)
            now = time.monotonic()
            usable = [
                sender
                for sender in self.keys
                if states.get(sender) == KeyState.ACTIVE
                and inflight.get(sender, 0) < self._cap
                and self._resting.get(sender, 0.0) <= now
            ]
            if usable:
                chosen = min(usable, key=lambda s: (inflight.get(s, 0), self._last_used[s]))
                self._last_used[chosen] = now
                return self.keys[chosen]
            await asyncio.sleep(self._poll_s)

    def rest(self, sender: str, reason: str) -> None:
        """The node refused ``sender`` for itself: leave it out for a while."""
        self._resting[sender] = time.monotonic() + REST_S
        metrics.KEY_RESTING.labels(sender=sender).inc()
        log.error("operator_key_resting", sender=sender, reason=reason, rest_s=REST_S, alert=True)
