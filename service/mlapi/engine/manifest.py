"""The baked model directory's manifest: what `mlapi bake` promises and `mlapi serve` relies on.

A baked directory is self-contained (tokenizer, ONNX graphs, optional torch weights) and described by
`manifest.json`, so the server never has to guess the task, the labels or which graph is safe to serve, and the
content hash lets the cache tell one model's answers from another's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
Task = Literal["text-classification", "sentence-embedding"]


class QuantizationReport(BaseModel):
    """How the int8 graph compared with fp32 on the probe set, and what bake decided from it."""

    recipe: str | None = None
    chosen: Literal["int8", "fp32"] = "fp32"
    reason: str = ""
    limits: dict[str, float] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    tried: list[dict[str, object]] = Field(default_factory=list)


class ZeroShot(BaseModel):
    """Label descriptions that turn an embedding model into a POSITIVE / NEGATIVE classifier for `/predict`."""

    temperature: float = 0.05
    descriptions: dict[str, list[str]] = Field(default_factory=dict)


class SourceObject(BaseModel):
    """One S3 object a bake read: its key, size, ETag and version (when the bucket keeps versions)."""

    key: str
    size: int = Field(ge=0)
    etag: str
    version_id: str | None = None


class Origin(BaseModel):
    """Where the weights came from, pinned: what a rebuild must fetch to bake the same model again."""

    kind: Literal["bundled", "local", "hub", "s3"]
    # hub: the commit the requested revision resolved to (a branch or tag moves; the commit does not)
    commit: str | None = None
    # s3: every object under the prefix, as it was read
    objects: list[SourceObject] = Field(default_factory=list)


class Manifest(BaseModel):
    """Everything the server needs to know about a baked model."""

    format_version: int = FORMAT_VERSION
    source: str
    revision: str | None = None
    origin: Origin | None = None  # None: baked before bake recorded its source
    task: Task
    labels: list[str]
    max_length: int = Field(ge=8)
    pooling: Literal["mean", "cls"] | None = None
    input_names: list[str]
    onnx_fp32: str = "model.onnx"
    onnx_int8: str | None = None
    torch_dir: str | None = None
    quantization: QuantizationReport = Field(default_factory=QuantizationReport)
    zero_shot: ZeroShot | None = None
    # Fixed cost of one forward pass in token-times, measured by bake on the served graph (None: baked before).
    pass_overhead_tokens: float | None = Field(None, gt=0)
    content_hash: str = ""

    @property
    def default_precision(self) -> Literal["int8", "fp32"]:
        """int8 where bake measured it within limits, else fp32."""
        return "int8" if self.onnx_int8 and self.quantization.chosen == "int8" else "fp32"

    def save(self, model_dir: Path) -> None:
        """Write the manifest beside the files it describes."""
        (model_dir / MANIFEST_NAME).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, model_dir: Path) -> Manifest:
        """Read a baked directory's manifest; a clear error when the directory is not a baked model."""
        path = model_dir / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{model_dir} is not a baked model directory (no {MANIFEST_NAME}); run `mlapi bake --out {model_dir}`"
            )
        return cls.model_validate_json(path.read_bytes())


def content_hash(model_dir: Path) -> str:
    """SHA-256 over every file's relative path and bytes, the manifest excluded: the model's identity."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        digest.update(path.relative_to(model_dir).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
