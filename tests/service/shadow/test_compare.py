"""What counts as a flip, and the score difference, on answers as `/predict` writes them."""

from __future__ import annotations

import pytest
from mlapi.shadow.compare import InvalidAnswer, compare, scores_of


def _answer(**scores: float) -> list[dict[str, object]]:
    return [{"label": label, "score": score} for label, score in sorted(scores.items(), key=lambda kv: -kv[1])]


def test_same_top_label_agrees_with_the_largest_score_difference() -> None:
    result = compare(_answer(POSITIVE=0.9, NEGATIVE=0.1), _answer(POSITIVE=0.6, NEGATIVE=0.4))
    assert result.outcome == "agree"
    assert result.difference == pytest.approx(0.3)
    assert (result.primary_label, result.candidate_label) == ("POSITIVE", "POSITIVE")


def test_another_top_label_is_a_flip() -> None:
    result = compare(_answer(POSITIVE=0.55, NEGATIVE=0.45), _answer(POSITIVE=0.4, NEGATIVE=0.6))
    assert result.outcome == "flip"
    assert result.difference == pytest.approx(0.15)
    assert (result.primary_label, result.candidate_label) == ("POSITIVE", "NEGATIVE")


def test_label_order_does_not_matter_only_scores_do() -> None:
    # MLAPI_LABEL_ORDER=model lists labels in the model's order: the top label is the highest score, not the first.
    model_order = [{"label": "NEGATIVE", "score": 0.2}, {"label": "POSITIVE", "score": 0.8}]
    assert compare(model_order, _answer(POSITIVE=0.8, NEGATIVE=0.2)).outcome == "agree"
    assert compare(model_order, _answer(POSITIVE=0.8, NEGATIVE=0.2)).difference == 0.0


def test_a_tie_on_top_is_not_a_flip() -> None:
    assert compare(_answer(A=0.5, B=0.5), _answer(B=0.7, A=0.3)).outcome == "agree"
    assert compare(_answer(B=0.7, A=0.3), _answer(A=0.5, B=0.5)).outcome == "agree"


def test_labels_only_one_side_has_count_as_zero_on_the_other() -> None:
    result = compare(_answer(POSITIVE=0.7, NEGATIVE=0.3), _answer(POSITIVE=0.5, NEUTRAL=0.4, NEGATIVE=0.1))
    assert result.outcome == "agree"
    assert result.difference == pytest.approx(0.4)  # NEUTRAL: 0 against 0.4


@pytest.mark.parametrize("answer", [
    [], {"label": "A", "score": 1.0}, [{"label": "A"}], [{"label": 1, "score": 0.5}], [{"label": "A", "score": "1"}],
    [{"label": "A", "score": 1.5}], [{"label": "A", "score": float("nan")}], [{"label": "A", "score": True}],
    [{"label": "A", "score": 0.5}, {"label": "A", "score": 0.5}], ["A"], None,
])
def test_anything_but_an_answer_is_refused(answer: object) -> None:
    with pytest.raises(InvalidAnswer):
        scores_of(answer)
    with pytest.raises(InvalidAnswer):
        compare(_answer(A=1.0), answer)
