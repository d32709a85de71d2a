"""`/docs` and `/redoc` load their scripts and styles from this server, never from a CDN, under any prefix."""

from __future__ import annotations

import re

import pytest
from mlapi.api.docs import ASSETS_DIR


def _asset_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*[=:]\s*['"]([^'"]+)['"]""", html) + re.findall(r"url: '([^']+)'", html)


@pytest.mark.parametrize(("prefix", "at"), [("", ""), ("/project", "/project"), ("/project", "")])
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_only_this_server(make_client, minilm_dir, prefix: str, at: str, page: str) -> None:
    with make_client(minilm_dir, path_prefix=prefix) as client:
        html = client.get(f"{at}{page}").text
        assert "://" not in html, "an absolute URL in the docs page loads from somewhere else"
        urls = [u for u in _asset_urls(html) if "/docs/assets/" in u]
        assert len(urls) >= 2
        for url in urls:
            name = url.split("/docs/assets/", 1)[1].split("?", 1)[0]
            answer = client.get(url)
            assert answer.status_code == 200, url
            assert answer.content == (ASSETS_DIR / name).read_bytes()
            assert answer.headers["content-type"].split(";")[0] in {"text/javascript", "text/css", "image/png"}
        assert client.get(f"{at}/openapi.json").json()["info"]["title"] == "mlapi"


@pytest.mark.parametrize("name", ["README.md", "LICENSE.redoc", "..%2Fdocs.py", "nope.js"])
def test_only_the_docs_assets_are_served(minilm_client, name: str) -> None:
    assert minilm_client.get(f"/docs/assets/{name}").status_code == 404
