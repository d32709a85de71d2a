"""Model outputs to answers: class probabilities, and zero-shot labels from sentence embeddings.

Shared by the server and by bake's probes, so what bake measured is what the server computes.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax, numerically stable, float64 so each row sums to 1 after rounding to float."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def ranked(labels: list[str], probs: np.ndarray, order: str = "score") -> list[dict[str, object]]:
    """Every label with its score: high to low (ties keep label order), or in label order when `order` is "model".

    "model" is the transformers pipeline's `return_all_scores=True` order (the model's label ids), which clients of
    earlier course terms index by position.
    """
    indices = range(len(labels)) if order == "model" else sorted(range(len(labels)), key=lambda i: -probs[i])
    return [{"label": labels[i], "score": float(probs[i])} for i in indices]


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, so a dot product is a cosine."""
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def label_prototypes(description_embeddings: list[np.ndarray]) -> np.ndarray:
    """One unit vector per label, in the given order: the mean of that label's description embeddings."""
    return unit(np.stack([unit(embeddings).mean(axis=0) for embeddings in description_embeddings]))


def zero_shot(text_embeddings: np.ndarray, label_vectors: np.ndarray, temperature: float) -> np.ndarray:
    """Label probabilities from cosine similarity, sharpened by a temperature (as CLIP-style zero-shot does).

    The dot products are an element-wise product summed along each vector, not a matrix product: BLAS picks its
    kernel (and so its order of additions) by the number of rows, which would make a text's scores depend on how
    many other texts were scored with it.
    """
    similarity = (unit(text_embeddings)[:, None, :] * label_vectors[None, :, :]).sum(axis=-1)
    return softmax(similarity, temperature)
