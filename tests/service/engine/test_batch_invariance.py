"""An answer is a function of its text and the model: bit-identical whatever shares its forward pass.

Each probe text is computed alone, then beside short and long neighbours, first and last, among many, twice in one
batch, and through the micro-batcher while other requests arrive at the same time. Every backend and precision:
ONNX int8 and fp32 must match bit for bit; torch (fp32 kernels that pick their order by shape) to 1e-6. ONNX runs as
the server runs it on two CPUs: two single-threaded workers, and a lone text on both threads, so an answer must not
move with the number of threads that computed it either.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import numpy as np
import pytest
from mlapi.build.quantize import PROBE_TEXTS
from mlapi.engine.backends import load_backend
from mlapi.engine.batching import MicroBatcher
from mlapi.engine.manifest import Manifest
from mlapi.engine.tokenization import TextEncoder
from mlapi.metrics import Metrics

LONG = " ".join(["the longest neighbour in the batch keeps talking about things"] * 10)
TEXTS = PROBE_TEXTS[:16]


def _batches(text: str) -> list[list[str]]:
    others = [t for t in PROBE_TEXTS if t != text]
    return [[text, "ok"], ["ok", "no", text], [text, LONG], [LONG, text], [*others[:12], text, *others[12:24]],
            [text, text, "the film"]]


def _setup(model_dir: Path, backend: str, precision: str):  # type: ignore[no-untyped-def]
    manifest = Manifest.load(model_dir)
    encoder = TextEncoder(model_dir / "tokenizer.json", manifest.max_length, manifest.input_names)
    return encoder, load_backend(backend, model_dir, manifest, threads=2, precision=precision, workers=2)


@pytest.fixture(params=["minilm", "classifier"])
def model_dir(request: pytest.FixtureRequest, minilm_dir: Path, classifier_dir: Path) -> Path:
    return minilm_dir if request.param == "minilm" else classifier_dir


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_onnx_answers_do_not_depend_on_the_batch(model_dir: Path, precision: str) -> None:
    assert Manifest.load(model_dir).onnx_int8, "bake must keep an int8 graph for these models"
    encoder, backend = _setup(model_dir, "onnx", precision)
    moved = []
    assert backend.has_wide_lane  # type: ignore[attr-defined]
    for text in TEXTS:
        alone = backend.infer(encoder.pad(encoder.encode([text])), wide=True)[0]
        for batch in [[text], *_batches(text)]:
            rows = backend.infer(encoder.pad(encoder.encode(batch)))
            for index in (i for i, t in enumerate(batch) if t == text):
                if not np.array_equal(rows[index], alone):
                    moved.append((text, batch.index(text), len(batch), float(np.abs(rows[index] - alone).max())))
    assert moved == []


def test_torch_answers_do_not_depend_on_the_batch(model_dir: Path) -> None:
    encoder, backend = _setup(model_dir, "torch", "fp32")
    for text in TEXTS[:8]:
        alone = backend.infer(encoder.pad(encoder.encode([text])))[0]
        for batch in _batches(text):
            rows = backend.infer(encoder.pad(encoder.encode(batch)))
            assert np.abs(rows[batch.index(text)] - alone).max() <= 1e-6, (text, len(batch))
            assert rows[batch.index(text)].argmax() == alone.argmax()


def test_batcher_under_concurrency_answers_each_text_as_alone(model_dir: Path) -> None:
    encoder, backend = _setup(model_dir, "onnx", "auto")
    alone = {text: backend.infer(encoder.pad(encoder.encode([text])), wide=True)[0] for text in TEXTS}
    rng = random.Random(7)
    requests = [rng.sample([*TEXTS, LONG, "ok", "no"], rng.randint(1, 6)) for _ in range(60)]

    async def run() -> list[np.ndarray]:
        batcher = MicroBatcher(backend, encoder, Metrics(), max_size=32, max_tokens=8192, wait_ms=2, max_queue=1000,
                               workers=backend.workers)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(r) for r in requests))
        finally:
            await batcher.close()

    for request, rows in zip(requests, asyncio.run(run()), strict=True):
        for text, row in zip(request, rows, strict=True):
            if text in alone:
                assert np.array_equal(row, alone[text]), text
