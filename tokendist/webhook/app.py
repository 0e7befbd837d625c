"""The ASGI application: ``POST /webhooks/{provider}`` and the checkout API.

Order of checks on a webhook, cheapest and safest first: an enabled provider (404),
sender allowlist (403), body size (413) and read time (408), the provider's signature
over the raw bytes (401), then parsing (400), then the database (200, or 503 so the
provider retries). Nothing is written before the signature holds, and neither a secret
nor a signature is ever logged. Every refusal answers JSON ``{"error": reason}`` with a
machine-readable reason. Providers are plug-ins (``webhook/providers``): nothing here
knows which one is speaking.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import asyncpg
import structlog
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tokendist.core import db, metrics
from tokendist.core.errors import CheckoutRefused, MalformedPayload, RequestRefused, TransientError
from tokendist.core.settings import WebhookSettings, ip_networks
from tokendist.webhook import jsonbody, senders
from tokendist.webhook.checkout import PendingInvestment, create_pending_investment
from tokendist.webhook.providers import registry
from tokendist.webhook.providers.base import NAME, Notice, PaymentProvider
from tokendist.webhook.receiver import Receiver

log = structlog.get_logger("tokendist.webhook")

POOL_SIZE = 10


class _Endpoints:
    """The endpoints, holding what they share: settings, providers, the pool, the receiver."""

    def __init__(self, settings: WebhookSettings, providers: Sequence[PaymentProvider]) -> None:
        self.settings = settings
        self.providers = _by_name(providers)
        self.allowlist = ip_networks(settings.webhook_allowed_ips)
        self.proxies = ip_networks(settings.webhook_trusted_proxies)
        self.limit = settings.webhook_max_body_bytes
        self._pool: asyncpg.Pool | None = None
        self._receiver: Receiver | None = None

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # min_size 0: the receiver starts (and answers 503) while PostgreSQL is down.
        pool = await db.create_pool(self.settings.database_url, min_size=0, max_size=POOL_SIZE)
        self._pool = pool
        self._receiver = Receiver(pool)
        modes = {name: provider.mode for name, provider in self.providers.items()}
        log.info("webhook_started", providers=modes)
        try:
            yield
        finally:
            for provider in self.providers.values():
                await provider.close()
            await pool.close()

    async def webhook(self, request: Request) -> Answer:
        provider = self.providers.get(request.path_params["provider"])
        if provider is None:
            # Not logged: the segment is the sender's text, and a 404 is no alert.
            return refusal(404, "unknown_provider")
        name = provider.name
        peer = request.client.host if request.client else None
        forwarded = request.headers.get("x-forwarded-for")
        if not senders.allowed(peer, forwarded, self.allowlist, self.proxies):
            log.warning("webhook_rejected", reason="sender_not_allowed", provider=name, peer=peer)
            return refusal(403, "sender_not_allowed")
        try:
            body = await self._read_body(request)
        except RequestRefused as exc:
            log.warning("webhook_rejected", reason=exc.reason, provider=name, peer=peer)
            return refusal(exc.status, exc.reason, exc.detail)
        if not provider.verify_signature(body, request.headers):
            log.warning(
                "webhook_rejected", reason="bad_signature", provider=name, peer=peer, size=len(body)
            )
            return refusal(401, "bad_signature")
        try:
            notice = provider.parse(body)
        except MalformedPayload as exc:
            log.warning(
                "webhook_rejected", reason=exc.reason, provider=name, alert=True, detail=str(exc)
            )
            return refusal(400, exc.reason)
        return await self._apply(provider, notice, body)

    async def _apply(self, provider: PaymentProvider, notice: Notice, body: bytes) -> Answer:
        assert self._receiver is not None
        context = {"provider": provider.name, "webhook_event": notice.event}
        try:
            async with asyncio.timeout(self.settings.webhook_deadline_s):
                outcome = await self._receiver.handle(provider, notice, body)
        except (TransientError, TimeoutError) as exc:
            log.warning("webhook_deferred", **context, error=type(exc).__name__)
            return refusal(503, "unavailable")
        except Exception:
            # Rolled back like any failure, and retried by the provider; logged here as one
            # structured line with its event (uvicorn's bare traceback would carry neither).
            log.exception("webhook_failed", **context, alert=True)
            return refusal(500, "internal_error")
        return Answer({"outcome": outcome.value}, outcome=outcome.value)

    async def investments(self, request: Request) -> Answer:
        key = self.settings.checkout_api_key
        if key is None or not _bearer_ok(request, key.get_secret_value()):
            return refusal(401, "unauthorized")
        try:
            order = _order(await self._read_body(request))
        except RequestRefused as exc:
            return refusal(exc.status, exc.reason, exc.detail)
        try:
            async with asyncio.timeout(self.settings.webhook_deadline_s):
                created = await self._create(order)
        except CheckoutRefused as exc:
            code = 409 if exc.reason == "conflict" else 422
            return refusal(code, exc.reason, exc.detail)
        except (TransientError, TimeoutError):
            return refusal(503, "unavailable")
        log.info("investment_pending", investment_id=order.investment_id, created=created)
        return Answer(
            {"investment_id": order.investment_id, "status": "pending", "created": created},
            status_code=201 if created else 200,
            outcome="created" if created else "existing",
        )

    async def _read_body(self, request: Request) -> bytes:
        """The body, read within ``webhook_body_timeout_s``; raises ``RequestRefused``."""
        try:
            async with asyncio.timeout(self.settings.webhook_body_timeout_s):
                return await _read_body(request, self.limit)
        except TimeoutError:
            metrics.WEBHOOK_DROPPED.labels("body_timeout").inc()
            raise RequestRefused(408, "body_timeout") from None
        except ClientDisconnect:
            # The client left before sending the body it declared: nobody reads the answer,
            # and one such request must not cost a traceback in the log (a flooding vector).
            metrics.WEBHOOK_DROPPED.labels("client_disconnected").inc()
            log.debug("request_abandoned", path=request.url.path)
            raise RequestRefused(400, "client_disconnected") from None

    async def _create(self, order: PendingInvestment) -> bool:
        assert self._pool is not None
        async with db.Database(self._pool).connection() as conn:
            return await create_pending_investment(conn, order)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def create_app(
    settings: WebhookSettings, *, providers: Sequence[PaymentProvider] | None = None
) -> Starlette:
    """The receiver for ``settings``, with the providers they enable unless ``providers``
    are given (tests plug in their own).

    ``POST /investments`` exists only when ``TOKENDIST_CHECKOUT_API_KEY`` is set.
    """
    chosen = registry.enabled(settings) if providers is None else providers
    endpoints = _Endpoints(settings, chosen)
    routes = [
        Route("/webhooks/{provider}", measured("webhook", endpoints.webhook), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    if settings.checkout_api_key is not None:
        investments = measured("investments", endpoints.investments)
        routes.append(Route("/investments", investments, methods=["POST"]))
    return Starlette(routes=routes, lifespan=endpoints.lifespan)


def _by_name(providers: Sequence[PaymentProvider]) -> dict[str, PaymentProvider]:
    by_name = {provider.name: provider for provider in providers}
    if len(by_name) != len(providers) or not all(NAME.fullmatch(name) for name in by_name):
        raise ValueError(f"provider names must be distinct and match {NAME.pattern}")
    return by_name


class Answer(JSONResponse):
    """A JSON answer naming its outcome (or refusal reason) for the request counter."""

    def __init__(self, content: object, status_code: int = 200, *, outcome: str) -> None:
        super().__init__(content, status_code=status_code)
        self.outcome = outcome


def measured(
    name: str, endpoint: Callable[[Request], Awaitable[Answer]]
) -> Callable[[Request], Awaitable[Answer]]:
    """``endpoint``, counting each answer by outcome and timing it."""

    async def answer(request: Request) -> Answer:
        started = time.monotonic()
        response = await endpoint(request)
        metrics.WEBHOOK_REQUESTS.labels(name, response.outcome).inc()
        metrics.WEBHOOK_LATENCY.labels(name).observe(time.monotonic() - started)
        return response

    return answer


def refusal(status: int, reason: str, detail: object = None) -> Answer:
    doc = {"error": reason} if detail is None else {"error": reason, "detail": detail}
    return Answer(doc, status_code=status, outcome=reason)


def _order(body: bytes) -> PendingInvestment:
    """The checkout request in ``body``; raises ``RequestRefused`` (422) with pydantic's detail."""
    try:
        # Duplicate keys, NaN, endless integers and deep nesting are refused first, with
        # the webhook's reasons: pydantic would keep the last of duplicate keys.
        jsonbody.loads(body)
        return PendingInvestment.model_validate_json(body)
    except jsonbody.Unreadable as exc:
        detail: object = [{"type": exc.reason, "msg": str(exc)}]
    except ValidationError as exc:
        detail = exc.errors(include_url=False, include_context=False, include_input=False)
    raise RequestRefused(422, "invalid_request", detail)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body; raises ``RequestRefused`` (413) past ``limit`` bytes, declared or streamed."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestRefused(413, "too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestRefused(413, "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _bearer_ok(request: Request, key: str) -> bool:
    # Only "Bearer <key>": a bare key would also be accepted by a prefix strip.
    scheme, _, provided = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        provided.encode("latin-1"), key.encode()
    )
