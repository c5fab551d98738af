"""Constrained Viterbi decoding on hand-computed probabilities."""

import numpy as np

from tfft.decoding import transition_mask, viterbi_tags
from tfft.metrics import tags_from_probabilities

LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_transition_mask_allows_inside_only_after_same_type():
    start, allowed = transition_mask(LABELS)
    assert start.tolist() == [True, True, False, True, False]
    assert allowed[1, 2] and allowed[2, 2] and not allowed[0, 2] and not allowed[3, 2] and not allowed[4, 2]
    assert allowed[0, 1] and allowed[2, 3] and allowed[4, 0]


def test_a_dangling_inside_tag_is_repaired_by_the_sequence_score():
    # Arg-max alone gives O I-PER I-PER; the best valid sequence is O B-PER I-PER.
    probabilities = np.array([
        [0.90, 0.02, 0.02, 0.03, 0.03],
        [0.05, 0.01, 0.01, 0.40, 0.53],
        [0.05, 0.01, 0.01, 0.03, 0.90],
    ])
    assert [LABELS[i] for i in viterbi_tags([probabilities], LABELS)[0]] == ["O", "B-PER", "I-PER"]
    # Here O followed by O beats any valid path through I-PER: 0.55*0.60 > 0.45*0.40.
    probabilities = np.array([[0.55, 0.0, 0.0, 0.45, 0.0], [0.60, 0.0, 0.0, 0.0, 0.40]])
    assert tags_from_probabilities([probabilities], LABELS) == [["O", "O"]]


def test_type_switch_inside_an_entity_is_not_produced():
    probabilities = np.array([[0.0, 0.6, 0.0, 0.4, 0.0], [0.0, 0.0, 0.3, 0.0, 0.7]])
    # B-LOC I-PER is invalid; best valid: B-PER I-PER (0.4*0.7=0.28) vs B-LOC I-LOC (0.18).
    assert tags_from_probabilities([probabilities], LABELS) == [["B-PER", "I-PER"]]


def test_empty_sentence_and_labels_without_prefixes():
    assert tags_from_probabilities([np.zeros((0, 5))], LABELS) == [[]]
    assert tags_from_probabilities([np.array([[0.2, 0.8], [0.7, 0.3]])], ["neg", "pos"]) == [["pos", "neg"]]
