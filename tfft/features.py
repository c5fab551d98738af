"""Tokenization: examples -> subword id arrays, with word/subword label alignment.

Everything is encoded once, in one batched call of the Hugging Face *fast* tokenizer,
into flat NumPy arrays plus row lengths (a ragged layout). The tf.data pipeline slices
those arrays directly, so no Python runs per example while training.

Two encodings exist because they answer different needs:

* ``encode_for_training``: one row per example, truncated to ``max_length`` (the number
  of truncated examples is reported, never silent);
* ``encode_for_inference``: for token tasks, long examples become several overlapping
  windows (``stride`` tokens of shared context), so prediction and evaluation tag every
  word; sequence tasks keep the first ``max_length`` tokens, exactly as in training and in
  the export (a text pair is cut ``longest_first``), so every path classifies the same input.

Token tasks can give the model more than each word's subwords (:class:`WordInputs`): the
word's shape as its token type, and subwords of the neighbouring sentences of the same
document as context (unlabelled, not predicted).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from tfft.data import TOKEN_CLASSIFICATION
from tfft.data.examples import TextExample, TokenExample
from tfft.data.labels import LabelMap
from tfft.words import WordInputs, shape_token_types

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label id excluded from the loss and the metrics
NO_WORD = -1  # word_index of special tokens and of a word's continuation subwords

Examples = Union[Sequence[TokenExample], Sequence[TextExample]]


@dataclass
class Encoding:
    """Ragged encoded rows: flat token arrays plus the length of each row.

    ``word_index`` (token tasks) gives, per token, the index of the word it starts, or
    ``NO_WORD`` for special tokens and continuation subwords (only the first subword of
    a word carries that word's prediction). ``labels`` is per token for token tasks
    (``IGNORE_INDEX`` where not scored) and per row for sequence tasks; None without labels.
    ``example_index`` maps each row back to its example (several rows per example when
    windowed).
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    row_lengths: np.ndarray
    example_index: np.ndarray
    word_index: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    num_examples: int = 0
    num_truncated: int = 0

    @property
    def num_rows(self) -> int:
        return len(self.row_lengths)

    def row_starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.row_lengths)[:-1]]).astype(np.int64)

    def take(self, rows: np.ndarray) -> "Encoding":
        """The rows ``rows`` (positions, in that order) as an encoding of their own."""
        rows = np.asarray(rows, np.int64)
        starts = self.row_starts()
        tokens = (np.concatenate([np.arange(starts[i], starts[i] + self.row_lengths[i]) for i in rows])
                  if len(rows) else np.zeros(0, np.int64))

        def take_tokens(array):
            return None if array is None else array[tokens]

        token_labels = self.labels is not None and len(self.labels) == len(self.input_ids)
        return Encoding(
            input_ids=self.input_ids[tokens],
            token_type_ids=self.token_type_ids[tokens],
            row_lengths=self.row_lengths[rows],
            example_index=self.example_index[rows],
            word_index=take_tokens(self.word_index),
            labels=take_tokens(self.labels) if token_labels else (None if self.labels is None else self.labels[rows]),
            num_examples=self.num_examples,
            num_truncated=self.num_truncated,
        )


def inference_length(tokenizer, task: str = TOKEN_CLASSIFICATION, max_length: Optional[int] = None) -> int:
    """Row length for prediction and evaluation.

    Token classification windows of the model's maximum (capped at BERT's 512): training
    truncates at ``max_length`` to bound memory, while inference uses the full context so
    that windows (and their seams) are needed only for really long inputs. Sequence
    classification: the training ``max_length`` (capped the same way), so that evaluation,
    prediction and the export classify what training saw.
    """
    longest = int(min(tokenizer.model_max_length, 512))
    return longest if task == TOKEN_CLASSIFICATION or max_length is None else min(max_length, longest)


def is_token_task(examples: Examples) -> bool:
    return bool(examples) and isinstance(examples[0], TokenExample)


def encode_for_training(
    tokenizer,
    examples: Examples,
    label_map: LabelMap,
    max_length: int,
    label_all_subwords: bool = False,
    word_inputs: WordInputs = WordInputs(),
) -> Encoding:
    """Encode labelled examples for ``model.fit``: one truncated row per example."""
    return _encode(tokenizer, examples, label_map, max_length, stride=None, label_all_subwords=label_all_subwords,
                   word_inputs=word_inputs)


def encode_for_inference(
    tokenizer,
    examples: Examples,
    max_length: int,
    stride: int,
    label_map: Optional[LabelMap] = None,
    word_inputs: WordInputs = WordInputs(),
) -> Encoding:
    """Encode examples for prediction/evaluation: long token examples become overlapping windows.

    ``stride`` is the number of tokens two consecutive windows share, so each word near
    a window edge is also seen with context in the neighbouring window. Sequence examples
    are truncated to ``max_length`` (one row each), as in training.
    """
    if is_token_task(examples) and not 0 <= stride < max_length - 3:
        raise ValueError(f"stride must be in [0, max_length - 3); got stride={stride}, max_length={max_length}")
    return _encode(tokenizer, examples, label_map, max_length, stride=stride, label_all_subwords=False,
                   word_inputs=word_inputs)


def _encode(tokenizer, examples, label_map, max_length, stride, label_all_subwords, word_inputs) -> Encoding:
    if not examples:
        raise ValueError("no examples to encode")
    token_task = is_token_task(examples)
    windowed = token_task and stride is not None
    has_pairs = not token_task and any(e.text_pair is not None for e in examples)
    # Token tasks always request overflowing windows: for training only each example's first
    # window is kept, and the examples with more than one window are exactly those truncated.
    # Sequence tasks keep the first max_length tokens (a pair: longest_first, as the export).
    kwargs = dict(
        truncation="longest_first" if has_pairs else True,
        max_length=max_length,
        stride=stride if windowed else 0,
        return_overflowing_tokens=token_task,
        return_attention_mask=False,
        return_token_type_ids=True,
    )
    own_words = None  # per example, the (first, last + 1) of its own words among those encoded
    if token_task:
        word_lists = [list(e.tokens) for e in examples]
        if word_inputs.context_window and any(e.document is not None for e in examples):
            word_lists, own_words = _with_document_context(tokenizer, examples, word_inputs.context_window, max_length)
        batch = tokenizer(word_lists, is_split_into_words=True, **kwargs)
    else:
        texts = [e.text for e in examples]
        batch = tokenizer(texts, [e.text_pair for e in examples] if has_pairs else None, **kwargs)

    if token_task:
        example_index = np.asarray(batch["overflow_to_sample_mapping"], dtype=np.int64)
    else:
        example_index = np.arange(len(examples), dtype=np.int64)
    keep = np.arange(len(example_index))
    num_truncated = 0
    if not token_task:
        num_truncated = sum(bool(e.overflowing) for e in batch.encodings)
    elif not windowed:
        first_window = np.concatenate([[True], example_index[1:] != example_index[:-1]])
        keep = np.flatnonzero(first_window)
        num_truncated = len(np.unique(example_index[~first_window]))  # examples, not their extra windows
        example_index = example_index[keep]
    if num_truncated and stride is None:
        logger.warning("%d of %d examples are longer than max_length=%d tokens and were truncated for training",
                       num_truncated, len(examples), max_length)
    rows = [batch["input_ids"][i] for i in keep]
    row_lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    total = int(row_lengths.sum())
    encoding = Encoding(
        input_ids=np.fromiter((t for r in rows for t in r), dtype=np.int32, count=total),
        token_type_ids=np.fromiter((t for i in keep for t in batch["token_type_ids"][i]), dtype=np.int32, count=total),
        row_lengths=row_lengths,
        example_index=example_index,
        num_examples=len(examples),
        num_truncated=num_truncated,
    )
    if token_task:
        word_ids = [batch.word_ids(int(i)) for i in keep]
        if word_inputs.shapes:
            encoding.token_type_ids = _shape_token_types(word_ids, word_lists, example_index)
        if own_words is not None:  # context words are like special tokens from here on: no label, no prediction
            word_ids = [[w - own_words[e][0] if w is not None and own_words[e][0] <= w < own_words[e][1] else None
                         for w in ids] for ids, e in zip(word_ids, example_index)]
        encoding.word_index = _first_subword_word_index(word_ids)
        if label_map is not None and examples[0].tags is not None:
            encoding.labels = _align_token_labels(word_ids, examples, example_index, label_map, label_all_subwords)
    elif label_map is not None and examples[0].label is not None:
        encoding.labels = text_targets(examples, label_map)[example_index]
    return encoding


def text_targets(examples: Sequence[TextExample], label_map: LabelMap) -> np.ndarray:
    """What a sequence model is trained towards, per example: class ids (int32 ``[examples]``), label
    sets as 0/1 rows (float32 ``[examples, labels]``), or regression targets (float32 ``[examples]``)."""
    first = examples[0].label
    if isinstance(first, tuple):
        targets = np.zeros((len(examples), len(label_map)), np.float32)
        for row, example in enumerate(examples):
            targets[row, [label_map.id(label) for label in example.label]] = 1.0
        return targets
    if isinstance(first, float):
        return np.asarray([e.label for e in examples], np.float32)
    return np.asarray([label_map.id(e.label) for e in examples], dtype=np.int32)


def _first_subword_word_index(word_ids: List[List[Optional[int]]]) -> np.ndarray:
    flat = []
    for ids in word_ids:
        previous = None
        for w in ids:
            flat.append(w if (w is not None and w != previous) else NO_WORD)
            previous = w
    return np.asarray(flat, dtype=np.int32)


def _with_document_context(tokenizer, examples: Sequence[TokenExample], window: int,
                           max_length: int) -> Tuple[List[List[str]], List[Tuple[int, int]]]:
    """Each example's words with whole words of its document neighbours around them.

    Up to ``window`` subwords are taken from the preceding sentences (nearest words first)
    and as many from the following ones, never more than half of the room ``max_length``
    leaves beside the sentence itself, so the sentence is never truncated for context.
    """
    vocabulary = list(dict.fromkeys(word for e in examples for word in e.tokens))  # distinct words, in order
    if not vocabulary:  # only empty sentences: nothing to add
        return [[] for _ in examples], [(0, 0) for _ in examples]
    pieces = tokenizer(vocabulary, add_special_tokens=False)["input_ids"]
    length_of = {word: len(ids) for word, ids in zip(vocabulary, pieces)}
    word_lists, own = [], []
    for i, example in enumerate(examples):
        budget = min(window, max(0, max_length - 2 - sum(length_of[w] for w in example.tokens)) // 2)
        before: List[str] = []
        after: List[str] = []
        if example.document is not None:
            for words, step in ((before, -1), (after, 1)):
                room, j = budget, i + step
                while room > 0 and 0 <= j < len(examples) and examples[j].document == example.document:
                    for word in (reversed(examples[j].tokens) if step < 0 else examples[j].tokens):
                        room -= length_of[word]
                        if room < 0:
                            break
                        words.append(word)
                    j += step
        before.reverse()
        word_lists.append(before + list(example.tokens) + after)
        own.append((len(before), len(before) + len(example.tokens)))
    return word_lists, own


def _shape_token_types(word_ids, word_lists, example_index) -> np.ndarray:
    """Token type ids of a shaped model: each subword gets ``1 + its word's shape``, special tokens 0."""
    flat = []
    for row, ids in enumerate(word_ids):
        types = shape_token_types(word_lists[example_index[row]])
        flat.extend(0 if w is None else int(types[w]) for w in ids)
    return np.asarray(flat, dtype=np.int32)


def _align_token_labels(word_ids, examples, example_index, label_map: LabelMap, label_all_subwords: bool) -> np.ndarray:
    """Give each first subword its word's label id; other subwords get IGNORE_INDEX.

    With ``label_all_subwords`` continuation subwords get the word's label too, with a
    ``B-`` tag turned into ``I-`` so that an entity still starts only once.
    """
    flat = []
    for row, ids in enumerate(word_ids):
        tags = examples[example_index[row]].tags
        previous = None
        for w in ids:
            if w is None:
                flat.append(IGNORE_INDEX)
            elif w != previous:
                flat.append(label_map.id(tags[w]))
            elif label_all_subwords:
                tag = tags[w]
                inside = "I-" + tag[2:]
                flat.append(label_map.id(inside if tag.startswith("B-") and inside in label_map.labels else tag))
            else:
                flat.append(IGNORE_INDEX)
            previous = w
    return np.asarray(flat, dtype=np.int32)
