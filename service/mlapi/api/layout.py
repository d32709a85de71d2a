"""Where the routes answer: under `MLAPI_PATH_PREFIX`, and at the root as well.

The seeds' deployments differ in layout: behind Istio each service lives under its prefix (`/project/predict`),
while a plain deployment and every probe use the root (`/predict`, `/health`). An ALB cannot rewrite paths, so one
deployment serves both. The OpenAPI document lists each route once, under the prefix; the root copies are hidden.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from mlapi.api.docs import build_docs_router


def include_routes(app: FastAPI, build: Callable[[str], APIRouter], prefix: str) -> None:
    """Serve the routes `build(prefix)` makes under the prefix and, when there is one, at the root too.

    Built once per layout rather than included twice, so each route object carries its full path and metrics
    label `/project/predict` and `/predict` apart.
    """
    app.include_router(build(prefix))
    app.include_router(build_docs_router(app, prefix))
    if prefix:
        app.include_router(build(""), include_in_schema=False)
        app.include_router(build_docs_router(app, ""))
        app.include_router(_root_openapi(app))


def _root_openapi(app: FastAPI) -> APIRouter:
    """`/openapi.json` at the root: the same document the prefixed one serves."""
    router = APIRouter(include_in_schema=False)

    @router.get("/openapi.json")
    async def openapi(_: Request) -> JSONResponse:
        return JSONResponse(app.openapi())

    return router
