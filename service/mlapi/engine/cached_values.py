"""What a cached value must look like before it is served: a value read back from Redis is data, not trusted.

Anyone who can write to the Redis the service reads (a shared instance, a misconfigured neighbour, an attacker
inside the network) could otherwise splice arbitrary JSON into a 200 answer, or store bytes that make every answer
for that text fail. A value that is not exactly what this model and these settings would have produced is a miss:
the text is computed again and the good answer overwrites the bad one in every tier.
"""

from __future__ import annotations

import math

import numpy as np
import orjson

SUM_TOLERANCE = 1e-3
NORM_TOLERANCE = 1e-2


def valid_prediction(value: bytes, labels: list[str], label_order: str) -> bool:
    """Whether `value` is one text's /predict answer for a model with `labels`, in `label_order`."""
    try:
        items = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(items, list) or len(items) != len(labels):
        return False
    if not all(isinstance(item, dict) and set(item) == {"label", "score"} for item in items):
        return False
    names = [item["label"] for item in items]
    scores = [item["score"] for item in items]
    if not all(isinstance(s, float | int) and not isinstance(s, bool) and math.isfinite(s) and 0 <= s <= 1
               for s in scores):
        return False
    if abs(sum(scores) - 1.0) > SUM_TOLERANCE:
        return False
    if label_order == "model":
        return names == labels
    return sorted(names) == sorted(labels) and all(a >= b for a, b in zip(scores, scores[1:], strict=False))


def valid_embedding(value: bytes, dimensions: int | None) -> bool:
    """Whether `value` is a unit-length float32 embedding (of `dimensions` floats, when known)."""
    if not value or len(value) % 4 or (dimensions is not None and len(value) != 4 * dimensions):
        return False
    vector = np.frombuffer(value, dtype=np.float32)
    if not np.isfinite(vector).all():
        return False
    return abs(float(np.linalg.norm(vector)) - 1.0) <= NORM_TOLERANCE
