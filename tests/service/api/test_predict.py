"""POST /predict: the seeds' exact shapes, label order, and the zero-shot sentiment of an embedding model."""

from __future__ import annotations

import math

import pytest


def _check_prediction(prediction: list[dict], labels: set[str]) -> None:
    assert {p["label"] for p in prediction} == labels
    scores = [p["score"] for p in prediction]
    assert scores == sorted(scores, reverse=True)
    assert math.isclose(sum(scores), 1.0, abs_tol=1e-6)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_predict_returns_one_ranked_list_per_text(minilm_client) -> None:
    response = minilm_client.post("/predict", json={"text": ["This is fun", "the movie was awful"]})
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["predictions"]
    assert len(body["predictions"]) == 2
    for prediction in body["predictions"]:
        _check_prediction(prediction, {"POSITIVE", "NEGATIVE"})


@pytest.mark.parametrize(
    ("text", "label"),
    [("I hate you.", "NEGATIVE"), ("I love you.", "POSITIVE"), ("This is fun", "POSITIVE"),
     ("the movie was awful", "NEGATIVE")],
)
def test_predict_ranks_sentiment_of_minilm(minilm_client, text: str, label: str) -> None:
    prediction = minilm_client.post("/predict", json={"text": [text]}).json()["predictions"][0]
    assert prediction[0]["label"] == label


def test_predict_keeps_input_order_with_repeats_and_blank(minilm_client) -> None:
    texts = ["I love you.", "", "I hate you.", "I love you.", "   "]
    predictions = minilm_client.post("/predict", json={"text": texts}).json()["predictions"]
    assert len(predictions) == len(texts)
    assert predictions[0] == predictions[3]
    assert predictions[0][0]["label"] == "POSITIVE"
    assert predictions[2][0]["label"] == "NEGATIVE"
    for prediction in predictions:
        _check_prediction(prediction, {"POSITIVE", "NEGATIVE"})


def test_predict_matches_single_text_answers_in_a_batch(classifier_client) -> None:
    texts = ["short", "a much longer text that pads differently from the short one " * 3, "mid length text"]
    batch = classifier_client.post("/predict", json={"text": texts}).json()["predictions"]
    for text, in_batch in zip(texts, batch, strict=True):
        alone = classifier_client.post("/predict", json={"text": [text]}).json()["predictions"][0]
        assert [p["label"] for p in alone] == [p["label"] for p in in_batch]
        for a, b in zip(alone, in_batch, strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_predict_uses_the_classifiers_own_labels(classifier_client) -> None:
    prediction = classifier_client.post("/predict", json={"text": ["anything"]}).json()["predictions"][0]
    _check_prediction(prediction, {"NEGATIVE", "NEUTRAL", "POSITIVE"})


def test_predict_truncates_texts_longer_than_the_model(classifier_client) -> None:
    response = classifier_client.post("/predict", json={"text": ["word " * 800]})
    assert response.status_code == 200
    _check_prediction(response.json()["predictions"][0], {"NEGATIVE", "NEUTRAL", "POSITIVE"})
