"""The seeds' contract, exactly: their paths, the empty list, 1,000-text requests, FastAPI's error bodies, and
per-route metrics, under a path prefix and without, with a Content-Type and without, against a real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

JSON = {"content-type": "application/json"}
NO_TYPE: dict[str, str] = {}  # what k6's http.post sends for a string body: no Content-Type at all
HEADERS = pytest.mark.parametrize("headers", [JSON, NO_TYPE], ids=["json", "no-content-type"])
PREDICT_NAMES = ("/predict", "/bulk-predict", "/project-predict")


def predict_paths(prefix: str) -> list[str]:
    """Every path the predict route answers at for this prefix."""
    return [*PREDICT_NAMES, *(prefix + name for name in PREDICT_NAMES if prefix)]


def post(client: TestClient, path: str, body: object, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return client.post(path, content=json.dumps(body).encode(), headers=headers)


@pytest.fixture(params=["", "/project"], ids=["root", "prefix"])
def layout(request, make_client, minilm_dir, redis_server) -> Iterator[tuple[str, TestClient]]:  # type: ignore[no-untyped-def]
    """(prefix, client): the bundled model behind a real Redis, served with and without a path prefix."""
    # A Redis timeout roomy enough for a busy machine: these tests count keys, not the circuit breaker.
    with make_client(minilm_dir, path_prefix=request.param, redis_url=redis_server.url, redis_timeout_ms=5000
                     ) as client:
        assert client.get(f"{request.param}/health").json()["cache"]["backend"] == "redis"
        yield request.param, client


@HEADERS
def test_every_predict_path_answers_as_predict(layout, headers) -> None:
    prefix, client = layout
    body = {"text": ["This is fun", "the movie was awful"]}
    expected = post(client, f"{prefix}/predict", body, JSON).json()
    assert [p[0]["label"] for p in expected["predictions"]] == ["POSITIVE", "NEGATIVE"]
    for path in predict_paths(prefix):
        response = post(client, path, body, headers)
        assert (path, response.status_code) == (path, 200)
        assert response.headers["content-type"] == "application/json"
        assert response.json() == expected


@HEADERS
def test_every_route_answers_with_and_without_the_prefix(layout, headers) -> None:
    prefix, client = layout
    for root in dict.fromkeys([prefix, ""]):
        assert client.get(f"{root}/health").json()["status"] == "healthy"
        answer = post(client, f"{root}/query", {"sentence": "s", "labels": ["a", "b"]}, headers)
        assert answer.status_code == 200
        assert {s["label"] for s in answer.json()["scores"]} == {"a", "b"}
        assert client.get(f"{root}/metrics").status_code == 200
        spec = client.get(f"{root}/openapi.json")
        assert spec.status_code == 200
        assert spec.json()["info"]["title"] == "mlapi"
        docs = client.get(f"{root}/docs")
        assert docs.status_code == 200
        assert f"'{root}/openapi.json'" in docs.text  # the page loads the schema from its own layout
        assert client.get(f"{root}/redoc").status_code == 200


def test_openapi_documents_each_route_once(layout) -> None:
    prefix, client = layout
    spec = client.get("/openapi.json").json()
    assert spec == client.get(f"{prefix}/openapi.json").json()
    routes = ("/predict", "/query", "/health", "/metrics", "/transformers/infer", "/onnx/infer")
    assert sorted(spec["paths"]) == sorted(f"{prefix}{p}" for p in routes)
    operation_ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))
    assert "/bulk-predict" in spec["paths"][f"{prefix}/predict"]["post"]["description"]


@HEADERS
def test_empty_list_answers_an_empty_list(layout, headers) -> None:
    prefix, client = layout
    for path in predict_paths(prefix):
        response = post(client, path, {"text": []}, headers)
        assert (response.status_code, response.json()) == (200, {"predictions": []})


@HEADERS
def test_a_thousand_texts_in_one_request(layout, headers, redis_server) -> None:
    prefix, client = layout
    texts = [f"review number {i}: the film was {'great' if i % 2 else 'dull'}" for i in range(1000)]
    first = post(client, f"{prefix}/predict", {"text": texts}, headers)
    assert first.status_code == 200
    assert len(first.json()["predictions"]) == 1000
    assert len(redis_server.client().keys("fastapi-cache-project::*")) == 1000
    again = post(client, "/bulk-predict", {"text": texts}, headers)
    assert again.json() == first.json()
    assert 'mlapi_cache_hits_total{op="predict"} 1000.0' in client.get("/metrics").text


def test_default_batch_limit_is_at_least_a_thousand(layout) -> None:
    prefix, client = layout
    too_many = post(client, f"{prefix}/predict", {"text": ["a"] * 1001}, JSON)
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["type"] == "too_long"


@HEADERS
def test_422_is_fastapis_detail_list_plus_error_fields(layout, headers) -> None:
    prefix, client = layout
    for path in (f"{prefix}/predict", "/bulk-predict"):
        response = post(client, path, {"text": [1]}, headers)
        assert response.status_code == 422
        assert response.json() == {
            "detail": [{"type": "string_type", "loc": ["body", "text", 0], "msg": "Input should be a valid string",
                        "input": 1}],
            "error": "text.0: Input should be a valid string",
            "error_type": "validation",
        }
    missing = post(client, f"{prefix}/predict", {}, headers).json()
    assert missing["detail"] == [{"type": "missing", "loc": ["body", "text"], "msg": "Field required", "input": {}}]
    assert missing["error"] == "text: Field required"


@HEADERS
def test_422_never_echoes_a_long_input(layout, headers) -> None:
    prefix, client = layout
    response = post(client, f"{prefix}/predict", {"text": ["w" * 5000]}, headers)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail == [{"type": "string_too_long", "loc": ["body", "text", 0],
                       "msg": "String should have at most 4096 characters", "ctx": {"max_length": 4096}}]
    assert "w" * 100 not in response.text


def test_404_and_405_bodies_are_fastapis_plus_error_fields(layout) -> None:
    prefix, client = layout
    for path in (f"{prefix}/nothing", "/nothing/predict"):
        missing = client.get(path)
        assert missing.status_code == 404
        assert missing.json() == {"detail": "Not Found", "error": "Not Found", "error_type": "not_found"}
    for path in predict_paths(prefix):
        wrong = client.get(path)
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "POST"
        assert wrong.json() == {"detail": "Method Not Allowed", "error": "Method Not Allowed",
                                "error_type": "method_not_allowed"}


@HEADERS
def test_metrics_label_every_route_and_alias_by_its_template(layout, headers) -> None:
    prefix, client = layout
    paths = predict_paths(prefix)
    for path in paths:
        assert post(client, path, {"text": ["count me"]}, headers).status_code == 200
    assert post(client, f"{prefix}/predict", {"text": [7]}, headers).status_code == 422
    assert post(client, f"{prefix}/query", {"sentence": "s", "labels": ["a"]}, headers).status_code == 200
    text = client.get(f"{prefix}/metrics").text
    for path in paths:
        assert f'mlapi_requests_total{{route="{path}",status="200"}} 1.0' in text, path
    assert f'mlapi_requests_total{{route="{prefix}/predict",status="422"}} 1.0' in text
    assert f'mlapi_requests_total{{route="{prefix}/query",status="200"}} 1.0' in text
    assert 'route="unmatched"' not in text


def test_label_order_score_is_the_default_and_model_keeps_label_ids(make_client, minilm_dir, redis_server) -> None:
    texts = ["I love you.", "I hate you."]
    with make_client(minilm_dir, redis_url=redis_server.url) as client:
        labels = client.get("/health").json()["model"]["labels"]
        by_score = client.post("/predict", json={"text": texts}).json()["predictions"]
    assert sorted(labels) == ["NEGATIVE", "POSITIVE"]  # the baked model's label-id order, whichever it is
    assert [[p["label"] for p in prediction] for prediction in by_score] == [["POSITIVE", "NEGATIVE"],
                                                                           ["NEGATIVE", "POSITIVE"]]
    # Same Redis, answers already stored in score order: the other order must not be served from them.
    with make_client(minilm_dir, redis_url=redis_server.url, label_order="model") as client:
        for path in ("/predict", "/bulk-predict"):
            response = client.post(path, content=json.dumps({"text": texts}).encode())
            assert response.status_code == 200
            by_model = response.json()["predictions"]
            assert [[p["label"] for p in prediction] for prediction in by_model] == [labels, labels]
            for ranked, kept in zip(by_score, by_model, strict=True):
                assert {p["label"]: p["score"] for p in ranked} == pytest.approx({p["label"]: p["score"] for p in kept})


def _top(prediction: list[dict]) -> dict:
    return max(prediction, key=lambda p: p["score"])


@HEADERS
def test_seed_infer_routes_answer_in_the_seeds_shapes(layout, headers, redis_server) -> None:
    prefix, client = layout
    for root in dict.fromkeys([prefix, ""]):
        for text, label in (("This is awesome!", "POSITIVE"), ("the movie was awful", "NEGATIVE")):
            expected = _top(post(client, f"{root}/predict", {"text": [text]}, JSON).json()["predictions"][0])
            assert expected["label"] == label
            pipeline = post(client, f"{root}/transformers/infer", {"input": text}, headers)
            assert pipeline.status_code == 200
            assert pipeline.headers["x-mlapi-backend"] == "onnx"  # no torch backend loaded here
            assert pipeline.json() == [expected]
            onnx = post(client, f"{root}/onnx/infer", {"input": text}, headers)
            assert onnx.status_code == 200
            assert onnx.headers["x-mlapi-backend"] == "onnx"
            assert onnx.json() == {"sentiment": label.lower(), "score": expected["score"]}
    # One text, one cache entry, whichever of the three routes asked.
    assert len(redis_server.client().keys("fastapi-cache-project::*")) == 2
    text = client.get(f"{prefix}/metrics").text
    assert f'mlapi_requests_total{{route="{prefix}/transformers/infer",status="200"}}' in text
    assert f'mlapi_requests_total{{route="{prefix}/onnx/infer",status="200"}}' in text


def test_seed_infer_routes_are_documented_once(layout) -> None:
    prefix, client = layout
    paths = client.get("/openapi.json").json()["paths"]
    assert {f"{prefix}/transformers/infer", f"{prefix}/onnx/infer"} <= set(paths)
    assert "/transformers/infer" not in paths or not prefix


@HEADERS
@pytest.mark.parametrize("route", ["/transformers/infer", "/onnx/infer"])
def test_seed_infer_routes_refuse_bad_input_with_the_same_422(layout, headers, route) -> None:
    prefix, client = layout
    wrong_type = post(client, f"{prefix}{route}", {"input": 3}, headers)
    assert (wrong_type.status_code, wrong_type.json()) == (422, {
        "detail": [{"type": "string_type", "loc": ["body", "input"], "msg": "Input should be a valid string",
                    "input": 3}],
        "error": "input: Input should be a valid string",
        "error_type": "validation",
    })
    missing = post(client, route, {"text": ["a"]}, headers).json()
    assert [(d["type"], d["loc"]) for d in missing["detail"]] == [
        ("missing", ["body", "input"]), ("extra_forbidden", ["body", "text"])]
    too_long = post(client, f"{prefix}{route}", {"input": "v" * 5000}, headers)
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["type"] == "string_too_long"
    assert "v" * 100 not in too_long.text
    assert client.get(f"{prefix}{route}").json()["detail"] == "Method Not Allowed"


def test_transformers_infer_uses_torch_when_loaded(make_client, minilm_dir) -> None:
    with make_client(minilm_dir, extra_backends="torch") as client:
        text = "I love you."
        expected = _top(client.post("/predict?backend=torch", json={"text": [text]}).json()["predictions"][0])
        pipeline = client.post("/transformers/infer", json={"input": text})
        assert pipeline.headers["x-mlapi-backend"] == "torch"
        assert pipeline.json() == [expected]
        onnx = client.post("/onnx/infer", json={"input": text})
        assert onnx.headers["x-mlapi-backend"] == "onnx"
        assert onnx.json()["sentiment"] == "positive"


def test_onnx_infer_without_an_onnx_backend_says_so(make_client, minilm_dir) -> None:
    with make_client(minilm_dir, backend="torch") as client:
        assert client.post("/transformers/infer", json={"input": "I love you."}).headers["x-mlapi-backend"] == "torch"
        refused = client.post("/onnx/infer", json={"input": "I love you."})
        message = "/onnx/infer needs the onnx backend; this server loads torch (add onnx to MLAPI_EXTRA_BACKENDS)"
        assert (refused.status_code, refused.json()) == (
            400, {"detail": message, "error": message, "error_type": "unsupported_task"})


def test_422_leaves_out_an_input_json_cannot_write(layout) -> None:
    prefix, client = layout
    response = client.post(f"{prefix}/predict", content=b'{"text": [Infinity]}', headers=JSON)
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"type": "string_type", "loc": ["body", "text", 0], "msg": "Input should be a valid string"}]
