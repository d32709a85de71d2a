"""Calibrated int8: scales fixed at bake from texts the check never sees, and a recipe that clips is not kept."""

from __future__ import annotations

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
