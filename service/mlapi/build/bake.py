"""`mlapi bake`: turn a Hugging Face checkpoint into a self-contained, verified model directory.

Everything slow or networked happens here, at build time: fetching the checkpoint (hub, local directory or S3, see
`sources`), ONNX export, fusion, int8 quantisation and its drift check. The result loads in a second or two with no
network and no torch, and its manifest says exactly which weights it was baked from.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlapi.build.export import BakeError
from mlapi.engine.manifest import MANIFEST_NAME, Manifest, Origin, QuantizationReport, ZeroShot, content_hash
from mlapi.engine.shaping import PROBE_SHAPES, fit_pass_overhead, worker_plan
from mlapi.engine.tokenization import TOKENIZER_FILE, TextEncoder
from mlapi.settings import usable_cpus

if TYPE_CHECKING:
    from mlapi.build.export import SourceModel

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
    build machine from inflating it. Timed on one inference worker's threads, where passes under load run.
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


class OutDirError(BakeError):
    """--out names a directory bake must not replace."""


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse to replace `out` unless it is missing, empty, a baked model (has manifest.json), or `force` is given.

    Bake replaces its output whole; a directory of anything else (a typo'd --out, a home folder) must not be wiped.
    """
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise OutDirError(f"--out {out}: is a file, not a directory; bake writes a directory")
    if force or (out / MANIFEST_NAME).is_file() or not any(out.iterdir()):
        return
    raise OutDirError(f"--out {out}: not empty and not a baked model (no {MANIFEST_NAME}); bake replaces its output "
                      f"whole, so choose an empty or new directory, or pass --force to replace it")


def replace_dir(staging: Path, out: Path) -> None:
    """Move the finished `staging` directory to `out`, swapping out the old one; a failure keeps the old one."""
    if not out.exists() and not out.is_symlink():
        staging.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=".bake-old-", dir=out.parent))
    old.rmdir()
    out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def quiet_libraries() -> None:
    """Keep bake's log to its own progress lines: silence ONNX Runtime, torch's exporter and transformers.

    The optimizer's INFO lines, the tracer's warnings and the progress bars say nothing the person baking can act
    on; bake's own lines (and its warnings) say what happened. It runs before transformers is imported (the
    variables are read at import) and imports nothing heavy, so a bake that fails on its SOURCE fails at once;
    ONNX Runtime's own logger is quietened where bake first needs it (`_bake_checkpoint`).
    """
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def bake(source: str | None, out: Path, revision: str | None = None, onnx_only: bool = False,
         quantize: bool = True, force: bool = False, token: str | None = None, quiet: bool = False,
         calibration_texts: Sequence[str] = ()) -> Manifest:
    """Bake SOURCE (hub id, local checkpoint, s3://BUCKET/PREFIX, or the bundled default when None) into OUT.

    OUT is replaced only when it is new, empty or an earlier bake (or with `force`); the new model is built in a
    sibling directory and renamed into place, so a failed bake leaves OUT as it was. `token` reads private hub
    repos; `quiet` leaves only bake's own progress lines in the log (`quiet_libraries`), as `mlapi bake` does.
    `calibration_texts` join the built-in ones that int8 scales fixed at bake are measured on.
    """
    from mlapi.build.sources import fetch, parse_source

    if quiet:
        quiet_libraries()
    out = out.resolve()
    check_out_dir(out, force)
    model_source = parse_source(source)
    revision = revision or None
    out.parent.mkdir(parents=True, exist_ok=True)
    download = Path(tempfile.mkdtemp(prefix=".bake-source-", dir=out.parent))
    try:
        fetched = fetch(model_source, revision, download, token)
        return _bake_checkpoint(model_source.uri, fetched.path, fetched.origin, out, revision, onnx_only, quantize,
                                quiet, calibration_texts)
    finally:
        shutil.rmtree(download, ignore_errors=True)


def _bake_checkpoint(source: str, checkpoint: Path, origin: Origin, out: Path, revision: str | None,
                     onnx_only: bool, quantize: bool, quiet: bool, calibration_texts: Sequence[str]) -> Manifest:
    from mlapi.build.export import export_onnx, inspect_source, optimize_graph
    from mlapi.build.quantize import choose_int8

    info = inspect_source(checkpoint, source)
    if quiet:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)  # errors only: its C++ logger ignores Python's logging
    log.info("baking %s: %s, max length %d", source, info.task, info.max_length)

    staging = Path(tempfile.mkdtemp(prefix=".bake-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the image serves it as a non-root user
    try:
        tokenizer, model = load_checkpoint(info, source)
        tokenizer.model_max_length = info.max_length
        tokenizer.save_pretrained(str(staging))

        fp32 = "model.onnx"
        log.info("exporting ONNX")
        input_names = export_onnx(info, model, tokenizer, staging / fp32)
        fusion = optimize_graph(info, staging / fp32)
        log.info("onnx graph: %s", fusion)

        if not onnx_only:
            model.save_pretrained(str(staging / "hf"), safe_serialization=True)
            tokenizer.save_pretrained(str(staging / "hf"))

        encoder = TextEncoder(staging / TOKENIZER_FILE, info.max_length, input_names)
        if quantize:
            log.info("quantizing int8, checking drift against fp32")
            report = choose_int8(staging, fp32, "model.int8.onnx", info.task, encoder, usable_cpus(),
                                 calibration_texts)
        else:
            report = QuantizationReport(chosen="fp32", reason="quantisation disabled at bake")
        log.info("serving %s: %s", report.chosen, report.reason)

        manifest = Manifest(
            source=source,
            revision=revision,
            origin=origin,
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
        log.info("probing the cost of one pass")
        manifest.pass_overhead_tokens = measure_pass_overhead(staging, manifest, encoder)
        log.info("one pass costs as much as %.1f more tokens", manifest.pass_overhead_tokens)
        manifest.content_hash = content_hash(staging)
        manifest.save(staging)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("done: %s", out)
    return manifest


def load_checkpoint(info: SourceModel, source: str) -> tuple[Any, Any]:
    """The checkpoint's fast tokenizer and torch model; a checkpoint transformers cannot load is one BakeError line."""
    from transformers import AutoTokenizer

    from mlapi.build.export import load_torch_model
    from mlapi.build.sources import one_line

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(info.path))
        if not getattr(tokenizer, "is_fast", False):
            raise BakeError(f"{source}: bake needs a fast tokenizer (tokenizer.json, or one transformers can convert)")
        model = load_torch_model(info)
    except BakeError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BakeError(f"{source}: transformers cannot load this checkpoint: {type(exc).__name__}: "
                        f"{one_line(exc)[:300]}") from exc
    return tokenizer, model
