"""API keys on the model routes (any route, any prefix), open pages, key rotation, the body read timeout, OpenAPI."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from mlapi.api.app import create_app
from mlapi.auth.keys import generate_key, key_line
from mlapi.settings import Settings

PREDICT = {"text": ["I love you."]}


def _error(response, status: int, error_type: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_type"] == error_type
    assert body["error"]
    if status != 422:
        assert body["detail"] == body["error"]
    return body


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, object]:
    """A keys file with an active key, a revoked one, and the path."""
    good, revoked = generate_key(), generate_key()
    path = tmp_path / "keys"
    path.write_text(f"{key_line('alice', good)}\n{key_line('mallory', revoked)} revoked\n")
    return {"good": good, "revoked": revoked, "path": path}


def test_no_key_is_401_with_www_authenticate(make_client, minilm_dir, keys) -> None:
    with make_client(minilm_dir, api_keys_file=keys["path"]) as client:
        response = client.post("/predict", json=PREDICT)
        _error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
        _error(client.post("/predict", json=PREDICT, headers={"Authorization": "Basic abc"}), 401, "unauthorized")
        _error(client.post("/query", json={"sentence": "s", "labels": ["a"]}), 401, "unauthorized")


def test_unknown_or_revoked_key_is_403(make_client, minilm_dir, keys) -> None:
    with make_client(minilm_dir, api_keys_file=keys["path"]) as client:
        unknown = client.post("/predict", json=PREDICT, headers={"X-API-Key": generate_key()})
        assert "not recognised" in _error(unknown, 403, "forbidden")["error"]
        assert 'error="invalid_token"' in unknown.headers["www-authenticate"]
        revoked = client.post("/predict", json=PREDICT, headers={"Authorization": f"Bearer {keys['revoked']}"})
        assert "revoked" in _error(revoked, 403, "forbidden")["error"]


def test_a_valid_key_works_as_bearer_or_x_api_key(make_client, minilm_dir, keys) -> None:
    with make_client(minilm_dir, api_keys_file=keys["path"]) as client:
        for headers in ({"Authorization": f"Bearer {keys['good']}"}, {"X-API-Key": str(keys["good"])},
                        {"authorization": f"bearer {keys['good']}"}):
            response = client.post("/predict", json=PREDICT, headers=headers)
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0][0]["label"] == "POSITIVE"
        # A key does not change validation: a bad body with a good key is still 422.
        _error(client.post("/predict", json={"text": [1]}, headers={"X-API-Key": str(keys["good"])}), 422,
               "validation")


def test_probes_metrics_and_docs_stay_open(make_client, minilm_dir, keys) -> None:
    with make_client(minilm_dir, api_keys_file=keys["path"], path_prefix="/project") as client:
        for path in ("/health", "/metrics", "/docs", "/redoc", "/openapi.json"):
            assert client.get(f"/project{path}").status_code == 200, path
        _error(client.post("/project/predict", json=PREDICT), 401, "unauthorized")
        ok = client.post("/project/predict", json=PREDICT, headers={"X-API-Key": str(keys["good"])})
        assert ok.status_code == 200
        metrics = client.get("/project/metrics").text
        assert 'mlapi_auth_failures_total{reason="missing"} 1.0' in metrics


def test_every_model_route_needs_a_key_including_ones_added_later(make_client, minilm_dir, keys) -> None:
    with make_client(minilm_dir, api_keys_file=keys["path"], path_prefix="/lab") as client:
        app = client.app

        async def alias(body: dict) -> dict:  # type: ignore[type-arg]
            return {"echo": body}

        app.router.add_api_route("/lab/added/infer", alias, methods=["POST"])  # a route added after the guard
        app.openapi_schema = None
        spec = client.get("/lab/openapi.json").json()
        guarded = [(path, method.upper()) for path, operations in spec["paths"].items()
                   for method in operations if method not in ("get", "head")]
        assert {("/lab/predict", "POST"), ("/lab/onnx/infer", "POST"), ("/lab/added/infer", "POST")} <= set(guarded)
        for path, method in guarded:
            _error(client.request(method, path, json=PREDICT), 401, "unauthorized")
        echoed = client.post("/lab/added/infer", json={"input": "x"}, headers={"X-API-Key": str(keys["good"])})
        assert echoed.json() == {"echo": {"input": "x"}}


def test_inline_keys_variable_works_like_the_file(make_client, minilm_dir, keys) -> None:
    with make_client(minilm_dir, api_keys=Path(keys["path"]).read_text()) as client:  # type: ignore[arg-type]
        _error(client.post("/predict", json=PREDICT), 401, "unauthorized")
        assert client.post("/predict", json=PREDICT, headers={"X-API-Key": str(keys["good"])}).status_code == 200


def test_a_blank_inline_keys_variable_keeps_the_api_closed(make_client, minilm_dir) -> None:
    """An empty secret means no key is valid yet, never that anyone may call."""
    for blank in ("", "  ", "# no keys yet"):
        with make_client(minilm_dir, api_keys=blank) as client:
            _error(client.post("/predict", json=PREDICT), 401, "unauthorized")
            _error(client.post("/predict", json=PREDICT, headers={"X-API-Key": generate_key()}), 403, "forbidden")


def test_rotation_takes_effect_without_a_restart(make_client, minilm_dir, keys) -> None:
    path = Path(keys["path"])  # type: ignore[arg-type]
    with make_client(minilm_dir, api_keys_file=path, api_keys_reload_seconds=0.2) as client:
        new = generate_key()
        path.write_text(f"{key_line('alice', str(keys['good']))} revoked\n{key_line('alice-2', new)}\n")
        deadline = time.monotonic() + 10
        while client.post("/predict", json=PREDICT, headers={"X-API-Key": new}).status_code != 200:
            assert time.monotonic() < deadline, "the new key was never accepted"
            time.sleep(0.1)
        _error(client.post("/predict", json=PREDICT, headers={"X-API-Key": str(keys["good"])}), 403, "forbidden")


def test_without_keys_the_api_stays_open(minilm_client) -> None:
    assert minilm_client.post("/predict", json=PREDICT).status_code == 200
    spec = minilm_client.get("/openapi.json").json()
    assert "securitySchemes" not in spec.get("components", {})


def test_openapi_documents_auth_and_limits_on_guarded_operations_only(make_client, minilm_dir, keys) -> None:
    with make_client(minilm_dir, api_keys_file=keys["path"]) as client:
        spec = client.get("/openapi.json").json()
    for path in ("/predict", "/query"):
        operation = spec["paths"][path]["post"]
        assert {"401", "403", "408", "429"} <= set(operation["responses"])
        assert {"bearer": []} in operation["security"] and {"apiKey": []} in operation["security"]
        assert "RateLimit-Remaining" in operation["responses"]["429"]["headers"]
    for path in ("/health", "/metrics"):
        assert not {"401", "403", "429"} & set(spec["paths"][path]["get"]["responses"])
        assert "security" not in spec["paths"][path]["get"]
    assert spec["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"


def test_a_body_that_never_finishes_gets_408_within_the_timeout(minilm_dir) -> None:
    app = create_app(Settings(model_dir=minilm_dir, body_read_timeout_seconds=0.3))
    sent: list[dict] = []
    first = True

    async def receive() -> dict:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b'{"text": ["a', "more_body": True}
        await asyncio.sleep(3600)  # the rest never comes
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
             "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 1), "server": None,
             "scheme": "http", "http_version": "1.1", "root_path": "", "app": app}
    started = time.monotonic()
    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=10))
    assert time.monotonic() - started < 5
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert b'"error_type":"body_timeout"' in sent[1]["body"]
