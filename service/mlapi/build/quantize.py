"""int8 dynamic quantisation that proves itself: try recipes from fastest to safest, keep the first within limits.

Dynamic int8 makes a transformer on the CPU two to three times faster, but some models (small sentence encoders
especially) drift further than their users would accept. Bake therefore measures each int8 graph against the fp32
one on a fixed probe set and makes int8 the default only when the drift stays within `LIMITS`; otherwise the
manifest says why and fp32 is served.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlapi.engine.backends.onnx import OnnxBackend
from mlapi.engine.batching import infer_texts
from mlapi.engine.manifest import QuantizationReport
from mlapi.engine.scoring import softmax
from mlapi.engine.tokenization import TextEncoder

log = logging.getLogger(__name__)

# Classifiers: the int8 label may differ from fp32 only where fp32 itself is within a score tie.
LIMITS = {
    "classifier_max_score_diff": 0.05,
    "embedding_min_cosine": 0.99,
    "embedding_query_agreement": 1.0,
}

PROBE_TEXTS = [
    "I love you.", "I hate you.", "This is fun", "the movie was awful", "", "ok",
    "What a wonderful day, everything went right!", "The service was slow and the food was cold.",
    "feeling like a million bucks", "I am not sure how I feel about this.", "Absolutely terrible experience.",
    "The plot was predictable but the acting saved it.", "Best purchase I have made all year.",
    "It broke after two days and support never answered.", "The weather is grey today.",
    "Our quarterly revenue grew by twelve percent.", "The cat sat quietly on the warm windowsill.",
    "Please send the report before Friday.", "I can't believe how good this tastes!!!",
    "Nothing special, just an average product.", "The train was delayed again, I'm furious.",
    "A masterpiece of modern cinema with a haunting score and brilliant performances from the whole cast.",
    "The update fixed the crash but introduced three new bugs in the settings page, which is frustrating.",
    "He scored the winning goal in the final minute.", "Rain is expected tomorrow across the north.",
    "This hotel exceeded every expectation we had.", "Worst customer service ever.",
    "The documentation is clear and the examples work.", "I lost my keys and missed the bus.",
    "Thank you so much for your help!",
    " ".join(["a very long review that goes on and on about many different things"] * 12),
]

PROBE_QUERIES = [
    ("feeling like a million bucks", ["happy", "sad", "rich"]),
    ("I lost my job today", ["happy", "sad", "angry"]),
    ("The stock market rallied after the announcement", ["finance", "sports", "weather"]),
    ("He scored the winning goal in the final minute", ["finance", "sports", "weather"]),
    ("Heavy snow is expected tonight", ["finance", "sports", "weather"]),
    ("How do I reset my password?", ["account help", "billing", "shipping"]),
    ("My package never arrived", ["account help", "billing", "shipping"]),
    ("I was charged twice this month", ["account help", "billing", "shipping"]),
    ("The soup was delicious", ["food", "travel", "technology"]),
    ("The new phone has a great camera", ["food", "travel", "technology"]),
]


@dataclass(frozen=True)
class Recipe:
    """One way to quantise: which operators, and which MatMuls to leave in fp32."""

    name: str
    op_types: tuple[str, ...]
    keep_ffn_output_fp32: bool


# Fastest first. The feed-forward output projections carry the activation outliers that int8 handles worst.
RECIPES = (
    Recipe("all-linear-per-channel", ("MatMul", "Attention", "Gemm"), False),
    Recipe("ffn-output-fp32", ("MatMul", "Attention", "Gemm"), True),
    Recipe("matmul-only-ffn-output-fp32", ("MatMul", "Gemm"), True),
    Recipe("attention-only", ("Attention",), False),
)


def quantize(fp32: Path, out: Path, recipe: Recipe) -> None:
    """Write the int8 graph for one recipe (per-channel signed weights, dynamic activations)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fp32), load_external_data=False)
    exclude = []
    if recipe.keep_ffn_output_fp32:
        exclude = [n.name for n in graph.graph.node if n.op_type == "MatMul" and _is_ffn_output(n.name)]
    quantize_dynamic(
        str(fp32),
        str(out),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=list(recipe.op_types),
        nodes_to_exclude=exclude,
        # Fused nodes from the com.microsoft domain defeat shape inference; their outputs are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _is_ffn_output(node_name: str) -> bool:
    # BERT-style names end ".../output/dense/MatMul", DistilBERT ".../ffn/lin2/MatMul"; attention output is excluded.
    return ("/output/dense/" in node_name and "/attention/" not in node_name) or "/ffn/lin2/" in node_name


def drift(task: str, reference: np.ndarray, candidate: np.ndarray, query_pairs: list[tuple[int, list[int]]]
          ) -> dict[str, float]:
    """How far the candidate's outputs are from the reference's on the probe set."""
    if task == "text-classification":
        ref, cand = softmax(reference), softmax(candidate)
        top2 = np.sort(ref, axis=1)[:, -2:]
        tie = (top2[:, 1] - top2[:, 0]) < 2 * LIMITS["classifier_max_score_diff"]
        flips = (ref.argmax(1) != cand.argmax(1)) & ~tie
        return {
            "max_score_diff": float(np.abs(ref - cand).max()),
            "label_agreement": float((ref.argmax(1) == cand.argmax(1)).mean()),
            "label_flips_outside_ties": float(flips.sum()),
        }
    cosine = (reference * candidate).sum(1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1) + 1e-12
    )
    agree = [
        int(np.argmax(reference[labels] @ reference[s]) == np.argmax(candidate[labels] @ candidate[s]))
        for s, labels in query_pairs
    ]
    return {"min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean()),
            "query_agreement": float(np.mean(agree))}


def within_limits(task: str, metrics: dict[str, float]) -> tuple[bool, str]:
    """Whether a drift measurement passes, and a sentence saying why not."""
    if task == "text-classification":
        if metrics["label_flips_outside_ties"] > 0:
            return False, f"{int(metrics['label_flips_outside_ties'])} probe labels changed"
        if metrics["max_score_diff"] > LIMITS["classifier_max_score_diff"]:
            return False, f"score drift {metrics['max_score_diff']:.3f} > {LIMITS['classifier_max_score_diff']}"
        return True, "within limits"
    if metrics["min_cosine"] < LIMITS["embedding_min_cosine"]:
        return False, f"embedding cosine {metrics['min_cosine']:.4f} < {LIMITS['embedding_min_cosine']}"
    if metrics["query_agreement"] < LIMITS["embedding_query_agreement"]:
        return False, f"query agreement {metrics['query_agreement']:.2f} < 1.0"
    return True, "within limits"


def probe_inputs() -> tuple[list[str], list[tuple[int, list[int]]]]:
    """Probe texts, plus the query cases as (sentence index, label indices) into them."""
    texts = list(PROBE_TEXTS)
    pairs = []
    for sentence, labels in PROBE_QUERIES:
        index = len(texts)
        texts.append(sentence)
        pairs.append((index, list(range(len(texts), len(texts) + len(labels)))))
        texts.extend(labels)
    return texts, pairs


def choose_int8(model_dir: Path, fp32_name: str, int8_name: str, task: str, encoder: TextEncoder,
                threads: int) -> QuantizationReport:
    """Try the recipes in order; keep the first int8 graph within limits at `int8_name`, else none."""
    texts, pairs = probe_inputs()
    reference = infer_texts(OnnxBackend(model_dir / fp32_name, threads, "fp32"), encoder, texts, 32, 8192)
    tried: list[dict[str, object]] = []
    target = model_dir / int8_name
    for recipe in RECIPES:
        quantize(model_dir / fp32_name, target, recipe)
        candidate = infer_texts(OnnxBackend(target, threads, "int8"), encoder, texts, 32, 8192)
        metrics = drift(task, reference, candidate, pairs)
        ok, reason = within_limits(task, metrics)
        tried.append({"recipe": recipe.name, "ok": ok, "reason": reason, **metrics})
        log.info("int8 recipe %s: %s %s", recipe.name, reason, metrics)
        if ok:
            return QuantizationReport(recipe=recipe.name, chosen="int8", reason=reason, limits=LIMITS,
                                      metrics=metrics, tried=tried)
    target.unlink(missing_ok=True)
    why = "; ".join(f"{t['recipe']}: {t['reason']}" for t in tried)
    return QuantizationReport(chosen="fp32", reason=f"no int8 recipe within limits ({why})", limits=LIMITS,
                              tried=tried)
