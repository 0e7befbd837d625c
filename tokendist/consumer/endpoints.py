"""The RPC endpoints behind the chain adapter: one node answers each read, every node that
answers gets each broadcast.

An endpoint is *up* while its last request succeeded. One that answers 429, a 5xx, a
JSON-RPC overload error, or times out or refuses the connection goes *down*: it rests for
a jittered backoff that grows with each failure in a row, and the request moves on to
the next endpoint at once, so one bad node costs a request at most one timeout. A head
check (``eth_blockNumber`` of every endpoint, at most every ``rpc_check_interval_s``, and
as soon as a resting endpoint's backoff ends) brings a down endpoint back up and measures
each one's lag behind the best head.

Reads go to the first endpoint, in the configured order, that is up and at most
``rpc_max_lag_blocks`` behind. All reads, not only confirmations: a node behind answers
"no receipt yet" for a mined batch while a node ahead reports its nonce used, which
would look like the nonce taken by someone else. A node behind is used for broadcasts
only (a transaction it relays still reaches the others). With no endpoint usable a
request fails at once with ``ChainUnavailable`` (the caller's own backoff retries it),
after waiting for a head check already under way.

Endpoints are named in logs and metrics by position and host (``0/node.example:8545``):
providers put API keys in URL paths and user info, and those never leave this module. A
provider that wants a header instead gets ``TOKENDIST_RPC_AUTH_HEADER`` on every request.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp
import structlog
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import TimeExhausted, Web3RPCError

from tokendist.core import metrics
from tokendist.core.errors import ChainUnavailable
from tokendist.core.retry import backoff
from tokendist.core.settings import RpcSettings

log = structlog.get_logger("tokendist.endpoints")

T = TypeVar("T")

TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    OSError,
    TimeoutError,
    TimeExhausted,
)
OVERLOAD_ANSWERS = ("rate limit", "too many requests", "timeout", "unavailable")


class Fault(enum.StrEnum):
    """Why an endpoint went down (the ``kind`` label of its error counter)."""

    RATE_LIMITED = "rate_limited"  # HTTP 429, or a JSON-RPC "rate limit" answer
    SERVER_ERROR = "server_error"  # HTTP 5xx (a gateway in front of a dead node: 502/504)
    HTTP_ERROR = "http_error"  # any other HTTP refusal (401/403: this provider refuses us)
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    BAD_ANSWER = "bad_answer"  # answered, but not what JSON-RPC promises


def is_overload(exc: Web3RPCError) -> bool:
    text = str(exc).lower()
    return any(s in text for s in OVERLOAD_ANSWERS)


# In this order: aiohttp's timeouts are client errors too.
FAULTS: tuple[tuple[tuple[type[BaseException], ...], Fault], ...] = (
    ((TimeoutError, TimeExhausted), Fault.TIMEOUT),
    (TRANSPORT_ERRORS, Fault.CONNECTION),
    ((ChainUnavailable,), Fault.BAD_ANSWER),
)


def fault_of(exc: BaseException) -> Fault | None:
    """The endpoint's fault in ``exc``; None when ``exc`` is an answer (a revert, a
    refused transaction) that another node would give as well."""
    if isinstance(exc, aiohttp.ClientResponseError):
        if exc.status == 429:
            return Fault.RATE_LIMITED
        return Fault.SERVER_ERROR if exc.status >= 500 else Fault.HTTP_ERROR
    if isinstance(exc, Web3RPCError):
        return Fault.RATE_LIMITED if is_overload(exc) else None
    return next((fault for kinds, fault in FAULTS if isinstance(exc, kinds)), None)


def label(index: int, url: str) -> str:
    """Position and host of an endpoint: what may appear in logs and metrics."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{index}/{host}:{parts.port}" if parts.port else f"{index}/{host}"


async def block_number(w3: AsyncWeb3[AsyncHTTPProvider]) -> int:
    return int(await w3.eth.block_number)


@dataclass(slots=True)
class Endpoint:
    name: str
    w3: AsyncWeb3[AsyncHTTPProvider]
    up: bool = False  # unknown until the first head check
    lag: int | None = None  # blocks behind the best head, as of the last check it answered
    failures: int = 0  # in a row
    retry_at: float = 0.0


class Endpoints:
    """The configured RPC endpoints as one provider: ``read`` and ``broadcast``."""

    def __init__(
        self,
        urls: Sequence[str],
        settings: RpcSettings,
        clock: Callable[[], float] = time.monotonic,
        head: Callable[[AsyncWeb3[AsyncHTTPProvider]], Awaitable[int]] = block_number,
    ) -> None:
        if not urls:
            raise ValueError("at least one RPC endpoint is needed")
        self._settings = settings
        self._clock = clock
        self._head_of = head
        timeout = aiohttp.ClientTimeout(total=settings.rpc_timeout_s)
        headers = AsyncHTTPProvider.get_request_headers() | settings.rpc_headers()
        self._endpoints = [
            Endpoint(
                label(i, url),
                # web3's own retries (five, on the same node) would hold a request on a
                # bad endpoint; moving to the next one is the retry.
                AsyncWeb3(
                    AsyncHTTPProvider(
                        url,
                        request_kwargs={"timeout": timeout, "headers": headers},
                        exception_retry_configuration=None,
                    )
                ),
            )
            for i, url in enumerate(urls)
        ]
        self._checked_at: float | None = None
        self._checking: asyncio.Task[None] | None = None

    @property
    def w3(self) -> AsyncWeb3[AsyncHTTPProvider]:
        """The first endpoint, for one-shot tools that read through web3 themselves."""
        return self._endpoints[0].w3

    async def read(self, op: Callable[[AsyncWeb3[AsyncHTTPProvider]], Awaitable[T]]) -> T:
        """``op`` on the first usable endpoint, moving on while endpoints fail."""
        last: Fault | None = None
        for endpoint in await self._usable(keeping_up=True):
            try:
                answer = await op(endpoint.w3)
            except Exception as exc:
                fault = fault_of(exc)
                if fault is None:
                    self._succeeded(endpoint)
                    raise
                self._failed(endpoint, fault, exc)
                last = fault
                continue
            self._succeeded(endpoint)
            return answer
        raise ChainUnavailable(f"no RPC endpoint answered (last fault: {last or 'none usable'})")

    async def broadcast(
        self, op: Callable[[AsyncWeb3[AsyncHTTPProvider]], Awaitable[T]]
    ) -> list[T | Exception]:
        """``op`` on every endpoint that is up, at once (lagging ones too): each answer or
        non-fault error, in the configured order. ``ChainUnavailable`` if none answered."""
        targets = await self._usable(keeping_up=False)
        outcomes = await asyncio.gather(*(op(e.w3) for e in targets), return_exceptions=True)
        answers: list[T | Exception] = []
        for endpoint, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome  # cancellation
            if isinstance(outcome, Exception) and (fault := fault_of(outcome)) is not None:
                self._failed(endpoint, fault, outcome)
                continue
            self._succeeded(endpoint)
            answers.append(outcome)
        if not answers:
            raise ChainUnavailable("no RPC endpoint took the broadcast")
        return answers

    async def check(self) -> None:
        """Ask every endpoint that is up, or whose backoff ended, for its head."""
        now = self._clock()
        due = [e for e in self._endpoints if e.up or e.retry_at <= now]
        heads = await asyncio.gather(*(self._head(e) for e in due))
        answered = [(e, h) for e, h in zip(due, heads, strict=True) if h is not None]
        best = max((h for _, h in answered), default=0)
        for endpoint, head in answered:
            self._set_lag(endpoint, best - head)
        self._checked_at = self._clock()

    async def close(self) -> None:
        if self._checking is not None:
            self._checking.cancel()
            await asyncio.gather(self._checking, return_exceptions=True)
        for endpoint in self._endpoints:
            await endpoint.w3.provider.disconnect()

    async def _head(self, endpoint: Endpoint) -> int | None:
        try:
            head = await self._head_of(endpoint.w3)
        except Exception as exc:
            fault = fault_of(exc) or Fault.BAD_ANSWER
            self._failed(endpoint, fault, exc)
            return None
        self._succeeded(endpoint)
        return head

    async def _usable(self, *, keeping_up: bool) -> list[Endpoint]:
        self._schedule_check()
        found = self._pick(keeping_up)
        if not found and self._checking is not None and not self._checking.done():
            await asyncio.shield(self._checking)
            found = self._pick(keeping_up)
        return found

    def _pick(self, keeping_up: bool) -> list[Endpoint]:
        limit = self._settings.rpc_max_lag_blocks
        return [
            e
            for e in self._endpoints
            if e.up and (not keeping_up or (e.lag is not None and e.lag <= limit))
        ]

    def _schedule_check(self) -> None:
        if self._checking is not None and not self._checking.done():
            return
        now = self._clock()
        due = (
            self._checked_at is None
            or now - self._checked_at >= self._settings.rpc_check_interval_s
            or any(not e.up and e.retry_at <= now for e in self._endpoints)
        )
        if due:
            self._checking = asyncio.create_task(self.check(), name="rpc-head-check")

    def _succeeded(self, endpoint: Endpoint) -> None:
        endpoint.failures = 0
        if not endpoint.up:
            endpoint.up = True
            log.info("rpc_endpoint_up", endpoint=endpoint.name)
        self._report(endpoint)

    def _failed(self, endpoint: Endpoint, fault: Fault, exc: BaseException) -> None:
        s = self._settings
        endpoint.failures += 1
        rest = backoff(endpoint.failures, s.rpc_backoff_base_s, s.rpc_backoff_cap_s)
        endpoint.retry_at = self._clock() + rest
        # Its head is unknown until a check asks again: it may be a restarted node behind.
        endpoint.lag = None
        metrics.RPC_ENDPOINT_ERRORS.labels(endpoint=endpoint.name, kind=fault).inc()
        if endpoint.up or endpoint.failures == 1:
            endpoint.up = False
            log.warning(
                "rpc_endpoint_down",
                endpoint=endpoint.name,
                fault=fault.value,
                error=type(exc).__name__,
                rest_s=round(rest, 2),
            )
        self._report(endpoint)

    def _set_lag(self, endpoint: Endpoint, lag: int) -> None:
        limit = self._settings.rpc_max_lag_blocks
        was_behind = endpoint.lag is not None and endpoint.lag > limit
        if lag > limit and not was_behind:
            log.warning("rpc_endpoint_behind", endpoint=endpoint.name, lag=lag, limit=limit)
        elif was_behind and lag <= limit:
            log.info("rpc_endpoint_caught_up", endpoint=endpoint.name, lag=lag)
        endpoint.lag = lag
        metrics.RPC_ENDPOINT_LAG.labels(endpoint=endpoint.name).set(lag)
        self._report(endpoint)

    def _report(self, endpoint: Endpoint) -> None:
        usable = endpoint in self._pick(keeping_up=True)
        metrics.RPC_ENDPOINT_HEALTHY.labels(endpoint=endpoint.name).set(1 if usable else 0)
