"""Metric values from predictions: seqeval entity scores and classification scores.

Pure NumPy/seqeval/scikit-learn, so they can be tested on hand-computed examples.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

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


def score_predictions(true_labels: Sequence, probabilities, label_map) -> Dict[str, float]:
    """All validation scores of a task from predicted probabilities and true labels.

    Token tasks: ``true_labels`` are tag lists and ``probabilities`` a list of
    ``[words, classes]`` arrays; sequence tasks: label strings and ``[examples, classes]``.
    """
    if true_labels and isinstance(true_labels[0], (list, tuple)):
        predicted = tags_from_probabilities(probabilities, label_map.labels)
        scores = entity_scores(true_labels, predicted)
        true_ids = np.asarray([label_map.id(t) for tags in true_labels for t in tags])
        scores["loss"] = mean_cross_entropy(np.concatenate(probabilities), true_ids)
        return scores
    true_ids = np.asarray([label_map.id(label) for label in true_labels])
    scores = classification_scores(true_ids, probabilities.argmax(-1), len(label_map))
    scores["loss"] = mean_cross_entropy(probabilities, true_ids)
    return scores
