"""HTTP routes: validate, delegate to the predictor, declare every answer a client can get."""

# No `from __future__ import annotations` here: FastAPI must see the request model classes built at runtime.


from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlapi.api.request_stats import RESPONSE_HEADERS, cache_headers
from mlapi.api.schemas import (
    ErrorResponse,
    HealthResponse,
    PredictRequest,
    PredictResponse,
    QueryRequest,
    QueryResponse,
    ValidationErrorResponse,
    build_request_models,
)
from mlapi.api.seed_infer import add_seed_infer_routes
from mlapi.auth.access import key_name, tenant_of
from mlapi.engine.predictor import Predictor
from mlapi.errors import error_body
from mlapi.metrics import Metrics
from mlapi.settings import Settings
from mlapi.shadow.mirror import SHADOW_HEADER


async def get_predictor(request: Request) -> Predictor:
    """The app's predictor (created at startup); async so FastAPI calls it inline, not via its thread pool."""
    return request.app.state.predictor


async def get_metrics(request: Request) -> Metrics:
    """The app's metrics registry; async so FastAPI calls it inline, not via its thread pool."""
    return request.app.state.metrics


PredictorDep = Annotated[Predictor, Depends(get_predictor)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
BackendQuery = Annotated[
    str | None, Query(description="A loaded backend to answer with (default: MLAPI_BACKEND)", pattern="^[a-z0-9]+$",
                       max_length=32)
]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The model cannot answer this endpoint"},
    413: {"model": ErrorResponse, "description": "Body larger than MLAPI_MAX_BODY_BYTES"},
    422: {"model": ValidationErrorResponse, "description": "Invalid input: `detail` lists each field and reason"},
    503: {"model": ErrorResponse, "description": "Model not loaded yet, or queue full (see Retry-After)"},
}


# Every answer of /predict and /query: the errors, and a 200 with the request's cache results and server time.
_OK: dict[int | str, dict[str, Any]] = {**_ERRORS, 200: {"headers": RESPONSE_HEADERS}}

_NOT_READY = {
    "draining": "the server is shutting down",
    "failed": "the model failed to load; see the server log",
    "loading": "the model is still loading",
}

# Names the seeds' course terms gave the predict route; each answers exactly as /predict does.
PREDICT_ALIASES = ("/bulk-predict", "/project-predict")


def build_router(settings: Settings, prefix: str = "") -> APIRouter:
    """All routes under `prefix` (the app builds them under MLAPI_PATH_PREFIX and at the root)."""
    predict_request, query_request = build_request_models(settings)
    router = APIRouter(prefix=prefix)

    @router.post("/predict", response_model=PredictResponse, responses=_OK, summary="Sentiment for a list of texts",
                 description=f"Also answers at {' and '.join(PREDICT_ALIASES)} (the seeds' names for this route).")
    async def predict(
        body: predict_request, request: Request, predictor: PredictorDep, metrics: MetricsDep,  # type: ignore[valid-type]
        backend: BackendQuery = None,
    ) -> Response:
        texts = cast(PredictRequest, body).text
        metrics.texts.labels(route="predict").inc(len(texts))
        # Already-serialised JSON (see Predictor.predict); the response model documents its shape.
        tenant = tenant_of(request)
        prediction = await predictor.predict(texts, backend, tenant)
        metrics.count_key_texts(key_name(tenant), prediction.cached)
        # To the candidate (MLAPI_SHADOW_URL), if any: queued and returns at once, whatever the candidate does.
        request.app.state.shadow.offer(texts, prediction.body, backend, SHADOW_HEADER in request.headers)
        headers = cache_headers(prediction.cached, settings.cache_headers_enabled)
        return Response(prediction.body, media_type="application/json", headers=headers)

    for alias in PREDICT_ALIASES:
        router.add_api_route(alias, predict, methods=["POST"], response_model=PredictResponse, responses=_OK,
                             include_in_schema=False)

    add_seed_infer_routes(router, settings, _ERRORS)

    @router.post("/query", responses=_OK, summary="Rank candidate labels for a sentence")
    async def query(
        body: query_request, http: Request, predictor: PredictorDep, metrics: MetricsDep,  # type: ignore[valid-type]
        response: Response, backend: BackendQuery = None,
    ) -> QueryResponse:
        request = cast(QueryRequest, body)
        metrics.texts.labels(route="query").inc(1 + len(request.labels))
        tenant = tenant_of(http)
        answer = await predictor.query(request.sentence, request.labels, backend, tenant)
        metrics.count_key_texts(key_name(tenant), answer.cached)
        response.headers.update(cache_headers(answer.cached, settings.cache_headers_enabled))
        return QueryResponse.model_validate({"label": answer.label, "scores": answer.scores})

    @router.get("/health", responses={503: {"model": HealthResponse, "description": "Loading, failed or draining"}})
    async def health(request: Request, predictor: PredictorDep) -> HealthResponse:
        cache = request.app.state.cache.status()
        shadow = request.app.state.shadow.status()
        draining = request.app.state.draining
        if draining or not predictor.ready:
            # Draining (after SIGTERM) reads as not ready, so traffic moves away while requests in flight finish.
            status = "draining" if draining else "failed" if predictor.error else "loading"
            body = HealthResponse(status=status, model=predictor.status(), cache=cache, shadow=shadow).model_dump()
            body.update(error_body(_NOT_READY[status], "unhealthy"))
            return JSONResponse(body, status_code=503)  # type: ignore[return-value]
        return HealthResponse(
            status="healthy" if cache.get("healthy", True) else "degraded",
            model=predictor.status(),
            cache=cache,
            backends=list(predictor.engines),
            shadow=shadow,
        )

    @router.get("/metrics", response_class=Response, summary="Prometheus metrics")
    async def metrics_endpoint(request: Request, metrics: MetricsDep) -> Response:
        # Only the literal spelling answers: the edge (an ALB path rule, Istio) keeps /metrics private by matching
        # the path as sent, and a percent-encoded spelling such as /%6Detrics would otherwise slip past it.
        if request.scope.get("raw_path", request.url.path.encode()).split(b"?", 1)[0] != request.url.path.encode():
            raise HTTPException(status_code=404)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
