"""The comparison page: plain HTML, CSS and a script shipped inside the package, served at the path prefix's root.

Every deployment gets the page with nothing else to run and no network access: the files are package data, read
once at start. Asset URLs carry a hash of their content, so browsers may keep them for a year and still pick up a
new release at once; the page itself is revalidated on every load (ETag). A Content-Security-Policy of `'self'`
keeps the page from loading or calling anything outside this server.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response
from starlette.exceptions import HTTPException

STATIC_DIR = Path(__file__).parent / "static"
PAGE_FILE = "index.html"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Asset:
    """One file as served: its bytes, media type and content hash (the ETag and the `?v=` in its URL)."""

    body: bytes
    media_type: str
    version: str

    @classmethod
    def of(cls, body: bytes, suffix: str) -> Asset:
        """An asset for these bytes; the suffix picks the media type."""
        return cls(body, MEDIA_TYPES[suffix], hashlib.sha256(body).hexdigest()[:16])


def load_assets(prefix: str, static_dir: Path = STATIC_DIR) -> tuple[Asset, dict[str, Asset]]:
    """The page, with its base URL and versioned asset URLs filled in, and every other static file by name.

    The page's `<base href>` is the prefix root, so its relative links (assets, /health, /predict) resolve under the
    prefix whether it was opened as `/project` or `/project/`.
    """
    assets = {
        path.name: Asset.of(path.read_bytes(), path.suffix)
        for path in sorted(static_dir.iterdir())
        if path.is_file() and path.suffix in MEDIA_TYPES and path.name != PAGE_FILE
    }
    html = (static_dir / PAGE_FILE).read_text(encoding="utf-8").replace("{{base}}", f"{prefix}/")
    for name, asset in assets.items():
        html = html.replace(f"{{{{asset:{name}}}}}", f"static/{name}?v={asset.version}")
    if "{{" in html:
        raise ValueError(f"{PAGE_FILE} references a file that is not in {static_dir}: {html[html.index('{{'):][:60]}")
    return Asset.of(html.encode("utf-8"), ".html"), assets


def _answer(request: Request, asset: Asset, cache_control: str, extra: dict[str, str] | None = None) -> Response:
    etag = f'"{asset.version}"'
    headers = {"ETag": etag, "Cache-Control": cache_control, **(extra or {})}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def build_page_router(prefix: str) -> APIRouter:
    """The page under the prefix and, like the API routes (layout.py), at the root too."""
    router = APIRouter(include_in_schema=False)
    for at in dict.fromkeys([prefix, ""]):
        router.include_router(_page_routes(at))
    return router


def _page_routes(prefix: str) -> APIRouter:
    """GET (and HEAD) of the page at `prefix/` (and `prefix` itself) and of its assets at `prefix/static/NAME`."""
    page, assets = load_assets(prefix)
    router = APIRouter(prefix=prefix, include_in_schema=False)

    async def serve_page(request: Request) -> Response:
        return _answer(request, page, REVALIDATE, SECURITY_HEADERS)

    router.add_api_route("/", serve_page, methods=["GET", "HEAD"])
    if prefix:
        router.add_api_route("", serve_page, methods=["GET", "HEAD"])

    @router.api_route("/static/{name}", methods=["GET", "HEAD"])
    async def serve_asset(name: str, request: Request) -> Response:
        asset = assets.get(name)
        if asset is None:
            raise HTTPException(status_code=404, detail="Not Found")
        # Only the exact version the page links to may be kept forever; any other URL is revalidated.
        fresh = request.query_params.get("v") == asset.version
        return _answer(request, asset, IMMUTABLE if fresh else REVALIDATE, {"X-Content-Type-Options": "nosniff"})

    return router
