"""Counter increases as JSON lines on stdout (`MLAPI_METRICS_LOG_*`): what a Fargate task's metric filters read.

From the real counters, through the app's lifespan, and from a real `mlapi serve` process stopped with SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlapi.auth.keys import generate_key, key_line
from mlapi.metrics import Metrics
from mlapi.metrics_export import CounterLog, MetricsLogError
from mlapi.settings import Settings
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError


def _parsed(lines: list[str]) -> dict[tuple[str, str], int]:
    out = {}
    for line in lines:
        doc = json.loads(line)
        assert doc["metric"] == "mlapi_key_texts_total" and set(doc) == {"metric", "key", "source", "value"}
        out[(doc["key"], doc["source"])] = doc["value"]
    return out


def test_lines_carry_each_series_increase_since_the_previous_call() -> None:
    metrics = Metrics()
    metrics.prime("")
    metrics.prime_keys(["web", "ci"])
    log = CounterLog(metrics.registry, ["mlapi_key_texts_total"])
    assert log.lines() == []  # primed at 0: nothing grew
    metrics.count_key_texts("web", [False, False, True])
    metrics.count_key_texts(None, [True, True])
    metrics.count_key_texts("stranger", [False])  # a key added to the keys file since start
    first = _parsed(log.lines())
    assert first == {("web", "computed"): 2, ("web", "cached"): 1, ("other", "cached"): 2,
                     ("stranger", "computed"): 1}
    assert log.lines() == []  # nothing new
    metrics.count_key_texts("web", [False])
    assert _parsed(log.lines()) == {("web", "computed"): 1}


def test_lines_are_one_compact_json_object_each() -> None:
    metrics = Metrics()
    metrics.count_key_texts("web", [False])
    (line,) = CounterLog(metrics.registry, ["mlapi_key_texts_total"]).lines()
    assert line == '{"metric":"mlapi_key_texts_total","key":"web","source":"computed","value":1}'


def test_unknown_or_non_counter_names_stop_the_start_naming_the_setting() -> None:
    metrics = Metrics()
    with pytest.raises(MetricsLogError, match="MLAPI_METRICS_LOG_COUNTERS: mlapi_no_such_texts_total"):
        CounterLog(metrics.registry, ["mlapi_no_such_texts_total"])
    registry = CollectorRegistry()
    Gauge("mlapi_depth_total", "a gauge with a counter's name", registry=registry)
    with pytest.raises(MetricsLogError, match="not a counter"):
        CounterLog(registry, ["mlapi_depth_total"])


def test_a_counter_whose_labels_clash_with_the_line_fields_is_refused() -> None:
    registry = CollectorRegistry()
    Counter("odd_total", "labels named like the fields", ["value"], registry=registry).labels(value="x")
    with pytest.raises(MetricsLogError, match="labels named"):
        CounterLog(registry, ["odd_total"])


def test_series_past_the_cap_are_left_out_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    counter = Counter("wide_total", "many label values", ["who"], registry=registry)
    log = CounterLog(registry, ["wide_total"], max_series=3)
    for i in range(5):
        counter.labels(who=f"w{i}").inc()
    with caplog.at_level(logging.WARNING, logger="mlapi.metrics_export"):
        written = [json.loads(line)["who"] for line in log.lines()]
        for i in range(5):
            counter.labels(who=f"w{i}").inc()
        again = [json.loads(line)["who"] for line in log.lines()]
    assert written == again == ["w0", "w1", "w2"]
    assert len([r for r in caplog.records if "wide_total" in r.getMessage()]) == 1


class _FlakyStdout:
    """A stdout whose first write fails, as a full pipe would."""

    def __init__(self) -> None:
        self.failed = False
        self.text = ""

    def write(self, text: str) -> int:
        if not self.failed:
            self.failed = True
            raise BrokenPipeError("stdout closed")
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def test_a_failed_write_keeps_its_increases_for_the_next(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from mlapi import metrics_export

    metrics = Metrics()
    metrics.count_key_texts("web", [False, False])
    log = CounterLog(metrics.registry, ["mlapi_key_texts_total"])
    stdout = _FlakyStdout()
    monkeypatch.setattr(sys, "stdout", stdout)

    async def run_until_two_writes() -> None:
        task = asyncio.create_task(metrics_export.publish(log, 0.01))
        while not stdout.failed:
            await asyncio.sleep(0.01)
        metrics.count_key_texts("web", [False])
        task.cancel()  # the write at cancellation carries what the failed one could not
        with pytest.raises(asyncio.CancelledError):
            await task

    loop = asyncio.new_event_loop()  # not asyncio.run: it would unset the loop later tests in this process use
    try:
        with caplog.at_level(logging.WARNING, logger="mlapi.metrics_export"):
            loop.run_until_complete(run_until_two_writes())
    finally:
        loop.close()
    assert _parsed(stdout.text.splitlines()) == {("web", "computed"): 3}
    assert any("stdout closed" in r.getMessage() for r in caplog.records)


def test_counter_list_setting_splits_and_checks_names() -> None:
    settings = Settings(metrics_log_counters="mlapi_key_texts_total, mlapi_shadow_texts_total,mlapi_key_texts_total")
    assert settings.metrics_log_counters == ["mlapi_key_texts_total", "mlapi_shadow_texts_total"]
    with pytest.raises(ValidationError, match="not a counter name"):
        Settings(metrics_log_counters="mlapi_key_texts")
    with pytest.raises(ValidationError):
        Settings(metrics_log_interval_seconds=-1)
    assert Settings().metrics_log_interval_seconds == 0  # off unless a platform turns it on


def test_the_app_writes_the_last_increases_when_it_stops(make_client, minilm_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    key = generate_key()
    keys = tmp_path / "keys"
    keys.write_text(key_line("web", key) + "\n")
    # An hour between writes: only the write at shutdown, after the drain, can produce these lines.
    with make_client(minilm_dir, api_keys_file=keys, metrics_log_interval_seconds=3600) as client:
        capsys.readouterr()
        for texts in (["export one", "export two"], ["export one"]):
            assert client.post("/predict", json={"text": texts}, headers={"X-API-Key": key}).is_success
        assert capsys.readouterr().out == ""
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert _parsed(lines) == {("web", "computed"): 2, ("web", "cached"): 1}


def test_without_the_interval_nothing_is_written(make_client, minilm_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with make_client(minilm_dir) as client:
        assert client.post("/predict", json={"text": ["quiet export"]}).is_success
    assert "mlapi_key_texts_total" not in capsys.readouterr().out


def test_serve_writes_lines_while_running_and_at_sigterm(minilm_dir: Path, unused_port: int) -> None:
    env = {**os.environ, "MLAPI_METRICS_LOG_INTERVAL_SECONDS": "0.5"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mlapi", "serve", "--model-dir", str(minilm_dir), "--port", str(unused_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    base = f"http://127.0.0.1:{unused_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.1)
        request = urllib.request.Request(base + "/predict", data=b'{"text": ["live export"]}', method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        assert process.stdout is not None
        # A periodic write reports the computed text (waits for it; no verdict on how soon).
        first = json.loads(next(line for line in process.stdout if line.startswith('{"metric"')))
        assert (first["key"], first["source"], first["value"]) == ("other", "computed", 1)
        with urllib.request.urlopen(request, timeout=10) as response:  # now cached
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
        rest = [json.loads(line) for line in process.stdout.read().splitlines() if line.startswith('{"metric"')]
        assert sum(d["value"] for d in rest if d["source"] == "cached") == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_refuses_a_counter_it_does_not_export(minilm_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlapi", "serve", "--model-dir", str(minilm_dir)],
        env={**os.environ, "MLAPI_METRICS_LOG_INTERVAL_SECONDS": "60",
             "MLAPI_METRICS_LOG_COUNTERS": "mlapi_key_texts_total,mlapi_no_such_texts_total"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "invalid configuration: MLAPI_METRICS_LOG_COUNTERS: mlapi_no_such_texts_total" in result.stderr
