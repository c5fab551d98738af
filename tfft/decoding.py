"""Constrained Viterbi decoding of per-word tag probabilities into valid IOB2 sequences.

Why: taking each word's most probable tag on its own can produce ``I-X`` after ``O`` or
after another type, which lenient decoders then read as an extra entity. Decoding the
most probable sequence among those where every ``I-X`` continues an ``X`` entity fixes
those spans at no training cost. Prediction, evaluation and the validation metric use
:func:`viterbi_tags`; the SavedModel runs the same algorithm in its graph on the same
:func:`transition_mask`.

No TensorFlow here.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

# A finite stand-in for log(0): a label set where nothing may start still decodes.
FORBIDDEN = -1.0e4
# Probabilities are clipped here before the log, in NumPy and in the serving graph alike.
MIN_PROBABILITY = 1.0e-12


def _entity_parts(label: str) -> Tuple[str, str]:
    prefix, _, entity_type = label.partition("-")
    return (prefix, entity_type) if prefix in ("B", "I") and entity_type else ("O", "")


def transition_mask(labels: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """``(start_allowed [L], allowed [L, L])``: ``allowed[i, j]`` says whether label j may follow label i.

    ``I-X`` may follow only ``B-X`` or ``I-X`` and may not start a sentence; every other
    transition is allowed (labels without a ``B-``/``I-`` prefix count as outside).
    """
    parts = [_entity_parts(label) for label in labels]
    inside = np.array([prefix == "I" for prefix, _ in parts])
    types = [entity_type for _, entity_type in parts]
    same_type = np.array([[a == b and a != "" for b in types] for a in types])
    allowed = ~inside[None, :] | same_type
    return ~inside, allowed


def viterbi(log_probabilities: np.ndarray, start_allowed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Most probable label ids of one sentence (``[words, labels]`` log-probabilities) under the mask."""
    words = len(log_probabilities)
    if words == 0:
        return np.zeros(0, np.int64)
    best = log_probabilities.argmax(1)
    if start_allowed[best[0]] and allowed[best[:-1], best[1:]].all():
        return best  # the unconstrained optimum is valid, hence the constrained one: no search needed
    penalty = np.where(allowed, 0.0, FORBIDDEN).astype(np.float32)
    score = log_probabilities[0] + np.where(start_allowed, 0.0, FORBIDDEN).astype(np.float32)
    back = np.zeros((words, log_probabilities.shape[1]), np.int64)
    for t in range(1, words):
        candidates = score[:, None] + penalty
        back[t] = candidates.argmax(0)
        score = candidates.max(0) + log_probabilities[t]
    path = np.zeros(words, np.int64)
    path[-1] = score.argmax()
    for t in range(words - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def viterbi_tags(probabilities: Sequence[np.ndarray], labels: Sequence[str]) -> List[np.ndarray]:
    """Per sentence, the label ids of the most probable valid IOB2 sequence."""
    start_allowed, allowed = transition_mask(labels)
    return [
        viterbi(np.log(np.maximum(p, MIN_PROBABILITY)).astype(np.float32), start_allowed, allowed)
        for p in probabilities
    ]
