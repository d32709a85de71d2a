"""int8 recipes side by side on one model, in one run: speed of the engine alone, drift, and batch invariance.

Compares, on the same baked fp32 graph: ONNX Runtime's dynamic int8 (one activation scale per tensor, every linear
layer per channel: the recipe mlapi shipped before, kept here only to measure against), mlapi's int8 with activation
scales calibrated at bake (what bake tries first), its per-row int8 with attention's Q/K/V projection in int8 too
(next), the same with the fused attention left in fp32, and fp32. For each: texts per second through `infer_texts`
at 1 text per pass and at 32 short texts per pass, the largest change of a probe text's output when it shares a
pass (must be 0), and the score drift against fp32. The graphs are timed in turns (ROUNDS rounds, each graph a
slice of every round), so other work on a shared machine slows them alike. Writes load/results/<date>-int8.{json,md}.

Usage: python load/bench_int8.py [--model-dir DIR]   (default: bake a DistilBERT-base-sized random classifier)
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from bench import write_per_tensor  # noqa: E402
from bench_texts import unique_texts  # noqa: E402

ROUNDS = 4


def _timed(backend, encoder, texts: list[str], per_pass: int, seconds: float) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    from mlapi.engine.batching import infer_texts

    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk = texts[done % len(texts):][:per_pass] or texts[:per_pass]
        infer_texts(backend, encoder, chunk, per_pass, 8192)
        done += len(chunk)
    return done, time.perf_counter() - started


def _rates_in_turns(backends: dict, encoder, texts: list[str], per_pass: int, seconds: float) -> dict[str, float]:  # type: ignore[type-arg,no-untyped-def]
    """Texts per second of each backend, timed in turns so a busy spell on the machine is shared by all."""
    from mlapi.engine.batching import infer_texts

    totals = {name: [0, 0.0] for name in backends}
    for backend in backends.values():
        infer_texts(backend, encoder, texts[:per_pass], per_pass, 8192)
    for _ in range(ROUNDS):
        for name, backend in backends.items():
            done, spent = _timed(backend, encoder, texts, per_pass, seconds / ROUNDS)
            totals[name][0] += done
            totals[name][1] += spent
    return {name: round(done / spent, 1) for name, (done, spent) in totals.items()}


def main(argv: list[str] | None = None) -> int:
    from mlapi.build.calibration import CALIBRATION_TEXTS, activation_ranges
    from mlapi.build.quantize import PROBE_TEXTS, RECIPES, batch_invariance, calibrated_inputs, quantize
    from mlapi.engine.backends.onnx import OnnxBackend
    from mlapi.engine.batching import infer_texts
    from mlapi.engine.manifest import Manifest
    from mlapi.engine.scoring import softmax
    from mlapi.engine.tokenization import TextEncoder
    from mlapi.settings import usable_cpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="int8-bench-"))
    model_dir = args.model_dir
    if model_dir is None:
        subprocess.run([sys.executable, str(ROOT / "make_model.py"), str(work / "source")], check=True)
        model_dir = work / "baked"
        subprocess.run([sys.executable, "-m", "mlapi", "bake", str(work / "source"), "--out", str(model_dir),
                        "--onnx-only", "--no-int8"], check=True)
    manifest = Manifest.load(model_dir)
    encoder = TextEncoder(model_dir / "tokenizer.json", manifest.max_length, manifest.input_names)
    fp32 = model_dir / str(manifest.onnx_fp32)
    calibrated, per_row, per_row_attention_fp32 = RECIPES[:3]
    now_name = f"int8, scales calibrated at bake ({calibrated.name}, bake's first choice)"
    per_row_name = f"int8 per row, attention projections too ({per_row.name})"
    graphs = {"fp32": fp32, "int8 per tensor (before)": work / "per-tensor.onnx",
              f"int8 per row, fused attention in fp32 ({per_row_attention_fp32.name})":
                  work / "per-row-attention-fp32.onnx",
              per_row_name: work / "per-row.onnx", now_name: work / "calibrated.onnx"}
    write_per_tensor(fp32, graphs["int8 per tensor (before)"])
    ranges = activation_ranges(fp32, encoder, CALIBRATION_TEXTS, calibrated_inputs(fp32))
    quantize(fp32, graphs[now_name], calibrated, ranges)
    quantize(fp32, graphs[per_row_name], per_row)
    quantize(fp32, work / "per-row-attention-fp32.onnx", per_row_attention_fp32)
    threads = usable_cpus()
    texts = unique_texts(512, "short", seed=3)
    reference = infer_texts(OnnxBackend(fp32, threads, "fp32"), encoder, list(PROBE_TEXTS), 32, 8192)
    rows: dict[str, dict[str, float]] = {}
    backends = {name: OnnxBackend(graph, threads, name) for name, graph in graphs.items()}
    for name, backend in backends.items():
        outputs = infer_texts(backend, encoder, list(PROBE_TEXTS), 32, 8192)
        rows[name] = {
            "max score drift vs fp32": float(np.abs(softmax(outputs) - softmax(reference)).max()),
            **batch_invariance(backend, encoder, list(PROBE_TEXTS[:12])),
        }
    for per_pass in (1, 32):
        for name, rate in _rates_in_turns(backends, encoder, texts, per_pass, args.seconds).items():
            rows[name][f"texts/s, {per_pass} per pass"] = rate
    keys = ("texts/s, 1 per pass", "texts/s, 32 per pass")
    before = rows["int8 per tensor (before)"]
    ratios = {key: round(rows[now_name][key] / before[key], 3) for key in keys}
    per_row_ratios = {key: round(rows[per_row_name][key] / before[key], 3) for key in keys}
    import onnxruntime

    result = {
        "date": datetime.date.today().isoformat(),
        "command": "python load/bench_int8.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip(),
        "machine": {"cpu": _cpu_model(), "flags": _flags(), "cores": threads, "python": platform.python_version(),
                    "onnxruntime": onnxruntime.__version__},
        "model": manifest.source, "rows": rows, "calibrated_over_per_tensor": ratios,
        "per_row_over_per_tensor": per_row_ratios,
    }
    out = ROOT / "results" / f"{result['date']}-int8"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# int8 recipes, {result['date']}", "", f"`{result['command']}` on {result['machine']['cpu']} "
             f"({', '.join(result['machine']['flags'])}), {threads} threads, onnxruntime "
             f"{result['machine']['onnxruntime']}; model: a DistilBERT-base-sized classifier (random weights).", "",
             "| graph | texts/s, 1 per pass | texts/s, 32 per pass | max score drift vs fp32 | probe answers moved "
             "by their batch | largest move |", "|---|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['texts/s, 1 per pass']} | {row['texts/s, 32 per pass']} | "
                     f"{row['max score drift vs fp32']:.4f} | {int(row['batch_moved_rows'])} of "
                     f"{int(row['batch_probe_texts']) * 7} | {row['batch_max_abs_diff']:.1e} |")
    lines += ["", f"Calibrated (bake's first choice) over per tensor: {ratios['texts/s, 1 per pass']}x at 1 text "
              f"per pass, {ratios['texts/s, 32 per pass']}x at 32. Per row over per tensor: "
              f"{per_row_ratios['texts/s, 1 per pass']}x and {per_row_ratios['texts/s, 32 per pass']}x."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _flags() -> list[str]:
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_int8"]
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in wanted if flag in present]
    return []


if __name__ == "__main__":
    raise SystemExit(main())
