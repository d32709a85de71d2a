"""Dynamic micro-batching: concurrent requests share forward passes, off the event loop, fairly, with a bounded queue.

A transformer pass on 32 short texts costs far less than 32 passes on one text each. Requests put their texts on
a queue per tenant (API key or client address); the worker fills each pass with up to `max_size` texts taken in
turn from every tenant that has texts waiting (an equal share each, the rest to whoever still has some), waits at
most `wait_ms` for stragglers when the queue is short, runs it in an inference thread (cut by length as `shaping`
decides), and hands each request its rows once all of them are done. With several inference workers, the texts
waiting are shared out over the idle ones (two passes of 16 side by side end sooner than one of 32 while the other
worker waits), and a lone text while every worker is idle runs on all their threads at once. A request of a
thousand texts is so computed a pass at a time, and a short request from anyone else joins the next pass instead of
waiting for all of it.
While a pass runs, the next batch gathers, so batch size grows with load by itself. Past `max_queue` waiting
texts, new requests are refused at once (503) rather than answered late, and so is a request whose estimated wait
(its own texts and its tenant's earlier ones, plus each other tenant's share of the passes meanwhile, at the speed
measured on recent passes, a text costing about its characters up to the truncation length) exceeds the request
deadline: an honest `Retry-After` now beats a 503 `timeout` after 30 s. A request estimated at more than
`max_request_tokens` tokens still to compute is refused (413) before it takes any pass.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from mlapi.engine.backends import Backend
from mlapi.engine.shaping import DEFAULT_PASS_OVERHEAD_TOKENS
from mlapi.engine.tokenization import TextEncoder
from mlapi.errors import InferenceFailed, NotReady, Overloaded, PayloadTooLarge
from mlapi.metrics import Metrics

log = logging.getLogger(__name__)


def infer_texts(
    backend: Backend,
    encoder: TextEncoder,
    texts: list[str],
    max_size: int,
    max_tokens: int,
    overhead_tokens: float = DEFAULT_PASS_OVERHEAD_TOKENS,
    wide: bool = False,
) -> np.ndarray:
    """Output rows for `texts`, in their order, computed in length-sorted, token-budgeted passes.

    `wide` runs them on all of the backend's threads at once (the caller holds every inference worker).
    """
    rows: np.ndarray | None = None
    for positions, batch in encoder.passes(texts, max_size, max_tokens, overhead_tokens):
        out = backend.infer(batch, wide=wide)
        if rows is None:
            rows = np.empty((len(texts), *out.shape[1:]), dtype=out.dtype)
        rows[positions] = out
    assert rows is not None, "infer_texts needs at least one text"
    return rows


@dataclass
class _Job:
    """One request's texts, sent to passes a slice at a time; its future resolves when every row is in."""

    texts: list[str]
    future: asyncio.Future[np.ndarray]
    tenant: str = ""
    cost: list[int] = field(default_factory=lambda: [0])  # running total of the texts' costs, from 0
    enqueued: float = field(default_factory=time.perf_counter)
    sent: int = 0  # texts already given to a pass
    done: int = 0  # texts whose rows are in
    rows: np.ndarray | None = None

    @property
    def waiting(self) -> int:
        """Texts not yet given to a pass."""
        return len(self.texts) - self.sent

    @property
    def waiting_cost(self) -> int:
        """Cost of the texts not yet given to a pass."""
        return self.cost[-1] - self.cost[self.sent]


@dataclass
class _Slice:
    job: _Job
    start: int
    end: int


def _texts(slices: list[_Slice]) -> int:
    return sum(s.end - s.start for s in slices)


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
        turn_tokens: int | None = None,
        deadline_seconds: float | None = None,
        max_request_tokens: int | None = None,
    ) -> None:
        self.backend = backend
        self._deadline = deadline_seconds
        self._max_request_tokens = max_request_tokens
        self._workers = workers
        self._seconds_per_cost: float | None = None  # moving average over passes after the first, per worker
        self._recent_seconds = 0.0  # decaying sums behind it
        self._recent_cost = 0.0
        self._passes_run = 0
        # A text costs about its characters up to the truncation length (~4 per token) plus a fixed share of a row.
        self._max_text_cost = 4 * encoder.max_length
        self._encoder = encoder
        self._metrics = metrics
        self._max_size = max_size
        self._max_tokens = max_tokens
        # Estimated tokens one scheduled pass may carry: how long any tenant waits for the pass in front of it. Each
        # worker's pass gets its share, so a turn takes about the same time however the threads are split.
        self._turn_tokens = max(16, (turn_tokens or max_tokens) // workers)
        self._overhead_tokens = overhead_tokens
        self._wait = wait_ms / 1000.0
        self._max_queue = max_queue
        self._queues: OrderedDict[str, deque[_Job]] = OrderedDict()  # per tenant, in turn order
        self._pending = 0
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"infer-{backend.name}")
        self._slots = asyncio.Semaphore(workers)
        self._idle = workers  # workers not running a pass
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

    async def submit(self, texts: list[str], tenant: str = "", *, capped: bool = True) -> np.ndarray:
        """Output rows for `texts`, in order; raises Overloaded when the queue is full or the wait too long.

        `tenant` (an API key's or a client address's name) gets its share of every pass while it has texts waiting.
        `capped=False` (the server's own start-up work) skips the per-request token cap.
        """
        if self._closed:
            self._metrics.rejected.labels(reason="shutting_down").inc()
            raise NotReady("the server is shutting down", retry_after=1)
        if self._pending + len(texts) > self._max_queue:
            self._metrics.rejected.labels(reason="queue_full").inc()
            raise Overloaded(
                f"{self._pending} texts are already waiting (MLAPI_MAX_QUEUE={self._max_queue}); retry shortly",
                retry_after=1,
            )
        cost = [0, *np.cumsum([self.text_cost(text) for text in texts]).tolist()]
        tokens = cost[-1] // 4
        if capped and self._max_request_tokens is not None and tokens > self._max_request_tokens:
            self._metrics.rejected.labels(reason="too_many_tokens").inc()
            raise PayloadTooLarge(
                f"this request is about {tokens} tokens to compute, over MLAPI_MAX_REQUEST_TOKENS "
                f"({self._max_request_tokens}); send fewer or shorter texts"
            )
        wait = self.estimated_wait(cost[-1], tenant)
        if self._deadline is not None and wait is not None and wait > self._deadline:
            self._metrics.rejected.labels(reason="deadline").inc()
            raise Overloaded(
                f"this request would wait about {wait:.1f} s, past the {self._deadline:g} s deadline "
                "(MLAPI_REQUEST_TIMEOUT_SECONDS); retry later or send fewer texts",
                retry_after=max(1, math.ceil(wait - self._deadline)),
            )
        job = _Job(texts, asyncio.get_running_loop().create_future(), tenant, cost)
        self._queues.setdefault(tenant, deque()).append(job)
        self._pending += len(texts)
        self._metrics.queue_depth.labels(backend=self.backend.name).set(self._pending)
        self._wakeup.set()
        return await job.future

    def text_cost(self, text: str) -> int:
        """A text's share of a pass, in units the measured speed is kept in (characters, capped, plus a row)."""
        return min(len(text), self._max_text_cost) + 16  # four characters a token, plus the row's own tokens

    def estimated_wait(self, cost: int, tenant: str) -> float | None:
        """Seconds until a new request costing `cost` from `tenant` would be answered; None until measured.

        Passes are shared in turn, so the request is done once its tenant's `own` work (earlier requests first)
        has run, and meanwhile every other tenant runs at most as much of its own: `own + sum(min(theirs, own))`.
        """
        if self._seconds_per_cost is None:
            return None
        own = cost + sum(job.waiting_cost for job in self._queues.get(tenant, ()))
        others = sum(
            min(own, sum(job.waiting_cost for job in queue)) for name, queue in self._queues.items() if name != tenant
        )
        return (own + others) * self._seconds_per_cost

    async def _run(self) -> None:
        while True:
            if not self._queues:
                if self._closed:
                    await asyncio.gather(*self._passes)
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._slots.acquire()  # a free inference worker
            self._idle -= 1
            if self._pending < self._max_size and self._wait > 0 and not self._closed:
                # A short queue: give concurrent requests a moment to join this pass.
                await asyncio.sleep(self._wait)
            room = min(self._max_size, -(-self._pending // (self._idle + 1)))
            taken = self._take(max(1, room))
            if not taken:
                self._idle += 1
                self._slots.release()
                continue
            lanes = 1
            alone = self._pending == 0 and self._idle == self._workers - 1 > 0 and _texts(taken) == 1
            if alone and self.backend.has_wide_lane:
                for _ in range(self._idle):
                    await self._slots.acquire()
                lanes, self._idle = self._workers, 0
            task = asyncio.create_task(self._pass(taken, lanes))
            self._passes.add(task)
            task.add_done_callback(self._passes.discard)

    async def _pass(self, slices: list[_Slice], lanes: int = 1) -> None:
        """Run one pass for these slices on `lanes` workers and hand each its rows; always frees the workers."""
        texts = [text for s in slices for text in s.job.texts[s.start : s.end]]
        started = time.perf_counter()
        try:
            rows = await asyncio.get_running_loop().run_in_executor(
                self._executor, infer_texts, self.backend, self._encoder, texts, self._max_size, self._max_tokens,
                self._overhead_tokens, lanes > 1,
            )
        except Exception:  # a failed pass fails its requests, never the worker
            log.exception("inference failed for %d texts", len(texts))
            for s in slices:
                if not s.job.future.done():
                    s.job.future.set_exception(InferenceFailed("inference failed; see the server log"))
            return
        finally:
            self._idle += lanes
            for _ in range(lanes):
                self._slots.release()
        seconds = time.perf_counter() - started
        self._metrics.observe_pass(self.backend.name, len(texts), seconds)
        self._passes_run += 1
        if self._passes_run > 1:  # the first pass also pays one-time costs (allocation, kernel choice)
            # Weighted by cost: a pass of one short text (mostly fixed cost) must not make a flood look slower.
            self._recent_seconds = 0.8 * self._recent_seconds + seconds * lanes / self._workers
            self._recent_cost = 0.8 * self._recent_cost + sum(self.text_cost(text) for text in texts)
            self._seconds_per_cost = self._recent_seconds / self._recent_cost
        offset = 0
        for s in slices:
            job, count = s.job, s.end - s.start
            if job.rows is None:
                job.rows = np.empty((len(job.texts), *rows.shape[1:]), dtype=rows.dtype)
            job.rows[s.start : s.end] = rows[offset : offset + count]
            job.done += count
            offset += count
            if job.done == len(job.texts) and not job.future.done():  # the client may have gone away
                job.future.set_result(job.rows)

    def _take(self, room: int) -> list[_Slice]:
        """Up to `room` texts for one pass, an equal share from each tenant in turn, the rest to whoever has more.

        A tenant's requests are served in order; the tenant that went first this pass goes last in the next.
        """
        slices: list[_Slice] = []
        tokens_left = self._turn_tokens
        first = next(iter(self._queues), None)
        while room > 0 and tokens_left > 0 and self._queues:
            share = max(1, room // len(self._queues))
            for tenant in list(self._queues):
                if room == 0:
                    break
                queue = self._queues[tenant]
                while queue and (queue[0].waiting == 0 or queue[0].future.done()):
                    gone = queue.popleft()  # fully sent, or its client stopped waiting (or it failed)
                    self._pending -= gone.waiting
                    gone.sent = len(gone.texts)
                if not queue:
                    del self._queues[tenant]
                    continue
                job = queue[0]
                count = 0
                while count < min(share, room, job.waiting) and (tokens_left > 0 or not slices and count == 0):
                    tokens_left -= self.text_cost(job.texts[job.sent + count]) // 4
                    count += 1
                if count == 0:
                    break
                slices.append(_Slice(job, job.sent, job.sent + count))
                if job.sent == 0:
                    self._metrics.queue_wait.labels(backend=self.backend.name).observe(
                        time.perf_counter() - job.enqueued)
                job.sent += count
                self._pending -= count
                room -= count
        if first is not None and first in self._queues:  # whoever went first goes last next time
            self._queues.move_to_end(first)
        self._metrics.queue_depth.labels(backend=self.backend.name).set(self._pending)
        return slices
