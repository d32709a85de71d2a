"""The FastAPI application: wiring of settings, cache, predictor, middleware and routes.

The model loads in the background after the server starts listening, so `/health` can answer 503 while it
loads (Kubernetes startup probes and Fargate health checks see the truth) and 200 the moment it is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware import Middleware

from mlapi import __version__
from mlapi.api.deadline import DeadlineMiddleware
from mlapi.api.handlers import install_error_handlers
from mlapi.api.layout import include_routes
from mlapi.api.middleware import BodyLimitMiddleware, JsonByDefaultMiddleware, MetricsMiddleware
from mlapi.api.pages import build_page_router
from mlapi.api.request_stats import ServerTimingMiddleware
from mlapi.api.routes import build_router
from mlapi.auth.access import AccessControl, AccessMiddleware, document_access
from mlapi.engine.cache import Cache, MemoryCache, NullCache, RedisCache, TieredCache
from mlapi.engine.predictor import Predictor
from mlapi.metrics import Metrics
from mlapi.metrics_export import CounterLog, publish
from mlapi.settings import Settings
from mlapi.shadow.mirror import Shadow

log = logging.getLogger(__name__)


def build_cache(settings: Settings, metrics: Metrics) -> Cache:
    """Redis behind the in-process LRU when a URL is configured, the LRU alone otherwise, nothing when off."""
    if not settings.cache_enabled:
        return NullCache()
    near = MemoryCache(settings.cache_max_entries, settings.cache_ttl_seconds)
    if settings.redis_url is not None:
        far = RedisCache(
            settings.redis_url.get_secret_value(), metrics, settings.cache_ttl_seconds,
            settings.redis_timeout_ms, settings.redis_cooldown_seconds,
        )
        return TieredCache(near, far)
    return near


def middleware_stack(settings: Settings, metrics: Metrics, access: AccessControl) -> list[Middleware]:
    """Every middleware of the app, outermost first: the order a request passes through them.

    Timing and metrics see every answer, refusals included; the deadline bounds everything inside it; the body
    limit runs before access control reads a body; JSON-by-default is next to the routes it serves.
    """
    return [
        Middleware(ServerTimingMiddleware),
        Middleware(MetricsMiddleware, metrics=metrics),
        Middleware(DeadlineMiddleware, seconds=settings.request_timeout_seconds, metrics=metrics),
        Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
        Middleware(AccessMiddleware, access=access),
        Middleware(JsonByDefaultMiddleware),
    ]


def create_app(settings: Settings | None = None) -> FastAPI:
    """A ready-to-serve app for one baked model."""
    settings = settings or Settings()
    metrics = Metrics()
    metrics.prime(settings.path_prefix)
    access = AccessControl(settings, metrics.registry)  # closed by the lifespan below
    if access.keys is not None:
        metrics.prime_keys(key.name for key in access.keys.keys)
    # Checked here, before the server listens: a counter it cannot write stops the start, naming the setting.
    counter_log = (CounterLog(metrics.registry, settings.metrics_log_counters)
                   if settings.metrics_log_interval_seconds > 0 else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cache = build_cache(settings, metrics)
        predictor = Predictor(settings, metrics, cache)
        shadow = Shadow(settings, metrics)
        app.state.cache = cache
        app.state.predictor = predictor
        app.state.shadow = shadow
        loading = asyncio.create_task(predictor.load(), name="model-load")
        publishing = (asyncio.create_task(publish(counter_log, settings.metrics_log_interval_seconds),
                                          name="metrics-log") if counter_log is not None else None)
        await shadow.start()
        try:
            yield
        finally:
            app.state.draining = True
            await shadow.close()  # first: a stopping server waits for its own clients, never for the candidate
            await loading
            await predictor.close()
            if publishing is not None:  # after the drain, so the last line counts the last answers
                publishing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await publishing
            await cache.close()
            await access.limiter.close()
            log.info("stopped cleanly: queued work drained, cache closed")

    prefix = settings.path_prefix
    app = FastAPI(
        title="mlapi",
        version=__version__,
        description="Sentiment and zero-shot labels from a baked Hugging Face model, cached and micro-batched.",
        lifespan=lifespan,
        middleware=middleware_stack(settings, metrics, access),
        docs_url=None,  # served with the package's own assets by include_routes (mlapi.api.docs)
        redoc_url=None,
        openapi_url=f"{prefix}/openapi.json",
    )
    app.state.settings = settings
    app.state.draining = False  # set on SIGTERM (server.py) and at shutdown: /health answers 503 from then on
    app.state.metrics = metrics
    install_error_handlers(app)
    include_routes(app, lambda at: build_router(settings, at), prefix)
    app.include_router(build_page_router(prefix))
    document_access(app, settings)
    return app
