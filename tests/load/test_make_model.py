"""The benchmark model costs what DistilBERT-base costs and loads like any Hugging Face classifier, offline."""

from __future__ import annotations

import hashlib
from pathlib import Path

import make_model
import pytest


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model.make_model(tmp_path_factory.mktemp("model"))


def test_config_is_distilbert_base_with_two_sentiment_labels(model_dir: Path) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    assert (config.model_type, config.n_layers, config.dim, config.n_heads) == ("distilbert", 6, 768, 12)
    assert config.vocab_size == 30522
    assert config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}


def test_weights_are_safetensors_of_distilbert_base_size(model_dir: Path) -> None:
    import bench

    params = bench.safetensors_params(model_dir / "model.safetensors")
    assert 66_000_000 < params < 68_000_000


def test_loads_as_a_classifier_and_tokenizes_without_padding(model_dir: Path) -> None:
    from transformers import AutoTokenizer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer("hello world")["input_ids"] == [101, 7592, 2088, 102]
    classify = pipeline("text-classification", model=str(model_dir), top_k=None)
    scores = classify(["a fine film"])[0]
    assert {s["label"] for s in scores} == {"NEGATIVE", "POSITIVE"}
    assert abs(sum(s["score"] for s in scores) - 1.0) < 1e-5


@pytest.mark.slow
def test_same_seed_writes_identical_weights(model_dir: Path, tmp_path: Path) -> None:
    again = make_model.make_model(tmp_path / "again")

    def digest(path: Path) -> str:
        return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()

    assert digest(again) == digest(model_dir)
