"""The engine alone: how many texts a second the server's own batcher and backend do with no HTTP in front.

End-to-end req/s means little without the ceiling it is measured against. This loads the baked model exactly as
`mlapi serve` would with the same MLAPI_* environment (same backend, workers, threads, token budget and pass
cost), and drives its MicroBatcher in-process with N concurrent submitters that each send one text and send the
next as soon as it is answered, like N k6 users with no think time: tokenization, length-sorted passes and
inference as the batcher shapes them, on texts made as load/texts.js makes them. Prints one JSON document.

Usage: python load/bench_engine.py --model-dir DIR [--duration S] [--concurrency 1,4,32] [--lengths short,long]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_texts  # noqa: E402


async def closed_loop(batcher: Any, texts: Iterator[str], users: int, duration_s: float) -> dict[str, float]:
    """`users` submitters, one text each, back to back for `duration_s`; texts/s and latency percentiles."""
    latencies: list[float] = []
    deadline = time.perf_counter() + duration_s

    async def user() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await batcher.submit([next(texts)])
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(users)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "texts": len(latencies),
        "texts_per_s": round(len(latencies) / elapsed, 2),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2),
    }


async def measure(model_dir: Path, duration_s: float, concurrency: list[int], lengths: list[str]) -> dict[str, Any]:
    """Every (length, concurrency) pair on one loaded engine, plus how the engine was shaped."""
    from mlapi.engine.backends import load_backend
    from mlapi.engine.batching import MicroBatcher
    from mlapi.engine.manifest import Manifest
    from mlapi.engine.shaping import DEFAULT_PASS_OVERHEAD_TOKENS
    from mlapi.engine.tokenization import TOKENIZER_FILE, TextEncoder
    from mlapi.metrics import Metrics
    from mlapi.settings import Settings

    settings = Settings(model_dir=model_dir)
    manifest = Manifest.load(model_dir)
    workers, threads = settings.inference_shape
    backend = load_backend(settings.backend, model_dir, manifest, workers * threads, settings.precision, workers)
    encoder = TextEncoder(model_dir / TOKENIZER_FILE, manifest.max_length, manifest.input_names)
    overhead = manifest.pass_overhead_tokens or DEFAULT_PASS_OVERHEAD_TOKENS
    batcher = MicroBatcher(
        backend, encoder, Metrics(), max_size=settings.batch_max_size, max_tokens=settings.batch_max_tokens,
        wait_ms=settings.batch_wait_ms, max_queue=settings.max_queue, workers=backend.workers,
        overhead_tokens=overhead,
    )
    batcher.start()
    runs = []
    try:
        await batcher.submit(["warm up the engine"])
        for seed, (length, users) in enumerate(itertools.product(lengths, concurrency)):
            texts = bench_texts.iter_unique_texts(length, seed)
            result = await closed_loop(batcher, texts, users, duration_s)
            runs.append({"length": length, "vus": users} | result)
            print(f"  engine alone, {length} texts, {users} at once: {result['texts_per_s']:.1f} texts/s",
                  file=sys.stderr, flush=True)
    finally:
        await batcher.close()
    return {
        "backend": settings.backend,
        "workers": workers,
        "threads_per_worker": threads,
        "batch_max_size": settings.batch_max_size,
        "batch_max_tokens": settings.batch_max_tokens,
        "pass_overhead_tokens": overhead,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and print the JSON result on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", default="1,4,32")
    parser.add_argument("--lengths", default="short,long")
    args = parser.parse_args(argv)
    result = asyncio.run(
        measure(
            args.model_dir,
            args.duration,
            [int(c) for c in args.concurrency.split(",")],
            [length for length in args.lengths.split(",") if length],
        )
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
