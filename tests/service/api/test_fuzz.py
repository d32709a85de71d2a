"""Property: whatever JSON a client sends to /predict or /query, the answer is 200, 400, 413 or 422, never 500."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
PREDICT_LIKE = st.fixed_dictionaries({"text": st.lists(st.text(max_size=60), max_size=12) | JSON})
QUERY_LIKE = st.fixed_dictionaries(
    {"sentence": st.text(max_size=60) | JSON, "labels": st.lists(st.text(max_size=12), max_size=6) | JSON}
)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(body=JSON | PREDICT_LIKE)
def test_predict_never_fails_on_any_json(minilm_client, body) -> None:
    response = minilm_client.post("/predict", content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code in (200, 413, 422), response.text
    payload = response.json()
    if response.status_code == 200:
        assert len(payload["predictions"]) == len(body["text"])
    else:
        assert payload["error_type"] in ("validation", "payload_too_large")


@FUZZ
@given(body=JSON | QUERY_LIKE)
def test_query_never_fails_on_any_json(minilm_client, body) -> None:
    response = minilm_client.post("/query", content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code in (200, 413, 422), response.text
    if response.status_code == 200:
        answer = response.json()
        assert answer["label"] == answer["scores"][0]["label"]
        assert len(answer["scores"]) == len(body["labels"])


@FUZZ
@given(raw=st.binary(max_size=200))
def test_predict_never_fails_on_any_bytes(minilm_client, raw: bytes) -> None:
    response = minilm_client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code in (200, 422), response.text
