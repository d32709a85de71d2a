"""Inference backends: the same baked model run by ONNX Runtime (default, torch-free) or by torch (to compare).

Each backend turns a padded `TokenBatch` into one output row per text: class logits for a classifier, a
unit-length sentence embedding for an embedding model. Everything around them (tokenizing, batching, caching,
scoring) is shared, so a comparison between backends measures the backends alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from mlapi.engine.manifest import Manifest
from mlapi.engine.tokenization import TokenBatch


class Backend(Protocol):
    """What the batcher needs from an inference engine."""

    name: str
    fingerprint: str
    workers: int  # passes it can run at the same time

    @property
    def has_wide_lane(self) -> bool:
        """Whether `infer(..., wide=True)` runs on more threads than one worker's."""
        ...

    def infer(self, batch: TokenBatch, wide: bool = False) -> np.ndarray:
        """One output row per text in the batch; `wide`: on every worker's threads (the caller holds them all).

        A row is the same bits on any worker and either way: which pass ran a text must not change its answer.
        """
        ...


def load_backend(
    name: str, model_dir: Path, manifest: Manifest, threads: int, precision: str = "auto", workers: int = 1
) -> Backend:
    """Load one backend for a baked model; the torch backend is imported only when asked for.

    `workers` splits `threads` over that many concurrent passes (ONNX Runtime only; torch runs one at a time).
    """
    if name == "onnx":
        from mlapi.engine.backends.onnx import OnnxBackend

        return OnnxBackend.from_manifest(model_dir, manifest, threads, precision, workers)
    if name == "torch":
        from mlapi.engine.backends.torch import TorchBackend

        return TorchBackend.from_manifest(model_dir, manifest, threads)
    raise ValueError(f"unknown backend {name!r}")
