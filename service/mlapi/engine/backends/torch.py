"""The comparison backend: the same baked model run by torch and transformers (needs the `torch` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlapi.engine.manifest import Manifest
from mlapi.engine.tokenization import TokenBatch


class TorchBackend:
    """transformers' model in fp32 eager mode, with the pooling bake put into the ONNX graph."""

    name = "torch"
    fingerprint = "torch-fp32"
    workers = 1
    has_wide_lane = False

    def __init__(self, hf_dir: Path, task: str, pooling: str | None, threads: int) -> None:
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification

        torch.set_num_threads(threads)
        loader = AutoModelForSequenceClassification if task == "text-classification" else AutoModel
        self._torch = torch
        self._model = loader.from_pretrained(str(hf_dir)).eval()
        self._task = task
        self._pooling = pooling or "mean"

    @classmethod
    def from_manifest(cls, model_dir: Path, manifest: Manifest, threads: int) -> TorchBackend:
        """Load the weights bake kept for torch; a clear error when bake left them out."""
        if not manifest.torch_dir:
            raise ValueError(f"{model_dir} was baked without torch weights (bake without --onnx-only)")
        return cls(model_dir / manifest.torch_dir, manifest.task, manifest.pooling, threads)

    def infer(self, batch: TokenBatch, wide: bool = False) -> np.ndarray:
        """Run one pass on torch's threads (one worker: `wide` changes nothing); returns float32 rows."""
        torch = self._torch
        with torch.inference_mode():
            inputs = {name: torch.from_numpy(array) for name, array in batch.arrays.items()}
            out = self._model(**inputs)
            if self._task == "text-classification":
                return out.logits.float().numpy()
            return pool(out.last_hidden_state, inputs["attention_mask"], self._pooling).numpy()


def pool(hidden, attention_mask, mode: str):
    """Sentence embedding from token states: masked mean or [CLS], then unit length (as sentence-transformers).

    Written so that a text's embedding cannot depend on its batch. Every sum is a prefix sum (CumSum) read at the
    text's own last element: a prefix does not depend on what follows it, so neither the padding nor the batch's
    length can change the order of the additions, while ONNX Runtime's ReduceSum, ReduceL2 and MatMul pick their
    summation order by the tensor's shape. Divisions divide tensors of the same shape, element by element.
    """
    import torch

    if mode == "cls":
        pooled = hidden[:, 0]
    else:
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        lengths = attention_mask.sum(1, keepdim=True)  # integers: exact in any order
        last = (lengths - 1).clamp(min=0).unsqueeze(-1).expand(-1, 1, hidden.shape[-1])
        summed = torch.cumsum(hidden * mask, dim=1).gather(1, last).squeeze(1)
        pooled = summed / lengths.clamp(min=1).to(hidden.dtype).expand_as(summed)
    norm = torch.cumsum(pooled * pooled, dim=1)[:, -1:].sqrt().clamp(min=1e-12)
    return pooled / norm.expand_as(pooled)
