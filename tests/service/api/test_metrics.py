"""/metrics carries what the dashboard and alerts chart: label sets at 0 from the start, 503 reasons, the circuit."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from mlapi.api.app import create_app
from mlapi.settings import Settings


def _sample(client: TestClient, line_start: str, path: str = "/metrics") -> float:
    for line in client.get(path).text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in /metrics")


def test_charted_label_sets_read_zero_before_any_request(make_client, minilm_dir) -> None:
    with make_client(minilm_dir, path_prefix="/lab", max_queue=1234) as client:
        for status in ("200", "422", "500", "503"):
            assert _sample(client, f'mlapi_requests_total{{route="/lab/query",status="{status}"}}', "/lab/metrics") == 0
        assert _sample(client, 'mlapi_request_seconds_count{route="/lab/predict"}', "/lab/metrics") == 0
        for reason in ("queue_full", "not_ready", "shutting_down"):
            assert _sample(client, f'mlapi_rejected_total{{reason="{reason}"}}', "/lab/metrics") == 0
        assert _sample(client, 'mlapi_cache_hits_total{op="embed"}', "/lab/metrics") == 0
        assert _sample(client, 'mlapi_cache_errors_total{kind="skipped"}', "/lab/metrics") == 0
        assert _sample(client, 'mlapi_queue_capacity_texts{backend="onnx"}', "/lab/metrics") == 1234
        assert _sample(client, 'mlapi_queue_texts{backend="onnx"}', "/lab/metrics") == 0
        assert _sample(client, "mlapi_cache_circuit_open", "/lab/metrics") == 0


def test_requests_without_content_type_are_counted_under_their_route(minilm_client) -> None:
    # k6 posts JSON with no Content-Type; such requests must not land in route="unmatched".
    assert minilm_client.post("/query", content=b'{"sentence": "a", "labels": ["x", "y"]}').status_code == 200
    assert minilm_client.post("/predict", content=b'{"txt": ["typo"]}').status_code == 422
    assert _sample(minilm_client, 'mlapi_requests_total{route="/query",status="200"}') == 1
    assert _sample(minilm_client, 'mlapi_requests_total{route="/predict",status="422"}') == 1
    assert "unmatched" not in minilm_client.get("/metrics").text


def test_refusal_before_ready_is_counted_as_not_ready(minilm_dir) -> None:
    app = create_app(Settings(model_dir=minilm_dir))
    with TestClient(app) as client:
        app.state.predictor._loaded = False  # as while the model loads, without racing the loader
        assert client.post("/predict", json={"text": ["a"]}).status_code == 503
        assert _sample(client, 'mlapi_rejected_total{reason="not_ready"}') == 1
        assert _sample(client, 'mlapi_requests_total{route="/predict",status="503"}') == 1


def test_circuit_gauge_follows_redis(make_client, minilm_dir, redis_server) -> None:
    with make_client(minilm_dir, redis_url=redis_server.url, redis_cooldown_seconds=0.3) as client:
        assert client.post("/predict", json={"text": ["circuit closed"]}).status_code == 200
        assert _sample(client, "mlapi_cache_circuit_open") == 0
        redis_server.stop()
        assert client.post("/predict", json={"text": ["circuit opens"]}).status_code == 200
        assert _sample(client, "mlapi_cache_circuit_open") == 1
        redis_server.start()
        time.sleep(0.4)  # past the cooldown
        assert client.post("/predict", json={"text": ["circuit closes"]}).status_code == 200
        assert _sample(client, "mlapi_cache_circuit_open") == 0


def test_metrics_answer_only_their_literal_path(make_client, minilm_dir) -> None:
    """Edge rules keep /metrics private by matching the path as sent; an encoded spelling must not get through."""
    with make_client(minilm_dir, path_prefix="/project") as client:
        for path in ("/project/metrics", "/metrics"):
            assert client.get(path).status_code == 200
        for path in ("/project/%6Detrics", "/%6Detrics", "/project/metric%73", "/%2Fmetrics"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert response.json()["detail"] == "Not Found"
            assert "mlapi_requests_total" not in response.text
