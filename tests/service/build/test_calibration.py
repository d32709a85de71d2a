"""Calibrated int8: scales fixed at bake from texts the check never sees, and a recipe that clips is not kept."""

from __future__ import annotations

import shutil
from pathlib import Path

from mlapi.build import quantize as q
from mlapi.build.calibration import CALIBRATION_TEXTS, activation_ranges
from mlapi.engine.manifest import Manifest
from mlapi.engine.tokenization import TextEncoder


def _encoder(model_dir: Path) -> TextEncoder:
    manifest = Manifest.load(model_dir)
    return TextEncoder(model_dir / "tokenizer.json", manifest.max_length, manifest.input_names)


def test_calibration_shares_no_text_with_the_probe_that_checks_it() -> None:
    probe, _ = q.probe_inputs()
    assert not set(CALIBRATION_TEXTS) & set(probe)
    assert len(set(CALIBRATION_TEXTS)) == len(CALIBRATION_TEXTS)


def test_ranges_cover_every_text_and_hold_zero(classifier_dir: Path) -> None:
    fp32 = classifier_dir / str(Manifest.load(classifier_dir).onnx_fp32)
    names = q.calibrated_inputs(fp32)
    assert len(names) == 2 * 4 + 2  # per layer: attention in and out, the FFN's two inputs; then the head's two
    encoder = _encoder(classifier_dir)
    first, second = CALIBRATION_TEXTS[:5], CALIBRATION_TEXTS[30:36]
    both = activation_ranges(fp32, encoder, first + second, names)
    apart = [activation_ranges(fp32, encoder, texts, names) for texts in (first, second)]
    for name in names:
        low, high = both[name]
        assert low <= 0.0 <= high and low < high
        assert (low, high) == (min(r[name][0] for r in apart), max(r[name][1] for r in apart))


def test_the_bundled_encoder_drifts_too_far_with_calibrated_scales_and_keeps_per_row(minilm_dir: Path) -> None:
    report = Manifest.load(minilm_dir).quantization
    first = report.tried[0]
    assert first["recipe"] == "calibrated-all-linear" and first["ok"] is False
    assert "embedding cosine" in str(first["reason"])  # the probe set, which calibration never saw, caught it
    assert report.chosen == "int8" and report.recipe.startswith("per-row")


def test_own_texts_are_read_one_per_line_and_bad_files_say_what_is_wrong(tmp_path: Path, monkeypatch) -> None:
    import pytest
    from mlapi.build import calibration

    good = tmp_path / "texts.txt"
    good.write_text("  first review  \n\n\nsecond, with émojis 😀\n", encoding="utf-8")
    assert calibration.read_texts(good) == ["first review", "second, with émojis 😀"]
    with pytest.raises(ValueError, match="cannot read .*missing.txt"):
        calibration.read_texts(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8 text"):
        calibration.read_texts(tmp_path / "latin1.txt")
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="holds no texts"):
        calibration.read_texts(tmp_path / "blank.txt")
    monkeypatch.setattr(calibration, "MAX_EXTRA_TEXTS", 1)
    with pytest.raises(ValueError, match="holds 2 texts; at most 1"):
        calibration.read_texts(good)


def test_own_texts_join_the_built_in_set_once_and_never_a_probe_text(classifier_dir: Path, tmp_path: Path) -> None:
    from mlapi.build.calibration import calibration_set

    probe, _ = q.probe_inputs()
    own = [probe[0], "a clinic note: patient stable, bp 120/80", "a clinic note: patient stable, bp 120/80",
           CALIBRATION_TEXTS[0]]
    chosen = calibration_set(own, probe)
    assert chosen == [*CALIBRATION_TEXTS, own[1]]
    manifest = Manifest.load(classifier_dir)
    shutil.copy(classifier_dir / str(manifest.onnx_fp32), tmp_path / "model.onnx")
    report = q.choose_int8(tmp_path, "model.onnx", "model.int8.onnx", manifest.task, _encoder(classifier_dir), 2,
                           own)
    assert report.recipe == "calibrated-all-linear"
    assert report.metrics["calibration_texts"] == len(CALIBRATION_TEXTS) + 1


def test_cli_refuses_a_calibration_file_it_cannot_use_before_baking(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "model"
    result = subprocess.run(
        [sys.executable, "-m", "mlapi", "bake", "--out", str(out), "--calibration-texts", str(tmp_path / "none.txt")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 2
    assert "--calibration-texts: cannot read" in result.stderr and "none.txt" in result.stderr
    assert not out.exists()
