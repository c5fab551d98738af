"""The label <-> id mapping, fixed once from the training data and saved with the model.

Ids are assigned in a deterministic order (not in order of appearance) so that two runs
over the same labels, or over shuffled training files, give the same model head.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from tfft.data._common import is_in_memory, split_source
from tfft.data.examples import TextExample, TokenExample
from tfft.data.tags import TagError, split_tag
from tfft.errors import ConfigError, DataFormatError, PathLike

_INTEGER = re.compile(r"[+-]?\d+")

Example = Union[TokenExample, TextExample]


def _labels_of(example: Example) -> List[Tuple[str, Optional[str], Optional[int]]]:
    """The labels of an example, each with the file and line it comes from."""
    path, line = split_source(example.source)
    if isinstance(example, TokenExample):
        if line is None or is_in_memory(path):
            return [(tag, path, line) for tag in example.tags or []]
        # In a file, each token is on the line after the previous one.
        return [(tag, path, line + i) for i, tag in enumerate(example.tags or [])]
    if isinstance(example.label, tuple):  # multi-label: each label of the set
        return [(label, path, line) for label in example.label]
    if example.label is None or isinstance(example.label, float):  # regression targets name no label
        return []
    return [(example.label, path, line)]


def _sorted_labels(labels: Mapping[str, object], path: Optional[str]) -> List[str]:
    """Labels sorted, numerically if every one is an integer; DataFormatError for a mix of integers and
    names (``1`` and ``neg``: most likely two encodings of the same classes). ``labels`` maps each label to
    where it was first seen (a source ``path:line``, or a count)."""
    integers = [label for label in labels if _INTEGER.fullmatch(label)]
    names = [label for label in labels if not _INTEGER.fullmatch(label)]
    if integers and names:
        where = lambda label: f" at {labels[label]}" if isinstance(labels[label], str) else ""  # noqa: E731
        source = labels[names[0]]
        raise DataFormatError(
            f"the label column mixes integers ({integers[0]!r}{where(integers[0])}) and names ({names[0]!r}); use one kind "
            "for all classes", *(split_source(source) if isinstance(source, str) else (path,)))
    return sorted(labels, key=int) if integers else sorted(labels)


class LabelMap:
    """An ordered, immutable list of labels; a label's id is its position."""

    def __init__(self, labels: Sequence[str]):
        self._labels: Tuple[str, ...] = tuple(labels)
        self._ids: Dict[str, int] = {label: i for i, label in enumerate(self._labels)}
        if len(self._ids) != len(self._labels):
            raise ConfigError(f"duplicate labels in {list(self._labels)}")

    @classmethod
    def from_token_examples(cls, examples: Iterable[TokenExample]) -> "LabelMap":
        """Build the tag set of IOB2 token examples: "O", then B-/I- of each type, by type.

        Both B- and I- are included for every type seen, so that a validation file with
        a multi-token entity of a type that is single-token in training is not rejected.
        Raises DataFormatError for unlabelled or non-IOB2 examples and when no entity
        is tagged at all.
        """
        types = set()
        path = None
        for example in examples:
            path = path or split_source(example.source)[0]
            if example.tags is None:
                raise DataFormatError("cannot build labels from unlabelled examples", *split_source(example.source))
            for tag, tag_path, line in _labels_of(example):
                try:
                    prefix, entity_type = split_tag(tag)
                except TagError as error:
                    raise DataFormatError(error.reason, tag_path, line) from None
                if prefix not in ("O", "B", "I"):
                    raise DataFormatError(f"tag {tag!r} is not IOB2; convert the tags with to_iob2", tag_path, line)
                if entity_type is not None:
                    types.add(entity_type)
        if not types:
            raise DataFormatError(
                "token classification needs entities, but every tag is 'O' (or there are no examples)", path
            )
        return cls(["O"] + [f"{prefix}-{entity_type}" for entity_type in sorted(types) for prefix in "BI"])

    @classmethod
    def from_label_sets(cls, examples: Sequence[TextExample], names: Optional[Sequence[str]] = None) -> "LabelMap":
        """Build the labels of multi-label examples: ``names`` in their order (one 0/1 column each),
        else every label seen, sorted (numerically if every label is an integer).

        Raises DataFormatError for an unlabelled example, when no example has any label, and for
        a label of ``names`` that no training example has (its output could only learn "never").
        """
        seen: Dict[str, int] = {}
        path = None
        for example in examples:
            path = path or split_source(example.source)[0]
            if not isinstance(example.label, tuple):
                raise DataFormatError("cannot build labels from an example without a label set",
                                      *split_source(example.source))
            for label in example.label:
                seen[label] = seen.get(label, 0) + 1
        if not seen:
            raise DataFormatError("multi-label classification needs labels, but every example's label set is "
                                  "empty (or there are no examples)", path)
        if names is not None:
            never = [name for name in names if name not in seen]
            if never:
                raise DataFormatError(f"label column(s) {', '.join(map(repr, never))} are never 1 in the training "
                                      "data; remove them from label_columns", path)
            return cls(list(names))
        return cls(_sorted_labels(seen, path))

    @classmethod
    def for_target(cls, name: str) -> "LabelMap":
        """The one output of a regression model, named after its target (the label column)."""
        return cls([str(name)])

    @classmethod
    def from_text_examples(cls, examples: Iterable[TextExample]) -> "LabelMap":
        """Build the class set of text examples, sorted (numerically if every label is an integer).

        Raises DataFormatError for an unlabelled example, for fewer than 2 classes, which
        would make a classifier that cannot be wrong, and for a label column that mixes
        integers and names (``1`` and ``neg``: most likely two encodings of the same classes).
        """
        labels: Dict[str, str] = {}  # label -> the source of its first example
        path = None
        for example in examples:
            path = path or split_source(example.source)[0]
            if not isinstance(example.label, str):
                raise DataFormatError("cannot build labels from an unlabelled example", *split_source(example.source))
            labels.setdefault(example.label, example.source)
        ordered = _sorted_labels(labels, path)
        if len(ordered) < 2:
            found = f"only {ordered[0]!r}" if ordered else "no labelled examples"
            raise DataFormatError(f"sequence classification needs at least 2 classes, found {found}", path)
        return cls(ordered)

    @property
    def labels(self) -> Tuple[str, ...]:
        return self._labels

    def __len__(self) -> int:
        return len(self._labels)

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def __contains__(self, label: object) -> bool:
        return label in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMap) and other._labels == self._labels

    def __hash__(self) -> int:
        return hash(self._labels)

    def __repr__(self) -> str:
        return f"LabelMap({list(self._labels)!r})"

    def id(self, label: str) -> int:
        """The id of ``label``; DataFormatError if it is not in the map."""
        try:
            return self._ids[label]
        except KeyError:
            raise DataFormatError(f"unknown label {label!r}; known labels: {', '.join(self._labels)}") from None

    def label(self, label_id: int) -> str:
        """The label with id ``label_id``; IndexError if out of range (a model/map mismatch)."""
        if not 0 <= label_id < len(self._labels):
            raise IndexError(f"label id {label_id} out of range for {len(self._labels)} labels")
        return self._labels[label_id]

    def to_dict(self) -> Dict[str, Dict]:
        """The map in the shape of a Hugging Face config: string ids in ``id2label``."""
        return {
            "id2label": {str(i): label for i, label in enumerate(self._labels)},
            "label2id": dict(self._ids),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping]) -> "LabelMap":
        """Rebuild a map from ``to_dict`` output or a Hugging Face config's id2label/label2id.

        Raises ConfigError unless the ids are exactly 0..n-1 and both halves agree.
        """
        if "id2label" not in data:
            raise ConfigError("label map has no 'id2label'")
        try:
            by_id = {int(i): label for i, label in data["id2label"].items()}
        except (TypeError, ValueError):
            raise ConfigError(f"label ids must be integers, got {list(data['id2label'])}") from None
        if sorted(by_id) != list(range(len(by_id))):
            raise ConfigError(f"label ids must be 0..{len(by_id) - 1}, got {sorted(by_id)}")
        label_map = cls([by_id[i] for i in range(len(by_id))])
        if "label2id" in data and {k: int(v) for k, v in data["label2id"].items()} != label_map._ids:
            raise ConfigError("label map's 'label2id' does not match its 'id2label'")
        return label_map

    def check(self, examples: Iterable[Example], path: Optional[PathLike] = None) -> None:
        """Raise DataFormatError at the first label that is not in the map.

        A label never seen in training would have no output unit; catching it before
        training names the file and line instead of failing inside TensorFlow. ``path``
        is used for examples that carry no source. Unlabelled examples pass.
        """
        for example in examples:
            for label, label_path, line in _labels_of(example):
                if label not in self._ids:
                    raise DataFormatError(
                        f"label {label!r} was not seen in the training data; known labels: {', '.join(self._labels)}",
                        label_path or path,
                        line,
                    )
