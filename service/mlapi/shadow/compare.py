"""One text's answer from the live model beside the candidate's: do they agree on the top label, and by how much
do their scores differ.

Pure functions over `/predict` answers (a list of `{"label", "score"}` per text), so the rule that decides what a
flip is can be tested without a server, and is the same whatever order either server lists labels in
(`MLAPI_LABEL_ORDER=model` lists them in the model's order, not by score).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["agree", "flip"]


class InvalidAnswer(ValueError):
    """An answer that is not a non-empty list of distinct labels with finite scores in [0, 1]."""


@dataclass(frozen=True)
class Comparison:
    """How the candidate's answer to one text compares with the live model's."""

    outcome: Outcome
    # Largest absolute difference of any label's score (a label only one side has counts as 0 on the other).
    difference: float
    primary_label: str
    candidate_label: str


def scores_of(answer: object) -> dict[str, float]:
    """`{"label": score}` from one text's `/predict` answer; InvalidAnswer when it is not one."""
    if not isinstance(answer, list) or not answer:
        raise InvalidAnswer("an answer must be a non-empty list of {label, score}")
    scores: dict[str, float] = {}
    for item in answer:
        if not isinstance(item, dict):
            raise InvalidAnswer("an answer item must be an object")
        label, score = item.get("label"), item.get("score")
        if not isinstance(label, str) or isinstance(score, bool) or not isinstance(score, int | float):
            raise InvalidAnswer("an answer item needs a string label and a numeric score")
        if not math.isfinite(score) or not 0.0 <= score <= 1.0:
            raise InvalidAnswer(f"score {score!r} of {label!r} is not in [0, 1]")
        if label in scores:
            raise InvalidAnswer(f"label {label!r} appears twice")
        scores[label] = float(score)
    return scores


def _top(scores: dict[str, float]) -> tuple[str, float]:
    label = max(scores, key=lambda name: scores[name])
    return label, scores[label]


def compare(primary: object, candidate: object) -> Comparison:
    """Agree when both put the same label on top, flip otherwise; with the largest score difference.

    A tie on top is not a flip: when either side scores the other's top label exactly as high as its own, the two
    answers do not disagree about the best label, only about how to break the tie.
    """
    ours, theirs = scores_of(primary), scores_of(candidate)
    our_label, our_best = _top(ours)
    their_label, their_best = _top(theirs)
    same = (
        our_label == their_label
        or ours.get(their_label) == our_best
        or theirs.get(our_label) == their_best
    )
    difference = max(abs(ours.get(label, 0.0) - theirs.get(label, 0.0)) for label in ours.keys() | theirs.keys())
    return Comparison("agree" if same else "flip", difference, our_label, their_label)
