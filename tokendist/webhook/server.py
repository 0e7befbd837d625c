"""``tokendist webhook``: the receiver under uvicorn, stopped by the project's stop event.

The receiver faces the internet, so every connection is bounded (settings in brackets):

- the request head (request line and headers) must arrive within
  ``webhook_header_timeout_s`` of the connection or of the previous response, and is at
  most ``MAX_HEAD_BYTES`` (uvicorn answers 400 past it): an idle or half-sent connection
  is closed;
- the body must arrive within ``webhook_body_timeout_s`` once the head is in (the app
  answers 408) and is at most ``webhook_max_body_bytes`` (413); the rest of a body
  answered early is read and discarded for at most ``webhook_header_timeout_s``;
- an idle keep-alive connection is closed after ``webhook_keepalive_s``;
- at most ``webhook_max_connections`` connections are open: one more is answered 503 and
  closed at once, so a flood costs a file descriptor for a moment, not for a timeout.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from tokendist.core import metrics
from tokendist.core.settings import WebhookSettings
from tokendist.webhook.app import create_app
from tokendist.webhook.providers.base import PaymentProvider

MAX_HEAD_BYTES = 16 * 1024  # h11's default, set here so that it is a decision
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b'content-length: 32\r\nconnection: close\r\n\r\n{"error":"too_many_connections"}'
)


class State(Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout_s: float
    max_connections: int


class _BoundedH11(H11Protocol):
    """uvicorn's h11 protocol (0.54) with the bounds it lacks.

    Its keep-alive timer only runs between requests and stops at a client's first byte,
    so nothing bounds a connection that never completes a request head; nor one whose
    client keeps sending a body after it was answered (404, 405, 408, 413), which uvicorn
    reads and discards for as long as it comes. One deadline covers both: armed when the
    connection opens and after each response, it closes the connection if by then the
    next request head is incomplete, or the answered request's body is still arriving.
    (Closing at once after an early answer would reset a client still sending its body,
    and it would never read the answer.)
    """

    limits: ClassVar[Limits]
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            metrics.WEBHOOK_DROPPED.labels("connection_cap").inc()
            transport.write(BUSY)
            transport.close()
            return
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_deadline()

    def _arm_deadline(self) -> None:
        self._disarm_deadline()
        self._deadline = self.loop.call_later(self.limits.header_timeout_s, self._overdue)

    def _disarm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _overdue(self) -> None:
        self._deadline = None
        theirs, ours = self.conn.their_state, self.conn.our_state
        if self.transport.is_closing():
            return
        if theirs is h11.IDLE:  # no complete request head since the deadline was armed
            metrics.WEBHOOK_DROPPED.labels("head_timeout").inc()
            self.transport.close()
        elif theirs is h11.SEND_BODY and ours is h11.DONE:  # answered, body still coming
            self.transport.close()


def _protocol(limits: Limits) -> type[H11Protocol]:
    return type("BoundedH11", (_BoundedH11,), {"limits": limits})


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals are handled in one place (tokendist.core.signals); the stop event ends serving.
        yield


class WebhookServer:
    """Serves until ``stop`` is set, then drains in-flight requests and closes the pool."""

    def __init__(
        self,
        settings: WebhookSettings,
        stop: asyncio.Event,
        *,
        sock: socket.socket | None = None,
        providers: Sequence[PaymentProvider] | None = None,
    ) -> None:
        self._stop = stop
        self._sock = sock
        self._metrics_port = settings.metrics_port
        limits = Limits(settings.webhook_header_timeout_s, settings.webhook_max_connections)
        config = uvicorn.Config(
            create_app(settings, providers=providers),
            host=settings.webhook_host,
            port=settings.webhook_port,
            http=_protocol(limits),
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            timeout_keep_alive=settings.webhook_keepalive_s,
            # The app decides whom to believe about X-Forwarded-For (senders.py);
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
        tasks = {serving, asyncio.create_task(self._stop.wait(), name="webhook_stop")}
        if self._metrics_port is not None:
            exporter = metrics.serve(self._metrics_port, lambda: self.state is State.RUNNING)
            tasks.add(asyncio.create_task(exporter, name="metrics"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            self._server.should_exit = True
            await serving
            for task in done:
                task.result()  # a crashed metrics endpoint stops the server loudly
        finally:
            for task in tasks:
                task.cancel()
            self.state = State.STOPPED
