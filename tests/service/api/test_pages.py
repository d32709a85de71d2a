"""The comparison page's routes: page and assets served at the prefix root, typed, cacheable, self-contained."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from mlapi.api.pages import STATIC_DIR, load_assets

ROOT = Path(__file__).resolve().parents[3]
EXPECTED_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Any absolute or protocol-relative URL; the SVG namespace is a name, not something a browser fetches.
_URL = re.compile(r"(?:[a-z][a-z0-9+.-]*:)?//[^\s\"'<>()]+", re.IGNORECASE)
_NAMESPACES = {"http://www.w3.org/2000/svg"}


def _asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="(static/[^"]+)"', html)


@pytest.mark.parametrize("prefix", ["", "/project"])
def test_page_is_served_at_the_prefix_root(make_client, classifier_dir, prefix: str) -> None:
    with make_client(classifier_dir, ready=False, path_prefix=prefix) as client:
        response = client.get(f"{prefix}/")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["etag"]
        assert f'<base href="{prefix}/">' in response.text
        assert "{{" not in response.text
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        if prefix:
            # Opened without the trailing slash the page is the same, and its <base> keeps links under the prefix.
            assert client.get(prefix).text == response.text
            # At the root too, as every API route is; that copy's links stay at the root.
            assert '<base href="/">' in client.get("/").text


@pytest.mark.parametrize("prefix", ["", "/project"])
def test_assets_are_served_with_their_types_and_kept_for_a_year(make_client, classifier_dir, prefix: str) -> None:
    with make_client(classifier_dir, ready=False, path_prefix=prefix) as client:
        urls = _asset_urls(client.get(f"{prefix}/").text)
        names = {url.split("?")[0].removeprefix("static/") for url in urls}
        assert names == {"page.css", "page.js", "icon.svg"}
        for url in urls:
            response = client.get(f"{prefix}/{url}")
            name = url.split("?")[0].removeprefix("static/")
            assert response.status_code == 200, url
            assert response.headers["content-type"] == EXPECTED_TYPES[Path(name).suffix]
            assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.content == (STATIC_DIR / name).read_bytes()
            assert response.headers["etag"] == f'"{url.split("?v=")[1]}"'


def test_asset_without_the_current_version_is_revalidated(make_client, classifier_dir) -> None:
    with make_client(classifier_dir, ready=False) as client:
        assert client.get("/static/page.js").headers["cache-control"] == "no-cache"
        stale = client.get("/static/page.js?v=0000000000000000")
        assert stale.status_code == 200
        assert stale.headers["cache-control"] == "no-cache"


def test_unchanged_page_and_asset_answer_304(make_client, classifier_dir) -> None:
    with make_client(classifier_dir, ready=False) as client:
        for path in ("/", "/static/page.css"):
            first = client.get(path)
            again = client.get(path, headers={"If-None-Match": first.headers["etag"]})
            assert again.status_code == 304
            assert again.content == b""
            assert again.headers["etag"] == first.headers["etag"]


def test_head_answers_without_a_body(make_client, classifier_dir) -> None:
    with make_client(classifier_dir, ready=False) as client:
        for path in ("/", "/static/page.js"):
            response = client.head(path)
            assert response.status_code == 200
            assert response.content == b""


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/..%2Fpages.py", "/static/index.html"])
def test_unknown_asset_is_404_in_the_error_format(make_client, classifier_dir, path: str) -> None:
    with make_client(classifier_dir, ready=False) as client:
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["error_type"] == "not_found"


def test_page_is_not_in_the_api_schema(make_client, classifier_dir) -> None:
    with make_client(classifier_dir, ready=False) as client:
        paths = client.get("/openapi.json").json()["paths"]
        assert "/" not in paths and not any(p.startswith("/static") for p in paths)


def test_page_and_assets_reference_no_external_host() -> None:
    page, assets = load_assets("/project")
    for name, body in [("index.html", page.body), *((n, a.body) for n, a in assets.items())]:
        text = body.decode("utf-8")
        external = [url for url in _URL.findall(text) if url not in _NAMESPACES]
        assert external == [], f"{name} references {external}"
        assert "@import" not in text, name
    assert set(assets) | {"index.html"} == {p.name for p in STATIC_DIR.iterdir() if p.is_file()}


def test_page_that_links_a_missing_file_fails_at_start(tmp_path: Path) -> None:
    shutil.copytree(STATIC_DIR, tmp_path / "static")
    (tmp_path / "static" / "page.css").unlink()
    with pytest.raises(ValueError, match="page.css"):
        load_assets("", tmp_path / "static")


@pytest.mark.slow
def test_wheel_ships_the_page(tmp_path: Path) -> None:
    """The image installs the package from a wheel: the static files must be package data in it."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "service", source / "service", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("mlapi-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"mlapi/api/static/{p.name}" for p in STATIC_DIR.iterdir() if p.is_file()}
    assert expected <= shipped
