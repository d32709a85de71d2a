"""Pass shaping and CPU planning: every text in exactly one pass, budgets respected, the cheapest cut chosen, and
workers x threads that follow the CPU quota."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlapi.engine.shaping import (
    MAX_PASS_OVERHEAD_TOKENS,
    MIN_PASS_OVERHEAD_TOKENS,
    cut_passes,
    fit_pass_overhead,
    worker_plan,
)
from mlapi.settings import Settings, usable_cpus


def _cost(passes: list[list[int]], widths: list[int], overhead: float) -> float:
    return sum(overhead + len(p) * max(widths[i] for i in p) for p in passes)


def _valid(passes: list[list[int]], widths: list[int], max_size: int, max_tokens: int) -> bool:
    for p in passes:
        if not p or len(p) > max_size:
            return False
        if len(p) > 1 and len(p) * max(widths[i] for i in p) > max_tokens:
            return False
    return True


def _brute_force_best(widths: list[int], max_size: int, max_tokens: int, overhead: float) -> float:
    """Cheapest cost over every way to cut the length-sorted texts into contiguous passes."""
    order = sorted(range(len(widths)), key=lambda i: widths[i])
    best = float("inf")
    for mask in range(1 << max(len(order) - 1, 0)):
        passes, current = [], [order[0]]
        for k, index in enumerate(order[1:]):
            if mask >> k & 1:
                passes.append(current)
                current = []
            current.append(index)
        passes.append(current)
        if _valid(passes, widths, max_size, max_tokens):
            best = min(best, _cost(passes, widths, overhead))
    return best


@settings(max_examples=200, deadline=None)
@given(
    widths=st.lists(st.integers(1, 80), min_size=1, max_size=40),
    max_size=st.integers(1, 40),
    max_tokens=st.integers(16, 2048),
    overhead=st.floats(0.5, 64),
)
def test_cut_passes_covers_every_text_once_within_budget(
    widths: list[int], max_size: int, max_tokens: int, overhead: float
) -> None:
    passes = cut_passes(widths, max_size, max_tokens, overhead)
    assert sorted(i for p in passes for i in p) == list(range(len(widths)))
    assert _valid(passes, widths, max_size, max_tokens)
    for p in passes:  # each pass is a run of the length-sorted texts, so it lists them shortest first
        assert [widths[i] for i in p] == sorted(widths[i] for i in p)


@settings(max_examples=150, deadline=None)
@given(
    widths=st.lists(st.integers(1, 60), min_size=1, max_size=10),
    max_size=st.integers(1, 10),
    max_tokens=st.integers(16, 400),
    overhead=st.floats(0.5, 64),
)
def test_cut_passes_is_the_cheapest_cut(widths: list[int], max_size: int, max_tokens: int, overhead: float) -> None:
    passes = cut_passes(widths, max_size, max_tokens, overhead)
    assert _cost(passes, widths, overhead) == pytest.approx(_brute_force_best(widths, max_size, max_tokens, overhead))


def test_cut_passes_splits_where_padding_costs_more_than_a_pass() -> None:
    widths = [10, 10, 10, 10, 40, 40]
    # Padding the four short texts to 40 would cost 120 token-times; a second pass costs 8.
    assert cut_passes(widths, 32, 8192, overhead=8) == [[0, 1, 2, 3], [4, 5]]
    # When a pass costs more than the padding, one pass it is.
    assert cut_passes(widths, 32, 8192, overhead=500) == [[0, 1, 2, 3, 4, 5]]


def test_cut_passes_gives_an_overlong_text_its_own_pass() -> None:
    assert cut_passes([600, 5, 5], max_size=8, max_tokens=512, overhead=4) == [[1, 2], [0]]
    assert cut_passes([], 8, 512, 4) == []


def test_fit_pass_overhead_recovers_the_fixed_cost() -> None:
    shapes = [(1, 8), (1, 16), (2, 16), (4, 16), (8, 16), (4, 32)]
    seconds = {(r, w): 0.002 + 0.0004 * r * w for r, w in shapes}  # 2 ms per pass, 0.4 ms per token
    assert fit_pass_overhead(seconds) == pytest.approx(5.0)


def test_fit_pass_overhead_stays_in_bounds_on_noise() -> None:
    assert fit_pass_overhead({(1, 8): 0.01, (8, 16): 0.005}) == MAX_PASS_OVERHEAD_TOKENS  # slower when smaller
    assert fit_pass_overhead({(1, 8): 0.0001, (8, 16): 0.0128}) == MIN_PASS_OVERHEAD_TOKENS  # no fixed cost
    with pytest.raises(ValueError):
        fit_pass_overhead({(1, 8): 0.001})


@pytest.mark.parametrize(
    ("cpus", "plan"),
    [(1, (1, 1)), (2, (2, 1)), (3, (3, 1)), (4, (4, 1)), (8, (8, 1))],
)
def test_worker_plan_follows_the_cpus(cpus: int, plan: tuple[int, int]) -> None:
    workers, threads = worker_plan(cpus)
    assert (workers, threads) == plan
    assert workers * threads <= cpus  # never more inference threads than CPUs


def _cgroup_v2(root: Path, quota: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpu.max").write_text(f"{quota} 100000\n")
    return root


@pytest.mark.parametrize(("quota", "cpus"), [("100000", 1), ("150000", 2), ("400000", 4), ("800000", 8)])
def test_usable_cpus_follows_a_cgroup_v2_quota(tmp_path: Path, quota: str, cpus: int) -> None:
    available = len(__import__("os").sched_getaffinity(0))
    assert usable_cpus(_cgroup_v2(tmp_path, quota)) == min(cpus, available)


def test_usable_cpus_reads_cgroup_v1_and_no_quota(tmp_path: Path) -> None:
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path / "v1") == 1
    available = len(__import__("os").sched_getaffinity(0))
    assert usable_cpus(_cgroup_v2(tmp_path / "v2", "max")) == available


@pytest.mark.parametrize(("threads", "workers", "shape"), [
    (4, None, (4, 1)), (2, None, (2, 1)), (1, None, (1, 1)), (4, 1, (1, 4)), (4, 2, (2, 2)), (1, 3, (3, 1)),
])
def test_settings_inference_shape(
    monkeypatch: pytest.MonkeyPatch, threads: int, workers: int | None, shape: tuple[int, int]
) -> None:
    monkeypatch.setenv("MLAPI_INTRA_OP_THREADS", str(threads))
    if workers is not None:
        monkeypatch.setenv("MLAPI_INFERENCE_WORKERS", str(workers))
    else:
        monkeypatch.delenv("MLAPI_INFERENCE_WORKERS", raising=False)
    assert Settings().inference_shape == shape


def test_every_width_pattern_of_a_small_batch_is_cut_cheaply() -> None:
    # Exhaustive over small width patterns: never worse than one pass or one pass per text.
    for widths in itertools.product([3, 7, 20], repeat=5):
        passes = cut_passes(list(widths), 8, 8192, 4.0)
        one = _cost([list(range(5))], list(widths), 4.0)
        each = _cost([[i] for i in range(5)], list(widths), 4.0)
        assert _cost(passes, list(widths), 4.0) <= min(one, each)
