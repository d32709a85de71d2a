"""Per-request cache results and server time in response headers, and the model facts /health gives the page."""

from __future__ import annotations

import re
import shutil

from mlapi.api.request_stats import MAX_LISTED
from mlapi.engine.manifest import Manifest, Origin

_TIMING = re.compile(r"^app;dur=(\d+\.\d)$")


def _cache(response) -> tuple[int, int, str | None]:  # type: ignore[no-untyped-def]
    h = response.headers
    return int(h["x-cache-hits"]), int(h["x-cache-misses"]), h.get("x-cache-texts")


def test_predict_tells_hits_and_misses_per_text(minilm_client) -> None:
    first = minilm_client.post("/predict", json={"text": ["alpha", "beta"]})
    assert first.status_code == 200
    assert _cache(first) == (0, 2, "miss,miss")
    second = minilm_client.post("/predict", json={"text": ["gamma", "beta", "alpha"]})
    assert _cache(second) == (2, 1, "miss,hit,hit")


def test_query_tells_the_sentence_then_each_label(minilm_client) -> None:
    body = {"sentence": "feeling like a million bucks", "labels": ["happy", "rich"]}
    assert _cache(minilm_client.post("/query", json=body)) == (0, 3, "miss,miss,miss")
    body["labels"] = ["rich", "sad"]
    assert _cache(minilm_client.post("/query", json=body)) == (2, 1, "hit,hit,miss")


def test_shared_redis_hits_show_in_the_headers(make_client, minilm_dir, redis_server) -> None:
    with make_client(minilm_dir, redis_url=redis_server.url) as client:
        assert _cache(client.post("/predict", json={"text": ["stored once"]})) == (0, 1, "miss")
    # A second server process (another pod) sees the first one's answer as a hit.
    with make_client(minilm_dir, redis_url=redis_server.url) as client:
        assert _cache(client.post("/predict", json={"text": ["stored once"]})) == (1, 0, "hit")


def test_cache_off_reports_every_text_as_a_miss(classifier_client) -> None:
    response = classifier_client.post("/predict", json={"text": ["a", "a"]})
    assert _cache(response) == (0, 2, "miss,miss")


def test_per_text_list_is_left_out_past_its_limit(make_client, classifier_dir) -> None:
    texts = [f"text {i}" for i in range(MAX_LISTED + 1)]
    with make_client(classifier_dir, max_batch=MAX_LISTED + 1) as client:
        response = client.post("/predict", json={"text": texts})
        assert response.status_code == 200
        assert _cache(response) == (0, MAX_LISTED + 1, None)
        assert _cache(client.post("/predict", json={"text": texts[:MAX_LISTED]})) == (
            MAX_LISTED, 0, ",".join(["hit"] * MAX_LISTED)
        )


def test_every_answer_tells_the_server_time(minilm_client) -> None:
    for response in (
        minilm_client.post("/predict", json={"text": ["x"]}),
        minilm_client.post("/predict", json={"text": []}),
        minilm_client.get("/health"),
        minilm_client.get("/"),
    ):
        match = _TIMING.match(response.headers["server-timing"])
        assert match, response.headers["server-timing"]
        assert float(match.group(1)) >= 0.0


def test_refused_requests_carry_no_cache_counts(minilm_client) -> None:
    response = minilm_client.post("/predict?backend=nope", json={"text": ["x"]})
    assert response.status_code == 422
    assert "x-cache-hits" not in response.headers and "x-cache-texts" not in response.headers


def test_openapi_documents_the_headers(minilm_client) -> None:
    paths = minilm_client.get("/openapi.json").json()["paths"]
    for path in ("/predict", "/query"):
        headers = paths[path]["post"]["responses"]["200"]["headers"]
        assert {"X-Cache-Hits", "X-Cache-Misses", "X-Cache-Texts", "Server-Timing"} <= set(headers)
        assert headers["X-Cache-Hits"]["schema"]["type"] == "integer"


def test_health_shows_source_revision_and_precision_per_backend(make_client, classifier_dir, tmp_path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(classifier_dir, model_dir)
    manifest = Manifest.load(model_dir)
    origin = Origin(kind="hub", commit="0123abcd" * 5)
    manifest.model_copy(update={"revision": "main", "origin": origin}).save(model_dir)
    with make_client(model_dir, extra_backends="torch") as client:
        model = client.get("/health").json()["model"]
        assert model["source"] == manifest.source
        assert model["revision"] == "main"
        assert model["origin"] == {"kind": "hub", "commit": "0123abcd" * 5, "objects": 0}
        assert model["precision"] == {"onnx": "int8", "torch": "fp32"}
        assert model["task"] == "text-classification"
