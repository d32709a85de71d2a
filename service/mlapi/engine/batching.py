"""Dynamic micro-batching: concurrent requests share forward passes, off the event loop, with a bounded queue.

A transformer pass on 32 short texts costs far less than 32 passes on one text each. Requests put their texts on
one queue; a single worker takes everything waiting (up to a pass budget), waits at most `wait_ms` for stragglers
when the queue is short, runs the passes in one inference thread (cut by length as `shaping` decides), and hands
each request back its own rows.
While a pass runs, the next batch gathers, so batch size grows with load by itself. Past `max_queue` waiting
texts, new requests are refused at once (503) rather than answered late.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from mlapi.engine.backends import Backend
from mlapi.engine.shaping import DEFAULT_PASS_OVERHEAD_TOKENS
from mlapi.engine.tokenization import TextEncoder
from mlapi.errors import InferenceFailed, NotReady, Overloaded
from mlapi.metrics import Metrics

log = logging.getLogger(__name__)


def infer_texts(
    backend: Backend,
    encoder: TextEncoder,
    texts: list[str],
    max_size: int,
    max_tokens: int,
    overhead_tokens: float = DEFAULT_PASS_OVERHEAD_TOKENS,
) -> np.ndarray:
    """Output rows for `texts`, in their order, computed in length-sorted, token-budgeted passes."""
    rows: np.ndarray | None = None
    for positions, batch in encoder.passes(texts, max_size, max_tokens, overhead_tokens):
        out = backend.infer(batch)
        if rows is None:
            rows = np.empty((len(texts), *out.shape[1:]), dtype=out.dtype)
        rows[positions] = out
    assert rows is not None, "infer_texts needs at least one text"
    return rows


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Coalesces the texts of concurrent requests into shared passes for one backend."""

    def __init__(
        self,
        backend: Backend,
        encoder: TextEncoder,
        metrics: Metrics,
        *,
        max_size: int,
        max_tokens: int,
        wait_ms: float,
        max_queue: int,
        workers: int = 1,
        overhead_tokens: float = DEFAULT_PASS_OVERHEAD_TOKENS,
    ) -> None:
        self.backend = backend
        self._encoder = encoder
        self._metrics = metrics
        self._max_size = max_size
        self._max_tokens = max_tokens
        self._overhead_tokens = overhead_tokens
        self._wait = wait_ms / 1000.0
        self._max_queue = max_queue
        self._jobs: list[_Job] = []
        self._pending = 0
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"infer-{backend.name}")
        self._slots = asyncio.Semaphore(workers)
        self._passes: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        metrics.prime_backend(backend.name, max_queue)

    @property
    def pending(self) -> int:
        """Texts waiting for a pass (not counting the pass running now)."""
        return self._pending

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._worker = asyncio.create_task(self._run(), name=f"batcher-{self.backend.name}")

    async def close(self) -> None:
        """Finish the passes already queued, then stop; later submissions are refused."""
        self._closed = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> np.ndarray:
        """Output rows for `texts`, in order; raises Overloaded when the queue is full."""
        if self._closed:
            self._metrics.rejected.labels(reason="shutting_down").inc()
            raise NotReady("the server is shutting down", retry_after=1)
        if self._pending + len(texts) > self._max_queue:
            self._metrics.rejected.labels(reason="queue_full").inc()
            raise Overloaded(
                f"{self._pending} texts are already waiting (MLAPI_MAX_QUEUE={self._max_queue}); retry shortly",
                retry_after=1,
            )
        job = _Job(texts, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._pending += len(texts)
        self._metrics.queue_depth.labels(backend=self.backend.name).set(self._pending)
        self._wakeup.set()
        return await job.future

    async def _run(self) -> None:
        while True:
            if not self._jobs:
                if self._closed:
                    await asyncio.gather(*self._passes)
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._slots.acquire()  # a free inference worker
            if self._pending < self._max_size and self._wait > 0 and not self._closed:
                # A short queue: give concurrent requests a moment to join this pass.
                await asyncio.sleep(self._wait)
            if not self._jobs:
                self._slots.release()
                continue
            task = asyncio.create_task(self._pass(self._take()))
            self._passes.add(task)
            task.add_done_callback(self._passes.discard)

    async def _pass(self, jobs: list[_Job]) -> None:
        """Run one pass for these jobs in the executor and hand each its rows; always frees the worker slot."""
        texts = [text for job in jobs for text in job.texts]
        started = time.perf_counter()
        try:
            rows = await asyncio.get_running_loop().run_in_executor(
                self._executor, infer_texts, self.backend, self._encoder, texts, self._max_size, self._max_tokens,
                self._overhead_tokens,
            )
        except Exception:  # a failed pass fails its requests, never the worker
            log.exception("inference failed for %d texts", len(texts))
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(InferenceFailed("inference failed; see the server log"))
            return
        finally:
            self._slots.release()
        self._metrics.observe_pass(self.backend.name, len(texts), time.perf_counter() - started)
        offset = 0
        for job in jobs:
            if not job.future.done():  # the client may have gone away
                job.future.set_result(rows[offset : offset + len(job.texts)])
            offset += len(job.texts)

    def _take(self) -> list[_Job]:
        """Whole jobs from the head of the queue, up to `max_size` texts (always at least one job)."""
        taken: list[_Job] = []
        count = 0
        while self._jobs and (not taken or count + len(self._jobs[0].texts) <= self._max_size):
            job = self._jobs.pop(0)
            taken.append(job)
            count += len(job.texts)
        self._pending -= count
        self._metrics.queue_depth.labels(backend=self.backend.name).set(self._pending)
        now = time.perf_counter()
        for job in taken:
            self._metrics.queue_wait.labels(backend=self.backend.name).observe(now - job.enqueued)
        return taken
