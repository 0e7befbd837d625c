"""Several RPC endpoints (issue 15, part 4): the consumer reaches anvil through two
fault-injecting proxies of our own (``tests.chainproxy``). When the first answers 429 or
504, or hangs, the consumer moves to the second and every payment is credited once;
when the first lags the head, it is never asked for a receipt or the head."""

from __future__ import annotations

import asyncpg
import pytest
from prometheus_client import REGISTRY

from tests.chainproxy import ChainProxy, Fault
from tests.integration import harness
from tokendist.consumer.endpoints import label
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment

pytestmark = pytest.mark.integration

N = 20


def behind(settings: Settings, first: ChainProxy, second: ChainProxy) -> Settings:
    """The consumer's settings with the two proxies as its endpoints, and short timings."""
    return settings.model_copy(
        update={
            "rpc_url": first.url,
            "rpc_urls": second.url,
            "rpc_timeout_s": 1.0,
            "rpc_check_interval_s": 0.5,
            "rpc_backoff_base_s": 0.2,
            "rpc_backoff_cap_s": 2.0,
            "rpc_max_lag_blocks": 5,
        }
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def credited_is(pool: asyncpg.Pool, n: int) -> bool:
    return await harness.credited(pool) >= n


async def assert_paid_once(
    settings: Settings, pool: asyncpg.Pool, tk: Deployment, expected: dict[str, int]
) -> None:
    payouts = await harness.payouts(settings, tk)
    assert len(payouts) == len({p.payment_id for p in payouts}) == N
    paid: dict[str, int] = {}
    for p in payouts:
        paid[p.to] = paid.get(p.to, 0) + p.amount
    assert paid == {w.lower(): t for w, t in expected.items()}
    assert await harness.credited(pool) == N
    report = await harness.run_verify(settings, pool)
    assert report.ok, report.render()


@pytest.mark.parametrize("fault", [Fault.TOO_MANY_REQUESTS, Fault.GATEWAY_TIMEOUT, Fault.HANG])
async def test_payments_are_credited_once_while_the_first_endpoint_fails(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment, fault: Fault
) -> None:
    assert settings.rpc_url is not None
    async with ChainProxy(settings.rpc_url) as first, ChainProxy(settings.rpc_url) as second:
        s = behind(settings, first, second)
        expected = await harness.confirm_payments(pool, tokenization, N // 2)
        async with harness.relay(s), harness.consumer(s):
            await harness.wait_until(lambda: credited_is(pool, N // 2), what="first half")
            first.fault = fault
            more = await harness.confirm_payments(pool, tokenization, N // 2, start=N // 2)
            await harness.wait_until(lambda: credited_is(pool, N), what="second half")
            assert sample("tokendist_rpc_endpoint_healthy", endpoint=label(0, first.url)) == 0
            assert sample("tokendist_rpc_endpoint_healthy", endpoint=label(1, second.url)) == 1
    for wallet, tokens in more.items():
        expected[wallet] = expected.get(wallet, 0) + tokens
    await assert_paid_once(settings, pool, tokenization, expected)
    assert first.faulted > 0  # asked, failed, and left for the second
    assert second.served["eth_getTransactionReceipt"] > 0
    kind = {
        Fault.TOO_MANY_REQUESTS: "rate_limited",
        Fault.GATEWAY_TIMEOUT: "server_error",
        Fault.HANG: "timeout",
    }[fault]
    errors = sample("tokendist_rpc_endpoint_errors_total", endpoint=label(0, first.url), kind=kind)
    assert errors > 0


async def test_an_endpoint_behind_the_head_is_not_used_to_confirm(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    assert settings.rpc_url is not None
    async with (
        ChainProxy(settings.rpc_url, lag_blocks=1_000) as first,
        ChainProxy(settings.rpc_url) as second,
    ):
        first.fault = Fault.LAG
        s = behind(settings, first, second)
        expected = await harness.confirm_payments(pool, tokenization, N)
        async with harness.relay(s), harness.consumer(s):
            # Through the first endpoint no receipt would appear for 250 s (1,000 blocks).
            await harness.wait_until(lambda: credited_is(pool, N), what="all credited")
            assert sample("tokendist_rpc_endpoint_lag_blocks", endpoint=label(0, first.url)) > 5
            assert sample("tokendist_rpc_endpoint_healthy", endpoint=label(0, first.url)) == 0
    await assert_paid_once(settings, pool, tokenization, expected)
    confirming = ("eth_getTransactionReceipt", "eth_getBlockByNumber", "eth_getLogs")
    assert {m: first.served[m] for m in confirming} == dict.fromkeys(confirming, 0)
    assert first.served["eth_blockNumber"] > 0  # its head is checked
    assert first.served["eth_sendRawTransaction"] > 0  # and it still relays broadcasts
