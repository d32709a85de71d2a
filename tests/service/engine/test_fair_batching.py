"""One tenant's long request cannot hold the model from another: passes are shared in turn, a pass at a time.

Ordering, not wall time, decides: a recording backend notes which texts each pass carried, so the verdict holds on
a machine whatever else it is doing.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from mlapi.engine.backends.onnx import OnnxBackend
from mlapi.engine.batching import MicroBatcher, infer_texts
from mlapi.engine.manifest import Manifest
from mlapi.engine.tokenization import TextEncoder
from mlapi.metrics import Metrics


class RecordingBackend:
    """Delegates to a real backend and records the rows (as token ids) of every pass."""

    def __init__(self, inner: OnnxBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.precision = inner.precision
        self.fingerprint = inner.fingerprint
        self.passes: list[int] = []

    def infer(self, batch):  # type: ignore[no-untyped-def]
        self.passes.append(batch.shape[0])
        return self.inner.infer(batch)


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
