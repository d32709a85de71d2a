"""Turn benchmark measurements into the three result files: JSON, a markdown table and a bar chart.

Kept apart from the code that runs servers so the arithmetic and the tables can
be tested in milliseconds, and so a saved JSON can be re-rendered without
running the benchmark again (`python load/bench_report.py RESULT.json`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

Report = dict[str, Any]

BASELINE_PREFIX = "seed"
PRIMARY = "mlapi-onnx"
UNIQUE_PREFIX = "unique-"
PROFILE = "seed-profile"
PROFILE_PACED = "seed-profile-paced"
THROUGHPUT_TARGET = 10.0
PROFILE_P99_TARGET_MS = 50.0
COLD_START_TARGET_S = 3.0


def scenario_from_k6(summary: Mapping[str, Any]) -> dict[str, float | int]:
    """Req/s, p50, p99 and error rate from a k6 `--summary-export` document.

    For k6 rate metrics the exported `value` is the share of true samples: the
    failed-request share for http_req_failed and the passing share for checks.
    """
    metrics = summary["metrics"]
    duration = metrics.get("http_req_duration", {})
    reqs = metrics.get("http_reqs", {"count": 0, "rate": 0.0})
    return {
        "requests": int(reqs.get("count", 0)),
        "req_per_s": round(float(reqs.get("rate", 0.0)), 2),
        "p50_ms": round(float(duration.get("med", 0.0)), 2),
        "p99_ms": round(float(duration.get("p(99)", 0.0)), 2),
        "error_rate": round(float(metrics.get("http_req_failed", {}).get("value", 0.0)), 4),
        "checks_rate": round(float(metrics.get("checks", {}).get("value", 0.0)), 4),
    }


def find(scenarios: Iterable[Mapping[str, Any]], server: str, scenario: str) -> Mapping[str, Any] | None:
    """The one result of `server` on `scenario`, if it ran."""
    return next((s for s in scenarios if s["server"] == server and s["scenario"] == scenario), None)


def is_baseline(server: str) -> bool:
    """True for the seed-style servers (every variant of them), which mlapi is compared with."""
    return server.startswith(BASELINE_PREFIX)


def _best(runs: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return max((r for r in runs if "req_per_s" in r), key=lambda r: r["req_per_s"], default=None)


def best_unique(scenarios: Iterable[Mapping[str, Any]], server: str) -> Mapping[str, Any] | None:
    """The uncached scenario where `server` reached its highest req/s (its best of 1/4/32 VUs)."""
    return _best(s for s in scenarios if s["server"] == server and s["scenario"].startswith(UNIQUE_PREFIX))


def baseline_best(scenarios: Iterable[Mapping[str, Any]], scenario: str | None = None) -> Mapping[str, Any] | None:
    """The fastest seed-style result, on one scenario or (None) on any uncached one."""
    prefix = scenario or UNIQUE_PREFIX
    return _best(s for s in scenarios if is_baseline(s["server"]) and s["scenario"].startswith(prefix))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator rounded to one decimal, None when either is missing or zero."""
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 1)


def first_cold_start(report: Mapping[str, Any], server: str) -> float | None:
    """Seconds from process start to the first healthy answer on the server's first start."""
    starts = report.get("servers", {}).get(server, {}).get("starts", [])
    return starts[0]["cold_start_s"] if starts else None


def evaluate_targets(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Measured value and verdict for each published target; `met` is None when it could not be measured."""
    scenarios = report.get("scenarios", [])
    mlapi_best, seed_best = best_unique(scenarios, PRIMARY), baseline_best(scenarios)
    speedup = ratio(mlapi_best and mlapi_best["req_per_s"], seed_best and seed_best["req_per_s"])
    profile = find(scenarios, PRIMARY, PROFILE)
    paced = find(scenarios, PRIMARY, PROFILE_PACED)
    cold = first_cold_start(report, PRIMARY)
    return [
        _target(
            f"uncached /predict, 1 text/request: {PRIMARY} >= {THROUGHPUT_TARGET:g}x the seed server's best "
            "of 1/4/32 VUs",
            speedup,
            "x",
            None if speedup is None else speedup >= THROUGHPUT_TARGET,
        ),
        _target(
            f"seeds' profile as graded (10 VUs, 1 s think time, 95% repeated batch) p99 < "
            f"{PROFILE_P99_TARGET_MS:g} ms ({PRIMARY})",
            paced and paced["p99_ms"],
            "ms",
            None if paced is None else paced["p99_ms"] < PROFILE_P99_TARGET_MS,
        ),
        _target(
            f"seeds' profile flat out (10 VUs, no think time, 95% repeated batch) p99 < "
            f"{PROFILE_P99_TARGET_MS:g} ms ({PRIMARY})",
            profile and profile["p99_ms"],
            "ms",
            None if profile is None else profile["p99_ms"] < PROFILE_P99_TARGET_MS,
        ),
        _target(
            f"cold start (process start to first 200 on /health) < {COLD_START_TARGET_S:g} s ({PRIMARY})",
            cold,
            "s",
            None if cold is None else cold < COLD_START_TARGET_S,
        ),
    ]


def _target(name: str, measured: float | None, unit: str, met: bool | None) -> dict[str, Any]:
    return {"target": name, "measured": measured, "unit": unit, "met": met}


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def verdict(met: bool | None) -> str:
    """The word shown for a target's outcome."""
    return {True: "met", False: "NOT met", None: "not measured"}[met]


def _servers_in_order(report: Mapping[str, Any]) -> list[str]:
    return list(report.get("servers", {}))


def _cpu_split(result: Mapping[str, Any]) -> str:
    shares = [result.get(k) for k in ("server_cpu_share", "k6_cpu_share", "other_cpu_share")]
    return "n/a" if None in shares else " / ".join(f"{v:.0%}" for v in shares)


def _scenario_table(report: Mapping[str, Any]) -> list[str]:
    lines = [
        "| scenario | server | req/s | p50 (ms) | p99 (ms) | errors | checks | CPU server / k6 / other |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in report.get("scenarios", []):
        if "error" in s:
            lines.append(f"| {s['title']} | {s['server']} | {s['error']} | | | | | |")
            continue
        lines.append(
            f"| {s['title']} | {s['server']} | {_fmt(s['req_per_s'])} | {_fmt(s['p50_ms'])} | "
            f"{_fmt(s['p99_ms'])} | {s['error_rate']:.2%} | {s['checks_rate']:.2%} | {_cpu_split(s)} |"
        )
    return lines


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _unique_keys(scenarios: Iterable[Mapping[str, Any]]) -> list[str]:
    keys = {s["scenario"] for s in scenarios if s["scenario"].startswith(UNIQUE_PREFIX)}
    return sorted(keys, key=lambda k: int(k.removeprefix(UNIQUE_PREFIX).removesuffix("vu")))


def _rate(run: Mapping[str, Any] | None) -> float | None:
    return run.get("req_per_s") if run else None


def _ratio_cells(runs: list[Mapping[str, Any] | None], base: Mapping[str, Any] | None) -> list[str]:
    cells = [_fmt(_rate(base))]
    for run in runs:
        cells += [_fmt(_rate(run)), _fmt(ratio(_rate(run), _rate(base)))]
    return cells


def _ratio_table(report: Mapping[str, Any]) -> list[str]:
    """Req/s of each mlapi server next to the best seed-style server, per VU count and best of all."""
    scenarios = report.get("scenarios", [])
    others = [name for name in _servers_in_order(report) if not is_baseline(name)]
    header = ["uncached, 1 text/request", "best seed-style req/s"]
    header += [cell for o in others for cell in (f"{o} req/s", "x seed")]
    lines = [_row(header), _row(["---"] * len(header))]
    for key in _unique_keys(scenarios):
        vus = key.removeprefix(UNIQUE_PREFIX).removesuffix("vu")
        runs = [find(scenarios, o, key) for o in others]
        lines.append(_row([f"{vus} VUs", *_ratio_cells(runs, baseline_best(scenarios, key))]))
    best_runs = [best_unique(scenarios, o) for o in others]
    lines.append(_row(["best of 1/4/32 VUs", *_ratio_cells(best_runs, baseline_best(scenarios))]))
    return lines


def _server_table(report: Mapping[str, Any]) -> list[str]:
    lines = ["| server | cold start (s) | peak RSS of process tree (MiB) |", "| --- | ---: | ---: |"]
    for name, info in report.get("servers", {}).items():
        starts = info.get("starts", [])
        cold = _fmt(starts[0]["cold_start_s"], 2) if starts else "n/a"
        rss = _fmt(max((s["peak_rss_mib"] for s in starts), default=None), 0)
        note = f" ({info['error']})" if info.get("error") else ""
        lines.append(f"| {name}{note} | {cold} | {rss} |")
    return lines


def _targets_table(report: Mapping[str, Any]) -> list[str]:
    lines = ["| target | measured | verdict |", "| --- | ---: | --- |"]
    for t in report.get("targets", []):
        measured = "n/a" if t["measured"] is None else f"{t['measured']:g} {t['unit']}"
        lines.append(f"| {t['target']} | {measured} | {verdict(t['met'])} |")
    return lines


def _footprint_lines(report: Mapping[str, Any]) -> list[str]:
    fp = report.get("footprint")
    if not fp:
        return ["Not measured."]
    return [
        "| installed packages | MiB |",
        "| --- | ---: |",
        f"| serving runtime (`mlapi[serve]` and what it pulls in) | {_fmt(fp['serve_total_mib'])} |",
        f"| seed runtime ({', '.join(fp['seed_runtime_requirements'])} and what they pull in) | "
        f"{_fmt(fp['seed_runtime_total_mib'])} |",
    ]


def _machine_lines(report: Mapping[str, Any]) -> list[str]:
    m = report.get("machine", {})
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    return [
        f"- Machine: {m.get('cpu_model', 'unknown CPU')}, {m.get('cores', '?')} cores, "
        f"{_fmt(m.get('memory_gib'))} GiB RAM",
        f"- Software: {versions}",
        f"- Date: {report.get('date', '?')}; {report.get('duration_s', '?')} s per scenario",
        f"- Command: `{report.get('command', '?')}`",
        f"- Model: {report.get('model', {}).get('description', '?')}",
    ]


def render_markdown(report: Mapping[str, Any]) -> str:
    """The human-readable result: every table a reader needs to judge the targets, in one page."""
    sections = [
        [f"# mlapi benchmark, {report.get('date', '?')}", ""],
        _machine_lines(report) + [""],
        ["## Targets", ""] + _targets_table(report) + [""],
        ["## Uncached throughput against the seed server", ""] + _ratio_table(report) + [""],
        ["## Every scenario", ""] + _scenario_table(report) + [""],
        ["## Cold start and memory", ""] + _server_table(report) + [""],
        ["## Install footprint", ""] + _footprint_lines(report) + [""],
    ]
    return "\n".join(line for section in sections for line in section)


def write_json(report: Mapping[str, Any], path: Path) -> None:
    """Write the full report, the source every other file is rendered from."""
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")


def write_chart(report: Mapping[str, Any], path: Path) -> None:
    """Bar chart of req/s per scenario and server on a log scale, since the servers differ by 10x or more."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = report.get("scenarios", [])
    titles = list(dict.fromkeys(s["title"] for s in scenarios))
    servers = _servers_in_order(report)
    width = 0.8 / max(len(servers), 1)
    fig, ax = plt.subplots(figsize=(10, 5))
    for i, server in enumerate(servers):
        values = [
            next((s.get("req_per_s", 0) for s in scenarios if s["server"] == server and s["title"] == t), 0)
            for t in titles
        ]
        xs = [j + (i - (len(servers) - 1) / 2) * width for j in range(len(titles))]
        bars = ax.bar(xs, values, width, label=server)
        ax.bar_label(bars, labels=[f"{v:.0f}" if v else "" for v in values], fontsize=7)
    ax.set_xticks(range(len(titles)), titles, rotation=15, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("requests per second (log scale)")
    ax.set_title(f"/predict throughput, {report.get('machine', {}).get('cores', '?')} cores, {report.get('date')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(report: Report, out_dir: Path) -> dict[str, Path]:
    """Write <date>-bench.json, .md and .png into out_dir and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{report['date']}-bench"
    paths = {"json": stem.with_suffix(".json"), "md": stem.with_suffix(".md"), "png": stem.with_suffix(".png")}
    write_json(report, paths["json"])
    paths["md"].write_text(render_markdown(report))
    write_chart(report, paths["png"])
    return paths


def main(argv: list[str] | None = None) -> int:
    """Re-render the markdown and chart from a saved JSON result."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python load/bench_report.py RESULT.json", file=sys.stderr)
        return 2
    source = Path(args[0])
    report = json.loads(source.read_text())
    report["targets"] = evaluate_targets(report)
    for name, path in write_all(report, source.parent).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
