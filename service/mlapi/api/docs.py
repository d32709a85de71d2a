"""The interactive API docs (`/docs`, `/redoc`) with their scripts and styles served from the package.

FastAPI's default docs pages load Swagger UI and ReDoc from a CDN, so on a machine or cluster without internet
access `/docs` is a blank page. These pages are FastAPI's own (`get_swagger_ui_html`, `get_redoc_html`) pointed at
copies of the same files shipped in `docs_assets/` (versions and licenses in its README), under the path prefix and,
when there is one, at the root as well.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException

ASSETS_DIR = Path(__file__).parent / "docs_assets"
SWAGGER_UI_VERSION = "5.35.0"
REDOC_VERSION = "2.5.4"
_MEDIA_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
}
_CACHE = "public, max-age=86400"
# The pages may load and call nothing but this server: FastAPI's page templates start the UI with an inline script
# and ReDoc runs its search in a blob: worker, but an image or font link inside a bundle (ReDoc's footer logo) is
# refused by the browser instead of leaving the network.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


def _confined(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


def build_docs_router(app: FastAPI, prefix: str) -> APIRouter:
    """`{prefix}/docs`, its OAuth2 redirect, `{prefix}/redoc` and their assets, reading `{prefix}/openapi.json`."""
    router = APIRouter(prefix=prefix, include_in_schema=False)
    assets = f"{prefix}/docs/assets"
    versions = {"swagger-ui-bundle.js": SWAGGER_UI_VERSION, "swagger-ui.css": SWAGGER_UI_VERSION,
                "favicon-32x32.png": SWAGGER_UI_VERSION, "redoc.standalone.js": REDOC_VERSION}

    def url(name: str) -> str:
        return f"{assets}/{name}?v={versions[name]}"

    @router.get("/docs")
    async def swagger_ui(_: Request) -> HTMLResponse:
        return _confined(get_swagger_ui_html(
            openapi_url=f"{prefix}/openapi.json",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{prefix}/docs/oauth2-redirect",
            swagger_js_url=url("swagger-ui-bundle.js"),
            swagger_css_url=url("swagger-ui.css"),
            swagger_favicon_url=url("favicon-32x32.png"),
        ))

    @router.get("/docs/oauth2-redirect")
    async def oauth2_redirect(_: Request) -> HTMLResponse:
        return _confined(get_swagger_ui_oauth2_redirect_html())

    @router.get("/redoc")
    async def redoc(_: Request) -> HTMLResponse:
        return _confined(get_redoc_html(
            openapi_url=f"{prefix}/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=url("redoc.standalone.js"),
            redoc_favicon_url=url("favicon-32x32.png"),
            with_google_fonts=False,
        ))

    @router.get("/docs/assets/{name}")
    async def asset(name: str) -> Response:
        media_type = _MEDIA_TYPES.get(name)
        if media_type is None:
            raise HTTPException(status_code=404)
        return Response((ASSETS_DIR / name).read_bytes(), media_type=media_type,
                        headers={"Cache-Control": _CACHE, "X-Content-Type-Options": "nosniff"})

    return router
