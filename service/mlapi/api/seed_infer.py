"""The one-text API of the seed that served a transformers pipeline and an ONNX copy side by side.

`POST /transformers/infer` and `POST /onnx/infer` take `{"input": "<one text>"}` and answer the top label in that
seed's two shapes. Both are `/predict` for one text underneath: the same validation, cache and batcher, so an
answer computed for one route is a cache hit for the others.
"""

# No `from __future__ import annotations` here: FastAPI must see the request model class built at runtime.

from typing import Annotated, cast

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from mlapi.api.request_stats import cache_headers
from mlapi.api.schemas import LabelScore
from mlapi.auth.access import key_name, tenant_of
from mlapi.engine.predictor import Predictor
from mlapi.errors import UnsupportedTask
from mlapi.metrics import Metrics
from mlapi.settings import Settings
from mlapi.shadow.mirror import SHADOW_HEADER

BACKEND_HEADER = "X-Mlapi-Backend"


class InferRequest(BaseModel):
    """The seed's body: one text; `build_infer_request` adds this server's length limit."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"input": "This is awesome!"}]})
    input: str


SENTIMENT_LABELS = frozenset({"positive", "negative", "neutral"})


class SentimentResponse(BaseModel):
    """`/onnx/infer`'s answer: the top label lower-cased, and its score; `label` too when it is not a sentiment."""

    sentiment: str = Field(description="The top label, lower-cased (`positive` / `negative` for a sentiment model)")
    score: float = Field(description="Its probability")
    label: str | None = Field(
        None,
        description="Only for a model whose labels are not sentiments (POSITIVE / NEGATIVE / NEUTRAL): the top "
        "label as the model names it. `sentiment` then holds that label too, lower-cased, not a sentiment.",
    )


def build_infer_request(settings: Settings) -> type[InferRequest]:
    """InferRequest with this server's MLAPI_MAX_CHARS."""
    text = Annotated[str, StringConstraints(max_length=settings.max_chars, strict=True)]
    return create_model(
        "InferRequest", __base__=InferRequest, input=(text, Field(description="The text to classify"))
    )


async def _top(request: Request, response: Response, text: str, backend: str) -> LabelScore:
    """The best label for one text from `backend`, through /predict's cache and batcher."""
    predictor: Predictor = request.app.state.predictor
    metrics: Metrics = request.app.state.metrics
    metrics.texts.labels(route="infer").inc()
    tenant = tenant_of(request)
    prediction = await predictor.predict([text], backend, tenant)
    metrics.count_key_texts(key_name(tenant), prediction.cached)
    request.app.state.shadow.offer([text], prediction.body, backend, SHADOW_HEADER in request.headers)
    response.headers.update(cache_headers(prediction.cached, request.app.state.settings.cache_headers_enabled))
    labels = orjson.loads(prediction.body)["predictions"][0]
    return LabelScore.model_validate(max(labels, key=lambda item: item["score"]))


def add_seed_infer_routes(router: APIRouter, settings: Settings, responses: dict[int | str, dict[str, object]]) -> None:
    """Add the two routes to `router` (so they share its prefix, dependencies and layout)."""
    infer_request = build_infer_request(settings)

    @router.post(
        "/transformers/infer", response_model=list[LabelScore], responses=responses,
        summary="Top label of one text, as a transformers pipeline answers",
        description=f"From the torch backend when it is loaded, else the default backend; `{BACKEND_HEADER}` says "
        "which.",
    )
    async def transformers_infer(body: infer_request, request: Request, response: Response  # type: ignore[valid-type]
                                 ) -> list[LabelScore]:
        predictor: Predictor = request.app.state.predictor
        backend = "torch" if "torch" in predictor.engines else settings.backend
        response.headers[BACKEND_HEADER] = backend
        return [await _top(request, response, cast(InferRequest, body).input, backend)]

    @router.post(
        "/onnx/infer", response_model=SentimentResponse, response_model_exclude_none=True, responses=responses,
        summary="Top label of one text from the ONNX backend, lower-cased",
        description="The transformers-vs-ONNX seed's route, for its SST-2 sentiment model: `sentiment` is the top "
        "label lower-cased. A model with other labels (say `outage` / `billing`) answers its top label the same "
        "way, plus `label` as the model spells it; `/predict` gives every label with its score.",
    )
    async def onnx_infer(body: infer_request, request: Request, response: Response  # type: ignore[valid-type]
                         ) -> SentimentResponse:
        predictor: Predictor = request.app.state.predictor
        if predictor.ready and "onnx" not in predictor.engines:
            raise UnsupportedTask(
                f"/onnx/infer needs the onnx backend; this server loads {', '.join(predictor.engines)} "
                "(add onnx to MLAPI_EXTRA_BACKENDS)"
            )
        response.headers[BACKEND_HEADER] = "onnx"
        top = await _top(request, response, cast(InferRequest, body).input, "onnx")
        sentiment = top.label.lower()
        predictor_labels = {label.lower() for label in (predictor.manifest.labels if predictor.manifest else [])}
        custom = not predictor_labels <= SENTIMENT_LABELS
        return SentimentResponse(sentiment=sentiment, score=top.score, label=top.label if custom else None)
