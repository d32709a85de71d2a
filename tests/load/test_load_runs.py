"""The spike scenario and the locust file run against a real mlapi and report what they promise.

Short runs with scaled-down users and phases: these check the reports, not the server's speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bench
import pytest

LOAD_DIR = Path(bench.__file__).resolve().parent


def _k6() -> str:
    try:
        return bench.k6_bin()
    except SystemExit:
        pytest.skip("k6 is not installed")


def test_spike_reports_503s_and_recovery_and_writes_the_html_report(serve_mlapi, minilm_dir, tmp_path) -> None:
    server = serve_mlapi(minilm_dir)
    summary, html = tmp_path / "spike.json", tmp_path / "spike.html"
    env = {**os.environ, "K6_WEB_DASHBOARD": "true", "K6_WEB_DASHBOARD_PORT": "-1",
           "K6_WEB_DASHBOARD_PERIOD": "1s", "K6_WEB_DASHBOARD_EXPORT": str(html), "K6_NO_USAGE_REPORT": "true"}
    done = subprocess.run(
        [_k6(), "run", "-q", "-e", f"BASE_URL={server.base_url}", "-e", "VUS=2", "-e", "BASELINE=4s",
         "-e", "RAMP=2s", "-e", "RECOVERY=4s", "-e", "WINDOW_S=1", "-e", "THINK_S=0.05",
         "-e", f"SUMMARY_JSON={summary}", str(LOAD_DIR / "spike.js")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "503s:" in done.stdout and "recovery:" in done.stdout
    report = json.loads(summary.read_text())
    assert (report["baseline_users"], report["peak_users"], report["spike_end_s"]) == (2, 8, 8)
    assert report["requests"] > 0
    assert set(report["shed_503"]) == {"baseline", "spike", "recovery"}
    assert report["baseline_p95_ms"] > 0
    assert report["recovery_s"] is None or 0 <= report["recovery_s"] <= 4
    assert {w["window"] for w in report["windows"]} >= set(range(1, 12))
    assert html.stat().st_size > 10_000 and "<html" in html.read_text(errors="replace")[:2000].lower()


def test_locust_query_smoke_run_answers_every_request(serve_mlapi, minilm_dir, tmp_path) -> None:
    server = serve_mlapi(minilm_dir)
    locust = Path(sys.executable).parent / "locust"
    if not locust.exists():
        pytest.skip("locust is not installed (dev extra)")
    done = subprocess.run(
        [str(locust), "-f", str(LOAD_DIR / "locustfile.py"), "--host", server.base_url, "--headless", "-u", "3",
         "-r", "3", "-t", "4s", "--only-summary", "--csv", str(tmp_path / "locust"), "--html",
         str(tmp_path / "locust.html"), "--exit-code-on-error", "1"],
        env={**os.environ, "NEW_SHARE": "0.3", "THINK_S": "0.2"}, capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row.split(",")[1]: row.split(",") for row in (tmp_path / "locust_stats.csv").read_text().splitlines()[1:]}
    requests, failures = int(rows["/query"][2]), int(rows["/query"][3])
    assert requests > 0 and failures == 0
    assert (tmp_path / "locust.html").stat().st_size > 10_000
