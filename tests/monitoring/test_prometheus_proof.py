"""Every dashboard and alert expression returns data from a real Prometheus scraping a real mlapi under k6 load.

mlapi serves the baked MiniLM with a real redis-server (stopped and restarted mid-run, so the Redis error and
circuit series move) and a queue small enough that concurrent misses are shed with 503; k6 (load/mixed.js) sends
cache hits, misses, /query and 422s. It mirrors every text to a second mlapi serving the tiny classifier
(MLAPI_SHADOW_URL), so the shadow series and recording rules have data. Prometheus 2.42 (Debian's) scrapes it
every second on loopback and loads alerts.yaml. Expressions over series only a cluster publishes
(monitoring_files.KUBERNETES_ONLY: kube-state-metrics, cAdvisor) cannot come from this scrape;
test_monitoring_files.py checks each one has a promtool unit test instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from monitoring_files import (
    ALERTS,
    alert_as_bool,
    alert_rules,
    dashboard_expressions,
    is_kubernetes_only,
    recording_rules,
)

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _k6() -> str:
    beside = Path(sys.executable).parent / "k6"
    found = shutil.which("k6") or (str(beside) if beside.exists() else None)
    if found is None:
        pytest.fail("k6 is not installed (the dev extra bundles it)")
    return found


class Prometheus:
    """A real prometheus on a free loopback port, with its own config and storage under tmp_path."""

    def __init__(self, workdir: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed (.ci/run installs it: apt-get install prometheus)")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "mlapi", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{_free_port()}"
        self._log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"prometheus exited; see {self._log.name}"
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus never became ready")

    def query(self, expr: str) -> list[dict]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        return list(body["data"]["result"])

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr}: {result}"
        return float(result[0]["value"][1])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log.close()


@pytest.fixture
def scraped(serve_mlapi, minilm_dir, classifier_dir, redis_server, tmp_path  # type: ignore[no-untyped-def]
            ) -> Iterator[Prometheus]:
    """Prometheus holding the series of an mlapi that served a k6 run, a Redis outage and shed load, and mirrored
    every text to a candidate serving another model."""
    candidate = serve_mlapi(classifier_dir, MLAPI_INTRA_OP_THREADS="1")
    server = serve_mlapi(
        minilm_dir, MLAPI_REDIS_URL=redis_server.url, MLAPI_REDIS_COOLDOWN_SECONDS="1",
        # A queue of one request's texts: a second batch of misses arriving during a pass is shed with 503.
        MLAPI_MAX_BATCH="8", MLAPI_MAX_QUEUE="8", MLAPI_MAX_LABELS="7",
        MLAPI_SHADOW_URL=candidate.base_url, MLAPI_SHADOW_FRACTION="1",
    )
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{server.port}")
    try:
        prometheus.wait_ready()
        env = {**os.environ, "K6_WEB_DASHBOARD": "false", "K6_NO_USAGE_REPORT": "true"}
        k6 = subprocess.Popen(
            [_k6(), "run", "--quiet", "-e", f"BASE_URL={server.base_url}", "-e", "VUS=8", "-e", "DURATION=12s",
             "-e", "NEW_SHARE=0.5", "-e", "BATCH=8", str(REPO / "load" / "mixed.js")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        time.sleep(4)
        redis_server.stop()  # Redis errors and an open circuit while traffic flows
        time.sleep(3)
        redis_server.start()
        out, _ = k6.communicate(timeout=120)
        assert k6.returncode == 0, out
        time.sleep(3)  # the last scrapes and a rule evaluation after the run
        yield prometheus
    finally:
        prometheus.stop()


def test_every_expression_returns_data_from_a_real_scrape(scraped: Prometheus) -> None:
    # The run did what the panels are for: hits, misses, 422s, 503s, Redis failures and an open circuit.
    assert scraped.value('sum(mlapi_requests_total{status="422"})') > 0
    assert scraped.value('sum(mlapi_requests_total{status="503"})') > 0
    assert scraped.value('sum(mlapi_rejected_total{reason="queue_full"})') > 0
    assert scraped.value("sum(mlapi_cache_hits_total)") > 0
    assert scraped.value("sum(mlapi_cache_misses_total)") > 0
    assert scraped.value('sum(mlapi_cache_errors_total{kind!="skipped"})') > 0
    assert scraped.value("max(max_over_time(mlapi_cache_circuit_open[5m]))") == 1
    assert scraped.value('sum(mlapi_requests_total{route="/query",status="200"})') > 0
    assert scraped.value('sum(mlapi_shadow_texts_total{outcome=~"agree|flip"})') > 0
    assert scraped.value("count(mlapi:shadow_flip_ratio:rate5m)") == 1

    local = [e for e in dashboard_expressions() if not is_kubernetes_only(e)]
    local += [alert_as_bool(r["expr"]) for r in alert_rules() if not is_kubernetes_only(r["expr"])]
    assert len(local) == 31
    empty = [expr for expr in local if not scraped.query(expr)]
    assert not empty, f"no data for: {empty}"

    # Prometheus loaded every rule and evaluates each without error.
    groups = httpx.get(f"{scraped.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()} | {r["record"] for r in recording_rules()}
    # The per-key texts the cost rules divide by are scraped from the live service.
    assert scraped.value('sum(mlapi_key_texts_total{source="computed"})') > 0
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
