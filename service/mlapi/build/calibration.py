"""Activation ranges measured at bake, so an int8 recipe can quantise every text with the same fixed scales.

A scale fixed at bake cannot depend on the texts that share a pass, so a graph quantised with it is batch-invariant
by construction, and it costs nothing at run time (no min/max over the activations). What it risks is a text whose
activations fall outside the measured range and are clipped: the calibration texts are therefore varied on purpose
(short and long, odd punctuation, numbers, code, other scripts), and bake checks the result on its probe set, which
shares no text with them, before the recipe may be kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mlapi.engine.tokenization import TextEncoder

CALIBRATION_TEXTS = [
    "The hotel room was spotless and the staff remembered our names.",
    "I waited forty minutes for a cold sandwich.",
    "Not bad at all, honestly better than I expected.",
    "This is the worst phone I have ever owned and I want a refund.",
    "The concert was loud, crowded and absolutely magical.",
    "Delivery was on time; the box was dented but the contents were fine.",
    "meh",
    "yes",
    "Why would anyone design a menu like this?",
    "Our team shipped the release two weeks early.",
    "The bridge will be closed for repairs until March.",
    "She thanked everyone and left the meeting without a word about the budget.",
    "I'm never ordering from them again!!!",
    "Five stars. Would buy again.",
    "The instructions were confusing and two screws were missing.",
    "What time does the museum open on Sundays?",
    "The lecture on protein folding ran over by an hour.",
    "Honestly? It's fine. Nothing more, nothing less.",
    "He apologised, but the damage to the car was already done.",
    "Fresh bread, good coffee, friendly people: my favourite corner of town.",
    "ERROR 500 AGAIN. THIS APP IS UNUSABLE.",
    "lol this is so good 😂😂😂 🔥",
    "Order #48213 arrived 3 days late, 2 of 5 items damaged, refund of $17.50 pending.",
    "def total(items): return sum(item.price for item in items)",
    "<p>Click <a href='/unsubscribe'>here</a> to unsubscribe.</p>",
    "https://shop.example.com/cart?item=1234&qty=2",
    "Le service était lent mais le repas était délicieux.",
    "Der Zug hatte wieder eine Stunde Verspätung.",
    "この映画は本当に素晴らしかった",
    "?!?!?! ... --- ***",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "good good good good good good good good good good good good",
    "no no no no no no no no no no no no no no no no no no no no",
    " ".join(["The first half drags, with long scenes that add little, but the last act pulls every thread together"]
             * 3),
    " ".join(["I have used this vacuum every day for a year; the battery still lasts, the filter is easy to clean"]
             * 4),
    " ".join(["word"] * 300),
    "The quarterly report shows revenue up 4%, costs flat, and churn down for the third quarter in a row.",
    "My grandmother's recipe calls for a pinch of salt, two eggs and far too much butter.",
    "The support agent solved in five minutes what the chatbot could not in an hour.",
    "It rained all week, the tent leaked, and we still had the best holiday in years.",
]


MAX_EXTRA_TEXTS = 10_000  # each runs alone through the fp32 graph at bake: about 20 ms each for DistilBERT-base


def read_texts(path: Path) -> list[str]:
    """A user's own calibration texts: one per line of a UTF-8 file, blank lines skipped.

    Texts from the traffic a model will serve cover activations the built-in set may not (a domain's vocabulary,
    its lengths), so fewer of them clip. Raises ValueError saying what is wrong with the file.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text (byte {exc.start})") from exc
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise ValueError(f"{path} holds no texts (one per line)")
    if len(texts) > MAX_EXTRA_TEXTS:
        raise ValueError(f"{path} holds {len(texts):,} texts; at most {MAX_EXTRA_TEXTS:,} (each runs alone at bake)")
    return texts


def calibration_set(extra: Sequence[str], held_out: Sequence[str]) -> list[str]:
    """The built-in texts plus `extra`, once each, without any text of the probe set that checks the result."""
    excluded = set(held_out)
    return [text for text in dict.fromkeys([*CALIBRATION_TEXTS, *extra]) if text not in excluded]


def activation_ranges(graph: Path, encoder: TextEncoder, texts: Sequence[str], names: Sequence[str]
                      ) -> dict[str, tuple[float, float]]:
    """The smallest and largest value each named activation takes over `texts`, each text run alone in fp32.

    Each text is its own pass, so padding never enters a range, and every range holds 0, as a uint8 zero point
    needs. The graph's optimisations are off so every named intermediate tensor still exists to be read.
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(graph))
    model.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                              for name in names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = {node.name for node in session.get_inputs()}  # an optimised graph may drop token_type_ids
    low = dict.fromkeys(names, 0.0)
    high = dict.fromkeys(names, 0.0)
    for text in texts:
        arrays = encoder.pad(encoder.encode([text])).arrays
        values = session.run(list(names), {name: array for name, array in arrays.items() if name in inputs})
        for name, value in zip(names, values, strict=True):
            low[name] = min(low[name], float(np.min(value)))
            high[name] = max(high[name], float(np.max(value)))
    return {name: (low[name], high[name]) for name in names}
