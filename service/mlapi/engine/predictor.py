"""The prediction engine: cache lookups, micro-batched inference of the misses, and scoring, per backend.

Routes stay thin: they validate input and call `predict` or `query`; everything that decides how fast and how
cheaply an answer comes lives here.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from mlapi.engine.backends import Backend, load_backend
from mlapi.engine.batching import MicroBatcher
from mlapi.engine.cache import Cache, cache_key
from mlapi.engine.cached_values import valid_embedding, valid_prediction
from mlapi.engine.manifest import Manifest
from mlapi.engine.scoring import label_prototypes, ranked, softmax, unit, zero_shot
from mlapi.engine.shaping import DEFAULT_PASS_OVERHEAD_TOKENS
from mlapi.engine.tokenization import TOKENIZER_FILE, TextEncoder
from mlapi.errors import InvalidInput, NotReady, UnsupportedTask
from mlapi.metrics import Metrics
from mlapi.settings import Settings

log = logging.getLogger(__name__)

Compute = Callable[[np.ndarray], list[bytes]]


def _consume_error(task: asyncio.Task[dict[str, bytes]]) -> None:
    # Every waiter sees the error through `await`; this keeps asyncio from also logging it as never retrieved.
    if not task.cancelled():
        task.exception()


@dataclass
class Engine:
    """One loaded backend with its batcher and its cache namespace."""

    backend: Backend
    batcher: MicroBatcher
    model_key: str
    label_vectors: np.ndarray | None = None


@dataclass(frozen=True)
class Prediction:
    """A /predict answer as JSON bytes, and per text in request order whether the cache answered it."""

    body: bytes
    cached: list[bool]


@dataclass(frozen=True)
class QueryAnswer:
    """A /query answer, and per text (the sentence, then each label) whether the cache answered it."""

    label: str
    scores: list[dict[str, object]]
    cached: list[bool]


class Predictor:
    """Answers /predict and /query for one baked model, on one or more backends."""

    def __init__(self, settings: Settings, metrics: Metrics, cache: Cache) -> None:
        self.settings = settings
        self.metrics = metrics
        self.cache = cache
        self.manifest: Manifest | None = None
        self.engines: dict[str, Engine] = {}
        self.error: str | None = None
        self._encoder: TextEncoder | None = None
        self._loaded = False
        self._closed = False  # after close(): the models are let go
        self._inflight: dict[str, asyncio.Task[dict[str, bytes]]] = {}

    @property
    def ready(self) -> bool:
        """True once every configured backend is loaded and warmed up."""
        return self._loaded and self.error is None

    async def load(self) -> None:
        """Load the manifest and backends off the event loop, then warm each one up; records any failure."""
        model_dir = Path(self.settings.model_dir)
        # One bounded round trip, so /health tells an unreachable Redis before the first request does.
        await self.cache.get_many([f"{self.settings.cache_prefix}::startup-probe"])
        try:
            manifest = await asyncio.to_thread(Manifest.load, model_dir)
            self.manifest = manifest
            self._encoder = TextEncoder(model_dir / TOKENIZER_FILE, manifest.max_length, manifest.input_names)
            for name in self.settings.backends:
                workers, threads = self.settings.inference_shape
                backend = await asyncio.to_thread(
                    load_backend, name, model_dir, manifest, workers * threads, self.settings.precision, workers
                )
                await self._add_engine(backend, manifest)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("model load failed")
            return
        self._loaded = True
        default = self.engines[self.settings.backend].backend
        self.metrics.set_model(manifest.source, manifest.revision, manifest.content_hash[:16],
                               getattr(default, "precision", "fp32"))
        log.info("model %s ready on %s", manifest.source, ", ".join(self.engines))

    async def _add_engine(self, backend: Backend, manifest: Manifest) -> None:
        assert self._encoder is not None
        s = self.settings
        batcher = MicroBatcher(
            backend, self._encoder, self.metrics, max_size=s.batch_max_size, max_tokens=s.batch_max_tokens,
            wait_ms=s.batch_wait_ms, max_queue=s.max_queue, workers=backend.workers,
            overhead_tokens=manifest.pass_overhead_tokens or DEFAULT_PASS_OVERHEAD_TOKENS,
            turn_tokens=s.batch_turn_tokens,
            deadline_seconds=s.request_timeout_seconds, max_request_tokens=s.max_request_tokens,
        )
        batcher.start()
        identity = f"{manifest.content_hash}:{backend.fingerprint}"
        if s.label_order != "score":  # stored /predict answers list the labels in another order
            identity += f":labels-{s.label_order}"
        model_key = hashlib.sha256(identity.encode()).hexdigest()[:16]
        engine = Engine(backend, batcher, model_key)
        if manifest.zero_shot is not None:
            descriptions = manifest.zero_shot.descriptions
            flat = [text for label in manifest.labels for text in descriptions[label]]
            # Also the warm-up pass. In chunks the queue can always admit: MLAPI_MAX_QUEUE may be set below the
            # number of label descriptions, and a start-up that refuses its own work would never become ready.
            step = s.max_queue
            chunks = [await batcher.submit(flat[i : i + step], capped=False) for i in range(0, len(flat), step)]
            rows = np.concatenate(chunks)
            bounds = np.cumsum([len(descriptions[label]) for label in manifest.labels])[:-1]
            engine.label_vectors = label_prototypes(np.split(rows, bounds))
        else:
            await batcher.submit(["warm up"], capped=False)
        self.engines[backend.name] = engine

    def engine(self, backend: str | None) -> Engine:
        """The engine a request asked for (the default when it names none)."""
        if self._closed:
            raise NotReady("the server is shutting down", retry_after=1)
        if not self.ready:
            self.metrics.rejected.labels(reason="not_ready").inc()
            raise NotReady(self.error or "the model is still loading", retry_after=1 if not self.error else None)
        name = backend or self.settings.backend
        if name not in self.engines:
            raise InvalidInput(f"backend: {name!r} is not loaded here; loaded: {', '.join(self.engines)}",
                               loc=("query", "backend"))
        return self.engines[name]

    async def predict(self, texts: list[str], backend: str | None = None, tenant: str = "") -> Prediction:
        """The /predict JSON body: every label's score for each text, high to low (or as MLAPI_LABEL_ORDER says).

        Only texts the cache does not hold are computed. Each text's answer is kept as its JSON bytes, so a cached
        answer goes out as stored, with no parsing or re-serialising on the hot path.
        """
        engine = self.engine(backend)
        if not texts:
            return Prediction(b'{"predictions":[]}', [])
        manifest = self.manifest
        assert manifest is not None

        def compute(rows: np.ndarray) -> list[bytes]:
            if manifest.task == "text-classification":
                probs = softmax(rows)
            else:
                assert engine.label_vectors is not None and manifest.zero_shot is not None
                probs = zero_shot(rows, engine.label_vectors, manifest.zero_shot.temperature)
            return [orjson.dumps(ranked(manifest.labels, p, self.settings.label_order)) for p in probs]

        values, cached = await self._cached(engine, "predict", texts, compute, tenant)
        return Prediction(b'{"predictions":[' + b",".join(values) + b"]}", cached)

    async def query(self, sentence: str, labels: list[str], backend: str | None = None, tenant: str = ""
                    ) -> QueryAnswer:
        """Rank candidate labels for a sentence by embedding similarity (sentence-embedding models only)."""
        engine = self.engine(backend)
        manifest = self.manifest
        assert manifest is not None
        if manifest.task != "sentence-embedding" or manifest.zero_shot is None:
            raise UnsupportedTask(
                f"/query needs a sentence-embedding model; this server runs a {manifest.task} model "
                f"({manifest.source}): use /predict"
            )

        def compute(rows: np.ndarray) -> list[bytes]:
            # The graph already returns unit-length embeddings; zero_shot normalises what it compares anyway.
            return [row.astype(np.float32).tobytes() for row in rows]

        values, cached = await self._cached(engine, "embed", [sentence, *labels], compute, tenant)
        vectors = np.stack([np.frombuffer(v, dtype=np.float32) for v in values])
        probs = zero_shot(vectors[:1], unit(vectors[1:]), manifest.zero_shot.temperature)[0]
        scores = ranked(labels, probs)
        return QueryAnswer(str(scores[0]["label"]), scores, cached)

    async def _cached(self, engine: Engine, op: str, texts: list[str], compute: Compute, tenant: str = ""
                      ) -> tuple[list[bytes], list[bool]]:
        """Per-text values for `op` and, per text, whether the cache held it: hits as stored; each missing text
        computed once and stored.

        "Once" holds across requests too: a text already being computed for another request is awaited, not
        computed again, so a burst of identical requests on a cold cache (every client starting at once) costs
        one pass, not one per client.
        """
        s = self.settings
        keys = [cache_key(s.cache_prefix, engine.model_key, op, text) for text in texts]
        found = await self.cache.get_many(keys, lambda key, value: self._trusted(engine, op, key, value))
        values = {key: value for key, value in zip(keys, found, strict=True) if value is not None}
        found_flags = [key in values for key in keys]
        hits = sum(found_flags)
        self.metrics.cache_hits.labels(op=op).inc(hits)
        self.metrics.cache_misses.labels(op=op).inc(len(keys) - hits)

        missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in values}
        joined = {key: self._inflight[key] for key in missing if key in self._inflight}
        if joined:
            self.metrics.coalesced.labels(op=op).inc(len(joined))
        mine = {key: text for key, text in missing.items() if key not in joined}
        if mine:
            task = asyncio.create_task(self._compute(engine, mine, compute, tenant))
            task.add_done_callback(_consume_error)
            for key in mine:
                self._inflight[key] = task
            joined.update(dict.fromkeys(mine, task))
        for key, pending in joined.items():
            # shield: a client that goes away must not cancel work other requests are waiting for.
            values[key] = (await asyncio.shield(pending))[key]
        return [values[key] for key in keys], found_flags

    def _trusted(self, engine: Engine, op: str, key: str, value: bytes) -> bool:
        """Whether a cached value is one this model could have produced; if not, it is counted, logged, recomputed."""
        manifest = self.manifest
        assert manifest is not None
        if op == "predict":
            ok = valid_prediction(value, manifest.labels, self.settings.label_order)
        else:
            dimensions = engine.label_vectors.shape[1] if engine.label_vectors is not None else None
            ok = valid_embedding(value, dimensions)
        if not ok:
            self.metrics.cache_invalid.labels(op=op).inc()
            log.warning("cached value under %s is not a valid %s answer (%d bytes): ignored and recomputed",
                        key, op, len(value))
        return ok

    async def _compute(self, engine: Engine, work: dict[str, str], compute: Compute, tenant: str = ""
                       ) -> dict[str, bytes]:
        """Run the model for `work` (cache key -> text), store the answers, and release the in-flight keys."""
        try:
            fresh = dict(zip(work, compute(await engine.batcher.submit(list(work.values()), tenant)), strict=True))
            await self.cache.set_many(fresh)
            return fresh
        finally:
            for key in work:
                self._inflight.pop(key, None)

    def status(self) -> dict[str, object]:
        """Model facts for /health."""
        if self.manifest is None:
            return {"loaded": False, "error": self.error}
        m = self.manifest
        return {
            "loaded": self.ready,
            "source": m.source,
            "revision": m.revision,
            # What the weights were pinned to at bake: the hub commit a branch resolved to, or the S3 objects' count.
            "origin": None if m.origin is None else {
                "kind": m.origin.kind, "commit": m.origin.commit, "objects": len(m.origin.objects)},
            "task": m.task,
            "labels": m.labels,
            "content_hash": m.content_hash[:16],
            "precision": {name: getattr(e.backend, "precision", "fp32") for name, e in self.engines.items()},
            "error": self.error,
        }

    async def close(self) -> None:
        """Drain queued work, stop the batchers, then let go of the models (their memory is freed with them)."""
        for engine in self.engines.values():
            await engine.batcher.close()
        self._closed = True
        self.engines.clear()
