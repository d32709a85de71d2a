"""Micro-batching: every request gets its own rows in order under concurrency, passes are shared, and a full
queue answers 503 with Retry-After."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from mlapi.engine.backends.onnx import OnnxBackend
from mlapi.engine.batching import MicroBatcher, infer_texts
from mlapi.engine.manifest import Manifest
from mlapi.engine.tokenization import TextEncoder
from mlapi.errors import Overloaded
from mlapi.metrics import Metrics


@pytest.fixture(scope="module")
def engine_parts(classifier_dir):  # type: ignore[no-untyped-def]
    manifest = Manifest.load(classifier_dir)
    encoder = TextEncoder(classifier_dir / "tokenizer.json", manifest.max_length, manifest.input_names)
    backend = OnnxBackend.from_manifest(classifier_dir, manifest, threads=1, precision="fp32")
    return backend, encoder


def _texts(n: int) -> list[str]:
    rng = np.random.default_rng(7)
    words = ["good", "bad", "movie", "plot", "actor", "scene", "fun", "awful", "great", "boring", "long", "short"]
    return [" ".join(rng.choice(words, size=int(rng.integers(1, 60)))) for _ in range(n)]


def test_passes_respect_size_and_token_budget(engine_parts) -> None:
    _, encoder = engine_parts
    texts = _texts(40)
    seen: list[int] = []
    for positions, batch in encoder.passes(texts, max_size=8, max_tokens=256):
        rows, width = batch.shape
        assert rows <= 8
        assert rows == 1 or rows * width <= 256
        assert width == max(len(encoder.encode([texts[i]])[0].ids) for i in positions)
        seen.extend(positions)
    assert sorted(seen) == list(range(40))


def test_infer_texts_matches_one_text_at_a_time(engine_parts) -> None:
    backend, encoder = engine_parts
    texts = _texts(25)
    together = infer_texts(backend, encoder, texts, max_size=8, max_tokens=512)
    alone = np.concatenate([infer_texts(backend, encoder, [t], 1, 512) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_concurrent_requests_get_their_own_rows_in_order(engine_parts) -> None:
    backend, encoder = engine_parts
    requests = [_texts(40)[i : i + (i % 4) + 1] for i in range(30)]
    expected = [infer_texts(backend, encoder, r, 1, 10_000) for r in requests]
    metrics = Metrics()

    async def run() -> list[np.ndarray]:
        batcher = MicroBatcher(backend, encoder, metrics, max_size=16, max_tokens=4096, wait_ms=5, max_queue=1000)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(r) for r in requests))
        finally:
            await batcher.close()

    results = asyncio.run(run())
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)
    passes = metrics.batch_size.labels(backend="onnx")._sum.get()  # texts seen
    count = sum(s.value for s in metrics.registry.collect() for s in s.samples
                if s.name == "mlapi_batch_texts_count")
    assert passes == sum(len(r) for r in requests)
    assert count < len(requests)  # requests shared passes


class GatedBackend:
    """The real backend behind a gate the test opens, to hold a pass in flight deterministically."""

    def __init__(self, inner: OnnxBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.fingerprint = inner.fingerprint
        self.entered = threading.Event()
        self.gate = threading.Event()

    def infer(self, batch):  # type: ignore[no-untyped-def]
        self.entered.set()
        self.gate.wait(timeout=30)
        return self.inner.infer(batch)


def test_full_queue_refuses_with_overloaded(engine_parts) -> None:
    backend, encoder = engine_parts
    gated = GatedBackend(backend)

    async def run() -> None:
        batcher = MicroBatcher(gated, encoder, Metrics(), max_size=4, max_tokens=4096, wait_ms=0, max_queue=4)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(["in flight"]))
        await asyncio.to_thread(gated.entered.wait, 10)
        queued = asyncio.ensure_future(batcher.submit(["a", "b", "c", "d"]))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as refused:
            await batcher.submit(["one too many"])
        assert refused.value.retry_after == 1
        gated.gate.set()
        assert len(await first) == 1
        assert len(await queued) == 4
        await batcher.close()

    asyncio.run(run())


def test_http_full_queue_is_503_with_retry_after(make_client, classifier_dir) -> None:
    small_queue = {"max_batch": 4, "max_queue": 4, "max_labels": 3}
    with make_client(classifier_dir, cache_enabled=False, batch_wait_ms=0, **small_queue) as client:
        engine = client.app.state.predictor.engines["onnx"]
        gated = GatedBackend(engine.batcher.backend)
        engine.batcher.backend = gated
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(client.post, "/predict", json={"text": ["held"]})
            assert gated.entered.wait(10)
            second = pool.submit(client.post, "/predict", json={"text": ["w", "x", "y", "z"]})
            deadline = 50
            while engine.batcher.pending < 4 and deadline:
                threading.Event().wait(0.02)
                deadline -= 1
            refused = client.post("/predict", json={"text": ["no room"]})
            gated.gate.set()
            assert first.result().status_code == 200
            assert second.result().status_code == 200
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error_type"] == "overloaded"
        assert 'mlapi_rejected_total{reason="queue_full"} 1.0' in client.get("/metrics").text


def test_failed_pass_fails_its_requests_not_the_server(make_client, classifier_dir) -> None:
    with make_client(classifier_dir, cache_enabled=False) as client:
        engine = client.app.state.predictor.engines["onnx"]
        real = engine.batcher.backend

        class Exploding:
            name, fingerprint = real.name, real.fingerprint

            def infer(self, batch):  # type: ignore[no-untyped-def]
                raise RuntimeError("simulated inference failure")

        engine.batcher.backend = Exploding()
        failed = client.post("/predict", json={"text": ["boom"]})
        engine.batcher.backend = real
        assert failed.status_code == 500
        message = "inference failed; see the server log"
        assert failed.json() == {"detail": message, "error": message, "error_type": "inference_failed"}
        assert client.post("/predict", json={"text": ["fine again"]}).status_code == 200


def test_identical_concurrent_requests_compute_each_text_once(make_client, classifier_dir) -> None:
    with make_client(classifier_dir, batch_wait_ms=0) as client:
        engine = client.app.state.predictor.engines["onnx"]
        gated = GatedBackend(engine.batcher.backend)
        engine.batcher.backend = gated
        body = {"text": ["same one", "same two", "same three"]}
        with ThreadPoolExecutor(8) as pool:
            first = pool.submit(client.post, "/predict", json=body)
            assert gated.entered.wait(10)
            rest = [pool.submit(client.post, "/predict", json=body) for _ in range(7)]
            deadline = 100
            metrics = client.app.state.metrics
            while metrics.coalesced.labels(op="predict")._value.get() < 21 and deadline:
                threading.Event().wait(0.02)
                deadline -= 1
            gated.gate.set()
            answers = [first.result()] + [f.result() for f in rest]
        assert {a.status_code for a in answers} == {200}
        assert len({a.text for a in answers}) == 1
        text = client.get("/metrics").text
        assert 'mlapi_coalesced_texts_total{op="predict"} 21.0' in text
        # The warm-up pass plus one pass of three texts: nothing computed twice.
        assert 'mlapi_batch_texts_sum{backend="onnx"} 4.0' in text


def test_two_workers_run_two_passes_at_once(engine_parts) -> None:
    backend, encoder = engine_parts

    class Counting:
        """The real backend, recording how many passes are inside it at once."""

        name, fingerprint, workers = backend.name, backend.fingerprint, 2

        def __init__(self) -> None:
            self.inside = 0
            self.most = 0
            self.lock = threading.Lock()
            self.both_in = threading.Event()

        def infer(self, batch):  # type: ignore[no-untyped-def]
            with self.lock:
                self.inside += 1
                self.most = max(self.most, self.inside)
                if self.inside == 2:
                    self.both_in.set()
            self.both_in.wait(timeout=5)
            try:
                return backend.infer(batch)
            finally:
                with self.lock:
                    self.inside -= 1

    counting = Counting()

    async def run() -> list[np.ndarray]:
        batcher = MicroBatcher(counting, encoder, Metrics(), max_size=1, max_tokens=4096, wait_ms=0,
                               max_queue=10, workers=2)
        batcher.start()
        try:
            return await asyncio.gather(batcher.submit(["first text"]), batcher.submit(["second text"]))
        finally:
            await batcher.close()

    first, second = asyncio.run(run())
    assert counting.most == 2
    np.testing.assert_allclose(first, infer_texts(backend, encoder, ["first text"], 1, 4096), atol=1e-4)
    np.testing.assert_allclose(second, infer_texts(backend, encoder, ["second text"], 1, 4096), atol=1e-4)


def test_onnx_backend_with_two_sessions_matches_one(classifier_dir) -> None:
    manifest = Manifest.load(classifier_dir)
    encoder = TextEncoder(classifier_dir / "tokenizer.json", manifest.max_length, manifest.input_names)
    one = OnnxBackend.from_manifest(classifier_dir, manifest, threads=2, workers=1)
    two = OnnxBackend.from_manifest(classifier_dir, manifest, threads=2, workers=2)
    texts = _texts(10)
    np.testing.assert_allclose(infer_texts(one, encoder, texts, 4, 4096), infer_texts(two, encoder, texts, 4, 4096),
                               atol=1e-5)


def test_batcher_answers_every_request_once_within_the_token_budget(engine_parts) -> None:
    backend, encoder = engine_parts
    budget = 96

    class Recording:
        """The real backend, recording the shape of every pass it runs."""

        name, fingerprint, workers = backend.name, backend.fingerprint, 1

        def __init__(self) -> None:
            self.shapes: list[tuple[int, int]] = []

        def infer(self, batch):  # type: ignore[no-untyped-def]
            self.shapes.append(batch.shape)
            return backend.infer(batch)

    recording = Recording()
    pool = _texts(60)
    requests = [pool[i : i + (i % 5) + 1] for i in range(0, 55, 3)]
    expected = [infer_texts(backend, encoder, r, 1, 10_000) for r in requests]

    async def run() -> list[np.ndarray]:
        batcher = MicroBatcher(recording, encoder, Metrics(), max_size=16, max_tokens=budget, wait_ms=2,
                               max_queue=1000, overhead_tokens=4.0)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(r) for r in requests))
        finally:
            await batcher.close()

    results = asyncio.run(run())
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert sum(rows for rows, _ in recording.shapes) == sum(len(r) for r in requests)  # each text computed once
    assert all(rows == 1 or rows * width <= budget for rows, width in recording.shapes)
