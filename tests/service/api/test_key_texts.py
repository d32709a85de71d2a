"""Texts per API key, computed or cached: the series the cost-per-1,000-predictions rule divides node time by."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from mlapi.auth.keys import generate_key, key_line
from mlapi.metrics import MAX_KEY_LABELS, OTHER_KEY, Metrics


def _sample(client: TestClient, key: str, source: str) -> float:
    line_start = f'mlapi_key_texts_total{{key="{key}",source="{source}"}} '
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in /metrics")


def test_texts_are_counted_per_key_as_computed_or_cached(make_client, minilm_dir, redis_server,
                                                         tmp_path: Path) -> None:
    alice, bob = generate_key(), generate_key()
    keys = tmp_path / "keys"
    keys.write_text(f"{key_line('alice', alice)}\n{key_line('bob', bob)}\n")
    with make_client(minilm_dir, api_keys_file=keys, redis_url=redis_server.url) as client:
        for name in ("alice", "bob", OTHER_KEY):  # the keys file's names read 0 before any request
            assert (_sample(client, name, "computed"), _sample(client, name, "cached")) == (0, 0)
        as_alice = {"X-API-Key": alice}
        assert client.post("/predict", json={"text": ["key texts one", "key texts two"]}, headers=as_alice).is_success
        assert client.post("/predict", json={"text": ["key texts one", "key texts three"]},
                           headers=as_alice).is_success
        assert client.post("/query", json={"sentence": "key texts one", "labels": ["x", "y"]},
                           headers={"X-API-Key": bob}).is_success
        assert client.post("/predict", json={"text": [1]}, headers=as_alice).status_code == 422
        assert (_sample(client, "alice", "computed"), _sample(client, "alice", "cached")) == (3, 1)
        # /query embeds the sentence and each label; none of them is a /predict answer, so all are computed.
        assert (_sample(client, "bob", "computed"), _sample(client, "bob", "cached")) == (3, 0)
        assert (_sample(client, OTHER_KEY, "computed"), _sample(client, OTHER_KEY, "cached")) == (0, 0)


def test_without_keys_every_text_counts_under_other(minilm_client) -> None:
    assert minilm_client.post("/predict", json={"text": ["no key here"]}).is_success
    assert _sample(minilm_client, OTHER_KEY, "computed") + _sample(minilm_client, OTHER_KEY, "cached") == 1


def test_key_labels_are_bounded_and_the_rest_fold_into_other() -> None:
    metrics = Metrics()
    metrics.prime(path_prefix="")
    names = [f"client-{i}" for i in range(MAX_KEY_LABELS + 5)]
    metrics.prime_keys(names)
    for name in names:
        metrics.count_key_texts(name, [True, False])
    labelled = {s.labels["key"] for m in metrics.key_texts.collect() for s in m.samples if s.name.endswith("_total")}
    assert labelled == {OTHER_KEY, *names[:MAX_KEY_LABELS]}
    assert metrics.key_texts.labels(key=OTHER_KEY, source="computed")._value.get() == 5
    assert metrics.key_texts.labels(key=names[0], source="cached")._value.get() == 1
