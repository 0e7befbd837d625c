"""The fee a batch is signed with, and the cap above which nothing is signed.

A batch offers ``2 x base fee + tip`` (room for the base fee to double before it is
mined). When that exceeds ``TOKENDIST_MAX_FEE_WEI`` (the chain's cap) signing pauses:
a transaction signed at the cap would sit in the pool below the base fee, holding its
nonce and every later one, and bumping it could only spend more (connext #416: 1.1 M
gwei on Polygon during retries). Payments wait in the gatherer's queue, which asks
again with its backoff, so signing resumes by itself once fees fall. Fee bumps of
batches already signed are capped by the resubmitter.
"""

from __future__ import annotations

import structlog

from tokendist.core import metrics
from tokendist.core.errors import BatchDeferred
from tokendist.core.settings import ChainSettings

log = structlog.get_logger("tokendist.fees")


class FeeCap:
    def __init__(self, settings: ChainSettings) -> None:
        self._tip = settings.priority_fee_wei
        self._cap = settings.max_fee_wei
        self._paused = False

    def fees(self, base_fee: int) -> tuple[int, int]:
        """(max fee, tip) to sign a batch with now; ``BatchDeferred`` above the cap."""
        wanted = 2 * base_fee + self._tip
        if wanted > self._cap:
            if not self._paused:
                log.error(
                    "signing_paused_fee_above_cap",
                    base_fee=base_fee,
                    wanted=wanted,
                    cap=self._cap,
                    alert=True,
                )
            self._paused = True
            metrics.FEE_ABOVE_CAP.set(1)
            raise BatchDeferred(f"fee {wanted} wei above the cap {self._cap} wei")
        if self._paused:
            log.info("signing_resumed", base_fee=base_fee, wanted=wanted, cap=self._cap)
        self._paused = False
        metrics.FEE_ABOVE_CAP.set(0)
        return wanted, self._tip
