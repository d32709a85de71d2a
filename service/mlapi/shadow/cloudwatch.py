"""The shadow counts as CloudWatch embedded metric format (EMF) lines, for a platform with no Prometheus.

On ECS Fargate a container's stdout goes to CloudWatch Logs (the awslogs driver), and CloudWatch Logs turns a log
line in embedded metric format into metric data points with no agent or API call from the service. With
`MLAPI_SHADOW_CLOUDWATCH_NAMESPACE` set, the mirror writes one such line a minute per candidate: the texts that
agreed, flipped, failed and were dropped since the last line, with the dimensions `PathPrefix` (each service has its
own `MLAPI_PATH_PREFIX`) and `Candidate` (as the Prometheus label). An alarm's flip ratio is then metric math over
sums: `ShadowFlip / (ShadowAgree + ShadowFlip)`.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable

import orjson

# What the mirror counts, and the CloudWatch metric each becomes.
METRIC_NAMES = {"agree": "ShadowAgree", "flip": "ShadowFlip", "error": "ShadowError", "dropped": "ShadowDropped"}
DIMENSIONS = ("PathPrefix", "Candidate")


def _stdout(line: bytes) -> None:
    sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()


class EmfCounts:
    """Counts per candidate since the last flush, written as one EMF line per candidate."""

    def __init__(self, namespace: str, path_prefix: str, write: Callable[[bytes], None] = _stdout,
                 clock: Callable[[], float] = time.time) -> None:
        self.namespace = namespace
        self.path_prefix = path_prefix or "/"
        self._write = write
        self._clock = clock
        self._counts: dict[str, Counter[str]] = {}

    def add(self, candidate: str, what: str, texts: int = 1) -> None:
        """Count `texts` texts of `what` (agree, flip, error, dropped) for `candidate`."""
        self._counts.setdefault(candidate, Counter())[what] += texts

    def document(self, candidate: str, counts: Counter[str]) -> dict[str, object]:
        """One EMF document: the counts of one candidate, with its dimensions (CloudWatch EMF specification)."""
        return {
            "_aws": {
                "Timestamp": int(self._clock() * 1000),
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [list(DIMENSIONS)],
                    "Metrics": [{"Name": name, "Unit": "Count"} for name in METRIC_NAMES.values()],
                }],
            },
            "PathPrefix": self.path_prefix,
            "Candidate": candidate,
            **{name: counts.get(what, 0) for what, name in METRIC_NAMES.items()},
        }

    def flush(self, current: str) -> None:
        """Write a line per candidate counted since the last flush, and one for `current` even when all are 0: an
        alarm then sees zeros while no text is mirrored, not missing data."""
        counts, self._counts = self._counts, {}
        counts.setdefault(current, Counter())
        for candidate, counted in counts.items():
            self._write(orjson.dumps(self.document(candidate, counted)) + b"\n")
