"""POST /query: zero-shot labels for a sentence from an embedding model; a clear refusal from a classifier."""

from __future__ import annotations

import math


def test_query_ranks_labels_for_the_seed_example(minilm_client) -> None:
    body = minilm_client.post(
        "/query", json={"sentence": "feeling like a million bucks", "labels": ["happy", "sad", "rich"]}
    ).json()
    assert body["label"] == body["scores"][0]["label"]
    assert body["label"] in {"rich", "happy"}
    assert {s["label"] for s in body["scores"]} == {"happy", "sad", "rich"}
    scores = [s["score"] for s in body["scores"]]
    assert scores == sorted(scores, reverse=True)
    assert math.isclose(sum(scores), 1.0, abs_tol=1e-6)


def test_query_picks_the_topic(minilm_client) -> None:
    labels = ["finance", "sports", "weather"]
    cases = {"He scored the winning goal in the final minute": "sports",
             "Heavy snow is expected tonight": "weather",
             "The stock market rallied after the announcement": "finance"}
    for sentence, expected in cases.items():
        assert minilm_client.post("/query", json={"sentence": sentence, "labels": labels}).json()["label"] == expected


def test_query_answer_does_not_depend_on_label_order(minilm_client) -> None:
    first = minilm_client.post("/query", json={"sentence": "I lost my job", "labels": ["happy", "sad"]}).json()
    second = minilm_client.post("/query", json={"sentence": "I lost my job", "labels": ["sad", "happy"]}).json()
    assert first["scores"] == second["scores"]


def test_query_single_label_scores_one(minilm_client) -> None:
    body = minilm_client.post("/query", json={"sentence": "anything", "labels": ["only"]}).json()
    assert body == {"label": "only", "scores": [{"label": "only", "score": 1.0}]}


def test_query_on_classifier_is_refused_with_400(classifier_client) -> None:
    response = classifier_client.post("/query", json={"sentence": "x", "labels": ["a", "b"]})
    assert response.status_code == 400
    assert response.json()["error_type"] == "unsupported_task"
    assert "/predict" in response.json()["error"]


def test_model_loads_when_the_queue_is_smaller_than_its_label_descriptions(make_client, minilm_dir) -> None:
    """Start-up embeds every label description; a small MLAPI_MAX_QUEUE must not refuse that work."""
    from mlapi.engine.manifest import Manifest

    zero_shot = Manifest.load(minilm_dir).zero_shot
    assert zero_shot is not None
    descriptions = sum(len(texts) for texts in zero_shot.descriptions.values())
    queue = 3
    assert descriptions > queue
    small_settings = {"max_queue": queue, "max_batch": queue, "max_labels": queue - 1}
    with make_client(minilm_dir, **small_settings) as small, make_client(minilm_dir) as default:
        assert small.get("/health").json()["status"] == "healthy"
        sentence = {"sentence": "Heavy snow is expected tonight", "labels": ["finance", "weather"]}
        assert small.post("/query", json=sentence).json() == default.post("/query", json=sentence).json()
