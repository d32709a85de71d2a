"""The default backend: ONNX Runtime on the CPU, int8 where bake measured it safe. No torch import."""

from __future__ import annotations

import queue
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mlapi.engine.manifest import Manifest
from mlapi.engine.tokenization import TokenBatch


class OnnxBackend:
    """One ONNX Runtime session sized to the CPUs the process may use."""

    name = "onnx"

    def __init__(self, graph: Path, threads: int, precision: str, workers: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads // workers)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Threads that spin between passes steal CPU from tokenizing and serving on small pods.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # One session per inference worker, each with its share of the threads: passes run side by side
        # instead of every operator splitting over all cores (and waiting for the slowest).
        self._sessions: queue.SimpleQueue[ort.InferenceSession] = queue.SimpleQueue()
        for _ in range(workers):
            self._sessions.put(ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"]))
        first = self._sessions.get()
        self._inputs = {i.name for i in first.get_inputs()}
        self._sessions.put(first)
        self.precision = precision
        self.fingerprint = f"onnx-{precision}"
        self.workers = workers

    @classmethod
    def from_manifest(
        cls, model_dir: Path, manifest: Manifest, threads: int, precision: str = "auto", workers: int = 1
    ) -> OnnxBackend:
        """The graph the manifest recommends, or the one `precision` forces."""
        chosen = manifest.default_precision if precision == "auto" else precision
        if chosen == "int8" and not manifest.onnx_int8:
            raise ValueError(f"{model_dir} has no int8 graph: {manifest.quantization.reason or 'not baked'}")
        graph = manifest.onnx_int8 if chosen == "int8" else manifest.onnx_fp32
        return cls(model_dir / str(graph), threads, chosen, workers)

    def infer(self, batch: TokenBatch) -> np.ndarray:
        """Run one pass; returns float32 rows."""
        feeds = {name: array for name, array in batch.arrays.items() if name in self._inputs}
        session = self._sessions.get()
        try:
            (output,) = session.run(None, feeds)
        finally:
            self._sessions.put(session)
        return np.asarray(output, dtype=np.float32)
