"""`mlapi bake`: a self-contained directory with a truthful manifest, replaced atomically, never over other files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from mlapi.engine.manifest import Manifest, content_hash


def test_bake_bundled_default_writes_a_complete_directory(minilm_dir) -> None:
    manifest = Manifest.load(minilm_dir)
    assert manifest.task == "sentence-embedding"
    assert manifest.pooling == "mean"
    assert manifest.labels == ["POSITIVE", "NEGATIVE"]
    assert manifest.max_length == 256
    assert manifest.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    for name in ("tokenizer.json", manifest.onnx_fp32, manifest.onnx_int8, "hf/model.safetensors", "hf/config.json"):
        assert (minilm_dir / str(name)).is_file(), name
    assert manifest.content_hash == content_hash(minilm_dir)


def test_bake_records_the_int8_measurement(minilm_dir) -> None:
    q = Manifest.load(minilm_dir).quantization
    assert q.chosen == "int8"
    assert q.metrics["min_cosine"] >= 0.99
    assert q.metrics["query_agreement"] == 1.0
    assert [t["recipe"] for t in q.tried][-1] == q.recipe
    assert all(not t["ok"] for t in q.tried[:-1])  # faster recipes that drifted too far are reported, not used


def test_bake_classifier_takes_task_and_labels_from_the_model(classifier_dir) -> None:
    manifest = Manifest.load(classifier_dir)
    assert manifest.task == "text-classification"
    assert manifest.labels == ["NEGATIVE", "NEUTRAL", "POSITIVE"]
    assert manifest.zero_shot is None
    assert manifest.max_length == 128


def test_content_hash_changes_with_any_file(tmp_path) -> None:
    (tmp_path / "a.bin").write_bytes(b"one")
    before = content_hash(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"two")
    assert content_hash(tmp_path) != before
    (tmp_path / "manifest.json").write_text("{}")
    assert content_hash(tmp_path) == content_hash(tmp_path)


def test_cli_bake_with_the_image_flags_replaces_an_earlier_bake(tmp_path, classifier_dir) -> None:
    out = tmp_path / "model"
    shutil.copytree(classifier_dir, out)  # an earlier bake: bake may replace it whole
    (out / "stale.txt").write_text("from an older bake")
    source = classifier_dir.parent / "source"
    # The Dockerfile's bake line: mlapi bake "$MODEL_ID" --revision "$MODEL_REVISION" --out DIR --onnx-only
    result = subprocess.run(
        [sys.executable, "-m", "mlapi", "bake", str(source), "--revision", "main", "--out", str(out),
         "--onnx-only", "--no-int8"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "serving precision: fp32" in result.stdout
    assert not (out / "stale.txt").exists()
    assert not (out / "hf").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["onnx_int8"] is None
    assert manifest["torch_dir"] is None
    assert manifest["revision"] == "main"
    assert manifest["origin"] == {"kind": "local", "commit": None, "objects": []}
    assert manifest["quantization"]["reason"] == "quantisation disabled at bake"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bake-")]


def test_bake_refuses_to_replace_a_folder_that_is_not_a_baked_model(tmp_path) -> None:
    out = tmp_path / "work"
    out.mkdir()
    (out / "important.txt").write_text("the only copy")
    result = subprocess.run([sys.executable, "-m", "mlapi", "bake", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"mlapi bake: --out {out}: not empty and not a baked model (no manifest.json); bake replaces its output "
        f"whole, so choose an empty or new directory, or pass --force to replace it")
    assert [p.name for p in out.iterdir()] == ["important.txt"]
    assert (out / "important.txt").read_text() == "the only copy"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_bake_refuses_an_out_that_is_a_file_even_with_force(tmp_path) -> None:
    out = tmp_path / "model.onnx"
    out.write_text("not a directory")
    result = subprocess.run([sys.executable, "-m", "mlapi", "bake", "--out", str(out), "--force"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == f"mlapi bake: --out {out}: is a file, not a directory; bake writes a directory"
    assert out.read_text() == "not a directory"


def test_bake_force_replaces_a_folder_that_is_not_a_baked_model(tmp_path, classifier_dir) -> None:
    out = tmp_path / "work"
    out.mkdir()
    (out / "important.txt").write_text("replace me, I asked for it")
    result = subprocess.run(
        [sys.executable, "-m", "mlapi", "bake", str(classifier_dir.parent / "source"), "--out", str(out), "--force",
         "--onnx-only", "--no-int8"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (out / "important.txt").exists()
    assert json.loads((out / "manifest.json").read_text())["task"] == "text-classification"


# What the libraries bake drives print on their own: ONNX Runtime's optimizer ("fusion_base", "onnx_model"), its C++
# logger ("[I:onnxruntime", "[W:onnxruntime"), torch's tracer warnings and transformers' progress bars.
_LIBRARY_NOISE = re.compile(r"INFO|fusion_|onnx_model|:onnxruntime|Warning|it/s\]|%\|")


def test_a_real_bake_logs_a_short_progress_summary_only(tmp_path) -> None:
    out = tmp_path / "minilm"
    result = subprocess.run([sys.executable, "-m", "mlapi", "bake", "--out", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) <= 15, "\n".join(lines)
    assert not [line for line in lines if _LIBRARY_NOISE.search(line)], "\n".join(lines)
    assert result.stderr == ""
    text = "\n".join(lines)
    for step in ("baking sentence-transformers/all-MiniLM-L6-v2 (bundled)", "exporting ONNX", "quantizing int8",
                 "probing", f"done: {out}", "content hash: "):
        assert step in text, (step, text)


def test_bake_of_a_missing_source_fails_clearly_and_leaves_nothing(tmp_path) -> None:
    out = tmp_path / "model"
    result = subprocess.run(
        [sys.executable, "-m", "mlapi", "bake", "no-such-org/no-such-model", "--revision", "v1",
         "--out", str(out)],
        capture_output=True, text=True, timeout=300,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf")},
    )
    assert result.returncode == 2
    assert "'no-such-org/no-such-model' is not a local directory" in result.stderr
    assert "revision v1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bake-")]


def test_load_of_a_directory_that_was_never_baked_says_so(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="mlapi bake"):
        Manifest.load(tmp_path)


def test_replacing_an_earlier_bake_swaps_it_whole_or_keeps_it(tmp_path, monkeypatch) -> None:
    from pathlib import Path

    from mlapi.build.bake import replace_dir

    def staged(text: str) -> Path:
        staging = tmp_path / f".bake-{text}"
        staging.mkdir()
        (staging / "manifest.json").write_text(text)
        return staging

    out = tmp_path / "model"
    replace_dir(staged("first"), out)
    replace_dir(staged("second"), out)
    assert (out / "manifest.json").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

    failing_staging = staged("third")
    real_rename = Path.rename

    def rename(self: Path, target):  # type: ignore[no-untyped-def]
        if self == failing_staging:
            raise OSError("No space left on device")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="No space"):
        replace_dir(failing_staging, out)
    assert (out / "manifest.json").read_text() == "second"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bake-old-")]


def test_classifier_int8_quantises_with_scales_fixed_at_bake(classifier_dir) -> None:
    import onnx
    from onnx import numpy_helper

    manifest = Manifest.load(classifier_dir)
    assert manifest.quantization.recipe == "calibrated-all-linear"
    assert manifest.quantization.metrics["calibration_texts"] > 0
    graph = onnx.load(str(classifier_dir / str(manifest.onnx_int8))).graph
    ops = [node.op_type for node in graph.node]
    assert "Attention" not in ops and ops.count("QAttention") == 2  # Q/K/V projections in int8 too
    assert "DynamicQuantizeLinear" not in ops and "ReduceMax" not in ops  # no scale is computed from a pass
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    quantisers = [node for node in graph.node if node.op_type == "QuantizeLinear"]
    assert quantisers and all(node.input[1] in constants and constants[node.input[1]].size == 1
                              for node in quantisers)  # one constant scale per activation


def test_per_row_recipe_splits_attention_into_a_per_row_projection(classifier_dir, tmp_path) -> None:
    import onnx
    from mlapi.build import quantize as q

    manifest = Manifest.load(classifier_dir)
    recipe = next(r for r in q.RECIPES if r.name == "per-row-all-linear")
    q.quantize(classifier_dir / str(manifest.onnx_fp32), tmp_path / "per-row.onnx", recipe)
    ops = [node.op_type for node in onnx.load(str(tmp_path / "per-row.onnx")).graph.node]
    assert "Attention" not in ops and "QAttention" not in ops  # no fused attention left, none per tensor
    assert ops.count("MultiHeadAttention") == 2  # one per layer, fed the per-row int8 Q/K/V projection
    assert "DynamicQuantizeLinear" not in ops  # the per-tensor quantiser never appears


def test_a_calibrated_recipe_needs_its_ranges(classifier_dir, tmp_path) -> None:
    from mlapi.build import quantize as q

    manifest = Manifest.load(classifier_dir)
    with pytest.raises(ValueError, match="calibrated-all-linear"):
        q.quantize(classifier_dir / str(manifest.onnx_fp32), tmp_path / "int8.onnx", q.RECIPES[0])


def test_a_recipe_whose_graph_cannot_run_is_reported_and_the_next_is_kept(
    classifier_dir, tmp_path, monkeypatch
) -> None:
    import shutil

    from mlapi.build import quantize as q
    from mlapi.engine.tokenization import TextEncoder

    manifest = Manifest.load(classifier_dir)
    shutil.copy(classifier_dir / str(manifest.onnx_fp32), tmp_path / "model.onnx")
    real = q.quantize

    def first_recipe_broken(fp32, out, recipe, ranges=None):  # type: ignore[no-untyped-def]
        count = real(fp32, out, recipe, ranges)
        if recipe == q.RECIPES[0]:
            out.write_bytes(b"not an onnx graph")
        return count

    monkeypatch.setattr(q, "quantize", first_recipe_broken)
    encoder = TextEncoder(classifier_dir / "tokenizer.json", manifest.max_length, manifest.input_names)
    report = q.choose_int8(tmp_path, "model.onnx", "model.int8.onnx", manifest.task, encoder, 2)
    assert report.chosen == "int8" and report.recipe == q.RECIPES[1].name
    assert report.tried[0]["ok"] is False and "could not run the graph" in str(report.tried[0]["reason"])
    assert (tmp_path / "model.int8.onnx").is_file()


def test_a_graph_calibration_cannot_run_costs_the_calibrated_recipe_only(
    classifier_dir, tmp_path, monkeypatch
) -> None:
    import shutil

    from mlapi.build import quantize as q
    from mlapi.engine.tokenization import TextEncoder

    manifest = Manifest.load(classifier_dir)
    shutil.copy(classifier_dir / str(manifest.onnx_fp32), tmp_path / "model.onnx")

    def no_such_tensor(graph, encoder, texts, names):  # type: ignore[no-untyped-def]
        return q.activation_ranges(graph, encoder, texts, [*names, "not-a-tensor-of-this-graph"])

    monkeypatch.setattr(q, "activation_ranges", no_such_tensor)
    encoder = TextEncoder(classifier_dir / "tokenizer.json", manifest.max_length, manifest.input_names)
    report = q.choose_int8(tmp_path, "model.onnx", "model.int8.onnx", manifest.task, encoder, 2)
    assert report.tried[0]["recipe"] == "calibrated-all-linear" and report.tried[0]["ok"] is False
    assert "calibration could not run the graph" in str(report.tried[0]["reason"])
    assert report.chosen == "int8" and report.recipe == "per-row-all-linear"
