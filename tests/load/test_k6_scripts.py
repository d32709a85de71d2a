"""The k6 scripts parse, and read their virtual users and duration from the environment as documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import bench
import pytest

LOAD_DIR = Path(bench.__file__).resolve().parent


def _inspect(script: str, *env: str) -> dict[str, object]:
    try:
        k6 = bench.k6_bin()
    except SystemExit:
        pytest.skip("k6 is not installed")
    argv = [k6, "inspect", *[arg for pair in env for arg in ("-e", pair)], str(LOAD_DIR / script)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_predict_unique_takes_vus_and_duration_from_env() -> None:
    options = _inspect("predict_unique.js", "VUS=32", "DURATION=7s")
    assert (options["vus"], options["duration"]) == (32, "7s")
    assert set(options["thresholds"]) == {"checks", "http_req_failed"}


def test_seed_profile_runs_ten_users_with_the_seeds_thresholds() -> None:
    options = _inspect("seed_profile.js", "DURATION=5s")
    assert (options["vus"], options["duration"]) == (10, "5s")
    assert options["thresholds"]["checks"] == ["rate>0.99"]
    assert "http_req_failed" in options["thresholds"]


def test_every_scenario_script_exists() -> None:
    scripts = {s.script for spec in bench.SERVERS for phase in spec.phases for s in phase.scenarios}
    assert all((LOAD_DIR / script).is_file() for script in scripts)
    assert sys.executable


def test_mixed_takes_vus_and_duration_from_env() -> None:
    options = _inspect("mixed.js", "VUS=3", "DURATION=4s")
    assert (options["vus"], options["duration"]) == (3, "4s")
    assert options["thresholds"]["checks"] == ["rate>0.99"]


def test_spike_ramps_to_four_times_the_seeds_users_in_ten_seconds_and_back() -> None:
    stages = _inspect("spike.js")["scenarios"]["spike"]
    assert stages["startVUs"] == 10
    assert stages["stages"] == [
        {"duration": "30s", "target": 10},
        {"duration": "10s", "target": 40},
        {"duration": "0s", "target": 40},
        {"duration": "10s", "target": 10},
        {"duration": "30s", "target": 10},
    ]


def test_spike_keeps_a_p95_and_error_rate_per_window() -> None:
    thresholds = _inspect("spike.js", "BASELINE=4s", "RAMP=2s", "RECOVERY=4s", "WINDOW_S=1")["thresholds"]
    windows = {name for name in thresholds if name.startswith("http_req_duration{window:")}
    assert len(windows) == 13  # 12 s in 1 s windows, plus the one k6 stops in
    assert "shed_503{phase:spike}" in thresholds
