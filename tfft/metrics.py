"""Metric values from predictions: seqeval entity scores, classification, multi-label and regression scores,
and the multi-label decision thresholds tuned on validation data.

Pure NumPy/seqeval/scikit-learn, so they can be tested on hand-computed examples.
"""

from __future__ import annotations

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


# A multi-label label needs at least this many positive validation examples to get a threshold of its
# own; rarer labels take the threshold that is best for all labels together.
MIN_POSITIVES_TO_TUNE = 5


def label_set_matrix(label_sets: Sequence[Sequence[str]], label_map) -> np.ndarray:
    """Multi-label truth as 0/1 rows ``[examples, labels]``."""
    truth = np.zeros((len(label_sets), len(label_map)), np.float32)
    for row, labels in enumerate(label_sets):
        truth[row, [label_map.id(label) for label in labels]] = 1.0
    return truth


def best_f1_threshold(probabilities: np.ndarray, truth: np.ndarray) -> float:
    """The decision threshold (predict when ``probability >= threshold``) that maximises F1 on these
    examples: halfway between the lowest probability predicted positive and the next one below it.

    Predicting the ``k`` most probable examples gives ``F1 = 2 TP_k / (k + positives)``; only ``k`` where
    the next probability is lower can be cut at, so ties are never split.
    """
    order = np.argsort(-probabilities, kind="stable")
    ranked, hits = probabilities[order], truth[order]
    positives = hits.sum()
    if positives == 0:
        return 0.5
    k = np.arange(1, len(ranked) + 1)
    f1 = 2 * np.cumsum(hits) / (k + positives)
    cuttable = np.append(ranked[:-1] > ranked[1:], True)
    best = int(np.argmax(np.where(cuttable, f1, -1.0)))
    lowest_in = np.float32(ranked[best])
    highest_out = np.float32(ranked[best + 1] if best + 1 < len(ranked) else 0.0)
    # A float32 value, so every path (NumPy, the SavedModel graph, TFLite) compares probabilities alike.
    threshold = np.float32((float(lowest_in) + float(highest_out)) / 2)
    return float(threshold if highest_out < threshold <= lowest_in else lowest_in)


def tune_thresholds(probabilities: np.ndarray, truth: np.ndarray,
                    min_positives: int = MIN_POSITIVES_TO_TUNE) -> Tuple[np.ndarray, np.ndarray]:
    """Per label, the threshold that maximises its F1 on validation data, for labels with at least
    ``min_positives`` positive examples; the others get the one threshold that maximises micro-F1 over
    all labels (a fallback that rare labels cannot overfit). Returns ``(thresholds, tuned per label)``."""
    overall = best_f1_threshold(probabilities.ravel(), truth.ravel())
    tuned = truth.sum(axis=0) >= min_positives
    thresholds = np.asarray([best_f1_threshold(probabilities[:, j], truth[:, j]) if tuned[j] else overall
                             for j in range(truth.shape[1])], np.float32)
    return thresholds, tuned


def multi_label_scores(truth: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray) -> Dict[str, float]:
    """Micro and macro precision/recall/F1 of thresholded probabilities, and the mean binary cross-entropy."""
    from sklearn.metrics import precision_recall_fscore_support

    predicted = (probabilities >= thresholds[None, :]).astype(np.int32)
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


def score_predictions(true_labels: Sequence, outputs, label_map,
                      thresholds: Optional[np.ndarray] = None) -> Dict[str, float]:
    """All validation scores of a task from the model's outputs and the true labels.

    Token tasks: ``true_labels`` are tag lists and ``outputs`` a list of ``[words, classes]``
    probability arrays; sequence classification: label strings and ``[examples, classes]``;
    multi-label: label tuples and ``[examples, labels]`` probabilities, scored at ``thresholds``
    (default: tuned on these examples, :func:`tune_thresholds`); regression: floats and ``[examples, 1]``.
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
        if thresholds is None:
            thresholds = tune_thresholds(outputs, truth)[0]
        return multi_label_scores(truth, outputs, thresholds)
    if isinstance(first, float):
        return regression_scores(np.asarray(true_labels), outputs)
    true_ids = np.asarray([label_map.id(label) for label in true_labels])
    scores = classification_scores(true_ids, outputs.argmax(-1), len(label_map))
    scores["loss"] = mean_cross_entropy(outputs, true_ids)
    return scores
