"""The gauges' loop on fakes: an outage of PostgreSQL or of the node is logged and read
again next tick (the side task lives on, the consumer is not stopped); each tokenization
gets its Distributor's balance and its hour's need under its own label."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from tokendist.consumer.gauges import Gauges, Parked, TokenNeed, Waiting
from tokendist.core.errors import ChainUnavailable, DatabaseUnavailable


class Store:
    def __init__(self, outages: int) -> None:
        self.outages = outages

    async def parked(self) -> Parked:
        if self.outages:
            self.outages -= 1
            raise DatabaseUnavailable("connection refused")
        return Parked(4, 90.5, {"token_paused": 3, "awaiting_kyc": 1})

    async def mined_not_final(self) -> Waiting:
        return Waiting(2, 12.0)

    async def token_needs(self, chain_id: int) -> list[TokenNeed]:
        assert chain_id == 31337
        return [TokenNeed("unit-a", "0xa", "0xda", 70), TokenNeed("unit-b", "0xb", "0xdb", 0)]


class Node:
    def __init__(self, outages: int) -> None:
        self.outages = outages

    async def chain_id(self) -> int:
        return 31337

    async def token_balance(self, token: str, holder: str) -> int:
        if self.outages:
            self.outages -= 1
            raise ChainUnavailable("timeout")
        return {("0xa", "0xda"): 50, ("0xb", "0xdb"): 9}[(token, holder)]


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_an_outage_is_logged_and_read_again_next_tick() -> None:
    gauges = Gauges(Store(outages=1), Node(outages=1), interval_s=0)
    with capture_logs() as logs:
        task = asyncio.create_task(gauges.run())
        try:
            for _ in range(1000):
                if sample("tokendist_distributor_token_balance", tokenization="unit-b") == 9:
                    break
                await asyncio.sleep(0)
            assert not task.done(), "the loop ended"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    failures = [e for e in logs if e["event"] == "gauges_read_failed"]
    assert [f["error"] for f in failures] == ["connection refused", "timeout"]
    assert sample("tokendist_parked_payments") == 4
    assert sample("tokendist_parked_oldest_seconds") == 90.5
    assert sample("tokendist_batches_mined_not_final") == 2
    assert sample("tokendist_batches_mined_not_final_oldest_seconds") == 12.0
    by_reason = {
        reason: sample("tokendist_parked_payments_by_reason", reason=reason)
        for reason in ("awaiting_kyc", "token_paused", "wallet_frozen", "compliance_refused")
    }  # every reason's series, 0 when none is parked for it
    assert by_reason == {
        "awaiting_kyc": 1,
        "token_paused": 3,
        "wallet_frozen": 0,
        "compliance_refused": 0,
    }
    assert sample("tokendist_distributor_token_balance", tokenization="unit-a") == 50
    assert sample("tokendist_tokens_received_last_hour", tokenization="unit-a") == 70
    assert sample("tokendist_tokens_received_last_hour", tokenization="unit-b") == 0
