"""Request and response bodies: the exact JSON shapes of the seeds, with the limits that keep the server safe.

Length limits are read from settings at app creation (`build_request_models`) so they appear in the OpenAPI
schema and a client sees them before it sends anything.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, field_validator

from mlapi.settings import Settings


class LabelScore(BaseModel):
    """One label and its probability."""

    label: str
    score: float


class PredictResponse(BaseModel):
    """One list per input text, in input order; each list holds every label, scores high to low, summing to 1."""

    predictions: list[list[LabelScore]]


class QueryResponse(BaseModel):
    """The best label for the sentence and every label's score, high to low."""

    label: str
    scores: list[LabelScore]


class HealthResponse(BaseModel):
    """Readiness and what the server is running; `degraded` means answers come but the shared cache is off."""

    status: str
    model: dict[str, object] = Field(default_factory=dict)
    cache: dict[str, object] = Field(default_factory=dict)
    backends: list[str] = Field(default_factory=list)
    shadow: dict[str, object] = Field(
        default_factory=dict,
        description="Mirroring to a candidate model (MLAPI_SHADOW_URL): where, what share, and the candidate's model",
    )


class PredictRequest(BaseModel):
    """The /predict body; `build_request_models` adds this server's limits."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"text": ["This is fun", "the movie was awful"]}]}
    )
    text: list[str]


class QueryRequest(BaseModel):
    """The /query body; `build_request_models` adds this server's limits."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"sentence": "feeling like a million bucks", "labels": ["happy", "sad", "rich"]}]
        },
    )
    sentence: str
    labels: list[str]


class ErrorResponse(BaseModel):
    """The body of every error answer but a 422: FastAPI's `detail` plus mlapi's `error` and `error_type`."""

    detail: str
    error: str
    error_type: str


class ValidationItem(BaseModel):
    """One reason a request was refused, as FastAPI lists it (`input` only when short enough to echo)."""

    loc: list[str | int]
    msg: str
    type: str
    input: object = None
    ctx: dict[str, object] | None = None


class ValidationErrorResponse(BaseModel):
    """The body of a 422: FastAPI's `detail` list plus mlapi's `error` (every reason, joined) and `error_type`."""

    detail: list[ValidationItem]
    error: str
    error_type: str


def _no_duplicates(labels: list[str]) -> list[str]:
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise ValueError(f"duplicate label {label!r}")
        seen.add(label)
    return labels


def build_request_models(settings: Settings) -> tuple[type[PredictRequest], type[QueryRequest]]:
    """Request models with this server's limits: (PredictRequest, QueryRequest)."""
    text = Annotated[str, StringConstraints(max_length=settings.max_chars, strict=True)]
    label = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True, strict=True)]
    predict = create_model(
        "PredictRequest",
        __base__=PredictRequest,
        text=(
            list[text],
            Field(max_length=settings.max_batch,
                  description="Texts to classify; a blank text is valid, an empty list answers an empty list"),
        ),
    )
    query = create_model(
        "QueryRequest",
        __base__=QueryRequest,
        __validators__={"labels_unique": field_validator("labels")(_no_duplicates)},
        sentence=(text, Field(description="The sentence to label")),
        labels=(list[label], Field(min_length=1, max_length=settings.max_labels, description="Candidate labels")),
    )
    return predict, query
