"""A JSON-RPC proxy in front of a node that misbehaves on demand as hosted RPC providers
do: answers 429 (rate limited), 504 (its gateway gave up on the node), hangs, or serves
a head that lags the node's. Tests put one or more in front of anvil and switch faults
while the consumer runs.

A lagging proxy answers as a node ``lag_blocks`` behind for what confirms a transaction:
the head (``eth_blockNumber``, the ``latest`` block), receipts (none for blocks above its
head) and logs (up to its head); everything else goes through unchanged.

A proxy given ``credentials`` (a header's name and value) answers 401 to a request without
that header, as a provider does to a caller without its API key or basic auth.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from tokendist.sim.demo import free_port

HEAD_TAGS = {"latest", "pending", "safe", "finalized"}


class Fault(enum.StrEnum):
    NONE = "none"
    TOO_MANY_REQUESTS = "429"
    GATEWAY_TIMEOUT = "504"
    HANG = "hang"  # until the client gives up (or the fault is changed)
    LAG = "lag"


class ChainProxy:
    def __init__(
        self,
        upstream: str,
        lag_blocks: int = 1_000,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.upstream = upstream
        self.lag_blocks = lag_blocks
        self.credentials = credentials
        self.unauthorized = 0
        self.url = f"http://127.0.0.1:{free_port()}"
        # Methods answered with the node's (or the lagging) answer, not with a fault.
        self.served: collections.Counter[str] = collections.Counter()
        self.faulted = 0
        self._fault = Fault.NONE
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def fault(self) -> Fault:
        return self._fault

    @fault.setter
    def fault(self, fault: Fault) -> None:
        self._fault = fault
        self._release.set()  # requests hung by the previous fault give up now
        self._release = asyncio.Event()

    async def __aenter__(self) -> ChainProxy:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", int(self.url.rsplit(":", 1)[1])).start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.credentials is not None:
            name, value = self.credentials
            if request.headers.get(name) != value:
                self.unauthorized += 1
                return web.Response(status=401, text="Unauthorized")
        body = await request.json()
        calls = body if isinstance(body, list) else [body]
        match self._fault:
            case Fault.TOO_MANY_REQUESTS:
                self.faulted += 1
                return web.Response(status=429, text="Too Many Requests")
            case Fault.GATEWAY_TIMEOUT:
                self.faulted += 1
                return web.Response(
                    status=504, text="<html>504 Gateway Time-out</html>", content_type="text/html"
                )
            case Fault.HANG:
                self.faulted += 1
                await self._release.wait()
                return web.Response(status=504)
        answers = [await self._answer(call) for call in calls]
        self.served.update(call["method"] for call in calls)
        return web.json_response(answers if isinstance(body, list) else answers[0])

    async def _answer(self, call: dict[str, Any]) -> dict[str, Any]:
        if self._fault is not Fault.LAG:
            return await self._forward(call)
        method, params = call["method"], list(call.get("params") or [])
        head = int(
            (await self._forward({**call, "method": "eth_blockNumber", "params": []}))["result"], 16
        )
        head = max(0, head - self.lag_blocks)
        if method == "eth_blockNumber":
            return {"jsonrpc": "2.0", "id": call.get("id"), "result": hex(head)}
        if method == "eth_getBlockByNumber" and params and params[0] in HEAD_TAGS:
            return await self._forward({**call, "params": [hex(head), *params[1:]]})
        if method == "eth_getLogs" and params and params[0].get("toBlock") in HEAD_TAGS:
            return await self._forward({**call, "params": [{**params[0], "toBlock": hex(head)}]})
        answer = await self._forward(call)
        receipt = answer.get("result") if method == "eth_getTransactionReceipt" else None
        if receipt is not None and int(receipt["blockNumber"], 16) > head:
            return {**answer, "result": None}
        return answer

    async def _forward(self, call: dict[str, Any]) -> dict[str, Any]:
        assert self._session is not None
        async with self._session.post(self.upstream, json=call) as resp:
            answer: dict[str, Any] = await resp.json()
        return answer
