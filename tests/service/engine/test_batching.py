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
        self.has_wide_lane = False
        self.entered = threading.Event()
        self.gate = threading.Event()

    def infer(self, batch, wide: bool = False):  # type: ignore[no-untyped-def]
        self.entered.set()
        self.gate.wait(timeout=30)
        return self.inner.infer(batch, wide)


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
    # One inference worker, so that the pass held at the gate holds all inference and the rest must queue.
    small_queue = {"max_batch": 4, "max_queue": 4, "max_labels": 3, "inference_workers": 1}
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
            name, fingerprint, has_wide_lane = real.name, real.fingerprint, False

            def infer(self, batch, wide: bool = False):  # type: ignore[no-untyped-def]
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

        name, fingerprint, workers, has_wide_lane = backend.name, backend.fingerprint, 2, False

        def __init__(self) -> None:
            self.inside = 0
            self.most = 0
            self.lock = threading.Lock()
            self.both_in = threading.Event()

        def infer(self, batch, wide: bool = False):  # type: ignore[no-untyped-def]
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
    import gc

    manifest = Manifest.load(classifier_dir)
    encoder = TextEncoder(classifier_dir / "tokenizer.json", manifest.max_length, manifest.input_names)
    one = OnnxBackend.from_manifest(classifier_dir, manifest, threads=2, workers=1)
    two = OnnxBackend.from_manifest(classifier_dir, manifest, threads=2, workers=2)  # 3 sessions, 1 copy of weights
    gc.collect()  # the shared weights must outlive the call that read them
    texts = _texts(10)
    expected = infer_texts(one, encoder, texts, 4, 4096)
    np.testing.assert_array_equal(infer_texts(two, encoder, texts, 4, 4096), expected)
    np.testing.assert_array_equal(infer_texts(two, encoder, texts, 4, 4096, wide=True), expected)


def test_batcher_answers_every_request_once_within_the_token_budget(engine_parts) -> None:
    backend, encoder = engine_parts
    budget = 96

    class Recording:
        """The real backend, recording the shape of every pass it runs."""

        name, fingerprint, workers, has_wide_lane = backend.name, backend.fingerprint, 1, False

        def __init__(self) -> None:
            self.shapes: list[tuple[int, int]] = []

        def infer(self, batch, wide: bool = False):  # type: ignore[no-untyped-def]
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


class Lanes:
    """The real backend with two workers and a wide lane, recording each pass: (texts, wide, passes inside)."""

    def __init__(self, inner: OnnxBackend, hold: threading.Event | None = None) -> None:
        self.inner = inner
        self.name, self.fingerprint, self.workers, self.has_wide_lane = inner.name, inner.fingerprint, 2, True
        self.passes: list[tuple[int, bool, int]] = []
        self.inside = 0
        self.lock = threading.Lock()
        self.hold = hold
        self.entered = threading.Event()

    def infer(self, batch, wide: bool = False):  # type: ignore[no-untyped-def]
        with self.lock:
            self.inside += 1
            self.passes.append((batch.shape[0], wide, self.inside))
            gated = self.hold is not None and len(self.passes) == 1  # only the first pass waits at the gate
        self.entered.set()
        if gated and self.hold is not None:
            self.hold.wait(timeout=30)
        try:
            return self.inner.infer(batch, wide)
        finally:
            with self.lock:
                self.inside -= 1


def _run_batcher(backend, encoder, coroutine):  # type: ignore[no-untyped-def]
    async def run():  # type: ignore[no-untyped-def]
        batcher = MicroBatcher(backend, encoder, Metrics(), max_size=32, max_tokens=8192, wait_ms=0, max_queue=1000,
                               workers=2, overhead_tokens=1000.0)  # one pass per share: no cut by length
        batcher.start()
        try:
            return await coroutine(batcher)
        finally:
            await batcher.close()

    return asyncio.run(run())


def test_idle_workers_share_the_waiting_texts(engine_parts) -> None:
    backend, encoder = engine_parts
    lanes = Lanes(backend)
    texts = [f"text number {i}" for i in range(32)]

    async def burst(batcher):  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(batcher.submit([t]) for t in texts))

    rows = _run_batcher(lanes, encoder, burst)
    # 32 texts at once on two idle workers: two passes of 16, not one of 32 beside an idle worker.
    assert sorted(n for n, _, _ in lanes.passes) == [16, 16]
    assert not any(wide for _, wide, _ in lanes.passes)
    for text, row in zip(texts, rows, strict=True):
        np.testing.assert_array_equal(row, infer_texts(backend, encoder, [text], 1, 4096))


def test_a_lone_text_runs_wide_only_while_every_worker_is_idle(engine_parts) -> None:
    backend, encoder = engine_parts

    async def alone_then_two(batcher):  # type: ignore[no-untyped-def]
        await batcher.submit(["just me"])
        await asyncio.gather(batcher.submit(["one of two"]), batcher.submit(["two of two"]))

    lanes = Lanes(backend)
    _run_batcher(lanes, encoder, alone_then_two)
    # Alone: every thread. Two texts on two idle workers: a pass each, side by side.
    assert lanes.passes[0] == (1, True, 1)
    assert sorted((n, wide) for n, wide, _ in lanes.passes[1:]) == [(1, False), (1, False)]

    hold = threading.Event()
    held = Lanes(backend, hold)

    async def lone_beside_a_running_pass(batcher):  # type: ignore[no-untyped-def]
        pair = asyncio.ensure_future(batcher.submit(["held at the gate", "goes through"]))
        while len(held.passes) < 2 or held.inside > 1:  # one pass held, the other done
            await asyncio.sleep(0.01)
        late = await batcher.submit(["arrives while a worker is busy"])  # answered while the first is still held
        still_held = not pair.done()
        hold.set()
        await pair
        return late, still_held

    _, still_held = _run_batcher(held, encoder, lone_beside_a_running_pass)
    assert still_held
    assert [(n, wide) for n, wide, _ in held.passes] == [(1, False), (1, False), (1, False)]
