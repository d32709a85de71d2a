"""`mlapi bake`: turn a Hugging Face checkpoint into a self-contained, verified model directory.

Everything slow or networked happens here, at build time: download, ONNX export, fusion, int8 quantisation and
its drift check. The result loads in a second or two with no network and no torch.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

from mlapi.engine.manifest import Manifest, QuantizationReport, ZeroShot, content_hash
from mlapi.engine.shaping import PROBE_SHAPES, fit_pass_overhead, worker_plan
from mlapi.engine.tokenization import TOKENIZER_FILE, TextEncoder
from mlapi.settings import usable_cpus

log = logging.getLogger(__name__)

# For sentence-embedding models, /predict answers sentiment zero-shot: each label is the mean embedding of these.
SENTIMENT_DESCRIPTIONS = {
    "POSITIVE": [
        "This is positive.", "I love it.", "This is great, fun and wonderful.", "I am happy.",
    ],
    "NEGATIVE": [
        "This is negative.", "I hate it.", "This is terrible, boring and awful.", "I am angry.",
    ],
}
PROBE_ROUNDS = 15


def measure_pass_overhead(model_dir: Path, manifest: Manifest, encoder: TextEncoder) -> float:
    """Time the served graph on a few pass shapes and return the fixed cost of one pass in token-times.

    The server cuts passes with it (see `shaping.cut_passes`); the fastest of a few rounds per shape keeps a busy
    build machine from inflating it.
    """
    from mlapi.engine.backends.onnx import OnnxBackend

    _, threads = worker_plan(usable_cpus())
    backend = OnnxBackend.from_manifest(model_dir, manifest, threads)
    # Texts of about each probe width in this tokenizer's own ids; padding is timed with the pass, as the server
    # pays for both.
    widths = sorted({w for _, w in PROBE_SHAPES})
    encoded = dict(zip(widths, encoder.encode([" ".join(["good"] * max(1, w - 2)) for w in widths]), strict=True))
    fastest: dict[tuple[int, int], float] = {}
    for _ in range(PROBE_ROUNDS):
        for rows, width in PROBE_SHAPES:
            started = time.perf_counter()
            batch = encoder.pad([encoded[width]] * rows)
            backend.infer(batch)
            elapsed = time.perf_counter() - started
            fastest[batch.shape] = min(elapsed, fastest.get(batch.shape, elapsed))
    return round(fit_pass_overhead(fastest), 2)


def bake(source: str | None, out: Path, revision: str | None = None, onnx_only: bool = False,
         quantize: bool = True) -> Manifest:
    """Bake SOURCE (hub id, local checkpoint, or the bundled default when None) into OUT, replacing it."""
    from transformers import AutoTokenizer

    from mlapi.build.export import (
        BakeError,
        export_onnx,
        fetch_source,
        inspect_source,
        load_torch_model,
        optimize_graph,
    )
    from mlapi.build.quantize import choose_int8

    checkpoint = fetch_source(source, revision)
    info = inspect_source(checkpoint)
    log.info("baking %s (%s) from %s", source or "bundled all-MiniLM-L6-v2", info.task, checkpoint)

    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bake-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the image serves it as a non-root user
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
        if not getattr(tokenizer, "is_fast", False):
            raise BakeError(f"{source}: bake needs a fast tokenizer (tokenizer.json, or one transformers can convert)")
        tokenizer.model_max_length = info.max_length
        tokenizer.save_pretrained(str(staging))
        model = load_torch_model(info)

        fp32 = "model.onnx"
        input_names = export_onnx(info, model, tokenizer, staging / fp32)
        fusion = optimize_graph(info, staging / fp32)
        log.info("onnx graph: %s", fusion)

        if not onnx_only:
            model.save_pretrained(str(staging / "hf"), safe_serialization=True)
            tokenizer.save_pretrained(str(staging / "hf"))

        encoder = TextEncoder(staging / TOKENIZER_FILE, info.max_length, input_names)
        report = (
            choose_int8(staging, fp32, "model.int8.onnx", info.task, encoder, usable_cpus())
            if quantize
            else QuantizationReport(chosen="fp32", reason="quantisation disabled at bake")
        )
        log.info("int8: %s (%s)", report.chosen, report.reason)

        manifest = Manifest(
            source=source or "sentence-transformers/all-MiniLM-L6-v2 (bundled)",
            revision=revision,
            task=info.task,
            labels=info.labels if info.task == "text-classification" else list(SENTIMENT_DESCRIPTIONS),
            max_length=info.max_length,
            pooling=info.pooling,
            input_names=input_names,
            onnx_fp32=fp32,
            onnx_int8="model.int8.onnx" if report.chosen == "int8" else None,
            torch_dir=None if onnx_only else "hf",
            quantization=report,
            zero_shot=ZeroShot(descriptions=SENTIMENT_DESCRIPTIONS) if info.task == "sentence-embedding" else None,
        )
        manifest.pass_overhead_tokens = measure_pass_overhead(staging, manifest, encoder)
        log.info("one pass costs as much as %.1f more tokens", manifest.pass_overhead_tokens)
        manifest.content_hash = content_hash(staging)
        manifest.save(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest
