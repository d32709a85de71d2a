"""The seed projects' way of serving the model, kept as the baseline that mlapi is measured against.

The seeds load a transformers `pipeline("text-classification", top_k=None)` in
torch fp32 and call it once per request, inside an `async def` FastAPI route, in
a single uvicorn worker. This file does exactly that and nothing more: no
batching across requests, no ONNX, no cache, so the benchmark compares mlapi
with what the seeds really ran. `/predict` and `/health` have mlapi's shapes.

`--route threadpool` runs the same call in FastAPI's thread pool instead, as a
plain `def` route would: under concurrent load that variant is faster, and the
benchmark compares mlapi with the better of the two so the baseline is not
handicapped.

Usage: python load/seed_server.py --model-dir DIR [--host 127.0.0.1] [--port 8000] [--route async|threadpool]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

Predictions = list[list[dict[str, Any]]]


def load_pipeline(model_dir: str) -> Any:
    """Load the classifier the way the seeds do: a torch fp32 pipeline returning every label's score."""
    from transformers import pipeline

    return pipeline("text-classification", model=model_dir, tokenizer=model_dir, top_k=None, device=-1)


def parse_texts(raw: bytes) -> list[str] | None:
    """Read `{"text": [...]}` from a body that may lack a Content-Type; None when it is not that shape."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    texts = body.get("text") if isinstance(body, dict) else None
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return None
    return texts


def predict(classifier: Any, texts: list[str]) -> Predictions:
    """Run the pipeline once on this request's texts and keep the seeds' label/score lists."""
    return [[{"label": r["label"], "score": float(r["score"])} for r in row] for row in classifier(texts)]


def create_app(model_dir: str, route: str = "async") -> FastAPI:
    """Build the seed-style app; the model loads during startup, so /health answers only once it is ready.

    route "async" calls the pipeline on the event loop, as the seeds do; "threadpool" calls it in a worker thread.
    """
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["classifier"] = load_pipeline(model_dir)
        yield

    app = FastAPI(title="seed-style baseline", lifespan=lifespan)

    @app.get("/health")
    async def health() -> JSONResponse:
        ready = "classifier" in state
        return JSONResponse({"status": "healthy" if ready else "loading"}, status_code=200 if ready else 503)

    @app.post("/predict")
    async def predict_route(request: Request) -> JSONResponse:
        texts = parse_texts(await request.body())
        if texts is None:
            return JSONResponse({"error": 'expected {"text": ["..."]}'}, status_code=422)
        if route == "threadpool":
            return JSONResponse({"predictions": await run_in_threadpool(predict, state["classifier"], texts)})
        return JSONResponse({"predictions": predict(state["classifier"], texts)})

    return app


def main(argv: list[str] | None = None) -> int:
    """Serve the seed-style app with one uvicorn worker, as the seeds deploy it."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--route", choices=["async", "threadpool"], default="async")
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.model_dir, args.route), host=args.host, port=args.port, workers=1, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
