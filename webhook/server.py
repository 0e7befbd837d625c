"""``tokendist webhook``: the receiver under uvicorn, stopped by the project's stop event."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

import uvicorn

from tokendist.settings import Settings
from webhook.app import create_app
from webhook.verifier import Verifier


class State(Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals are handled in one place (tokendist.signals); the stop event ends serving.
        yield


class WebhookServer:
    """Serves until ``stop`` is set, then drains in-flight requests and closes the pool."""

    def __init__(
        self,
        settings: Settings,
        stop: asyncio.Event,
        *,
        sock: socket.socket | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self._stop = stop
        self._sock = sock
        config = uvicorn.Config(
            create_app(settings, verifier=verifier),
            host=settings.webhook_host,
            port=settings.webhook_port,
            # The app decides whom to believe about X-Forwarded-For (webhook/senders.py);
            # uvicorn's own proxy handling would trust it from localhost by default.
            proxy_headers=False,
            server_header=False,
            access_log=False,
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=round(settings.shutdown_grace_s),
        )
        self._server = _Server(config)
        self.state = State.NEW

    async def run(self) -> None:
        if self.state is not State.NEW:
            raise RuntimeError(f"webhook server is {self.state.value}; it runs once")
        self.state = State.RUNNING
        sockets = [self._sock] if self._sock is not None else None
        serving = asyncio.create_task(self._server.serve(sockets), name="webhook_serve")
        stopping = asyncio.create_task(self._stop.wait(), name="webhook_stop")
        try:
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            self._server.should_exit = True
            await serving
        finally:
            stopping.cancel()
            self.state = State.STOPPED
