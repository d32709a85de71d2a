"""Backend parity: the ONNX graphs (fp32 and the int8 bake chose) agree with torch on the same baked model."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from mlapi.build.quantize import PROBE_TEXTS
from mlapi.engine.backends import load_backend
from mlapi.engine.batching import infer_texts
from mlapi.engine.manifest import Manifest
from mlapi.engine.tokenization import TextEncoder


def _rows(model_dir, backend: str, precision: str = "auto") -> np.ndarray:  # type: ignore[no-untyped-def]
    manifest = Manifest.load(model_dir)
    encoder = TextEncoder(model_dir / "tokenizer.json", manifest.max_length, manifest.input_names)
    return infer_texts(load_backend(backend, model_dir, manifest, 1, precision), encoder, PROBE_TEXTS, 8, 4096)


def test_onnx_fp32_matches_torch_on_embeddings(minilm_dir) -> None:
    onnx, torch_rows = _rows(minilm_dir, "onnx", "fp32"), _rows(minilm_dir, "torch")
    cosine = (onnx * torch_rows).sum(1)
    assert cosine.min() > 0.9999


def test_onnx_int8_stays_within_the_documented_drift(minilm_dir) -> None:
    manifest = Manifest.load(minilm_dir)
    assert manifest.default_precision == "int8", manifest.quantization.reason
    int8, fp32 = _rows(minilm_dir, "onnx", "int8"), _rows(minilm_dir, "onnx", "fp32")
    assert (int8 * fp32).sum(1).min() >= manifest.quantization.limits["embedding_min_cosine"]


def test_onnx_fp32_matches_torch_on_logits(classifier_dir) -> None:
    np.testing.assert_allclose(_rows(classifier_dir, "onnx", "fp32"), _rows(classifier_dir, "torch"), atol=1e-4)


def test_request_can_choose_a_loaded_backend(make_client, minilm_dir) -> None:
    with make_client(minilm_dir, extra_backends="torch", cache_enabled=False) as client:
        body = {"text": ["I love you.", "I hate you."]}
        onnx = client.post("/predict?backend=onnx", json=body).json()["predictions"]
        torch = client.post("/predict?backend=torch", json=body).json()["predictions"]
        default = client.post("/predict", json=body).json()["predictions"]
        assert default == onnx
        assert [p[0]["label"] for p in onnx] == [p[0]["label"] for p in torch] == ["POSITIVE", "NEGATIVE"]
        for a, b in zip(onnx, torch, strict=True):
            assert a[0]["score"] == pytest.approx(b[0]["score"], abs=0.05)
        assert client.get("/health").json()["backends"] == ["onnx", "torch"]


def test_backends_do_not_share_cache_entries(make_client, minilm_dir) -> None:
    with make_client(minilm_dir, extra_backends="torch") as client:
        client.post("/predict?backend=onnx", json={"text": ["same"]})
        client.post("/predict?backend=torch", json={"text": ["same"]})
        assert 'mlapi_cache_misses_total{op="predict"} 2.0' in client.get("/metrics").text


def test_onnx_serving_never_imports_torch(minilm_dir) -> None:
    import subprocess

    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from mlapi.api.app import create_app\n"
        "from mlapi.settings import Settings\n"
        f"app = create_app(Settings(model_dir={str(minilm_dir)!r}))\n"
        "import time\n"
        "with TestClient(app) as c:\n"
        "    while c.get('/health').status_code != 200: time.sleep(0.05)\n"
        "    assert c.post('/predict', json={'text': ['x']}).status_code == 200\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_one_narrow_worker_beside_a_wide_lane_answers_alike_on_both(classifier_dir) -> None:
    # Bake's invariance probe runs this way on any build machine: two sessions, not one per CPU plus one.
    from mlapi.engine.backends.onnx import OnnxBackend

    manifest = Manifest.load(classifier_dir)
    encoder = TextEncoder(classifier_dir / "tokenizer.json", manifest.max_length, manifest.input_names)
    backend = OnnxBackend(classifier_dir / str(manifest.onnx_int8), 4, "int8", workers=1, per_worker=1)
    assert backend.workers == 1 and backend.has_wide_lane
    batch = encoder.pad(encoder.encode(PROBE_TEXTS[:6]))
    assert np.array_equal(backend.infer(batch), backend.infer(batch, wide=True))
