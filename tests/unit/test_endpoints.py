"""Which RPC endpoint answers (``consumer.endpoints``), on a fake clock and fake nodes
keyed by URL: failover on the endpoint's faults only, rest and return, lag, broadcasts,
and what an endpoint is called in logs and metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError, Web3RPCError

from tokendist.consumer.endpoints import Endpoints, Fault, fault_of, label
from tokendist.core.errors import ChainUnavailable
from tokendist.core.settings import RpcSettings

A, B = "http://a.example:8545", "http://b.example:8545"
SETTINGS = RpcSettings(
    rpc_max_lag_blocks=5, rpc_check_interval_s=10, rpc_backoff_base_s=1, rpc_backoff_cap_s=4
)


def too_many() -> aiohttp.ClientResponseError:
    return aiohttp.ClientResponseError(None, (), status=429)  # type: ignore[arg-type]


class Nodes:
    """Per URL: its head, and the error it answers with (None: it answers)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.heads = {A: 100, B: 100}
        self.errors: dict[str, Exception | None] = {A: None, B: None}
        self.asked: list[str] = []

    def clock(self) -> float:
        return self.now

    async def head(self, w3: AsyncWeb3[Any]) -> int:
        return int(self._answer(w3, lambda url: self.heads[url]))

    async def ask(self, w3: AsyncWeb3[Any]) -> str:
        return str(self._answer(w3, lambda url: url))

    def _answer(self, w3: AsyncWeb3[Any], answer: Callable[[str], Any]) -> Any:
        url = str(w3.provider.endpoint_uri)
        self.asked.append(url)
        error = self.errors[url]
        if error is not None:
            raise error
        return answer(url)

    def endpoints(self) -> Endpoints:
        return Endpoints([A, B], SETTINGS, clock=self.clock, head=self.head)


async def test_reads_go_to_the_first_endpoint_and_move_on_while_it_fails() -> None:
    nodes = Nodes()
    rpc = nodes.endpoints()
    assert await rpc.read(nodes.ask) == A
    nodes.errors[A] = too_many()
    assert await rpc.read(nodes.ask) == B  # the same read, answered by the next endpoint
    nodes.asked.clear()
    assert await rpc.read(nodes.ask) == B
    assert nodes.asked == [B]  # the first rests: not asked again meanwhile
    nodes.errors[A] = None
    nodes.now += SETTINGS.rpc_backoff_cap_s  # its rest is over: a head check brings it back
    await rpc.check()
    assert await rpc.read(nodes.ask) == A


async def test_an_answer_that_is_not_the_endpoints_fault_is_not_retried_elsewhere() -> None:
    nodes = Nodes()
    rpc = nodes.endpoints()
    await rpc.check()
    nodes.errors[A] = ContractLogicError("execution reverted")
    nodes.asked.clear()
    with pytest.raises(ContractLogicError):
        await rpc.read(nodes.ask)
    assert nodes.asked == [A]
    nodes.errors[A] = None
    assert await rpc.read(nodes.ask) == A  # and the endpoint does not rest for it


async def test_with_every_endpoint_failing_a_read_is_an_outage() -> None:
    nodes = Nodes()
    rpc = nodes.endpoints()
    await rpc.check()
    nodes.errors = {A: TimeoutError(), B: aiohttp.ClientConnectionError()}
    with pytest.raises(ChainUnavailable):
        await rpc.read(nodes.ask)
    nodes.asked.clear()
    with pytest.raises(ChainUnavailable):  # both rest: refused at once, nobody asked
        await rpc.read(nodes.ask)
    assert nodes.asked == []


async def test_an_endpoint_behind_the_best_head_gets_broadcasts_but_no_reads() -> None:
    nodes = Nodes()
    nodes.heads[A] = 100 - SETTINGS.rpc_max_lag_blocks - 1
    rpc = nodes.endpoints()
    assert await rpc.read(nodes.ask) == B
    assert await rpc.broadcast(nodes.ask) == [A, B]
    nodes.heads[A] = 100 - SETTINGS.rpc_max_lag_blocks  # within the bound: read again
    await rpc.check()
    assert await rpc.read(nodes.ask) == A


async def test_a_broadcast_leaves_out_the_endpoints_that_fail_it() -> None:
    nodes = Nodes()
    rpc = nodes.endpoints()
    await rpc.check()
    nodes.errors[A] = aiohttp.ClientResponseError(None, (), status=504)  # type: ignore[arg-type]
    assert await rpc.broadcast(nodes.ask) == [B]
    nodes.errors[B] = too_many()
    with pytest.raises(ChainUnavailable):
        await rpc.broadcast(nodes.ask)


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (too_many(), Fault.RATE_LIMITED),
        (aiohttp.ClientResponseError(None, (), status=504), Fault.SERVER_ERROR),  # type: ignore[arg-type]
        (aiohttp.ClientResponseError(None, (), status=403), Fault.HTTP_ERROR),  # type: ignore[arg-type]
        (aiohttp.ServerTimeoutError(), Fault.TIMEOUT),
        (TimeoutError(), Fault.TIMEOUT),
        (aiohttp.ClientConnectionError(), Fault.CONNECTION),
        (ConnectionRefusedError(), Fault.CONNECTION),
        (Web3RPCError("429: rate limit exceeded"), Fault.RATE_LIMITED),
        (ChainUnavailable("a batch answer of the wrong length"), Fault.BAD_ANSWER),
        (Web3RPCError("nonce too low"), None),
        (ContractLogicError("execution reverted"), None),
    ],
)
def test_the_faults_that_are_the_endpoints(error: Exception, fault: Fault | None) -> None:
    assert fault_of(error) is fault


def test_an_endpoint_is_named_without_the_secrets_of_its_url() -> None:
    url = "https://user:pass@mainnet.example.io/v3/0123456789abcdef"
    assert label(1, url) == "1/mainnet.example.io"
    assert label(0, "http://127.0.0.1:8545") == "0/127.0.0.1:8545"


def test_the_first_url_comes_first_and_each_url_once() -> None:
    settings = RpcSettings(rpc_urls=f" {B}, {A} ,,{B}")
    assert settings.endpoints(A) == [A, B]
