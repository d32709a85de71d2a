"""Bad input: 422 naming the field and the reason, 413 for oversized bodies, and never a 500."""

from __future__ import annotations

import pytest

PREDICT_CASES = [
    ({}, "text", "missing"),
    ({"text": [1]}, "text.0", "string_type"),
    ({"text": ["ok", None]}, "text.1", "string_type"),
    ({"text": "not a list"}, "text", "list_type"),
    ({"text": ["ok"], "extra": 1}, "extra", "extra_forbidden"),
    ({"text": ["x" * 101]}, "text.0", "string_too_long"),
    ({"text": ["a"] * 9}, "text", "too_long"),
]


def _fields(details: list[dict]) -> list[dict]:
    """Each reason as {field, type}, the field being the body path FastAPI's `loc` spells."""
    return [{"field": ".".join(str(p) for p in d["loc"] if p != "body") or "body", "type": d["type"]}
            for d in details]


@pytest.fixture
def strict_client(make_client, minilm_dir):  # type: ignore[no-untyped-def]
    with make_client(minilm_dir, max_chars=100, max_batch=8, max_queue=64, max_labels=4,
                     max_body_bytes=4096) as client:
        yield client


@pytest.mark.parametrize(("body", "field", "kind"), PREDICT_CASES)
def test_predict_rejects_bad_body_with_field_and_reason(strict_client, body, field, kind) -> None:
    response = strict_client.post("/predict", json=body)
    assert response.status_code == 422
    payload = response.json()
    assert payload["error_type"] == "validation"
    assert {"field": field, "type": kind} in _fields(payload["detail"])
    assert all(set(d) >= {"loc", "msg", "type"} and d["loc"][0] == "body" for d in payload["detail"])
    assert field in payload["error"]


QUERY_CASES = [
    ({"labels": ["a"]}, "sentence", "missing"),
    ({"sentence": "s"}, "labels", "missing"),
    ({"sentence": "s", "labels": []}, "labels", "too_short"),
    ({"sentence": "s", "labels": ["a", "a"]}, "labels", "value_error"),
    ({"sentence": "s", "labels": ["a", " a "]}, "labels", "value_error"),
    ({"sentence": "s", "labels": ["  "]}, "labels.0", "string_too_short"),
    ({"sentence": "s", "labels": ["a", "b", "c", "d", "e"]}, "labels", "too_long"),
    ({"sentence": 3, "labels": ["a"]}, "sentence", "string_type"),
    ({"sentence": "x" * 101, "labels": ["a"]}, "sentence", "string_too_long"),
]


@pytest.mark.parametrize(("body", "field", "kind"), QUERY_CASES)
def test_query_rejects_bad_body_with_field_and_reason(strict_client, body, field, kind) -> None:
    response = strict_client.post("/query", json=body)
    assert response.status_code == 422
    assert {"field": field, "type": kind} in _fields(response.json()["detail"])


def test_predict_rejects_invalid_json(strict_client) -> None:
    response = strict_client.post("/predict", content=b'{"text": [', headers={"content-type": "application/json"})
    assert response.status_code == 422
    first = response.json()["detail"][0]
    assert first["loc"] == ["body", 10]
    assert first["type"] == "json_invalid"
    assert first["msg"] == "JSON decode error"


def test_predict_rejects_non_object_body(strict_client) -> None:
    response = strict_client.post("/predict", json=["text"])
    assert response.status_code == 422


def test_validation_error_does_not_echo_a_large_input(strict_client) -> None:
    response = strict_client.post("/predict", json={"text": ["y" * 3000]})
    assert response.status_code in (413, 422)
    assert "y" * 200 not in response.text


def test_oversized_body_gets_413_from_content_length(strict_client) -> None:
    response = strict_client.post("/predict", json={"text": ["z" * 50] * 200})
    assert response.status_code == 413
    message = "request body exceeds MLAPI_MAX_BODY_BYTES (4096 bytes)"
    assert response.json() == {"detail": message, "error": message, "error_type": "payload_too_large"}


def test_oversized_chunked_body_gets_413(strict_client) -> None:
    def chunks():  # no Content-Length: the limit must hold on streamed bytes
        yield b'{"text": ['
        for _ in range(200):
            yield b'"' + b"z" * 50 + b'",'
        yield b'"end"]}'

    response = strict_client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_unknown_backend_is_a_422_naming_backend(strict_client) -> None:
    response = strict_client.post("/predict?backend=torch", json={"text": ["a"]})
    assert response.status_code == 422
    body = response.json()
    assert body["error"].startswith("backend:")
    assert body["detail"] == [{"type": "validation", "loc": ["query", "backend"], "msg": body["error"]}]


def test_malformed_backend_parameter_is_a_422(strict_client) -> None:
    response = strict_client.post("/predict?backend=../x", json={"text": ["a"]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "backend"]


def test_body_without_content_type_is_read_as_json(strict_client) -> None:
    response = strict_client.post("/predict", content=b'{"text": ["I love you."]}')
    assert response.status_code == 200
    assert response.json()["predictions"][0][0]["label"] == "POSITIVE"


def test_curl_form_content_type_is_read_as_json(strict_client) -> None:
    response = strict_client.post(
        "/predict", content=b'{"text": ["I love you."]}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200


def test_unicode_and_control_characters_are_valid_text(strict_client) -> None:
    texts = ["héllo wörld 你好 🙂", "\u0000\u200b\ud7ff", "tab\tnew\nline"]
    response = strict_client.post("/predict", json={"text": texts})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 3


def test_lone_surrogate_text_is_answered(strict_client) -> None:
    response = strict_client.post("/predict", content=b'{"text": ["\\ud800 broken"]}',
                                  headers={"content-type": "application/json"})
    assert response.status_code in (200, 422)


def test_body_that_is_not_utf8_is_a_422(strict_client) -> None:
    response = strict_client.post("/predict", content=b'{"text": ["\x80\xff"]}',
                                  headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"type": "json_invalid", "loc": ["body"], "msg": "body is not valid JSON text (UTF-8 expected)"}]


def test_lone_surrogate_of_the_wrong_type_is_a_422_without_the_input(strict_client) -> None:
    response = strict_client.post("/query", content=b'{"sentence": "s", "labels": ["\\ud800"], "x": "\\ud800"}',
                                  headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert all("input" not in d for d in response.json()["detail"] if d["loc"][-1] == "x")


def test_body_of_another_media_type_is_a_422_not_a_500(strict_client) -> None:
    # FastAPI hands the unparsed body (bytes) to the validation error; it must still render as JSON.
    response = strict_client.post("/predict", content=b'{"text": ["a"]}', headers={"content-type": "text/plain"})
    assert response.status_code == 422, response.text
    assert response.json()["error_type"] == "validation"
