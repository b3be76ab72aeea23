"""The one registry of per-record metrics: which predictions an evaluation compares, and every score of them.

A per-record metric is one Score applied to one comparison (a prediction against a reference text, or a
prediction alone). Declared here once, it reaches predictions.jsonl (its per-record key), the summary
(avg_<key>, with its interval), and the graph scripts' figures, intervals and comparisons
(analysis/results.py builds its Metric list from RECORD_METRICS). A new Score is one entry of SCORES; a new
prediction is one entry of PREDICTIONS and gets every score against the ground truth.

The keys are the thesis's spellings (core/schema.py): accuracy_s_vs_gt_script1, strict_exact_match_t_vs_gt,
parses_as_java_student, ...; the order of RECORD_METRICS for the student and the teacher is the thesis's
RECORD_METRICS order, then the parse checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from ..core.schema import (
    ACCURACY,
    F1,
    PARSES_AS_JAVA,
    PRECISION,
    RECALL,
    RETRIEVAL,
    ROW_RETRIEVAL_PREDICTION,
    ROW_STUDENT_PREDICTION,
    ROW_TEACHER_PREDICTION,
    S_VS_GT,
    S_VS_GT_SCRIPT1,
    S_VS_T,
    S_VS_T_CORRECTED,
    S_VS_T_SCRIPT1,
    SIMILARITY_AVG,
    STRICT_EXACT_MATCH,
    STUDENT,
    TEACHER,
    TEACHER_SCRIPT1,
    TRUTH,
    avg,
    record_key,
    script1,
    script1_result_key,
)
from . import metrics as scores


@dataclass(frozen=True)
class Prediction:
    """One text an evaluation scores per record: the student's, or a reference point it is measured against."""

    name: str  # its name in the texts of a record (record_metrics' keyword), e.g. "student"
    row_key: str  # its text's key in predictions.jsonl
    letter: str  # its letter in a pair's suffix: s_vs_gt
    label: str  # how figures and reports name it
    trained: bool = False  # the model a run trains: its metrics get figures and comparisons; others are references

    def vs_truth(self) -> str:
        """The suffix of this prediction against the ground truth: 's_vs_gt'."""
        return f"{self.letter}_vs_gt"


STUDENT_PREDICTION = Prediction(STUDENT, ROW_STUDENT_PREDICTION, "s", "student", trained=True)
TEACHER_PREDICTION = Prediction(TEACHER, ROW_TEACHER_PREDICTION, "t", "teacher")
RETRIEVAL_PREDICTION = Prediction(RETRIEVAL, ROW_RETRIEVAL_PREDICTION, "r", "retrieval (BM25 nearest training test)")
PREDICTIONS: tuple[Prediction, ...] = (STUDENT_PREDICTION, TEACHER_PREDICTION, RETRIEVAL_PREDICTION)
PREDICTIONS_BY_NAME = {prediction.name: prediction for prediction in PREDICTIONS}
OPTIONAL_PREDICTIONS = (RETRIEVAL,)  # scored only where a record has the text (a run without training data has none)


@dataclass(frozen=True)
class Pair:
    """One comparison: a prediction against a reference text, its key suffix, and the words for it."""

    suffix: str  # s_vs_gt_script1
    prediction: str  # a Prediction's name
    reference: str  # TRUTH, TEACHER or TEACHER_SCRIPT1
    label: str  # "vs ground truth"
    thesis: bool = False  # every thesis summary has its scores


# The comparisons each kind of score makes: the student against the teacher as the thesis made them (and with
# the teacher's lines joined), and every prediction against the ground truth.
def _script1_pairs() -> tuple[Pair, ...]:
    student = (Pair(S_VS_T_SCRIPT1, STUDENT, TEACHER_SCRIPT1, "vs teacher", thesis=True),
               Pair(S_VS_GT_SCRIPT1, STUDENT, TRUTH, "vs ground truth", thesis=True),
               Pair(S_VS_T_CORRECTED, STUDENT, TEACHER, "vs teacher (corrected)"))
    return student + tuple(Pair(script1(p.vs_truth()), p.name, TRUTH, "vs ground truth")
                           for p in PREDICTIONS if not p.trained)


def _strict_pairs() -> tuple[Pair, ...]:
    student = (Pair(S_VS_GT, STUDENT, TRUTH, "vs ground truth"), Pair(S_VS_T, STUDENT, TEACHER, "vs teacher"))
    return student + tuple(Pair(p.vs_truth(), p.name, TRUTH, "vs ground truth") for p in PREDICTIONS if not p.trained)


def _each_prediction() -> tuple[Pair, ...]:
    return tuple(Pair(p.name, p.name, "", "") for p in PREDICTIONS)


@lru_cache(maxsize=256)
def _script1_result(generated: str, reference: str) -> dict:
    return scores.evaluate_assertions_script1_style(generated, reference)


def _script1_score(name: str) -> Callable[[str, str], float]:
    return lambda generated, reference: _script1_result(generated, reference)[script1_result_key(name)]


@dataclass(frozen=True)
class Score:
    """One per-record score in [0, 1] (higher is better) and the comparisons it makes."""

    name: str  # the key's prefix: accuracy -> accuracy_<pair suffix>
    label: str
    function: Callable  # (generated, reference) -> float, or (generated,) -> float when pairs is _each_prediction
    pairs: Callable[[], tuple[Pair, ...]]
    binary: bool = False  # 0 or 1 per record: paired comparisons use McNemar's exact test
    thesis: bool = False  # one of the thesis's scores (required in a thesis summary, on its thesis pairs)


SCORES: tuple[Score, ...] = (
    *(Score(name, label, _script1_score(name), _script1_pairs, thesis=True)
      for name, label in ((PRECISION, "Precision"), (RECALL, "Recall"), (F1, "F1"), (ACCURACY, "Accuracy"),
                          (SIMILARITY_AVG, "Similarity"))),
    Score(STRICT_EXACT_MATCH, "Strict exact match", scores.strict_exact_match, _strict_pairs, binary=True),
    Score(PARSES_AS_JAVA, "Parses as Java", scores.parses_as_java, _each_prediction, binary=True),
)


@dataclass(frozen=True)
class RecordMetric:
    """One Score of one Pair: its per-record key (predictions.jsonl), summary key and what it compares."""

    key: str  # accuracy_s_vs_gt_script1
    score: Score
    pair: Pair

    @property
    def summary_key(self) -> str:
        """Its mean's key in final_evaluation_metrics and confidence_intervals: avg_<key>."""
        return avg(self.key)

    @property
    def prediction(self) -> Prediction:
        """The prediction it scores."""
        return PREDICTIONS_BY_NAME[self.pair.prediction]

    @property
    def label(self) -> str:
        """'Accuracy vs ground truth' (the student's), 'Parses as Java'."""
        own = "" if self.prediction.trained else f" ({self.prediction.label})"
        return " ".join(part for part in (self.score.label, self.pair.label) if part) + own

    @property
    def required(self) -> bool:
        """The thesis's summaries always have it."""
        return self.score.thesis and self.pair.thesis

    @property
    def vs_teacher(self) -> bool:
        """Compared with the teacher's text: averaged over records with a teacher prediction only."""
        return self.pair.reference in (TEACHER, TEACHER_SCRIPT1)

    def value(self, texts: dict[str, str]) -> float:
        """This metric of one record from its texts (prediction names, TRUTH, TEACHER_SCRIPT1 -> text)."""
        generated = texts[self.pair.prediction]
        if self.pair.reference:
            return float(self.score.function(generated, texts[self.pair.reference]))
        return float(self.score.function(generated))


def _key(score: Score, pair: Pair) -> str:
    return record_key(score.name, pair.suffix)


def _build() -> tuple[RecordMetric, ...]:
    """Every Score on every one of its pairs: pair kinds in SCORES order, then pairs, then scores."""
    built, kinds = [], []
    for score in SCORES:
        if score.pairs not in kinds:
            kinds.append(score.pairs)
    for kind in kinds:
        for pair in kind():
            built += [RecordMetric(_key(score, pair), score, pair) for score in SCORES if score.pairs is kind]
    return tuple(built)


RECORD_METRICS: tuple[RecordMetric, ...] = _build()
RECORD_METRICS_BY_KEY = {metric.key: metric for metric in RECORD_METRICS}


def counterparts(metric: RecordMetric) -> list[RecordMetric]:
    """The same score of every other prediction against the same reference (the student's metric's reference lines)."""
    if metric.pair.reference not in ("", TRUTH):
        return []
    return [other for other in RECORD_METRICS if other.score is metric.score and other is not metric
            and other.pair.reference == metric.pair.reference]


def metrics_for(texts: dict) -> list[RecordMetric]:
    """The metrics a record with these texts has: every one whose prediction's text is present (not None)."""
    return [metric for metric in RECORD_METRICS if texts.get(metric.pair.prediction) is not None]


def record_metrics_of(texts: dict) -> dict[str, float]:
    """Every per-record metric (key -> value) of one record's texts; an optional prediction that is None is left out."""
    return {metric.key: metric.value(texts) for metric in metrics_for(texts)}


def record_metrics(student: str, truth: str, teacher: str, teacher_script1: str,
                   retrieval: str | None = None) -> dict[str, float]:
    """Every per-record metric of one evaluated record (the retrieval baseline's only when given)."""
    return record_metrics_of({STUDENT: student, TRUTH: truth, TEACHER: teacher, TEACHER_SCRIPT1: teacher_script1,
                              RETRIEVAL: retrieval})


def average_record_metrics(rows: list[dict]) -> dict[str, float | None]:
    """avg_<key>: the mean of each per-record metric the rows have, in RECORD_METRICS order; None without rows.

    Without rows every metric of the student and the teacher is there (None); an optional prediction's
    metrics appear when every row has them.
    """
    if not rows:
        return {metric.summary_key: None for metric in RECORD_METRICS
                if metric.pair.prediction not in OPTIONAL_PREDICTIONS}
    return {metric.summary_key: float(np.mean([row[metric.key] for row in rows]))
            for metric in RECORD_METRICS if all(metric.key in row for row in rows)}


def record_metric_keys(rows: list[dict]) -> list[str]:
    """The per-record metric keys every row has, in RECORD_METRICS order."""
    return [metric.key for metric in RECORD_METRICS if rows and all(metric.key in row for row in rows)]
