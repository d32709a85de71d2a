"""HTTP routes: validate, delegate to the predictor, declare every answer a client can get."""

# No `from __future__ import annotations` here: FastAPI must see the request model classes built at runtime.


from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import Metrics
from .predictor import Predictor
from .schemas import (
    ErrorResponse,
    HealthResponse,
    PredictRequest,
    PredictResponse,
    QueryRequest,
    QueryResponse,
    build_request_models,
)
from .settings import Settings


def get_predictor(request: Request) -> Predictor:
    """The app's predictor (created at startup)."""
    return request.app.state.predictor


def get_metrics(request: Request) -> Metrics:
    """The app's metrics registry."""
    return request.app.state.metrics


PredictorDep = Annotated[Predictor, Depends(get_predictor)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
BackendQuery = Annotated[
    str | None, Query(description="A loaded backend to answer with (default: MLAPI_BACKEND)", pattern="^[a-z0-9]+$")
]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The model cannot answer this endpoint"},
    413: {"model": ErrorResponse, "description": "Body larger than MLAPI_MAX_BODY_BYTES"},
    422: {"model": ErrorResponse, "description": "Invalid input: the field and the reason"},
    503: {"model": ErrorResponse, "description": "Model not loaded yet, or queue full (see Retry-After)"},
}


def build_router(settings: Settings) -> APIRouter:
    """All routes, under the configured path prefix."""
    predict_request, query_request = build_request_models(settings)
    router = APIRouter(prefix=settings.path_prefix)

    @router.post("/predict", response_model=PredictResponse, responses=_ERRORS, summary="Sentiment for a list of texts")
    async def predict(
        body: predict_request, predictor: PredictorDep, metrics: MetricsDep, backend: BackendQuery = None  # type: ignore[valid-type]
    ) -> Response:
        texts = cast(PredictRequest, body).text
        metrics.texts.labels(route="predict").inc(len(texts))
        # Already-serialised JSON (see Predictor.predict); the response model documents its shape.
        return Response(await predictor.predict(texts, backend), media_type="application/json")

    @router.post("/query", responses=_ERRORS, summary="Rank candidate labels for a sentence")
    async def query(
        body: query_request, predictor: PredictorDep, metrics: MetricsDep, backend: BackendQuery = None  # type: ignore[valid-type]
    ) -> QueryResponse:
        request = cast(QueryRequest, body)
        metrics.texts.labels(route="query").inc(1 + len(request.labels))
        label, scores = await predictor.query(request.sentence, request.labels, backend)
        return QueryResponse.model_validate({"label": label, "scores": scores})

    @router.get("/health", responses={503: {"model": HealthResponse, "description": "Not ready"}})
    async def health(request: Request, predictor: PredictorDep) -> HealthResponse:
        cache = request.app.state.cache.status()
        if not predictor.ready:
            status = "failed" if predictor.error else "loading"
            body = HealthResponse(status=status, model=predictor.status(), cache=cache)
            return JSONResponse(body.model_dump(), status_code=503)  # type: ignore[return-value]
        return HealthResponse(
            status="healthy" if cache.get("healthy", True) else "degraded",
            model=predictor.status(),
            cache=cache,
            backends=list(predictor.engines),
        )

    @router.get("/metrics", response_class=Response, summary="Prometheus metrics")
    async def metrics_endpoint(metrics: MetricsDep) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
