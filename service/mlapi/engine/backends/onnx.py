"""The default backend: ONNX Runtime on the CPU, int8 where bake measured it safe. No torch import."""

from __future__ import annotations

import queue
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mlapi.engine.manifest import Manifest
from mlapi.engine.tokenization import TokenBatch


class OnnxBackend:
    """ONNX Runtime sessions sized to the CPUs the process may use: one per inference worker, plus a wide one.

    Passes run side by side, one per worker, each on its share of the threads, instead of every operator splitting
    over all cores and waiting for the slowest: on two CPUs two single-threaded passes do about 10% more texts a
    second than one pass on two threads, and a thread that the event loop preempts delays only its own pass. A lone
    text, though, answers sooner on every thread at once, so when workers split the threads there is one more
    session on all of them, for a pass the batcher runs while it holds every worker. The sessions share one copy of
    the weights; each keeps only its own packed form of them.
    """

    name = "onnx"

    def __init__(self, graph: Path, threads: int, precision: str, workers: int = 1,
                 per_worker: int | None = None) -> None:
        """`workers` sessions of `per_worker` threads each (default: an equal share of `threads`), plus one on all
        `threads` when that is more."""
        per_worker = per_worker or max(1, threads // workers)
        wide = threads > per_worker
        # Each session reads these arrays in place for as long as it lives, so the backend holds them too.
        self._shared = _shared_weights(graph) if workers + wide > 1 else {}
        # One after another: each session holds a parsed copy of the graph while it is built, so building them side
        # by side raised peak memory by about that much per session (VmHWM 594 to 874 MiB) to start 0.25 s sooner.
        self._sessions: queue.SimpleQueue[ort.InferenceSession] = queue.SimpleQueue()
        for _ in range(workers):
            self._sessions.put(_session(graph, per_worker, self._shared))
        self._wide = _session(graph, threads, self._shared) if wide else None
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

    @property
    def has_wide_lane(self) -> bool:
        """Whether a pass can run on all threads at once (while every worker is idle)."""
        return self._wide is not None

    def infer(self, batch: TokenBatch, wide: bool = False) -> np.ndarray:
        """Run one pass (on all threads when `wide` and the caller holds every worker); returns float32 rows."""
        feeds = {name: array for name, array in batch.arrays.items() if name in self._inputs}
        if wide and self._wide is not None:
            (output,) = self._wide.run(None, feeds)
            return np.asarray(output, dtype=np.float32)
        session = self._sessions.get()
        try:
            (output,) = session.run(None, feeds)
        finally:
            self._sessions.put(session)
        return np.asarray(output, dtype=np.float32)


def _shared_weights(graph: Path) -> dict[str, ort.OrtValue]:
    """The graph's initializers as arrays that every session of it can use in place of its own copy."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(graph))
    except Exception as exc:  # protobuf's DecodeError and OSError alike: say which file
        raise ValueError(f"cannot read the ONNX graph {graph}: {type(exc).__name__}: {exc}") from exc
    return {
        init.name: ort.OrtValue.ortvalue_from_numpy(numpy_helper.to_array(init)) for init in model.graph.initializer
    }


def _session(graph: Path, threads: int, shared: dict[str, ort.OrtValue]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    for name, value in shared.items():
        options.add_initializer(name, value)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Threads that spin between passes steal CPU from tokenizing and serving on small pods.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
