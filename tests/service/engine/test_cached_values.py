"""A value read back from Redis is data, not trusted: anything this model could not have produced is a miss,
counted, recomputed, and overwritten in every tier; it never reaches an answer or stays in the process's LRU."""

from __future__ import annotations

import numpy as np
import pytest
from mlapi.engine.cached_values import valid_embedding, valid_prediction

HOSTILE_VALUES = [
    b'[{"label":"POSITIVE","score":1.0}]],"admin":true,"x":[[',
    b"\xff\xfe not json",
    b'[{"label":"POSITIVE","score":0.6},{"label":"NEGATIVE","score":0.4},{"label":"EXTRA","score":0.0}]',
    b'[{"label":"POSITIVE","score":NaN},{"label":"NEGATIVE","score":0.4}]',
    b'[{"label":"POSITIVE","score":0.9,"admin":true},{"label":"NEGATIVE","score":0.1}]',
    b"",
]


@pytest.mark.parametrize("hostile", HOSTILE_VALUES)
def test_a_planted_predict_value_is_never_served_nor_kept(make_client, minilm_dir, redis_server, hostile) -> None:
    text = {"text": ["the planted answer"]}
    with make_client(minilm_dir, redis_url=redis_server.url) as client:
        honest = client.post("/predict", json=text).json()
    redis = redis_server.client()
    [key] = [k for k in redis.keys("fastapi-cache-project::*")]
    redis.set(key, hostile)
    with make_client(minilm_dir, redis_url=redis_server.url) as client:  # a fresh process: its LRU is empty
        answer = client.post("/predict", json=text)
        assert (answer.status_code, answer.json()) == (200, honest)
        assert answer.headers["x-cache-texts"] == "miss"
        assert 'mlapi_cache_invalid_total{op="predict"} 1.0' in client.get("/metrics").text
        assert redis.get(key) != hostile  # the good answer overwrote it
        redis.flushdb()
        again = client.post("/predict", json=text)
        assert (again.status_code, again.json()) == (200, honest)
        assert again.headers["x-cache-texts"] == "hit"  # from the LRU, which kept the good answer


def test_predictions_are_checked_against_the_model_labels_and_order() -> None:
    labels = ["NEGATIVE", "POSITIVE"]
    good = b'[{"label":"POSITIVE","score":0.7},{"label":"NEGATIVE","score":0.3}]'
    assert valid_prediction(good, labels, "score")
    assert not valid_prediction(good, labels, "model")  # model order is NEGATIVE first
    assert not valid_prediction(b'[{"label":"NEGATIVE","score":0.7},{"label":"POSITIVE","score":0.7}]', labels,
                                "score")  # does not sum to 1
    assert not valid_prediction(b'[{"label":"NEGATIVE","score":0.3},{"label":"POSITIVE","score":0.7}]', labels,
                                "score")  # not high to low


def test_embeddings_must_be_unit_float32_of_the_right_size() -> None:
    vector = np.ones(4, dtype=np.float32) / 2
    assert valid_embedding(vector.tobytes(), 4)
    assert not valid_embedding(vector.tobytes(), 8)
    assert not valid_embedding((vector * 3).tobytes(), None)
    assert not valid_embedding(np.array([np.nan, 1, 0, 0], dtype=np.float32).tobytes(), 4)
    assert not valid_embedding(b"abc", None)
