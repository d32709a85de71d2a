"""`/onnx/infer` on a model whose labels are not sentiments says so, and keeps the seed's shape for one that is."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def ticket_router_dir(tmp_path_factory: pytest.TempPathFactory, tiny_classifier_writer: Callable[..., Path]) -> Path:
    from mlapi.build.bake import bake

    root = tmp_path_factory.mktemp("tickets")
    out = root / "baked"
    bake(str(tiny_classifier_writer(root / "source", ["outage", "billing", "other"])), out)
    return out


def test_custom_labels_answer_the_top_label_and_say_it_is_not_a_sentiment(make_client, ticket_router_dir) -> None:
    with make_client(ticket_router_dir) as client:
        full = client.post("/predict", json={"text": ["the site is down again"]}).json()["predictions"][0]
        answer = client.post("/onnx/infer", json={"input": "the site is down again"})
        assert answer.status_code == 200
        assert answer.json() == {"sentiment": full[0]["label"].lower(), "score": full[0]["score"],
                                 "label": full[0]["label"]}
        documented = client.get("/openapi.json").json()["components"]["schemas"]["SentimentResponse"]
        assert "not sentiments" in documented["properties"]["label"]["description"]


def test_sentiment_labels_keep_the_seed_shape_exactly(classifier_client) -> None:
    answer = classifier_client.post("/onnx/infer", json={"input": "great"})
    assert answer.status_code == 200
    assert set(answer.json()) == {"sentiment", "score"}
