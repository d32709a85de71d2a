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
