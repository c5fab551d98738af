"""Metric values from predictions: seqeval entity scores, classification, multi-label and regression scores,
and the multi-label decision rule chosen on validation data.

Pure NumPy/seqeval/scikit-learn, so they can be tested on hand-computed examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfft.decoding import viterbi_tags


def entity_scores(true_tags: Sequence[Sequence[str]], predicted_tags: Sequence[Sequence[str]]) -> Dict[str, float]:
    """Entity-level micro precision/recall/F1 (conlleval semantics, via seqeval) and tag accuracy."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    true_tags, predicted_tags = [list(t) for t in true_tags], [list(p) for p in predicted_tags]
    return {
        "precision": float(precision_score(true_tags, predicted_tags, zero_division=0)),
        "recall": float(recall_score(true_tags, predicted_tags, zero_division=0)),
        "f1": float(f1_score(true_tags, predicted_tags, zero_division=0)),
        "accuracy": float(accuracy_score(true_tags, predicted_tags)),
    }


def classification_scores(true_ids: np.ndarray, predicted_ids: np.ndarray, num_labels: int) -> Dict[str, float]:
    """Accuracy and macro-averaged precision/recall/F1 over all ``num_labels`` classes."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = list(range(num_labels))
    precision, recall, f1, _ = precision_recall_fscore_support(
        true_ids, predicted_ids, labels=labels, average="macro", zero_division=0
    )
    return {
        "accuracy": float(np.mean(np.asarray(true_ids) == np.asarray(predicted_ids))),
        "macro_precision": float(precision),
        "macro_recall": float(recall),
        "macro_f1": float(f1),
    }


def mean_cross_entropy(probabilities: np.ndarray, true_ids: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes (the validation loss)."""
    picked = probabilities[np.arange(len(true_ids)), true_ids]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def tags_from_probabilities(probabilities: List[np.ndarray], labels: Sequence[str]) -> List[List[str]]:
    """Per sentence, the tags of the most probable valid IOB2 sequence (constrained Viterbi)."""
    return [[labels[i] for i in ids] for ids in viterbi_tags(probabilities, labels)]


# A multi-label decision rule is chosen on the validation set by cross-validation over it: each candidate
# is tuned on DECISION_FOLDS - 1 folds and decides the fold left out, and the rule best on the decisions
# of all left-out folds is tuned again on the whole set.
DECISION_FOLDS = 5
# Shrinkage: a label's own threshold counts as this many positive examples' worth of evidence less than
# the global threshold, t = (n t_label + k t_global) / (n + k) for a label with n positives.
SHRINKAGE_POSITIVES = 10
DECISION_METRICS = ("micro_f1", "macro_f1")
AT_LEAST_ONE_SUFFIX = "+at-least-one"  # a candidate's name with "at least one label" (RuleChoice.held_out)


def label_set_matrix(label_sets: Sequence[Sequence[str]], label_map) -> np.ndarray:
    """Multi-label truth as 0/1 rows ``[examples, labels]``."""
    truth = np.zeros((len(label_sets), len(label_map)), np.float32)
    for row, labels in enumerate(label_sets):
        truth[row, [label_map.id(label) for label in labels]] = 1.0
    return truth


def decide(probabilities: np.ndarray, thresholds: Sequence[float], at_least_one: bool = False) -> np.ndarray:
    """Multi-label decisions ``[examples, labels]``: a label where its probability reaches its threshold and,
    with ``at_least_one``, the most probable label of a text that no threshold selects."""
    probabilities = np.asarray(probabilities, np.float32)
    predicted = probabilities >= np.asarray(thresholds, np.float32)[None, :]
    if at_least_one and probabilities.size:
        empty = ~predicted.any(axis=1)
        predicted[empty, np.argmax(probabilities[empty], axis=1)] = True
    return predicted


@dataclass(frozen=True)
class DecisionRule:
    """How a multi-label model turns probabilities into label sets (kept in the model's config)."""

    name: str  # "fixed", "global", "per-label" or "shrunk"
    thresholds: Tuple[float, ...]
    at_least_one: bool = False

    def describe(self) -> str:
        kinds = {"fixed": "every label at 0.5", "global": f"one threshold {self.thresholds[0]:.4f} for every label",
                 "per-label": "per-label thresholds", "shrunk": "per-label thresholds shrunk toward the global one"}
        return kinds.get(self.name, self.name) + (", at least one label per text" if self.at_least_one else "")


@dataclass
class RuleChoice:
    """The decision rule chosen for ``metric``, tuned on all the validation examples, and every candidate's
    scores on the folds it was not tuned on (``held_out``: candidate -> {"micro_f1", "macro_f1"})."""

    rule: DecisionRule
    metric: str
    folds: int
    held_out: Dict[str, Dict[str, float]]


def best_f1_threshold(probabilities: np.ndarray, truth: np.ndarray) -> float:
    """The decision threshold (predict when ``probability >= threshold``) that maximises F1 on these
    examples: halfway between the lowest probability predicted positive and the next one below it.

    Predicting the ``k`` most probable examples gives ``F1 = 2 TP_k / (k + positives)``; only ``k`` where
    the next probability is lower can be cut at, so ties are never split.
    """
    cuts, predicted, hits = _cuts(probabilities, truth)
    positives = truth.sum()
    if positives == 0:
        return 0.5
    return float(cuts[int(np.argmax(2 * hits / (predicted + positives)))])


def _cuts(probabilities: np.ndarray, truth: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every threshold worth trying on these values, highest first, with how many values and positives
    each selects: halfway (in float32, so every path compares alike) between each distinct value and the
    next one below it (0 below the lowest)."""
    order = np.argsort(-probabilities, kind="stable")
    ranked = probabilities[order].astype(np.float32)
    hits = np.cumsum(truth[order])
    last_of_value = np.append(ranked[:-1] > ranked[1:], True)  # the k where a cut does not split ties
    lowest_in = ranked[last_of_value]
    highest_out = np.append(lowest_in[1:], np.float32(0.0))
    halfway = ((lowest_in.astype(np.float64) + highest_out) / 2).astype(np.float32)
    cuts = np.where((highest_out < halfway) & (halfway <= lowest_in), halfway, lowest_in)
    return cuts, np.flatnonzero(last_of_value) + 1.0, hits[last_of_value].astype(np.float64)


def _metric_of_counts(metric: str, tp: np.ndarray, predicted: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """``metric`` from per-label counts ``[..., labels]`` (F1 0 where a label has neither predictions nor
    positives, as scikit-learn's ``zero_division=0``)."""
    if metric == "micro_f1":
        denominator = predicted.sum(-1) + positives.sum(-1)
        return np.divide(2 * tp.sum(-1), denominator, out=np.zeros(denominator.shape), where=denominator > 0)
    denominator = predicted + positives
    f1 = np.divide(2 * tp, denominator, out=np.zeros(np.broadcast(tp, denominator).shape), where=denominator > 0)
    return f1.mean(-1)


def f1_scores(truth: np.ndarray, predicted: np.ndarray) -> Dict[str, float]:
    """Micro- and macro-F1 of 0/1 decisions ``[examples, labels]``."""
    truth, predicted = truth.astype(bool), predicted.astype(bool)
    counts = ((truth & predicted).sum(0).astype(np.float64), predicted.sum(0).astype(np.float64),
              truth.sum(0).astype(np.float64))
    return {metric: float(_metric_of_counts(metric, *counts)) for metric in DECISION_METRICS}


def global_threshold(probabilities: np.ndarray, truth: np.ndarray, metric: str = "micro_f1") -> float:
    """The one threshold for every label that maximises ``metric`` on these examples."""
    if metric == "micro_f1":
        return best_f1_threshold(probabilities.ravel(), truth.ravel())
    cuts = _cuts(probabilities.ravel(), truth.ravel())[0]
    if not cuts.size:
        return 0.5
    # Per label, how many values and positives each cut selects (counted in sorted values, not compared).
    selected = np.stack([len(p) - np.searchsorted(np.sort(p), cuts) for p in probabilities.T], 1)
    tp = np.stack([len(p) - np.searchsorted(np.sort(p), cuts) for p in
                   (probabilities[truth[:, j] > 0, j] for j in range(truth.shape[1]))], 1)
    scores = _metric_of_counts(metric, tp.astype(np.float64), selected.astype(np.float64), truth.sum(0))
    return float(cuts[int(np.argmax(scores))])


def joint_thresholds(probabilities: np.ndarray, truth: np.ndarray, metric: str = "micro_f1",
                     start: Optional[np.ndarray] = None, max_sweeps: int = 20) -> np.ndarray:
    """Per-label thresholds that maximise ``metric`` over all labels together, by coordinate ascent from
    ``start`` (default: the best global threshold): each label in turn takes the threshold best for the
    metric with the others held, until a sweep changes none.

    For micro-F1 this is not each label's own best F1: a weak, rare label's own F1 is highest at a low
    threshold that floods it with false positives, which costs the other labels' share of micro-F1.
    (For macro-F1 the labels are independent and it is each label's own F1.)
    """
    probabilities = np.asarray(probabilities, np.float32)
    labels = truth.shape[1]
    thresholds = (np.full(labels, global_threshold(probabilities, truth, metric), np.float32) if start is None
                  else np.asarray(start, np.float32).copy())
    positives = truth.sum(0).astype(np.float64)
    predicted_now = probabilities >= thresholds[None, :]
    tp = (predicted_now & (truth > 0)).sum(0).astype(np.float64)
    predicted = predicted_now.sum(0).astype(np.float64)
    options = []
    for j in range(labels):  # each label's cuts, with "none" (above its highest probability) as the last
        cuts, selected, hits = _cuts(probabilities[:, j], truth[:, j])
        top = np.nextafter(np.float32(probabilities[:, j].max(initial=0.0)), np.float32(2))
        options.append((np.append(cuts, top), np.append(selected, 0.0), np.append(hits, 0.0)))
    best = float(_metric_of_counts(metric, tp, predicted, positives))
    for _ in range(max_sweeps):
        changed = False
        for j, (cuts, selected, hits) in enumerate(options):
            trial_tp = np.repeat(tp[None, :], len(cuts), 0)
            trial_predicted = np.repeat(predicted[None, :], len(cuts), 0)
            trial_tp[:, j], trial_predicted[:, j] = hits, selected
            scores = _metric_of_counts(metric, trial_tp, trial_predicted, positives)
            k = int(np.argmax(scores))
            if scores[k] > best + 1e-12:
                best, thresholds[j], tp[j], predicted[j] = float(scores[k]), cuts[k], hits[k], selected[k]
                changed = True
        if not changed:
            break
    return thresholds


def shrunk_thresholds(probabilities: np.ndarray, truth: np.ndarray, metric: str = "micro_f1",
                      shrinkage: float = SHRINKAGE_POSITIVES) -> np.ndarray:
    """:func:`joint_thresholds` each drawn toward the global threshold by how few positives its label has:
    ``(n t_label + k t_global) / (n + k)`` (rare labels' own thresholds rest on a handful of examples)."""
    overall = np.float32(global_threshold(probabilities, truth, metric))
    own = joint_thresholds(probabilities, truth, metric, start=np.full(truth.shape[1], overall, np.float32))
    n = truth.sum(0)
    return ((n * own + shrinkage * overall) / (n + shrinkage)).astype(np.float32)


def _candidates(metric: str, at_least_one: bool):
    """``(name, at_least_one, tune)`` of every rule tried, simplest first (the first of equal scores wins)."""
    tuners = (("fixed", lambda p, y: np.full(y.shape[1], 0.5, np.float32)),
              ("global", lambda p, y: np.full(y.shape[1], global_threshold(p, y, metric), np.float32)),
              ("shrunk", lambda p, y: shrunk_thresholds(p, y, metric)),
              ("per-label", lambda p, y: joint_thresholds(p, y, metric)))
    return [(name, flag, tune) for flag in ((False, True) if at_least_one else (False,)) for name, tune in tuners]


def decision_metric_for(monitor: str) -> str:
    """The metric a multi-label decision rule maximises: macro-F1 when that is what the run monitors, else micro-F1."""
    return "macro_f1" if monitor == "val_macro_f1" else "micro_f1"


def candidate_key(name: str, at_least_one: bool) -> str:
    """A candidate rule's name in :attr:`RuleChoice.held_out`."""
    return name + (AT_LEAST_ONE_SUFFIX if at_least_one else "")


def choose_decision_rule(probabilities: np.ndarray, truth: np.ndarray, metric: str = "micro_f1",
                         at_least_one: bool = False, folds: int = DECISION_FOLDS, seed: int = 0) -> RuleChoice:
    """The decision rule that maximises ``metric`` on validation examples it was not tuned on.

    Candidates: every label at 0.5, one global threshold, per-label thresholds tuned jointly for the
    metric (:func:`joint_thresholds`) and those shrunk toward the global one (:func:`shrunk_thresholds`);
    with ``at_least_one`` (every training text has a label) each also with "the most probable label when
    none reaches its threshold". Each is tuned on all folds but one and decides the one left out; the
    candidate best on all the left-out decisions together wins, 0.5 unless another is strictly better
    (so the rule chosen is never worse than 0.5 on data it was not tuned on), and is tuned again on
    all the examples.
    """
    if metric not in DECISION_METRICS:
        raise ValueError(f"a decision rule maximises one of {DECISION_METRICS}, not {metric!r}")
    probabilities = np.asarray(probabilities, np.float32)
    candidates = _candidates(metric, at_least_one)
    folds = min(folds, len(probabilities))
    held_out: Dict[str, Dict[str, float]] = {}
    if folds >= 2:
        fold_of = np.random.default_rng(seed).permutation(len(probabilities)) % folds
        for name, flag, tune in candidates:
            decided = np.zeros(truth.shape, bool)
            for fold in range(folds):
                tuning, left_out = fold_of != fold, fold_of == fold
                decided[left_out] = decide(probabilities[left_out], tune(probabilities[tuning], truth[tuning]), flag)
            held_out[candidate_key(name, flag)] = f1_scores(truth, decided)
    scores = [held_out[candidate_key(name, flag)][metric] if held_out else 0.0 for name, flag, _ in candidates]
    name, flag, tune = candidates[int(np.argmax(scores))]
    rule = DecisionRule(name, tuple(float(t) for t in tune(probabilities, truth)), flag)
    return RuleChoice(rule, metric, folds if held_out else 0, held_out)


def multi_label_scores(truth: np.ndarray, probabilities: np.ndarray, thresholds: Sequence[float],
                       at_least_one: bool = False) -> Dict[str, float]:
    """Micro and macro precision/recall/F1 of the decisions at ``thresholds`` (:func:`decide`), and the mean
    binary cross-entropy."""
    from sklearn.metrics import precision_recall_fscore_support

    predicted = decide(probabilities, thresholds, at_least_one).astype(np.int32)
    scores = {}
    for average in ("micro", "macro"):
        precision, recall, f1, _ = precision_recall_fscore_support(truth.astype(np.int32), predicted,
                                                                   average=average, zero_division=0)
        scores.update({f"{average}_f1": float(f1), f"{average}_precision": float(precision),
                       f"{average}_recall": float(recall)})
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
    scores["loss"] = float(-np.mean(truth * np.log(clipped) + (1 - truth) * np.log(1 - clipped)))
    return scores


def regression_scores(targets: np.ndarray, predicted: np.ndarray) -> Dict[str, float]:
    """Pearson and Spearman correlation (0 when either side is constant), RMSE, MAE; ``loss`` is the MSE."""
    from scipy.stats import pearsonr, spearmanr

    targets, predicted = np.asarray(targets, np.float64), np.asarray(predicted, np.float64).reshape(-1)
    varies = len(targets) > 1 and np.ptp(targets) > 0 and np.ptp(predicted) > 0
    error = predicted - targets
    return {
        "pearson": float(pearsonr(targets, predicted)[0]) if varies else 0.0,
        "spearman": float(spearmanr(targets, predicted)[0]) if varies else 0.0,
        "rmse": float(np.sqrt(np.mean(error ** 2))),
        "mae": float(np.mean(np.abs(error))),
        "loss": float(np.mean(error ** 2)),
    }


def score_predictions(true_labels: Sequence, outputs, label_map, decision_metric: str = "micro_f1",
                      at_least_one: bool = False) -> Dict[str, float]:
    """All validation scores of a task from the model's outputs and the true labels.

    Token tasks: ``true_labels`` are tag lists and ``outputs`` a list of ``[words, classes]``
    probability arrays; sequence classification: label strings and ``[examples, classes]``;
    multi-label: label tuples and ``[examples, labels]`` probabilities, decided by the rule
    :func:`choose_decision_rule` picks for ``decision_metric`` on these examples (``at_least_one``: every
    training text has a label), as training will keep it; regression: floats and ``[examples, 1]``.
    """
    first = true_labels[0] if len(true_labels) else None
    if isinstance(first, list):
        predicted = tags_from_probabilities(outputs, label_map.labels)
        scores = entity_scores(true_labels, predicted)
        true_ids = np.asarray([label_map.id(t) for tags in true_labels for t in tags])
        scores["loss"] = mean_cross_entropy(np.concatenate(outputs), true_ids)
        return scores
    if isinstance(first, tuple):
        truth = label_set_matrix(true_labels, label_map)
        rule = choose_decision_rule(outputs, truth, decision_metric, at_least_one).rule
        return multi_label_scores(truth, outputs, rule.thresholds, rule.at_least_one)
    if isinstance(first, float):
        return regression_scores(np.asarray(true_labels), outputs)
    true_ids = np.asarray([label_map.id(label) for label in true_labels])
    scores = classification_scores(true_ids, outputs.argmax(-1), len(label_map))
    scores["loss"] = mean_cross_entropy(outputs, true_ids)
    return scores
