"""Mirror a sample of this server's texts, with its answers, to a candidate model server and count agreement.

A new model version should agree with the live one on real traffic before it takes any. With `MLAPI_SHADOW_URL`
set, `/predict` hands each answered request to `Shadow.offer` after its answer is computed (or read from the
cache): a sampled share of its texts and the answer bytes go into a queue bounded in texts, and nothing else
happens on the request path. Background workers post the texts to the candidate's `/predict`, compare each answer
with this server's (`compare`), and count agree / flip / error per candidate model. A full queue drops texts and
counts them; a slow, failing or absent candidate only ever costs the workers' time, never a client's.

The candidate is another `mlapi serve`; its model identity (content hash, source, revision) is read from its
`/health` at start and every `HEALTH_SECONDS`, so a candidate replaced mid-rollout is counted under its own label.
The counts are Prometheus metrics; where nothing scrapes them (Fargate), `MLAPI_METRICS_LOG_COUNTERS` writes their
increases as log lines that CloudWatch metric filters count.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
import orjson

from mlapi.metrics import UNKNOWN_CANDIDATE, Metrics
from mlapi.settings import Settings
from mlapi.shadow.compare import InvalidAnswer, compare

log = logging.getLogger(__name__)

# Requests to the candidate in flight at once (and its connection pool): enough to keep up with a primary pod's
# share without letting a slow candidate hold many sockets.
WORKERS = 4
# Texts per mirrored request: queued requests are merged up to this, larger ones split.
CHUNK_TEXTS = 64
# Answer bytes the queue may hold, whatever MLAPI_SHADOW_QUEUE says: a queued request keeps its whole answer body
# (parsing it for the sampled texts is the workers' job, off the request path), so a few sampled texts of many
# 1,000-text requests must not hold hundreds of megabytes.
MAX_QUEUE_BYTES = 32 * 1024 * 1024
# How often the candidate's /health is read for its model identity.
HEALTH_SECONDS = 15.0
# At most one warning per reason in this many seconds: a candidate that is down would otherwise flood the log.
WARN_EVERY_SECONDS = 60.0
# Sent with every mirrored request; a server never mirrors a request that carries it, so a candidate that is itself
# configured with a shadow (Flagger copies one Deployment's environment to the other), or two servers pointed at
# each other, cannot mirror texts back and forth.
SHADOW_HEADER = "x-mlapi-shadow"


@dataclass(frozen=True)
class Mirrored:
    """One answered request's sampled texts, the answer body, and where each text's answer is in it."""

    texts: Sequence[str]
    body: bytes
    indices: Sequence[int]


class Shadow:
    """The mirror of one server: `offer` on the request path, `start`/`close` in the app's lifespan."""

    def __init__(self, settings: Settings, metrics: Metrics, sample: Callable[[], float] = random.random,
                 workers: int = WORKERS) -> None:
        self.url = settings.shadow_url
        self.fraction = settings.shadow_fraction
        self.capacity = settings.shadow_queue
        self.timeout = settings.shadow_timeout_seconds
        self.backend = settings.backend
        self.metrics = metrics
        self.candidate = UNKNOWN_CANDIDATE
        self.candidate_model: dict[str, str] = {}
        self._headers = {"content-type": "application/json", SHADOW_HEADER: "1"}
        if settings.shadow_api_key is not None:
            self._headers["x-api-key"] = settings.shadow_api_key.get_secret_value()
        self._sample = sample
        self._workers = workers
        self._queue: asyncio.Queue[Mirrored] = asyncio.Queue()
        self._queued = 0
        self._queued_bytes = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._warned: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        """Whether a candidate is configured and texts are sampled for it."""
        return self.url is not None and self.fraction > 0

    @property
    def queued(self) -> int:
        """Texts waiting for the candidate."""
        return self._queued

    def offer(self, texts: Sequence[str], body: bytes, backend: str | None = None, mirrored: bool = False) -> None:
        """Queue a sampled share of one answered `/predict` request for the candidate; never blocks, never raises.

        Only answers of the default backend are mirrored (the candidate answers with its own default, so a
        `?backend=torch` answer would compare backends, not models), and never a request that is itself a mirror
        (`mirrored`: it carried SHADOW_HEADER). Texts beyond the queue's room are dropped and counted.
        """
        if not self.enabled or not texts or mirrored or (backend is not None and backend != self.backend):
            return
        try:
            if self.fraction >= 1.0:
                indices: Sequence[int] = range(len(texts))
            else:
                indices = [i for i in range(len(texts)) if self._sample() < self.fraction]
            room = max(self.capacity - self._queued, 0)
            if self._queued_bytes + len(body) > MAX_QUEUE_BYTES:
                room = 0
            if len(indices) > room:
                self._count(self.candidate, "dropped", len(indices) - room)
                indices = indices[:room]
            if not indices:
                return
            sampled = texts if len(indices) == len(texts) else [texts[i] for i in indices]
            self._queued += len(indices)
            self._queued_bytes += len(body)
            self.metrics.shadow_queue.set(self._queued)
            self._queue.put_nowait(Mirrored(sampled, body, indices))
        except Exception:  # the client's answer is already made; a fault here must never reach it
            log.exception("shadow: could not queue a mirrored request")

    async def start(self) -> None:
        """Open the connection pool and start the workers and the candidate watcher (when enabled)."""
        if not self.enabled:
            return
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(max_connections=self._workers + 1, max_keepalive_connections=self._workers + 1),
            trust_env=False,  # the candidate is a service next to this one: no proxy from the environment
        )
        self.metrics.prime_shadow(self.candidate)
        self._tasks = [asyncio.create_task(self._watch(), name="shadow-health")]
        self._tasks += [asyncio.create_task(self._work(), name=f"shadow-{i}") for i in range(self._workers)]
        log.info("shadow: mirroring %.0f%% of /predict texts to %s", self.fraction * 100, self.url)

    async def close(self) -> None:
        """Stop at once: a stopping server does not wait for its candidate; texts still queued are not sent."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def status(self) -> dict[str, object]:
        """Shadow facts for /health: what share is mirrored, how many texts wait, and the candidate model last read.

        Not the candidate's URL: /health is public, and the URL names an internal service.
        """
        if self.url is None:
            return {"enabled": False}
        return {
            "enabled": self.enabled,
            "fraction": self.fraction,
            "queued": self._queued,
            "candidate": self.candidate,
            "candidate_model": self.candidate_model,
        }

    async def _watch(self) -> None:
        while True:
            await self.read_candidate()
            await asyncio.sleep(HEALTH_SECONDS)

    async def read_candidate(self) -> None:
        """Read the candidate's model identity from its /health; keep the last one when it cannot be read."""
        assert self._client is not None
        try:
            response = await self._client.get(f"{self.url}/health", headers=self._headers)
            model = orjson.loads(response.content).get("model") or {}
            content_hash = model.get("content_hash")
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            self._warn("health", f"cannot read the candidate's /health at {self.url}: {type(exc).__name__}: {exc}")
            return
        if not isinstance(content_hash, str) or not content_hash:
            return  # still loading its manifest
        label = content_hash[:16]
        source, revision = str(model.get("source") or ""), str(model.get("revision") or "")
        # Per backend on the candidate (`{"onnx": "int8"}`): the content hash says nothing of it.
        precisions = model.get("precision")
        precision = ",".join(f"{k}={v}" for k, v in sorted(precisions.items())) if isinstance(precisions, dict) else ""
        identity = {"source": source, "revision": revision, "content_hash": label, "precision": precision}
        if identity != self.candidate_model:
            log.info("shadow: candidate at %s runs %s (revision %s, content %s, %s)", self.url, source,
                     revision or "-", label, precision or "precision unknown")
            self.candidate = label
            self.candidate_model = identity
            self.metrics.set_shadow_candidate(label, source, revision, precision)

    async def _work(self) -> None:
        while True:
            batch = [await self._queue.get()]
            count = len(batch[0].indices)
            while count < CHUNK_TEXTS and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                count += len(batch[-1].indices)
            size = sum(len(item.body) for item in batch)
            try:
                await self._mirror(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("shadow: comparing a mirrored request failed")
                self._count_error("invalid", count)
            finally:
                self._queued -= count
                self._queued_bytes -= size
                self.metrics.shadow_queue.set(self._queued)

    async def _mirror(self, batch: list[Mirrored]) -> None:
        texts: list[str] = []
        ours: list[object] = []
        for item in batch:
            predictions = orjson.loads(item.body)["predictions"]
            texts.extend(item.texts)
            ours.extend(predictions[i] for i in item.indices)
        for start in range(0, len(texts), CHUNK_TEXTS):
            await self._send(texts[start : start + CHUNK_TEXTS], ours[start : start + CHUNK_TEXTS])

    async def _send(self, texts: list[str], ours: list[object]) -> None:
        assert self._client is not None
        candidate = self.candidate
        try:
            response = await self._client.post(
                f"{self.url}/predict", content=orjson.dumps({"text": texts}), headers=self._headers
            )
        except httpx.TimeoutException:
            self._count_error("timeout", len(texts), f"no answer within {self.timeout:g} s", candidate)
            return
        except httpx.HTTPError as exc:
            self._count_error("unreachable", len(texts), f"{type(exc).__name__}: {exc}", candidate)
            return
        if response.status_code != 200:
            self._count_error("status", len(texts), f"HTTP {response.status_code}: {response.text[:200]}", candidate)
            return
        try:
            theirs = orjson.loads(response.content)["predictions"]
            if not isinstance(theirs, list) or len(theirs) != len(texts):
                raise InvalidAnswer(f"expected {len(texts)} predictions")
        except (ValueError, KeyError, TypeError) as exc:
            self._count_error("invalid", len(texts), f"{type(exc).__name__}: {exc}", candidate)
            return
        invalid = 0
        for mine, candidate_answer in zip(ours, theirs, strict=True):
            try:
                result = compare(mine, candidate_answer)
            except InvalidAnswer as exc:
                invalid += 1
                self._warn("invalid", f"candidate answer not usable: {exc}")
                continue
            self._count(candidate, result.outcome)
            self.metrics.shadow_difference.labels(candidate=candidate).observe(result.difference)
        if invalid:
            self._count_error("invalid", invalid, candidate=candidate)

    def _count_error(self, reason: str, texts: int, detail: str = "", candidate: str | None = None) -> None:
        candidate = candidate or self.candidate
        self._count(candidate, "error", texts)
        self.metrics.shadow_errors.labels(candidate=candidate, reason=reason).inc()
        if detail:
            self._warn(reason, f"mirroring to {self.url} failed ({reason}): {detail}")

    def _count(self, candidate: str, what: str, texts: int = 1) -> None:
        """Count texts agreed, flipped, failed (`error`) or `dropped` (Prometheus; CloudWatch via the counter log)."""
        if what == "dropped":
            self.metrics.shadow_dropped.labels(candidate=candidate).inc(texts)
        else:
            self.metrics.shadow_texts.labels(candidate=candidate, outcome=what).inc(texts)

    def _warn(self, reason: str, message: str) -> None:
        now = time.monotonic()
        if now - self._warned.get(reason, -math.inf) >= WARN_EVERY_SECONDS:
            self._warned[reason] = now
            log.warning("shadow: %s", message)
