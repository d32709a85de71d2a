"""Health, docs, metrics and path-prefix serving."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from mlapi.api.app import create_app
from mlapi.settings import Settings


def test_health_reports_model_and_cache(minilm_client) -> None:
    body = minilm_client.get("/health").json()
    assert body["status"] == "healthy"
    assert body["model"]["task"] == "sentence-embedding"
    assert body["model"]["loaded"] is True
    assert body["cache"]["backend"] == "memory"
    assert body["backends"] == ["onnx"]


def test_health_is_503_until_the_model_is_loaded(minilm_dir) -> None:
    app = create_app(Settings(model_dir=minilm_dir))
    with TestClient(app) as client:
        first = client.get("/health")
        statuses = [first.status_code]
        deadline = time.monotonic() + 60
        while statuses[-1] != 200 and time.monotonic() < deadline:
            statuses.append(client.get("/health").status_code)
        assert statuses[-1] == 200
        assert set(statuses) <= {200, 503}
        if first.status_code == 503:
            assert first.json()["status"] == "loading"


def test_predict_before_ready_is_503_with_retry_after(minilm_dir) -> None:
    app = create_app(Settings(model_dir=minilm_dir))
    with TestClient(app) as client:
        predictor = app.state.predictor
        predictor._loaded = False  # as it is while the model loads, without racing the loader
        response = client.post("/predict", json={"text": ["a"]})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error_type"] == "unhealthy"


def test_broken_model_dir_reports_failed_health(tmp_path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    with TestClient(create_app(Settings(model_dir=tmp_path))) as client:
        deadline = time.monotonic() + 10
        while (response := client.get("/health")).json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert response.status_code == 503
        assert response.json()["status"] == "failed"
        assert client.post("/predict", json={"text": ["a"]}).status_code == 503


def test_prefix_serves_every_route_under_it(make_client, minilm_dir) -> None:
    with make_client(minilm_dir, path_prefix="/lab") as client:
        assert client.get("/lab/health").status_code == 200
        assert client.post("/lab/predict", json={"text": ["I love you."]}).status_code == 200
        assert client.post("/lab/query", json={"sentence": "s", "labels": ["a"]}).status_code == 200
        assert client.get("/lab/docs").status_code == 200
        assert client.get("/lab/metrics").status_code == 200
        spec = client.get("/lab/openapi.json").json()
        assert "/lab/predict" in spec["paths"]
        assert "/lab/openapi.json" in client.get("/lab/docs").text
        assert client.get("/lab/nothing").status_code == 404


def test_openapi_declares_error_answers(minilm_client) -> None:
    spec = minilm_client.get("/openapi.json").json()
    for path in ("/predict", "/query"):
        responses = spec["paths"][path]["post"]["responses"]
        assert {"200", "400", "413", "422", "503"} <= set(responses)
    schema = spec["components"]["schemas"]["PredictRequest"]
    assert schema["properties"]["text"]["maxItems"] == 1000


def test_docs_page_is_served(minilm_client) -> None:
    response = minilm_client.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()


def test_metrics_count_requests_texts_and_batches(minilm_client) -> None:
    minilm_client.post("/predict", json={"text": ["metrics one", "metrics two"]})
    minilm_client.post("/predict", json={"text": [3]})
    text = minilm_client.get("/metrics").text
    assert 'mlapi_requests_total{route="/predict",status="200"} 1.0' in text
    assert 'mlapi_requests_total{route="/predict",status="422"} 1.0' in text
    assert 'mlapi_texts_total{route="predict"} 2.0' in text
    assert 'mlapi_cache_misses_total{op="predict"} 2.0' in text
    assert "mlapi_batch_texts_count" in text
