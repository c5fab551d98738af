"""Examples from Python objects (lists, a pandas DataFrame), checked like file input.

There is no file here, so errors and example sources use an ``origin`` in angle brackets
(``"<texts>"``) as the path and the item's 0-based index as the line: ``<texts>:3:
empty text`` means ``texts[3]``.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Sequence

from tfft.data._common import SEQUENCE_CLASSIFICATION, check_task, clean_text, label_cleaner
from tfft.data.examples import TextExample, TokenExample
from tfft.data.tags import TagError, normalise_sequences
from tfft.errors import DataFormatError


def _same_length(origin: str, what: str, items: List[Any], others: Iterable[tuple]) -> None:
    for name, values in others:
        if values is not None and len(values) != len(items):
            raise DataFormatError(f"{len(items)} {what} but {len(values)} {name}", origin)
    if not items:
        raise DataFormatError(f"no {what}", origin)


def from_texts(
    texts: Iterable[str],
    labels: Optional[Iterable[Any]] = None,
    text_pairs: Optional[Iterable[str]] = None,
    *,
    origin: str = "<texts>",
    task: str = SEQUENCE_CLASSIFICATION,
    label_separator: str = ",",
) -> List[TextExample]:
    """Build text examples. Class labels may be strings, integers or booleans (stored as strings);
    multi-label labels lists of those (or strings joined by ``label_separator``); regression targets numbers.

    Raises DataFormatError for an empty text, a missing or malformed label, or lists of different lengths.
    """
    clean_label = label_cleaner(check_task(task), label_separator)
    texts = list(texts)
    labels = None if labels is None else list(labels)
    text_pairs = None if text_pairs is None else list(text_pairs)
    _same_length(origin, "texts", texts, [("labels", labels), ("text pairs", text_pairs)])
    return [
        TextExample(
            clean_text(text, "text", origin, i),
            None if text_pairs is None else clean_text(text_pairs[i], "text pair", origin, i),
            None if labels is None else clean_label(labels[i], origin, i),
            f"{origin}:{i}",
        )
        for i, text in enumerate(texts)
    ]


def from_tokens(
    token_lists: Iterable[Sequence[str]],
    tag_lists: Optional[Iterable[Sequence[str]]] = None,
    scheme: str = "auto",
    *,
    origin: str = "<tokens>",
) -> List[TokenExample]:
    """Build token examples, converting the tags from ``scheme`` to IOB2 as ``read_conll`` does.

    Raises DataFormatError for an empty sentence or token, a tag list whose length
    differs from its sentence's, and malformed tags.
    """
    token_lists = [[clean_text(token, "token", origin, i) for token in tokens] for i, tokens in enumerate(token_lists)]
    tag_lists = None if tag_lists is None else [list(tags) for tags in tag_lists]
    _same_length(origin, "token lists", token_lists, [("tag lists", tag_lists)])
    for i, tokens in enumerate(token_lists):
        if not tokens:
            raise DataFormatError("empty token list", origin, i)
        if tag_lists is not None and len(tag_lists[i]) != len(tokens):
            raise DataFormatError(f"{len(tokens)} tokens but {len(tag_lists[i])} tags", origin, i)
    if tag_lists is None:
        return [TokenExample(tokens, None, f"{origin}:{i}") for i, tokens in enumerate(token_lists)]
    try:
        tag_lists = normalise_sequences(tag_lists, scheme)
    except TagError as error:
        raise DataFormatError(f"{error.reason} (tag {error.index})", origin, error.sequence) from None
    return [TokenExample(tokens, tags, f"{origin}:{i}") for i, (tokens, tags) in enumerate(zip(token_lists, tag_lists))]


def from_dataframe(
    df: Any,
    text_column: str = "text",
    label_column: Optional[str] = "label",
    text_pair_column: Optional[str] = None,
    *,
    origin: str = "<dataframe>",
    task: str = SEQUENCE_CLASSIFICATION,
) -> List[TextExample]:
    """Build text examples from columns of a pandas DataFrame (``label_column=None``: unlabelled).

    Rows are numbered by position, not by the DataFrame's index. pandas itself is not
    imported: anything with ``columns`` and ``df[name].tolist()`` works.
    """

    def column(name: Optional[str]) -> Optional[list]:
        if name is None:
            return None
        if name not in df.columns:
            available = ", ".join(repr(c) for c in df.columns)
            raise DataFormatError(f"no column {name!r}; the columns are {available}", origin)
        return df[name].tolist()

    return from_texts(column(text_column), column(label_column), column(text_pair_column), origin=origin, task=task)
