"""Small helpers the benchmark relies on: request parsing of the seed server, /proc readers, sizes, options."""

from __future__ import annotations

import os
from pathlib import Path

import bench
import bench_procs
import bench_sizes
import bench_texts
import pytest
import seed_server

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"text": ["a", "b"]}', ["a", "b"]),
        (b'{"text": "one"}', ["one"]),
        (b'{"text": []}', None),
        (b'{"text": [1]}', None),
        (b"not json", None),
        (b"[1, 2]", None),
    ],
)
def test_seed_server_reads_the_predict_body(raw: bytes, expected: list[str] | None) -> None:
    assert seed_server.parse_texts(raw) == expected


def test_process_tree_and_memory_of_this_process() -> None:
    assert bench_procs.process_tree(os.getpid())[0] == os.getpid()
    assert bench_procs.tree_rss_kib(os.getpid()) > 0
    assert bench_procs.tree_hwm_kib(os.getpid()) >= bench_procs.tree_rss_kib(os.getpid()) // 2
    assert bench_procs.tree_cpu_s(os.getpid()) > 0
    assert bench_procs.machine_busy_s() > 0


def test_free_port_is_bindable() -> None:
    assert 0 < bench_procs.free_port() < 65536


def test_dependency_closure_follows_requirements() -> None:
    closure = bench_sizes.dependency_closure(["fastapi"])
    assert {"fastapi", "starlette", "pydantic"} <= closure
    assert bench_sizes.installed_bytes("fastapi") > 0


def test_serve_requirements_come_from_pyproject() -> None:
    names = " ".join(bench_sizes.serve_requirements(REPO / "pyproject.toml"))
    assert "onnxruntime" in names
    assert "torch" not in names


def test_quick_runs_every_server_for_five_seconds() -> None:
    args = bench.parse_args(["--quick"])
    assert args.duration == bench.QUICK_DURATION_S
    assert [s.name for s in args.servers] == [s.name for s in bench.SERVERS]


def test_servers_option_selects_and_rejects() -> None:
    assert [s.name for s in bench.parse_args(["--servers", "seed"]).servers] == ["seed"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--servers", "nope"])


def test_python_texts_follow_the_k6_rule() -> None:
    vocab = bench_texts.words()
    assert len(vocab) >= 256 and vocab[:3] == ["the", "movie", "film"]
    short = bench_texts.unique_texts(500, "short", seed=1)
    long = bench_texts.unique_texts(500, "long", seed=1)
    assert {len(t.split()) for t in short} <= set(range(5, 16))
    assert {len(t.split()) for t in long} <= set(range(23, 37))
    assert len(set(short)) == 500 and len(set(long)) == 500
    assert bench_texts.unique_texts(3, "short", seed=1) == short[:3]  # reproducible


def test_engine_and_profile_scenarios_are_in_the_run() -> None:
    onnx = next(s for s in bench.SERVERS if s.name == "mlapi-onnx")
    keys = {sc.key for phase in onnx.phases for sc in phase.scenarios}
    assert {"unique-32vu", "long-32vu", "profile-32vu", "seed-profile", "seed-profile-unseen", "cached-redis"} <= keys
    assert any(phase.redis for phase in onnx.phases)
    seed = next(s for s in bench.SERVERS if s.name == "seed")
    assert "seed-profile" in {sc.key for phase in seed.phases for sc in phase.scenarios}


def test_report_paths_are_written_relative_to_the_repository() -> None:
    report = {"logs": f"{bench.REPO}/load/results/tmp/logs-1", "runs": [{"log": f"see {bench.REPO}/load/x.log"}]}
    assert bench.repo_relative(report) == {"logs": "load/results/tmp/logs-1", "runs": [{"log": "see load/x.log"}]}
