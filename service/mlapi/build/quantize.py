"""int8 that proves itself: try recipes from fastest to safest, keep the first within limits and batch-invariant.

int8 makes a transformer on the CPU faster, but some models (small sentence encoders especially) drift further
than their users would accept, and ONNX Runtime's dynamic quantisation computes one activation scale over the whole
padded batch, so every neighbour changes every answer. The recipes here either fix each activation's scale at bake
from calibration texts or quantise each row on its own (see `quantize`); bake measures each int8 graph against the
fp32 one on a fixed probe set and checks each probe text alone against the same text in adversarial batches, and
makes int8 the default only when the drift stays within `LIMITS` and no answer moves; otherwise the manifest says
why and fp32 is served.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlapi.build.calibration import activation_ranges, calibration_set
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

# Texts of the probe set checked alone against adversarial batches (each costs eight passes).
INVARIANCE_PROBE_TEXTS = 12

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
    """One way to quantise: where activation scales come from, whether attention's Q/K/V projection goes int8 too,
    and which MatMuls stay fp32."""

    name: str
    keep_ffn_output_fp32: bool
    attention_int8: bool = True
    calibrated: bool = False  # one scale per activation fixed at bake, instead of one per row at run time


# Fastest first. Calibrated scales cost nothing at run time but clip what calibration never saw; per-row scales
# follow every text. The feed-forward output projections carry the activation outliers that int8 handles worst.
RECIPES = (
    Recipe("calibrated-all-linear", False, calibrated=True),
    Recipe("per-row-all-linear", False),
    Recipe("per-row-all-matmul", False, attention_int8=False),
    Recipe("per-row-ffn-output-fp32", True, attention_int8=False),
)

# Attention attributes MultiHeadAttention reads the same way; a node with any other stays a fused fp32 Attention.
_MHA_ATTRIBUTES = {"num_heads", "scale", "mask_filter_value"}
# And those QAttention reads the same way; a node with any other stays fp32 in a calibrated graph.
_QATTENTION_ATTRIBUTES = {"num_heads", "unidirectional"}


def quantize(fp32: Path, out: Path, recipe: Recipe, ranges: Mapping[str, tuple[float, float]] | None = None
             ) -> int:
    """Write the int8 graph for one recipe; returns how many linear layers it quantised.

    A calibrated recipe needs `ranges`, each activation's measured range (`calibrated_inputs` names them,
    `calibration.activation_ranges` measures them), and is written by `_quantize_calibrated`. The rest of this
    describes the per-row recipes.

    Every MatMul (and Gemm) with a constant weight becomes: the activation quantised per row (each token's vector by
    its own max |x| / 127, as uint8 around a fixed zero point of 128, in one QuantizeLinear over the rows), an exact
    integer product against per-column int8 weights scaled back by the column's scale (MatMulIntegerToFloat), and a
    multiply by the row's scale. Each step is either element-wise, per row or exact, so a row's answer depends on that
    row alone: unlike ONNX Runtime's dynamic quantisation, whose one scale per tensor is computed over the whole
    padded batch, it cannot change with the texts that share its pass.

    ONNX Runtime's fused Attention node projects Q, K and V inside itself, and its int8 form (QAttention) quantises
    per tensor. With `attention_int8` each Attention node is split in two: its Q/K/V projection as one per-row int8
    linear layer, and the rest (bias, scaled dot product, softmax over the padding mask) as a MultiHeadAttention node
    fed the three projections. Without it the fused Attention nodes keep fp32.
    """
    import onnx
    from onnx import helper, numpy_helper

    if recipe.calibrated:
        if ranges is None:
            raise ValueError(f"recipe {recipe.name} quantises with calibrated scales: pass the activation ranges")
        return _quantize_calibrated(fp32, out, ranges)
    model = onnx.load(str(fp32))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    graph.initializer.extend(_constants())
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in graph.node:
        prefix = f"rowq{count}_"
        if recipe.attention_int8 and _splittable_attention(node, weights):
            qkv = numpy_helper.to_array(weights[node.input[1]])
            nodes.extend(_per_row_matmul(graph, node.input[0], qkv, prefix + "qkv", prefix))
            width = qkv.shape[1] // 3
            graph.initializer.append(numpy_helper.from_array(np.array([width] * 3, np.int64), prefix + "split"))
            nodes.append(helper.make_node("Split", [prefix + "qkv", prefix + "split"],
                                          [prefix + "q", prefix + "k", prefix + "v"], axis=-1))
            mask = node.input[3] if len(node.input) > 3 else ""
            nodes.append(helper.make_node(
                "MultiHeadAttention", [prefix + "q", prefix + "k", prefix + "v", node.input[2], mask],
                list(node.output), name=(node.name or prefix) + "_mha", domain="com.microsoft",
                **{a.name: helper.get_attribute_value(a) for a in node.attribute},
            ))
            count += 1
            continue
        weight = _linear_weight(node, weights)
        if weight is None or (recipe.keep_ffn_output_fp32 and _is_ffn_output(node.name)):
            nodes.append(node)
            continue
        if node.op_type == "MatMul":
            nodes.extend(_per_row_matmul(graph, node.input[0], weight, node.output[0], prefix))
        else:  # Gemm: A @ W + bias
            nodes.extend(_per_row_matmul(graph, node.input[0], weight, prefix + "product", prefix))
            nodes.append(helper.make_node("Add", [prefix + "product", node.input[2]], [node.output[0]]))
        count += 1
    _replace_nodes(model, nodes, out)
    return count


def _replace_nodes(model: Any, nodes: list[Any], out: Path) -> None:
    import onnx

    graph = model.graph
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, str(out))


def calibrated_inputs(fp32: Path) -> list[str]:
    """The activations a calibrated recipe quantises: the input of each linear layer and fused attention node."""
    import onnx

    model = onnx.load(str(fp32))
    weights = {init.name: init for init in model.graph.initializer}
    names = [node.input[0] for node in model.graph.node
             if _quantizable_attention(node, weights) or _linear_weight(node, weights) is not None]
    return list(dict.fromkeys(names))


def _quantize_calibrated(fp32: Path, out: Path, ranges: Mapping[str, tuple[float, float]]) -> int:
    """Every linear layer's input quantised with one scale fixed at bake: a row's answer cannot depend on its pass.

    Each activation becomes uint8 through one QuantizeLinear with a constant scale and zero point over its
    calibrated range (shared by every layer that reads it), and each linear layer an exact integer product against
    per-column int8 weights, scaled back in the same kernel (MatMulIntegerToFloat). A fused Attention node becomes
    ONNX Runtime's QAttention fed the same constant scale, so its Q/K/V projection is int8 too. Nothing is
    computed from the activations' values at run time, so nothing is shared between the rows of a pass.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    quantized: dict[str, tuple[str, str, str]] = {}

    def uint8(x: str) -> tuple[str, str, str]:
        if x not in quantized:
            prefix = f"calq{len(quantized)}_"
            low, high = min(ranges[x][0], 0.0), max(ranges[x][1], 0.0)
            scale = np.float32(max(high - low, 1e-6) / 255.0)
            zero_point = np.uint8(np.clip(np.round(-low / scale), 0, 255))
            graph.initializer.extend([numpy_helper.from_array(np.array(scale), prefix + "scale"),
                                      numpy_helper.from_array(np.array(zero_point), prefix + "zero_point")])
            nodes.append(helper.make_node("QuantizeLinear", [x, prefix + "scale", prefix + "zero_point"],
                                          [prefix + "x"]))
            quantized[x] = (prefix + "x", prefix + "scale", prefix + "zero_point")
        return quantized[x]

    count = 0
    for node in graph.node:
        prefix = f"calw{count}_"
        if _quantizable_attention(node, weights):
            x, scale, zero_point = uint8(node.input[0])
            w, w_scale = _int8_columns(graph, numpy_helper.to_array(weights[node.input[1]]), prefix)
            mask = node.input[3] if len(node.input) > 3 else ""
            nodes.append(helper.make_node(
                "QAttention", [x, w, node.input[2], scale, w_scale, mask, zero_point], list(node.output),
                name=(node.name or prefix) + "_int8", domain="com.microsoft",
                **{a.name: helper.get_attribute_value(a) for a in node.attribute},
            ))
            count += 1
            continue
        weight = _linear_weight(node, weights)
        if weight is None:
            nodes.append(node)
            continue
        x, scale, zero_point = uint8(node.input[0])
        w, w_scale = _int8_columns(graph, weight, prefix)
        bias = ["", node.input[2]] if node.op_type == "Gemm" else []
        nodes.append(helper.make_node("MatMulIntegerToFloat", [x, w, scale, w_scale, zero_point, *bias],
                                      [node.output[0]], name=(node.name or prefix) + "_int8",
                                      domain="com.microsoft"))
        count += 1
    _replace_nodes(model, nodes, out)
    return count


def _quantizable_attention(node: Any, weights: dict[str, Any]) -> bool:
    """A fused attention node whose attributes QAttention reads the same way."""
    return _fused_attention(node, weights, _QATTENTION_ATTRIBUTES)


def _fused_attention(node: Any, weights: dict[str, Any], attributes: set[str]) -> bool:
    """A com.microsoft Attention with constant Q/K/V weights and bias and no attribute outside `attributes`."""
    return (node.op_type == "Attention" and node.domain == "com.microsoft" and 3 <= len(node.input) <= 4
            and node.input[1] in weights and node.input[2] in weights
            and all(a.name in attributes for a in node.attribute))


def _int8_columns(graph: Any, w: np.ndarray, prefix: str) -> tuple[str, str]:
    """Add a [K, N] weight as symmetric int8 with one scale per output column; returns the two initializer names."""
    from onnx import numpy_helper

    w = w.astype(np.float32)
    column_scale = (np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0).astype(np.float32)
    w_int8 = np.clip(np.round(w / column_scale), -127, 127).astype(np.int8)
    graph.initializer.extend([numpy_helper.from_array(w_int8, prefix + "w"),
                              numpy_helper.from_array(column_scale, prefix + "w_scale")])
    return prefix + "w", prefix + "w_scale"


def _splittable_attention(node: Any, weights: dict[str, Any]) -> bool:
    """A fused attention node whose constant Q/K/V weights and bias MultiHeadAttention can take apart."""
    if not _fused_attention(node, weights, _MHA_ATTRIBUTES):
        return False
    shape = list(weights[node.input[1]].dims)
    return len(shape) == 2 and shape[1] % 3 == 0


def _linear_weight(node: Any, weights: dict[str, Any]) -> np.ndarray | None:
    """The [K, N] weight of a MatMul or Gemm (a linear layer: x @ W, + bias) with a constant weight, else None."""
    from onnx import helper, numpy_helper

    if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in weights:
        w = numpy_helper.to_array(weights[node.input[1]])
        return w if w.ndim == 2 else None
    if node.op_type == "Gemm" and len(node.input) == 3 and node.input[1] in weights and node.input[2] in weights:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return None
        w = numpy_helper.to_array(weights[node.input[1]])
        return w.T if attrs.get("transB", 0) else w
    return None


def _constants() -> list[Any]:
    from onnx import numpy_helper

    values = {"rowq_eps": np.float32(1e-8), "rowq_127": np.float32(127.0), "rowq_1": np.float32(1.0),
              "rowq_zero_point": np.uint8(128), "rowq_flat": np.array([-1], np.int64)}
    return [numpy_helper.from_array(np.array(value), name) for name, value in values.items()]


def _per_row_matmul(graph: Any, x: str, w: np.ndarray, y: str, p: str) -> list[Any]:
    from onnx import helper, numpy_helper

    w_name, w_scale = _int8_columns(graph, w, p)
    graph.initializer.extend([numpy_helper.from_array(np.array([-1, w.shape[0]], np.int64), p + "rows_shape"),
                              numpy_helper.from_array(np.array([w.shape[1]], np.int64), p + "out_width")])
    return [
        # Rows of [tokens, features]; max |x| per row as max(max x, -min x): two reads, no |x| tensor written.
        helper.make_node("Reshape", [x, p + "rows_shape"], [p + "rows"]),
        helper.make_node("ReduceMax", [p + "rows"], [p + "hi"], axes=[-1], keepdims=1),
        helper.make_node("ReduceMin", [p + "rows"], [p + "lo"], axes=[-1], keepdims=1),
        helper.make_node("Neg", [p + "lo"], [p + "neg_lo"]),
        helper.make_node("Max", [p + "hi", p + "neg_lo", "rowq_eps"], [p + "max"]),
        helper.make_node("Div", [p + "max", "rowq_127"], [p + "scale"]),
        # QuantizeLinear's per-axis form along axis 0 of the rows is a scale (and zero point) per row.
        helper.make_node("Reshape", [p + "scale", "rowq_flat"], [p + "row_scale"]),
        helper.make_node("Shape", [p + "row_scale"], [p + "row_count"]),
        helper.make_node("Expand", ["rowq_zero_point", p + "row_count"], [p + "row_zero_point"]),
        helper.make_node("QuantizeLinear", [p + "rows", p + "row_scale", p + "row_zero_point"], [p + "x_uint8"],
                         axis=0),
        helper.make_node("MatMulIntegerToFloat", [p + "x_uint8", w_name, "rowq_1", w_scale, "rowq_zero_point"],
                         [p + "column_scaled"], domain="com.microsoft"),
        helper.make_node("Mul", [p + "column_scaled", p + "scale"], [p + "scaled"]),
        helper.make_node("Shape", [x], [p + "leading"], end=-1),
        helper.make_node("Concat", [p + "leading", p + "out_width"], [p + "out_shape"], axis=0),
        helper.make_node("Reshape", [p + "scaled", p + "out_shape"], [y]),
    ]


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


NEIGHBOURS_SHORT = ["ok", "no", "the film"]
NEIGHBOUR_LONG = " ".join(["a very long review that goes on and on about many different things"] * 6)


def adversarial_batches(text: str, others: list[str]) -> list[list[str]]:
    """Batches that hold `text` beside short, long and many neighbours, first and last, and twice."""
    return [
        [text, *NEIGHBOURS_SHORT], [*NEIGHBOURS_SHORT, text], [text, NEIGHBOUR_LONG], [NEIGHBOUR_LONG, text],
        [*others[:8], text, *others[8:16]], [text, text],
    ]


def batch_invariance(backend: OnnxBackend, encoder: TextEncoder, texts: list[str]) -> dict[str, float]:
    """How far each text's output moves when it shares a pass, against the text alone: must be exactly 0.

    An answer is a function of its text and the model only: a recipe (or graph) whose rows depend on their batch
    neighbours, their order or the padding lets one client change another's answer, and a cache freeze whichever
    answer came first. The text alone runs on all the backend's threads, as the server runs a lone text; the batches
    and the text alone once more run on one worker's, so the thread count must not move an answer either.
    """
    moved = 0
    largest = 0.0
    for text in texts:
        alone = backend.infer(encoder.pad(encoder.encode([text])), wide=True)[0]
        others = [other for other in texts if other != text]
        for batch in [[text], *adversarial_batches(text, others)]:
            rows = backend.infer(encoder.pad(encoder.encode(batch)))
            for index in [i for i, t in enumerate(batch) if t == text]:
                if not np.array_equal(rows[index], alone):
                    moved += 1
                    largest = max(largest, float(np.abs(rows[index] - alone).max()))
    return {"batch_probe_texts": float(len(texts)), "batch_moved_rows": float(moved),
            "batch_max_abs_diff": largest}


def choose_int8(model_dir: Path, fp32_name: str, int8_name: str, task: str, encoder: TextEncoder,
                threads: int, calibration_texts: Sequence[str] = ()) -> QuantizationReport:
    """Try the recipes in order; keep the first int8 graph within limits at `int8_name`, else none.

    A recipe whose graph ONNX Runtime cannot load or run (an attention node the split does not fit, say) is reported
    as failed and the next one is tried, so an unusual model costs speed, never the bake. `calibration_texts` (the
    user's own) join the built-in calibration set; any that is also a probe text is left out, so the drift check
    stays on texts calibration never saw.
    """
    texts, pairs = probe_inputs()
    fp32 = model_dir / fp32_name
    reference = infer_texts(OnnxBackend(fp32, threads, "fp32"), encoder, texts, 32, 8192)
    calibration = calibration_set(calibration_texts, texts)
    ranges: dict[str, tuple[float, float]] | None = None
    try:
        ranges = activation_ranges(fp32, encoder, calibration, calibrated_inputs(fp32))
    except Exception as exc:  # as below: a graph ONNX Runtime cannot run this way costs the calibrated recipes only
        calibration_failed = f"calibration could not run the graph: {type(exc).__name__}: {str(exc)[:300]}"
    tried: list[dict[str, object]] = []
    target = model_dir / int8_name
    for recipe in RECIPES:
        if recipe.calibrated and ranges is None:
            tried.append({"recipe": recipe.name, "ok": False, "reason": calibration_failed})
            log.warning("int8 recipe %s: %s", recipe.name, calibration_failed)
            continue
        quantize(fp32, target, recipe, ranges)
        try:
            # Both lanes the server runs: a one-thread worker's and, for a lone text, all the threads.
            backend = OnnxBackend(target, threads, "int8", workers=1, per_worker=1)
            candidate = infer_texts(backend, encoder, texts, 32, 8192)
        except Exception as exc:  # ONNX Runtime raises several types; a graph it cannot run is a recipe that failed
            reason = f"ONNX Runtime could not run the graph: {type(exc).__name__}: {str(exc)[:300]}"
            tried.append({"recipe": recipe.name, "ok": False, "reason": reason})
            log.warning("int8 recipe %s: %s", recipe.name, reason)
            continue
        metrics = drift(task, reference, candidate, pairs)
        ok, reason = within_limits(task, metrics)
        metrics.update(batch_invariance(backend, encoder, PROBE_TEXTS[:INVARIANCE_PROBE_TEXTS]))
        if recipe.calibrated:
            metrics["calibration_texts"] = float(len(calibration))
        if ok and metrics["batch_moved_rows"] > 0:
            ok, reason = False, (f"{int(metrics['batch_moved_rows'])} probe answers changed with their batch "
                                 f"neighbours (up to {metrics['batch_max_abs_diff']:.2e})")
        tried.append({"recipe": recipe.name, "ok": ok, "reason": reason, **metrics})
        log.info("int8 recipe %s: %s", recipe.name, reason)
        log.debug("int8 recipe %s measured %s", recipe.name, metrics)
        if ok:
            return QuantizationReport(recipe=recipe.name, chosen="int8", reason=reason, limits=LIMITS,
                                      metrics=metrics, tried=tried)
    target.unlink(missing_ok=True)
    why = "; ".join(f"{t['recipe']}: {t['reason']}" for t in tried)
    return QuantizationReport(chosen="fp32", reason=f"no int8 recipe within limits ({why})", limits=LIMITS,
                              tried=tried)
