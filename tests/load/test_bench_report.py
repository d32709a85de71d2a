"""The result files say exactly what was measured: parsing k6's export, the verdicts, the tables, the files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bench_report


def _k6_export(rate: float, count: int, med: float, p99: float, failed: float = 0.0) -> dict[str, Any]:
    return {
        "metrics": {
            "http_reqs": {"count": count, "rate": rate},
            "http_req_duration": {"med": med, "p(99)": p99, "avg": med},
            "http_req_failed": {"passes": 0, "fails": count, "value": failed},
            "checks": {"passes": 2 * count, "fails": 0, "value": 1},
        }
    }


def _result(server: str, scenario: str, rps: float, p99: float = 10.0) -> dict[str, Any]:
    title = {"seed-profile": "seeds' profile, 10 VUs"}.get(scenario, scenario)
    return {
        "server": server,
        "scenario": scenario,
        "title": title,
        "vus": 1,
        "req_per_s": rps,
        "p50_ms": 5.0,
        "p99_ms": p99,
        "error_rate": 0.0,
        "checks_rate": 1.0,
        "server_cpu_share": 0.9,
        "k6_cpu_share": 0.05,
        "other_cpu_share": 0.01,
    }


def _report() -> dict[str, Any]:
    scenarios = [
        _result("seed", "unique-1vu", 20.0),
        _result("seed", "unique-4vu", 30.0),
        _result("seed-threadpool", "unique-4vu", 40.0),
        _result("mlapi-onnx", "unique-1vu", 150.0),
        _result("mlapi-onnx", "unique-4vu", 420.0),
        _result("mlapi-onnx", "unique-32vu", 450.0),
        _result("seed", "long-1vu", 15.0),
        _result("mlapi-onnx", "long-32vu", 90.0),
        _result("mlapi-onnx", "seed-profile", 2000.0, p99=30.0),
        _result("seed", "seed-profile", 10.0, p99=900.0),
        _result("mlapi-onnx", "cached-redis", 3000.0) | {"server_cores": 1.5, "redis_cores": 0.2},
    ]
    starts = [{"phase": "uncached", "cold_start_s": 1.5, "peak_rss_mib": 400.0, "hwm_sum_mib": 400.0}]
    return {
        "date": "2030-01-02",
        "command": "python load/bench.py --quick",
        "duration_s": 5,
        "machine": {"cpu_model": "Test CPU", "cores": 2, "memory_gib": 8.0, "versions": {"python": "3.11"}},
        "model": {"description": "random DistilBERT-base"},
        "servers": {
            "seed": {"starts": starts},
            "seed-threadpool": {"starts": starts},
            "mlapi-onnx": {"starts": starts},
        },
        "scenarios": scenarios,
        "engine": {
            "workers": 1, "threads_per_worker": 2, "batch_max_size": 32, "batch_max_tokens": 8192,
            "pass_overhead_tokens": 8.0,
            "runs": [
                {"length": "short", "vus": 32, "texts_per_s": 500.0, "p50_ms": 60.0, "p99_ms": 80.0},
                {"length": "long", "vus": 32, "texts_per_s": 100.0, "p50_ms": 300.0, "p99_ms": 400.0},
            ],
        },
        "footprint": {
            "serve_total_mib": 200.0,
            "seed_runtime_total_mib": 1000.0,
            "seed_runtime_requirements": ["torch", "transformers"],
        },
    }


def test_scenario_from_k6_reads_rate_latency_and_error_share() -> None:
    got = bench_report.scenario_from_k6(_k6_export(rate=123.456, count=600, med=7.25, p99=19.5, failed=0.02))
    assert got == {
        "requests": 600,
        "req_per_s": 123.46,
        "p50_ms": 7.25,
        "p99_ms": 19.5,
        "error_rate": 0.02,
        "checks_rate": 1.0,
    }


def test_targets_compare_with_the_best_seed_variant() -> None:
    targets = bench_report.evaluate_targets(_report())
    speedup, fraction, profile, cold, versus_old, versus_peer = targets
    assert speedup["measured"] == 11.2  # 450 against the threadpool seed's 40, the best baseline
    assert speedup["met"] is True
    assert (fraction["measured"], fraction["met"]) == (0.9, True)  # 450 end to end against 500 alone
    assert (profile["measured"], profile["met"]) == (30.0, True)
    assert (cold["measured"], cold["met"]) == (1.5, True)
    assert versus_old["met"] is None  # the old recipe was not in this run
    assert versus_peer["met"] is None  # nor infinity-emb


def test_batch_invariant_int8_is_held_to_the_old_recipe_in_the_same_run() -> None:
    report = _report()
    report["scenarios"].append(_result("mlapi-onnx-per-tensor", "unique-32vu", 500.0))
    versus_old = _target(report, bench_report.PER_TENSOR)
    assert (versus_old["measured"], versus_old["met"]) == (0.9, False)  # 450 against 500: more than 5% slower
    report["scenarios"][-1]["req_per_s"] = 470.0
    assert _target(report, bench_report.PER_TENSOR)["met"] is True


def _target(report: dict[str, Any], against: str) -> dict[str, Any]:
    return next(t for t in bench_report.evaluate_targets(report) if t["target"].endswith(f"against {against})"))


def test_mlapi_is_held_to_infinity_emb_on_the_same_model_in_the_same_run() -> None:
    report = _report()
    report["scenarios"].append(_result("infinity-emb", "unique-32vu", 460.0))
    assert (_target(report, "infinity-emb")["measured"], _target(report, "infinity-emb")["met"]) == (0.98, False)
    report["scenarios"][-1]["req_per_s"] = 300.0
    assert (_target(report, "infinity-emb")["measured"], _target(report, "infinity-emb")["met"]) == (1.5, True)


def test_side_by_side_table_puts_per_row_the_old_recipe_the_peer_and_the_seed_server_beside_mlapi() -> None:
    report = _report()
    report["scenarios"] += [_result("mlapi-onnx-per-row", "unique-32vu", 400.0),
                            _result("mlapi-onnx-per-tensor", "unique-32vu", 500.0),
                            _result("infinity-emb", "unique-32vu", 300.0)]
    report["servers"] |= {name: {"starts": []} for name in ("mlapi-onnx-per-row", "mlapi-onnx-per-tensor",
                                                            "infinity-emb")}
    markdown = bench_report.render_markdown(report)
    # mlapi 450 req/s; per row 400 (1.12); old recipe 500 (0.90); infinity-emb 300 (1.50); no seed-style run at 32
    assert "| unique-32vu | 450.0 | 400.0 | 1.12 | 500.0 | 0.90 | 300.0 | 1.50 | n/a | n/a |" in markdown
    assert "| unique-4vu |" not in markdown.split("## Side by side")[1].split("##")[0]  # no other server there


def test_ratios_per_text_length_and_end_to_end_fraction() -> None:
    report = _report()
    assert bench_report.seed_ratio(report["scenarios"], "long-") == 6.0
    assert bench_report.end_to_end_fraction(report, "long", 32) == 0.9
    assert bench_report.end_to_end_fraction(report, "short", 4) is None  # no engine run at 4
    assert bench_report.cached_per_core(report) == 2000.0  # 3000 req/s on 1.5 server cores


def test_targets_are_not_measured_when_a_server_is_missing() -> None:
    report = _report()
    report["scenarios"] = [s for s in report["scenarios"] if s["server"].startswith("seed")]
    report["servers"].pop("mlapi-onnx")
    report.pop("engine")
    assert [t["met"] for t in bench_report.evaluate_targets(report)] == [None] * 6


def test_profile_summary_ranks_leaves_and_areas() -> None:
    raw = "\n".join([
        "_bootstrap (threading.py:1);run (onnxruntime/capi/onnxruntime_inference_collection.py:266) 70",
        "main (uvicorn/main.py:1);run (asyncio/base_events.py:1);validate (pydantic/main.py:1) 20",
        "main (uvicorn/main.py:1);data_received (uvicorn/protocols/http/httptools_impl.py:1) 10",
        "not a sample line",
    ])
    prof = bench_report.summarize_profile(raw)
    assert prof["samples"] == 100
    assert prof["top"][0] == {"function": "run (onnxruntime/capi/onnxruntime_inference_collection.py:266)",
                              "share": 0.7}
    assert prof["areas"] == {"inference (ONNX Runtime)": 0.7, "validation and serialisation": 0.2,
                             "HTTP server (uvicorn)": 0.1}


def test_markdown_has_ratios_targets_and_the_run_facts() -> None:
    report = _report()
    report["machine"]["cpu_flags"] = ["avx2", "fma"]
    report["targets"] = bench_report.evaluate_targets(report)
    text = bench_report.render_markdown(report)
    assert "| 4 VUs | 40.0 | 420.0 | 10.5 |" in text
    assert "| best of 1/4/32 VUs | 40.0 | 450.0 | 11.2 |" in text
    assert "| short | 32 | 500.0 (60.0) | 450.0 (5.0) | 0.90 |" in text
    assert "Test CPU (family/model ?), 2 cores, 8.0 GiB RAM; CPU flags: avx2, fma" in text
    assert "`python load/bench.py --quick`" in text
    assert "| mlapi-onnx | 1.50 | 400 |" in text
    assert "## Summary" in text
    assert "| seeds' profile as graded (10 VUs, no think time): req/s, p50 / p99 ms | 2,000.0, 5.0 / 30.0 | " \
           "10.0, 5.0 / 900.0 | 200.0x |" in text


def test_write_all_writes_json_markdown_and_chart(tmp_path: Path) -> None:
    report = _report()
    report["targets"] = bench_report.evaluate_targets(report)
    paths = bench_report.write_all(report, tmp_path)
    assert sorted(p.name for p in paths.values()) == [
        "2030-01-02-bench.json",
        "2030-01-02-bench.md",
        "2030-01-02-bench.png",
    ]
    assert json.loads(paths["json"].read_text())["scenarios"][0]["req_per_s"] == 20.0
    assert paths["png"].read_bytes().startswith(b"\x89PNG")


def test_write_all_keeps_the_main_html_reports_only(tmp_path: Path) -> None:
    report = _report()
    logs = tmp_path / "tmp"
    logs.mkdir()
    for run in report["scenarios"]:
        html = logs / f"{run['server']}-{run['scenario']}.html"
        html.write_text("<html></html>")
        run["html_report"] = str(html)
    report["targets"] = bench_report.evaluate_targets(report)
    bench_report.write_all(report, tmp_path / "out")
    kept = sorted(p.name for p in (tmp_path / "out" / "2030-01-02-bench-html").iterdir())
    assert kept == ["mlapi-onnx-seed-profile.html", "mlapi-onnx-unique-32vu.html", "seed-seed-profile.html"]
    markdown = (tmp_path / "out" / "2030-01-02-bench.md").read_text()
    assert "(2030-01-02-bench-html/mlapi-onnx-unique-32vu.html)" in markdown


def test_readme_block_is_replaced_by_the_summary_table(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{bench_report.README_START}\nold numbers\n{bench_report.README_END}\n\n## Next\n")
    report = _report()
    bench_report.update_readme(report, readme, "2030-01-02-bench.md")
    text = readme.read_text()
    assert "old numbers" not in text and text.endswith("\n\n## Next\n")
    assert "[2030-01-02](load/results/2030-01-02-bench.md)" in text
    assert "| uncached, 1 short text per request, best of 1/4/32 VUs: req/s | 450.0 | 40.0 | 11.2x |" in text
    bench_report.update_readme(report, readme, "2030-01-02-bench.md")  # idempotent
    assert readme.read_text() == text
