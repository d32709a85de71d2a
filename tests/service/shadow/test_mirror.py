"""The mirror off the request path: bounded queue, sampling, counting, and every way a candidate can fail.

The candidate here is a real HTTP server on a loopback port (asyncio streams), answering as a test scripts it:
the mirror's own httpx client, timeouts and connection pool are what run.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from mlapi.metrics import Metrics
from mlapi.metrics_export import CounterLog
from mlapi.settings import Settings
from mlapi.shadow.mirror import Shadow

HASH = "c0ffee" * 10


def _predictions(texts: list[str], flip: bool = False) -> list[list[dict[str, object]]]:
    """Primary's answer per text: POSITIVE for texts starting with "good"; the candidate flips "good flip ..."."""
    out = []
    for text in texts:
        positive = 0.8 if text.startswith("good") else 0.3
        if flip and "flip" in text:
            positive = 1 - positive
        out.append(sorted([{"label": "POSITIVE", "score": positive}, {"label": "NEGATIVE", "score": 1 - positive}],
                          key=lambda item: -float(item["score"])))  # type: ignore[arg-type]
    return out


def _body(texts: list[str]) -> bytes:
    return orjson.dumps({"predictions": _predictions(texts)})


Handler = Callable[[str, dict[str, Any], dict[str, str]], Awaitable[tuple[int, bytes]]]


class Candidate:
    """A loopback HTTP/1.1 server: `handler(path, json body, headers)` -> (status, body)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, Any, dict[str, str]]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Candidate:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/lab"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *fields = head.decode().split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields if f)}
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                path = line.split()[1]
                body = orjson.loads(raw) if raw else None
                self.requests.append((path, body, headers))
                status, answer = await self.handler(path, body, headers)
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                             f"content-length: {len(answer)}\r\n\r\n".encode() + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()  # the client went away, or the test's loop is ending


async def flipping(path: str, body: Any, headers: dict[str, str]) -> tuple[int, bytes]:
    if path.endswith("/health"):
        return 200, orjson.dumps({"status": "healthy", "model": {"source": "my-ft", "revision": "abc1234",
                                                                  "content_hash": HASH, "precision": {"onnx": "int8"}}})
    return 200, orjson.dumps({"predictions": _predictions(body["text"], flip=True)})


def _count(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _shadow(url: str, **settings: object) -> tuple[Shadow, Metrics]:
    metrics = Metrics()
    return Shadow(Settings(shadow_url=url, **settings), metrics), metrics  # type: ignore[arg-type]


async def _drained(shadow: Shadow, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while shadow.queued:
            await asyncio.sleep(0.01)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_queue_is_bounded_in_texts_and_drops_are_counted() -> None:
    async def run() -> None:
        shadow, metrics = _shadow("http://127.0.0.1:9/x", shadow_fraction=1.0, shadow_queue=5)
        # Not started: nothing drains the queue, so what it admits stays in it.
        texts = ["good a", "bad b", "good c"]
        shadow.offer(texts, _body(texts))
        assert shadow.queued == 3
        more = ["good d", "bad e", "good f", "bad g"]
        shadow.offer(more, _body(more))
        assert shadow.queued == 5  # two of four admitted
        assert _count(metrics, "mlapi_shadow_dropped_texts_total", candidate="unknown") == 2
        assert _count(metrics, "mlapi_shadow_queue_texts") == 5
        shadow.offer(["good h"], _body(["good h"]))
        assert shadow.queued == 5
        assert _count(metrics, "mlapi_shadow_dropped_texts_total", candidate="unknown") == 3

    asyncio.run(run())


def test_sampling_picks_the_fraction_of_texts_and_only_default_backend_answers() -> None:
    draws = iter([0.05, 0.5, 0.2, 0.9, 0.24])
    metrics = Metrics()
    shadow = Shadow(Settings(shadow_url="http://candidate:8000", shadow_fraction=0.25), metrics,
                    sample=lambda: next(draws))
    texts = ["a", "b", "c", "d", "e"]
    shadow.offer(texts, _body(texts))
    assert shadow.queued == 3  # draws under 0.25: texts a, c, e
    shadow.offer(texts, _body(texts), backend="torch")  # another backend's answer: not the live model's
    shadow.offer(texts, _body(texts), mirrored=True)  # a request another server mirrored here: never again
    assert shadow.queued == 3
    off = Shadow(Settings(shadow_url="http://candidate:8000", shadow_fraction=0.0), Metrics())
    off.offer(texts, _body(texts))
    unset = Shadow(Settings(), Metrics())
    unset.offer(texts, _body(texts))
    assert (off.queued, unset.queued, off.enabled, unset.enabled) == (0, 0, False, False)
    assert unset.status() == {"enabled": False}


def test_mirrored_texts_are_compared_and_counted_per_candidate_model() -> None:
    async def run() -> None:
        async with Candidate(flipping) as candidate:
            shadow, metrics = _shadow(candidate.url, shadow_fraction=1.0, shadow_api_key="k-123")
            await shadow.start()
            try:
                async with asyncio.timeout(10):
                    while shadow.candidate == "unknown":
                        await asyncio.sleep(0.01)
                texts = ["good one", "bad two", "good flip three", "bad flip four", "good five"]
                shadow.offer(texts, _body(texts))
                shadow.offer(texts[:2], _body(texts[:2]))
                await _drained(shadow)
            finally:
                await shadow.close()
            label = HASH[:16]
            assert shadow.candidate == label
            assert _count(metrics, "mlapi_shadow_texts_total", candidate=label, outcome="agree") == 5
            assert _count(metrics, "mlapi_shadow_texts_total", candidate=label, outcome="flip") == 2
            assert _count(metrics, "mlapi_shadow_texts_total", candidate=label, outcome="error") == 0
            assert _count(metrics, "mlapi_shadow_score_difference_count", candidate=label) == 7
            # The flips move 0.8 to 0.2 and 0.3 to 0.7 (0.6 and 0.4 on each label); the agreeing texts nothing.
            assert _count(metrics, "mlapi_shadow_score_difference_sum", candidate=label) == pytest.approx(1.0)
            assert _count(metrics, "mlapi_shadow_candidate_info", candidate=label, source="my-ft",
                          revision="abc1234", precision="onnx=int8") == 1
            posts = [(path, body, headers) for path, body, headers in candidate.requests if path.endswith("/predict")]
            assert sorted(t for _, body, _ in posts for t in body["text"]) == sorted(texts + texts[:2])
            assert all(path == "/lab/predict" and headers["x-api-key"] == "k-123" and headers["x-mlapi-shadow"] == "1"
                       for path, _, headers in posts)
            assert shadow.status()["candidate_model"] == {"source": "my-ft", "revision": "abc1234",
                                                          "content_hash": label, "precision": "onnx=int8"}

    asyncio.run(run())


async def _status(code: int, answer: bytes) -> Handler:
    async def handler(path: str, body: Any, headers: dict[str, str]) -> tuple[int, bytes]:
        if path.endswith("/health"):
            return await flipping(path, body, headers)
        return code, answer

    return handler


@pytest.mark.parametrize(("code", "answer", "reason"), [
    (503, b'{"detail": "the model is still loading"}', "status"),
    (401, b'{"detail": "no key"}', "status"),
    (200, b"<html>not json</html>", "invalid"),
    (200, b'{"predictions": []}', "invalid"),  # not one answer per text
    (200, b'{"answers": 1}', "invalid"),
])
def test_a_failing_candidate_counts_errors_by_reason(code: int, answer: bytes, reason: str) -> None:
    async def run() -> None:
        async with Candidate(await _status(code, answer)) as candidate:
            shadow, metrics = _shadow(candidate.url, shadow_fraction=1.0)
            await shadow.start()
            try:
                await shadow.read_candidate()
                shadow.offer(["good a", "bad b"], _body(["good a", "bad b"]))
                await _drained(shadow)
            finally:
                await shadow.close()
            label = HASH[:16]
            assert _count(metrics, "mlapi_shadow_texts_total", candidate=label, outcome="error") == 2
            assert _count(metrics, "mlapi_shadow_errors_total", candidate=label, reason=reason) == 1
            assert _count(metrics, "mlapi_shadow_texts_total", candidate=label, outcome="agree") == 0

    asyncio.run(run())


def test_one_unusable_answer_is_an_error_for_that_text_only() -> None:
    async def handler(path: str, body: Any, headers: dict[str, str]) -> tuple[int, bytes]:
        answers: list[object] = list(_predictions(body["text"]))
        answers[0] = [{"label": "POSITIVE", "score": 7}]
        return 200, orjson.dumps({"predictions": answers})

    async def run() -> None:
        async with Candidate(handler) as candidate:
            shadow, metrics = _shadow(candidate.url, shadow_fraction=1.0)
            await shadow.start()
            try:
                shadow.offer(["good a", "bad b"], _body(["good a", "bad b"]))
                await _drained(shadow)
            finally:
                await shadow.close()
            assert _count(metrics, "mlapi_shadow_texts_total", candidate="unknown", outcome="error") == 1
            assert _count(metrics, "mlapi_shadow_texts_total", candidate="unknown", outcome="agree") == 1

    asyncio.run(run())


def test_a_candidate_that_is_down_counts_unreachable() -> None:
    async def run() -> None:
        shadow, metrics = _shadow(f"http://127.0.0.1:{_closed_port()}", shadow_fraction=1.0)
        await shadow.start()
        try:
            shadow.offer(["good a"], _body(["good a"]))
            await _drained(shadow)
        finally:
            await shadow.close()
        assert _count(metrics, "mlapi_shadow_texts_total", candidate="unknown", outcome="error") == 1
        assert _count(metrics, "mlapi_shadow_errors_total", candidate="unknown", reason="unreachable") == 1
        assert shadow.status()["candidate_model"] == {}

    asyncio.run(run())


def test_a_slow_candidate_times_out_and_a_stop_does_not_wait_for_it() -> None:
    release = asyncio.Event()

    async def stuck(path: str, body: Any, headers: dict[str, str]) -> tuple[int, bytes]:
        if body is not None and body["text"] == ["never"]:
            await release.wait()  # answers only when the test ends
        else:
            await asyncio.sleep(5)  # beyond the 0.3 s timeout
        return await flipping(path, body, headers)

    async def run() -> None:
        async with Candidate(stuck) as candidate:
            shadow, metrics = _shadow(candidate.url, shadow_fraction=1.0, shadow_timeout_seconds=0.3)
            await shadow.start()
            shadow.offer(["good a", "bad b"], _body(["good a", "bad b"]))
            await _drained(shadow)
            assert _count(metrics, "mlapi_shadow_errors_total", candidate="unknown", reason="timeout") == 1
            assert _count(metrics, "mlapi_shadow_texts_total", candidate="unknown", outcome="error") == 2

            # A request in flight to a candidate that never answers, with a long timeout: close() cancels it.
            slow, _ = _shadow(candidate.url, shadow_fraction=1.0, shadow_timeout_seconds=120)
            await slow.start()
            slow.offer(["never"], _body(["never"]))
            async with asyncio.timeout(10):
                while not any(body == {"text": ["never"]} for _, body, _ in candidate.requests):
                    await asyncio.sleep(0.01)
            await asyncio.wait_for(slow.close(), timeout=60)  # returns long before the candidate's 120 s
            assert not release.is_set()
            await shadow.close()
            release.set()

    asyncio.run(run())


def test_counts_go_out_as_counter_log_lines_for_cloudwatch_metric_filters() -> None:
    """Where nothing scrapes /metrics (Fargate), the shadow counters leave as the lines the metric filters count."""
    metrics = Metrics()
    log = CounterLog(metrics.registry, ["mlapi_shadow_texts_total", "mlapi_shadow_dropped_texts_total"])

    async def run() -> None:
        async with Candidate(flipping) as candidate:
            shadow = Shadow(Settings(shadow_url=candidate.url, shadow_fraction=1.0, shadow_queue=4), metrics)
            texts = ["good one", "bad two", "good flip three", "bad flip four", "good five", "bad six"]
            shadow.offer(texts, _body(texts))  # before the workers start: 4 queued, 2 dropped under "unknown"
            await shadow.start()
            try:
                await _drained(shadow)
            finally:
                await shadow.close()

    asyncio.run(run())
    documents = [orjson.loads(line) for line in log.lines()]
    dropped = [d for d in documents if d["metric"] == "mlapi_shadow_dropped_texts_total"]
    assert [(d["candidate"], d["value"]) for d in dropped] == [("unknown", 2)]
    outcomes: dict[str, float] = {}
    for doc in documents:
        if doc["metric"] == "mlapi_shadow_texts_total":
            outcomes[doc["outcome"]] = outcomes.get(doc["outcome"], 0) + doc["value"]
    assert outcomes == {"agree": 2, "flip": 2}
    assert log.lines() == []  # increases only: nothing new since the last call


def test_the_queue_is_also_bounded_in_answer_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlapi.shadow import mirror

    monkeypatch.setattr(mirror, "MAX_QUEUE_BYTES", 1000)
    shadow, metrics = _shadow("http://candidate:8000", shadow_fraction=1.0, shadow_queue=1000)
    texts = [f"good {i}" for i in range(8)]  # an answer body of about 600 bytes
    body = _body(texts)
    assert 500 < len(body) <= 1000
    shadow.offer(texts, body)
    shadow.offer(texts, body)  # one more body would pass the byte bound: dropped, though there is room in texts
    assert shadow.queued == 8
    assert _count(metrics, "mlapi_shadow_dropped_texts_total", candidate="unknown") == 8


def test_only_the_sampled_texts_are_kept_and_mirrored() -> None:
    async def run() -> None:
        async with Candidate(flipping) as candidate:
            draws = iter([0.9, 0.1, 0.9, 0.1])
            metrics = Metrics()
            settings = Settings(shadow_url=candidate.url, shadow_fraction=0.5)
            shadow = Shadow(settings, metrics, sample=lambda: next(draws))
            texts = ["good one", "good flip two", "bad three", "bad four"]
            await shadow.start()
            try:
                await shadow.read_candidate()
                shadow.offer(texts, _body(texts))
                await _drained(shadow)
            finally:
                await shadow.close()
            posts = [body["text"] for path, body, _ in candidate.requests if path.endswith("/predict")]
            assert posts == [["good flip two", "bad four"]]
            assert _count(metrics, "mlapi_shadow_texts_total", candidate=shadow.candidate, outcome="flip") == 1
            assert _count(metrics, "mlapi_shadow_texts_total", candidate=shadow.candidate, outcome="agree") == 1

    asyncio.run(run())
