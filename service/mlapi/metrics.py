"""Prometheus metrics for one app instance, in their own registry (several apps can live in one process).

Named so a Grafana or CloudWatch dashboard can show throughput, latency, batch sizes, queueing, cache hit rate
and cache failures without parsing logs.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# Scores are probabilities: a difference is in [0, 1]. Fine steps near 0 (int8 against fp32 moves scores by ~0.01).
_DIFFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)

PRIMED_STATUSES = ("200", "422", "500", "503")
CACHE_OPS = ("predict", "embed")
# The label of texts from no key, or from keys past the label cap: one series, however many clients.
OTHER_KEY = "other"
KEY_SOURCES = ("computed", "cached")
# Most key names given their own series; the keys file is written by operators, so this is a backstop.
MAX_KEY_LABELS = 100
# Why a request was refused with 503: the queue was full, the model is not loaded, or the server is stopping.
REJECT_REASONS = ("queue_full", "deadline", "too_many_tokens", "not_ready", "shutting_down")
# Per mirrored text: the candidate agreed on the top label, flipped it, or gave no usable answer.
SHADOW_OUTCOMES = ("agree", "flip", "error")
# Why a mirrored request gave no usable answer.
SHADOW_ERROR_REASONS = ("timeout", "unreachable", "status", "invalid")
# The candidate's label before its /health has been read.
UNKNOWN_CANDIDATE = "unknown"


class Metrics:
    """Every metric the service exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mlapi_requests_total", "HTTP requests answered", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "mlapi_request_seconds", "HTTP request latency", ["route"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.texts = Counter("mlapi_texts_total", "Texts received for inference", ["route"], registry=r)
        self.cache_hits = Counter("mlapi_cache_hits_total", "Texts answered from the cache", ["op"], registry=r)
        self.cache_misses = Counter("mlapi_cache_misses_total", "Texts not in the cache", ["op"], registry=r)
        self.coalesced = Counter(
            "mlapi_coalesced_texts_total", "Missing texts that joined a computation already running", ["op"],
            registry=r,
        )
        self.cache_errors = Counter(
            "mlapi_cache_errors_total", "Cache operations that failed or were skipped", ["kind"], registry=r
        )
        self.cache_invalid = Counter(
            "mlapi_cache_invalid_total", "Cached values that were not a valid answer: ignored and recomputed", ["op"],
            registry=r,
        )
        self.batch_size = Histogram(
            "mlapi_batch_texts", "Texts per inference batch", ["backend"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.inference = Histogram(
            "mlapi_inference_seconds", "Time per inference batch", ["backend"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("mlapi_queue_texts", "Texts waiting for inference", ["backend"], registry=r)
        self.queue_wait = Histogram(
            "mlapi_queue_wait_seconds", "Time a request waited for its batch", ["backend"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue_capacity = Gauge(
            "mlapi_queue_capacity_texts", "Texts a queue holds before refusing (MLAPI_MAX_QUEUE)", ["backend"],
            registry=r,
        )
        self.rejected = Counter("mlapi_rejected_total", "Requests refused to protect the server", ["reason"],
                                registry=r)
        # What each client costs: texts the model computed (node or task time) and texts the cache answered.
        self.key_texts = Counter(
            "mlapi_key_texts_total", "Texts answered per API key, computed by the model or from the cache",
            ["key", "source"], registry=r,
        )
        self._key_labels: set[str] = set()
        self.cache_circuit_open = Gauge(
            "mlapi_cache_circuit_open", "1 while Redis is skipped after a failure (health reports degraded)", registry=r
        )
        # Which model this server runs (1 per server): a rollout shows as pods moving from one label set to another.
        self.model_info = Gauge(
            "mlapi_model_info", "The model this server runs (value 1)",
            ["source", "revision", "content_hash", "precision"], registry=r,
        )
        # Shadow (MLAPI_SHADOW_URL): a candidate's answers compared with this server's, per candidate model.
        self.shadow_texts = Counter(
            "mlapi_shadow_texts_total",
            "Mirrored texts by outcome: the candidate agreed on the top label, flipped it, or gave no usable answer",
            ["candidate", "outcome"], registry=r,
        )
        self.shadow_difference = Histogram(
            "mlapi_shadow_score_difference",
            "Largest absolute difference of a label's score between this server and the candidate, per text",
            ["candidate"], buckets=_DIFFERENCE_BUCKETS, registry=r,
        )
        self.shadow_dropped = Counter(
            "mlapi_shadow_dropped_texts_total", "Sampled texts not mirrored because the shadow queue was full",
            ["candidate"], registry=r,
        )
        self.shadow_errors = Counter(
            "mlapi_shadow_errors_total", "Mirrored requests with no usable answer, by reason", ["candidate", "reason"],
            registry=r,
        )
        self.shadow_queue = Gauge(
            "mlapi_shadow_queue_texts", "Mirrored texts waiting for the candidate", registry=r
        )
        self.shadow_candidate = Gauge(
            "mlapi_shadow_candidate_info", "The candidate model answers are mirrored to, from its /health (value 1)",
            ["candidate", "source", "revision", "precision"], registry=r,
        )

    def prime(self, path_prefix: str) -> None:
        """Create the label sets dashboards and alerts chart, at 0, so they read 0 before the first event, not empty."""
        for route in ("predict", "query"):
            for status in PRIMED_STATUSES:
                self.requests.labels(route=f"{path_prefix}/{route}", status=status)
            self.latency.labels(route=f"{path_prefix}/{route}")
            self.texts.labels(route=route)
        for op in CACHE_OPS:
            self.cache_hits.labels(op=op)
            self.cache_misses.labels(op=op)
            self.coalesced.labels(op=op)
            self.cache_invalid.labels(op=op)
        self.cache_errors.labels(kind="skipped")
        for reason in REJECT_REASONS:
            self.rejected.labels(reason=reason)
        self.prime_keys(())

    def prime_keys(self, names: Iterable[str]) -> None:
        """Give the keys file's names their own series (at 0), up to MAX_KEY_LABELS; later names fold into
        OTHER_KEY, so a client cannot grow the label set."""
        for name in (OTHER_KEY, *names):
            if name not in self._key_labels and len(self._key_labels) <= MAX_KEY_LABELS:
                self._key_labels.add(name)
            if name in self._key_labels:
                for source in KEY_SOURCES:
                    self.key_texts.labels(key=name, source=source)

    def count_key_texts(self, key: str | None, cached: Iterable[bool]) -> None:
        """Count one answer's texts for `key` (None: no key), split into computed and cached."""
        flags = list(cached)
        hits = sum(flags)
        if key is not None:
            self.prime_keys((key,))  # a key added to the file since start
        label = key if key is not None and key in self._key_labels else OTHER_KEY
        self.key_texts.labels(key=label, source="cached").inc(hits)
        self.key_texts.labels(key=label, source="computed").inc(len(flags) - hits)

    def prime_backend(self, backend: str, max_queue: int) -> None:
        """Create one backend's series at 0 and publish its queue limit."""
        self.queue_depth.labels(backend=backend).set(0)
        self.queue_capacity.labels(backend=backend).set(max_queue)
        self.batch_size.labels(backend=backend)
        self.inference.labels(backend=backend)
        self.queue_wait.labels(backend=backend)

    def observe_pass(self, backend: str, texts: int, seconds: float) -> None:
        """Record one inference batch."""
        self.batch_size.labels(backend=backend).observe(texts)
        self.inference.labels(backend=backend).observe(seconds)

    def set_model(self, source: str, revision: str | None, content_hash: str, precision: str) -> None:
        """Publish which model is live (one series at 1)."""
        self.model_info.clear()
        self.model_info.labels(source=source, revision=revision or "", content_hash=content_hash,
                               precision=precision).set(1)

    def prime_shadow(self, candidate: str) -> None:
        """Create a candidate's shadow series at 0, so its flip ratio reads 0 before the first flip."""
        for outcome in SHADOW_OUTCOMES:
            self.shadow_texts.labels(candidate=candidate, outcome=outcome)
        for reason in SHADOW_ERROR_REASONS:
            self.shadow_errors.labels(candidate=candidate, reason=reason)
        self.shadow_difference.labels(candidate=candidate)
        self.shadow_dropped.labels(candidate=candidate)
        self.shadow_queue.set(0)

    def set_shadow_candidate(self, candidate: str, source: str, revision: str, precision: str) -> None:
        """Publish the candidate model's identity (one series at 1) and prime its series."""
        self.shadow_candidate.clear()
        self.shadow_candidate.labels(candidate=candidate, source=source, revision=revision, precision=precision).set(1)
        self.prime_shadow(candidate)
