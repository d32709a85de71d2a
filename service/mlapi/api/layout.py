"""Where the routes answer: under `MLAPI_PATH_PREFIX`, and at the root as well.

The seeds' deployments differ in layout: behind Istio each service lives under its prefix (`/project/predict`),
while a plain deployment and every probe use the root (`/predict`, `/health`). An ALB cannot rewrite paths, so one
deployment serves both. The OpenAPI document lists each route once, under the prefix; the root copies are hidden.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse


def include_routes(app: FastAPI, build: Callable[[str], APIRouter], prefix: str) -> None:
    """Serve the routes `build(prefix)` makes under the prefix and, when there is one, at the root too.

    Built once per layout rather than included twice, so each route object carries its full path and metrics
    label `/project/predict` and `/predict` apart.
    """
    app.include_router(build(prefix))
    if prefix:
        app.include_router(build(""), include_in_schema=False)
        app.include_router(_root_docs(app))


def _root_docs(app: FastAPI) -> APIRouter:
    """`/docs`, `/redoc` and `/openapi.json` at the root: the same document, pages that load it from the root."""
    router = APIRouter(include_in_schema=False)

    @router.get("/openapi.json")
    async def openapi(_: Request) -> JSONResponse:
        return JSONResponse(app.openapi())

    @router.get("/docs")
    async def docs(_: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{app.title} - Swagger UI", oauth2_redirect_url="/docs/oauth2-redirect"
        )

    @router.get("/docs/oauth2-redirect")
    async def oauth2_redirect(_: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @router.get("/redoc")
    async def redoc(_: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")

    return router
