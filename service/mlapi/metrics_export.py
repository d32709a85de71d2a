"""Counter increases as JSON lines on stdout, for platforms that ship logs but never scrape `/metrics`.

On ECS Fargate nothing scrapes Prometheus: the awslogs driver carries stdout to CloudWatch Logs, where metric
filters turn JSON fields into CloudWatch metrics with dimensions (infra/fargate/cloudwatch.py). So every
`MLAPI_METRICS_LOG_INTERVAL_SECONDS` the server writes one line per series that grew, for the counters named in
`MLAPI_METRICS_LOG_COUNTERS`:

    {"metric": "mlapi_key_texts_total", "key": "web", "source": "computed", "value": 12}

`value` is the increase since the previous line of that series, so CloudWatch's Sum over any period is the
counter's increase in it, summed over tasks; a last line is written at shutdown, after queued work has drained, so
a task that scales in loses nothing. Label sets are as bounded as the counters' own (API keys come from the keys
file, others fold into `other`); past `MAX_SERIES` series of one counter, new ones are left out with a warning,
because CloudWatch disables a metric filter that sees 1,000 dimension values within an hour.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

# Fields every line has; a counter whose labels use these names cannot be written unambiguously.
RESERVED_FIELDS = ("metric", "value")
MAX_SERIES = 500


class MetricsLogError(ValueError):
    """A counter named in MLAPI_METRICS_LOG_COUNTERS that this server cannot write."""


def _counter_families(registry: CollectorRegistry) -> dict[str, list[str]]:
    """Every counter of the registry: its `_total` sample name -> its label names."""
    found: dict[str, list[str]] = {}
    for family in registry.collect():
        if family.type == "counter":
            labels = sorted({name for sample in family.samples for name in sample.labels})
            found[f"{family.name}_total"] = labels
    return found


class CounterLog:
    """Turns chosen counters of one registry into lines of their increase since the previous call."""

    def __init__(self, registry: CollectorRegistry, counters: Sequence[str], max_series: int = MAX_SERIES) -> None:
        known = _counter_families(registry)
        for name in counters:
            if name not in known:
                raise MetricsLogError(
                    f"MLAPI_METRICS_LOG_COUNTERS: {name} is not a counter of this server "
                    f"(counters: {', '.join(sorted(known))})"
                )
            clash = sorted(set(known[name]) & set(RESERVED_FIELDS))
            if clash:
                raise MetricsLogError(f"MLAPI_METRICS_LOG_COUNTERS: {name} has labels named {clash}, which the "
                                      f"lines use for themselves ({', '.join(RESERVED_FIELDS)})")
        self._registry = registry
        self._counters = frozenset(counters)
        self._max_series = max_series
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._series: dict[str, int] = {}
        self._warned: set[str] = set()

    def _samples(self) -> Iterable[tuple[str, dict[str, str], float]]:
        for family in self._registry.collect():
            for sample in family.samples:
                if sample.name in self._counters:
                    yield sample.name, sample.labels, sample.value

    def _collect(self) -> tuple[list[str], dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
        """The lines of every series that grew since the last committed values, and the values to commit."""
        out: list[str] = []
        seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for name, labels, value in self._samples():
            series = (name, tuple(sorted(labels.items())))
            if series not in self._last:
                if self._series.get(name, 0) >= self._max_series:
                    if name not in self._warned:
                        self._warned.add(name)
                        log.warning("%s has more than %d series: new label sets are left out of the metrics log",
                                    name, self._max_series)
                    continue
                self._series[name] = self._series.get(name, 0) + 1
                self._last[series] = 0.0
            seen[series] = value
            delta = value - self._last[series]
            if delta > 0:
                number = int(delta) if float(delta).is_integer() else delta
                out.append(json.dumps({"metric": name, **labels, "value": number}, separators=(",", ":")))
        return out, seen

    def lines(self) -> list[str]:
        """One JSON line per series that grew since the previous call (at the first call: since start)."""
        out, seen = self._collect()
        self._last.update(seen)
        return out

    def write(self) -> int:
        """Write the lines to stdout, each a log event of its own; returns how many. The values are committed only
        once written, so a failed write leaves its increases to the next one."""
        lines, seen = self._collect()
        if lines:
            sys.stdout.write("".join(f"{line}\n" for line in lines))
            sys.stdout.flush()
        self._last.update(seen)
        return len(lines)


async def publish(counter_log: CounterLog, interval_seconds: float) -> None:
    """Write the counters' increases every `interval_seconds` until cancelled, then once more."""
    try:
        while True:
            await asyncio.sleep(interval_seconds)
            _write(counter_log)
    except asyncio.CancelledError:
        _write(counter_log)
        raise


def _write(counter_log: CounterLog) -> None:
    # A closed or full stdout costs these lines, never the server (the increases are kept for the next write).
    try:
        counter_log.write()
    except OSError as exc:
        log.warning("metrics log not written: %s", exc)
