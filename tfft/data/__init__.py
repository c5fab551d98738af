"""Readers that turn files, tfds datasets and Python objects into TokenExample/TextExample lists.

Nothing here imports TensorFlow: only ``read_tfds`` does, when it is called.
"""

from __future__ import annotations

import re
from typing import Any, List, Union

from tfft.data._common import (
    MULTI_LABEL_CLASSIFICATION, REGRESSION, SEQUENCE_CLASSIFICATION, SEQUENCE_TASKS, TASKS, TOKEN_CLASSIFICATION,
    check_task,
)
from tfft.data.conll import iter_conll, read_conll
from tfft.data.examples import TextExample, TokenExample
from tfft.data.labels import LabelMap
from tfft.data.memory import from_dataframe, from_texts, from_tokens
from tfft.data.tabular import read_table
from tfft.data.tags import SCHEMES, detect_scheme, iob2_spans, normalise_sequences, to_iob2
from tfft.data.tfds import read_tfds
from tfft.errors import ConfigError, PathLike

__all__ = [
    "MULTI_LABEL_CLASSIFICATION",
    "REGRESSION",
    "SCHEMES",
    "SEQUENCE_CLASSIFICATION",
    "SEQUENCE_TASKS",
    "TASKS",
    "TOKEN_CLASSIFICATION",
    "LabelMap",
    "TextExample",
    "TokenExample",
    "detect_scheme",
    "from_dataframe",
    "from_texts",
    "from_tokens",
    "iob2_spans",
    "iter_conll",
    "normalise_sequences",
    "read_conll",
    "read_examples",
    "read_table",
    "read_tfds",
    "to_iob2",
]

# NAME may carry a version ("glue/sst2:2.0.0"); SPLIT may contain colons ("train[:80%]").
_TFDS_SPEC = re.compile(r"tfds:(?P<name>[\w./-]+(?::\d+\.\d+\.\d+)?)(?::(?P<split>.+))?")


def read_examples(
    path_or_name: Union[PathLike, str], task: str, **options: Any
) -> List[Union[TokenExample, TextExample]]:
    """Read examples for ``task`` from a file or from ``tfds:NAME[:SPLIT]`` (split defaults to train).

    Token classification reads CoNLL files whatever their extension (they come as .txt,
    .conll, .iob, ...); sequence classification reads CSV/TSV/JSON Lines, chosen by
    extension (with ``task`` deciding what a label is: a class, a label set or a number).
    ``options`` go to the reader (``read_conll``, ``read_table`` or ``read_tfds``).
    """
    check_task(task)
    if isinstance(path_or_name, str) and path_or_name.startswith("tfds:"):
        match = _TFDS_SPEC.fullmatch(path_or_name)
        if match is None:
            raise ConfigError(f"expected 'tfds:NAME[:SPLIT]', e.g. 'tfds:glue/sst2:validation', got {path_or_name!r}")
        return read_tfds(match["name"], match["split"] or "train", task=task, **options)
    if task == TOKEN_CLASSIFICATION:
        return read_conll(path_or_name, **options)
    return read_table(path_or_name, task=task, **options)
