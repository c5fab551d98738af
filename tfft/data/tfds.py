"""Examples from a TensorFlow Datasets dataset that is already prepared on disk.

TensorFlow and tensorflow-datasets are imported only when this reader is called, so
reading local files never pays for (or depends on) them. tfft never downloads: a
training run should not silently fetch gigabytes or fail half-way on a network error,
so an unprepared dataset is an error that says how to prepare it.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple, Union

from tfft.data._common import SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, check_task
from tfft.data.examples import TextExample, TokenExample
from tfft.data.memory import from_texts, from_tokens
from tfft.errors import DataFormatError, PathLike

# Feature names of common datasets (imdb_reviews, glue/sst2, glue/mrpc, glue/qqp, glue/mnli).
_TEXT_KEYS = (
    ("text", None),
    ("sentence", None),
    ("sentence1", "sentence2"),
    ("question1", "question2"),
    ("premise", "hypothesis"),
)
# conll2003 in tensorflow-datasets calls its tags "ner"; Hugging Face exports call them "ner_tags".
_TAG_KEYS = ("ner_tags", "ner", "tags")


def _first_line(error: Exception) -> str:
    # tfds lists every registered dataset after the first line of its not-found message.
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _default_text_keys(features) -> Tuple[str, Optional[str]]:
    text_key, usual_pair = next(((t, p) for t, p in _TEXT_KEYS if t in features), _TEXT_KEYS[0])
    return text_key, usual_pair if usual_pair in features else None


def default_text_keys(source: str, data_dir: Optional[PathLike] = None) -> Tuple[str, Optional[str]]:
    """The text and text-pair features :func:`read_tfds` reads by default from ``tfds:NAME[:SPLIT]``."""
    from tfft import backend  # noqa: F401  # sets TensorFlow's environment before tfds imports it
    import tensorflow_datasets as tfds

    return _default_text_keys(tfds.builder(source.split(":")[1], data_dir=data_dir).info.features)


def read_tfds(
    name: str,
    split: str = "train",
    *,
    data_dir: Optional[PathLike] = None,
    task: str = SEQUENCE_CLASSIFICATION,
    text_key: Optional[str] = None,
    text_pair_key: Optional[str] = None,
    label_key: str = "label",
    tokens_key: str = "tokens",
    tags_key: Optional[str] = None,
    scheme: str = "auto",
) -> List[Union[TokenExample, TextExample]]:
    """Read one split (any tfds split string, e.g. "train[:10%]") of a prepared tfds dataset.

    Class-label features become their names (``info.features[key].names``), bytes are
    decoded as UTF-8. ``text_key`` defaults to the first of "text", "sentence",
    "sentence1", "question1", "premise" that exists, with its usual pair feature;
    ``tags_key`` to the first of "ner_tags", "ner", "tags". A split whose labels are
    all -1 (GLUE test splits) is read as unlabelled. Raises DataFormatError for an
    unknown dataset, an unprepared one, an unknown split or a missing feature.
    """
    check_task(task)
    from tfft import backend  # noqa: F401  # sets TensorFlow's environment before tfds imports it
    import tensorflow_datasets as tfds

    origin = f"<tfds:{name}:{split}>"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except ValueError as error:  # DatasetNotFoundError and unknown configs are ValueErrors
        raise DataFormatError(f"unknown tfds dataset {name!r}: {_first_line(error)}", origin) from None
    try:
        dataset = builder.as_dataset(split=split)
    except AssertionError:  # what tfds raises when the data directory has no prepared copy
        root = builder.data_dir_root
        raise DataFormatError(
            f"tfds dataset {name!r} is not prepared in {root} and tfft does not download data; "
            f"prepare it once on a machine with network access: tfds build {name} --data_dir {root} "
            "(then pass that directory as data_dir)",
            origin,
        ) from None
    except (ValueError, KeyError) as error:
        raise DataFormatError(f"cannot read split {split!r}: {_first_line(error)}", origin) from None

    features = builder.info.features

    def reader(key: str) -> Callable[[Any], Any]:
        """A function turning a numpy value of feature ``key`` into Python strings (or None)."""
        if key not in features:
            available = ", ".join(map(repr, features))
            raise DataFormatError(
                f"no feature {key!r}; the features are {available} (choose with the *_key options)", origin
            )
        feature = features[key]
        inner = getattr(feature, "feature", feature)  # the element feature of a Sequence
        if isinstance(inner, tfds.features.ClassLabel):
            names = inner.names
            if inner is feature:
                return lambda value: names[value] if value >= 0 else None  # -1: no label
            return lambda values: [names[value] for value in values]
        if inner is feature:
            return lambda value: value.decode("utf-8") if isinstance(value, bytes) else (
                value.item() if hasattr(value, "item") else value)  # a NumPy scalar: a regression target
        return lambda values: [value.decode("utf-8") if isinstance(value, bytes) else value for value in values]

    rows = tfds.as_numpy(dataset)
    if task == TOKEN_CLASSIFICATION:
        tags_key = tags_key or next((key for key in _TAG_KEYS if key in features), _TAG_KEYS[0])
        read_tokens, read_tags = reader(tokens_key), reader(tags_key)
        token_lists, tag_lists = [], []
        for row in rows:
            token_lists.append(read_tokens(row[tokens_key]))
            tag_lists.append(read_tags(row[tags_key]))
        return from_tokens(token_lists, tag_lists, scheme, origin=origin)

    if text_key is None:
        text_key, usual_pair = _default_text_keys(features)
        text_pair_key = text_pair_key or usual_pair
    read_text, read_label = reader(text_key), reader(label_key)
    read_pair = reader(text_pair_key) if text_pair_key else None
    texts, pairs, labels = [], [], []
    for row in rows:
        texts.append(read_text(row[text_key]))
        if read_pair:
            pairs.append(read_pair(row[text_pair_key]))
        labels.append(read_label(row[label_key]))
    unlabelled = all(label is None for label in labels)
    return from_texts(texts, None if unlabelled else labels, pairs if read_pair else None, origin=origin, task=task)
