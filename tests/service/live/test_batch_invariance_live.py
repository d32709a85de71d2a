"""Through a real `mlapi serve` with the cache off: a text's answer is the same alone, in any request beside any
neighbours, and while other clients' requests share its passes."""

from __future__ import annotations

import json
import random
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from mlapi.build.quantize import PROBE_TEXTS

pytestmark = pytest.mark.slow

LONG = " ".join(["the longest neighbour in the batch keeps talking about things"] * 10)


def _predict(base: str, texts: list[str]) -> list[list[dict[str, object]]]:
    request = urllib.request.Request(f"{base}/predict", data=json.dumps({"text": texts}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["predictions"]


@pytest.fixture(scope="module", params=["minilm", "classifier"])
def server(request, minilm_dir, classifier_dir, live_server):  # type: ignore[no-untyped-def]
    # The bundled encoder is baked per row; the classifier with scales calibrated at bake.
    model_dir = minilm_dir if request.param == "minilm" else classifier_dir
    running = live_server(model_dir, MLAPI_CACHE_ENABLED="false", MLAPI_BATCH_WAIT_MS="2")
    yield running.base
    running.stop()


def test_each_text_answers_the_same_in_any_request_and_under_concurrency(server: str) -> None:
    texts = PROBE_TEXTS[:12]
    alone = {text: _predict(server, [text])[0] for text in texts}
    rng = random.Random(11)
    requests = [rng.sample([*texts, LONG, "ok", "no", "the film"], rng.randint(2, 8)) for _ in range(48)]
    requests += [[text, LONG] for text in texts] + [[LONG, *texts]]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda r: _predict(server, r), requests))
    moved = [(text, request) for request, answer in zip(requests, answers, strict=True)
             for text, got in zip(request, answer, strict=True) if text in alone and got != alone[text]]
    assert moved == []
