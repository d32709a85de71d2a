"""One tenant's long request cannot hold the model from another: passes are shared in turn, a pass at a time.

Ordering, not wall time, decides: a recording backend notes which texts each pass carried, so the verdict holds on
a machine whatever else it is doing.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from mlapi.engine.backends.onnx import OnnxBackend
from mlapi.engine.batching import MicroBatcher, infer_texts
from mlapi.engine.manifest import Manifest
from mlapi.engine.tokenization import TextEncoder
from mlapi.errors import Overloaded, PayloadTooLarge
from mlapi.metrics import Metrics


class RecordingBackend:
    """Delegates to a real backend and records the rows (as token ids) of every pass."""

    def __init__(self, inner: OnnxBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.precision = inner.precision
        self.fingerprint = inner.fingerprint
        self.has_wide_lane = False
        self.passes: list[int] = []

    def infer(self, batch, wide: bool = False):  # type: ignore[no-untyped-def]
        self.passes.append(batch.shape[0])
        return self.inner.infer(batch, wide)


@pytest.fixture(scope="module")
def parts(classifier_dir):  # type: ignore[no-untyped-def]
    manifest = Manifest.load(classifier_dir)
    encoder = TextEncoder(classifier_dir / "tokenizer.json", manifest.max_length, manifest.input_names)
    return OnnxBackend.from_manifest(classifier_dir, manifest, threads=1, precision="fp32"), encoder


def test_a_short_request_is_not_queued_behind_the_rest_of_a_long_one(parts) -> None:
    backend, encoder = parts
    recording = RecordingBackend(backend)
    heavy = [f"heavy text number {i} goes on for a while" for i in range(320)]
    order: list[str] = []

    async def run() -> tuple[np.ndarray, np.ndarray]:
        batcher = MicroBatcher(recording, encoder, Metrics(), max_size=16, max_tokens=8192, wait_ms=0, max_queue=4096)
        batcher.start()
        try:
            long = asyncio.ensure_future(batcher.submit(heavy, tenant="key:heavy"))
            while not recording.passes:
                await asyncio.sleep(0.001)
            light = await batcher.submit(["just one short text"], tenant="key:light")
            order.append("light")
            done = await long
            order.append("heavy")
            return light, done
        finally:
            await batcher.close()

    light, long_rows = asyncio.run(run())
    assert order == ["light", "heavy"]
    passes_before_light = recording.passes  # all passes so far; the light text rode in one of the first few
    assert len(passes_before_light) >= 320 // 16
    assert np.array_equal(long_rows, infer_texts(backend, encoder, heavy, 16, 8192))
    assert light.shape[0] == 1


def test_tenants_share_each_pass_in_turn(parts) -> None:
    backend, encoder = parts
    recording = RecordingBackend(backend)
    finished: list[str] = []

    async def run() -> None:
        batcher = MicroBatcher(recording, encoder, Metrics(), max_size=8, max_tokens=8192, wait_ms=0, max_queue=4096)

        async def tenant(name: str, count: int) -> None:
            await batcher.submit([f"{name} {i}" for i in range(count)], tenant=name)
            finished.append(name)

        # Both queued before the worker starts: a flood of 64 and a request of 8 arriving after it.
        flood = asyncio.ensure_future(tenant("flood", 64))
        await asyncio.sleep(0)
        small = asyncio.ensure_future(tenant("small", 8))
        await asyncio.sleep(0)
        batcher.start()
        await asyncio.gather(flood, small)
        await batcher.close()

    asyncio.run(run())
    # Half of each 8-text pass is the small tenant's: it is done after 2 passes, the flood after 9.
    assert finished == ["small", "flood"]
    assert sum(recording.passes) == 72


class SlowBackend(RecordingBackend):
    """A real backend made slower by a fixed time per (padded) token, as a bigger model on a slower CPU would be."""

    def __init__(self, inner: OnnxBackend, seconds_per_token: float) -> None:
        super().__init__(inner)
        self.seconds_per_token = seconds_per_token

    def infer(self, batch, wide: bool = False):  # type: ignore[no-untyped-def]
        rows, cols = batch.shape
        time.sleep(self.seconds_per_token * rows * cols)
        return super().infer(batch, wide)


def test_a_request_that_would_outwait_its_deadline_is_refused_at_once(parts) -> None:
    """Past the deadline by estimate: 503 now, with a Retry-After covering the excess, not a timeout much later.

    At 0.2 ms a token or slower, 400 texts cut at the model's limit are at least 400 * max_length * 0.2 ms of work
    (over 10 s at 128 tokens) against a 2 s deadline, whatever the machine is doing; a one-text request from another
    tenant is still admitted and answered.
    """
    backend, encoder = parts
    slow = SlowBackend(backend, seconds_per_token=0.0002)
    long_text = "a sentence long enough to be cut at the model's limit " * 40
    metrics = Metrics()

    async def run() -> tuple[Overloaded, np.ndarray, int]:
        batcher = MicroBatcher(slow, encoder, metrics, max_size=8, max_tokens=8192, wait_ms=0, max_queue=4096,
                               deadline_seconds=2.0)
        batcher.start()
        try:
            for _ in range(2):  # the first pass is not measured; the second is
                await batcher.submit(["warm up"], tenant="key:light")
            passes_before = len(slow.passes)
            with pytest.raises(Overloaded) as refused:
                await batcher.submit([long_text] * 400, tenant="key:heavy")
            assert len(slow.passes) == passes_before  # refused before any of it ran
            assert batcher.pending == 0
            light = await batcher.submit(["one short text"], tenant="key:light")
            return refused.value, light, passes_before
        finally:
            await batcher.close()

    error, light, _ = asyncio.run(run())
    assert error.status_code == 503
    assert "past the 2 s deadline" in str(error)
    work = 400 * encoder.max_length * 0.0002
    assert error.retry_after is not None and error.retry_after >= work / 2 - 2  # the estimate is of the right size
    assert light.shape[0] == 1
    assert metrics.rejected.labels(reason="deadline")._value.get() == 1


def test_no_request_is_refused_by_estimate_before_the_speed_is_measured(parts) -> None:
    """The first pass pays one-time costs, so it sets no estimate: a fresh server admits and answers."""
    backend, encoder = parts
    long_text = "a sentence long enough to be cut at the model's limit " * 40

    async def run() -> np.ndarray:
        batcher = MicroBatcher(backend, encoder, Metrics(), max_size=8, max_tokens=8192, wait_ms=0, max_queue=4096,
                               deadline_seconds=0.001)
        batcher.start()
        try:
            return await batcher.submit([long_text] * 4, tenant="key:heavy")
        finally:
            await batcher.close()

    assert asyncio.run(run()).shape[0] == 4


def test_a_request_over_the_token_cap_is_refused_before_any_pass(parts) -> None:
    """1,000 texts cut at the model's limit fit every per-text limit; the token cap still refuses them (413)."""
    backend, encoder = parts
    recording = RecordingBackend(backend)
    long_text = "a sentence long enough to be cut at the model's limit " * 40
    metrics = Metrics()

    async def run() -> tuple[PayloadTooLarge, np.ndarray]:
        batcher = MicroBatcher(recording, encoder, metrics, max_size=8, max_tokens=8192, wait_ms=0, max_queue=4096,
                               max_request_tokens=1000 * encoder.max_length // 2)
        batcher.start()
        try:
            with pytest.raises(PayloadTooLarge) as refused:
                await batcher.submit([long_text] * 1000, tenant="key:heavy")
            assert recording.passes == [] and batcher.pending == 0
            within = await batcher.submit([long_text] * 16, tenant="key:heavy")
            return refused.value, within
        finally:
            await batcher.close()

    error, within = asyncio.run(run())
    assert error.status_code == 413
    assert "MLAPI_MAX_REQUEST_TOKENS" in str(error)
    assert within.shape[0] == 16
    assert metrics.rejected.labels(reason="too_many_tokens")._value.get() == 1


class FixedTimeBackend(RecordingBackend):
    """Every pass takes the same wall time, whatever it carries: one short text costs as much as a full pass."""

    def infer(self, batch, wide: bool = False):  # type: ignore[no-untyped-def]
        time.sleep(0.05)
        return super().infer(batch, wide)


def test_a_pass_of_one_short_text_does_not_make_the_estimate_jump(parts) -> None:
    backend, encoder = parts
    heavy = ["a long text that goes on and on " * 40] * 8

    async def run() -> tuple[float, float]:
        batcher = MicroBatcher(FixedTimeBackend(backend), encoder, Metrics(), max_size=8, max_tokens=1 << 20,
                               wait_ms=0, max_queue=4096, workers=2)
        batcher.start()
        try:
            for _ in range(6):
                await batcher.submit(heavy)
            before = batcher.estimated_wait(100_000, "key:other")
            await batcher.submit(["ok"])  # a pass of one short text, as slow as a full pass here
            after = batcher.estimated_wait(100_000, "key:other")
        finally:
            await batcher.close()
        assert before is not None and after is not None
        return before, after

    before, after = asyncio.run(run())
    # Averaged by cost, one tiny pass moves the estimate a little; averaged by pass it multiplied it about 20-fold
    # and refused a flood's next request as past its deadline.
    assert after < 2 * before, (before, after)


def test_each_worker_pass_carries_its_share_of_the_turn(parts) -> None:
    backend, encoder = parts
    recording = RecordingBackend(backend)
    texts = ["a long text that goes on and on " * 10] * 64  # about 80 tokens each by the batcher's estimate

    async def run() -> None:
        batcher = MicroBatcher(recording, encoder, Metrics(), max_size=64, max_tokens=8192, wait_ms=0,
                               max_queue=4096, workers=2, turn_tokens=640)
        batcher.start()
        try:
            await batcher.submit(texts)
        finally:
            await batcher.close()

    asyncio.run(run())
    # 640 turn tokens over two workers: passes of 320 estimated tokens, 4 texts plus the one that crosses the line.
    assert max(recording.passes) <= 5, recording.passes
    assert sum(recording.passes) == 64
