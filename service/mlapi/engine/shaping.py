"""How inference work is shaped: texts cut into forward passes, and CPUs split into inference workers.

Both are arithmetic kept apart from tokenizers and ONNX Runtime so they can be tested exactly. A pass costs about
`overhead + rows x width` token-times, where `width` is its longest text (every row is padded to it) and `overhead`
is the fixed cost of one pass, measured per model at bake time. Sorting texts by length and cutting the sorted run
where that total is smallest spends nothing on padding that a pass boundary could save, and no more passes than
pay for themselves: the budget follows the texts' lengths instead of being one fixed guess.
"""

from __future__ import annotations

from collections.abc import Sequence

# Used when a baked manifest carries no measurement (baked before bake measured it). The bench model measured
# 1-8 token-times per pass on AVX2 and AVX-512 CPUs; a few more only merges passes of nearly equal widths.
DEFAULT_PASS_OVERHEAD_TOKENS = 8.0


def cut_passes(widths: Sequence[int], max_size: int, max_tokens: int, overhead: float) -> list[list[int]]:
    """Indices of `widths` grouped into passes, each group in ascending width, every index exactly once.

    Minimises the sum over passes of `overhead + rows * max width` by dynamic programming over the texts sorted by
    width, subject to at most `max_size` rows and `max_tokens` padded tokens per pass (a single text longer than
    `max_tokens` still gets a pass of its own).
    """
    if max_size < 1:
        raise ValueError("max_size must be at least 1")
    order = sorted(range(len(widths)), key=lambda i: widths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest cut of the first j sorted texts
    start = [0] * (n + 1)
    for end in range(1, n + 1):
        width = widths[order[end - 1]]  # sorted ascending: the last text of a pass is its widest
        for first in range(end - 1, max(-1, end - 1 - max_size), -1):
            rows = end - first
            if rows > 1 and rows * width > max_tokens:
                break  # more rows only cost more tokens
            cost = best[first] + overhead + rows * width
            if cost < best[end]:
                best[end], start[end] = cost, first
    cuts: list[list[int]] = []
    end = n
    while end > 0:
        cuts.append(order[start[end] : end])
        end = start[end]
    return cuts[::-1]


def worker_plan(cpus: int) -> tuple[int, int]:
    """(inference workers, intra-op threads per worker) for a pod that may use `cpus` CPUs: one single-threaded
    worker per CPU.

    Under load, passes side by side on one thread each do more texts a second than passes that split every operator
    over several threads (about 10% more on two CPUs, measured by `make bench`): a thread has no partner to wait for
    between operators, and one preempted by the event loop slows only its own pass. A lone text still gets every
    CPU: ONNX backends keep one more session on all the threads for it (`OnnxBackend`).
    """
    cpus = max(1, int(cpus))
    return cpus, 1


# Pass shapes (rows, width) bake times to measure a model's fixed cost per pass; all short, as most traffic is.
PROBE_SHAPES: tuple[tuple[int, int], ...] = ((1, 8), (1, 16), (1, 32), (1, 64), (2, 16), (4, 16), (8, 16), (4, 32))
# A fit below 2 came only from noise (a busy machine); passes cut that fine were slower in practice.
MIN_PASS_OVERHEAD_TOKENS = 2.0
MAX_PASS_OVERHEAD_TOKENS = 32.0


def fit_pass_overhead(seconds: dict[tuple[int, int], float]) -> float:
    """Fixed cost of one pass in token-times, from the fastest time seen per (rows, width) shape.

    Least squares of `a + b * rows * width`, reported as a / b and clamped to [2, 32]: a noisy machine can make
    the fit off, never absurd (anywhere from 4 to 16 cut the bench's short texts within a few % of the best).
    """
    if len(seconds) < 2:
        raise ValueError("need at least two pass shapes to fit")
    tokens = [float(r * w) for r, w in seconds]
    times = list(seconds.values())
    n = len(tokens)
    mean_x, mean_y = sum(tokens) / n, sum(times) / n
    var = sum((x - mean_x) ** 2 for x in tokens)
    if var == 0:
        raise ValueError("need pass shapes of different sizes to fit")
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(tokens, times, strict=True)) / var
    intercept = mean_y - slope * mean_x
    if slope <= 0:
        return MAX_PASS_OVERHEAD_TOKENS
    return min(MAX_PASS_OVERHEAD_TOKENS, max(MIN_PASS_OVERHEAD_TOKENS, intercept / slope))
