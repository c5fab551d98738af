"""Text classification files: CSV, TSV and JSON Lines, one example per row.

Every format is turned into the same stream of ``(line, row)`` pairs, where a row maps
column names (or, for headerless files, column indices) to values, so that column
lookup, text and label checks and error messages are shared by all three.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from tfft.data._common import (
    MULTI_LABEL_CLASSIFICATION, SEQUENCE_CLASSIFICATION, check_task, clean_flag, clean_text, iter_lines, label_cleaner,
)
from tfft.data.examples import TextExample
from tfft.errors import ConfigError, DataFormatError, PathLike

Column = Union[str, int]
Row = Dict[Column, object]

FORMATS = ("csv", "tsv", "jsonl")
_FORMAT_NAMES = {"csv": "csv", "tsv": "tsv", "tab": "tsv", "jsonl": "jsonl", "ndjson": "jsonl", "json": "jsonl"}


def table_format(path: PathLike, file_format: Optional[str] = None) -> str:
    """Return "csv", "tsv" or "jsonl": ``file_format`` if given, else from the file extension."""
    name = file_format if file_format is not None else os.path.splitext(os.fspath(path))[1].lstrip(".")
    resolved = _FORMAT_NAMES.get(name.lower())
    if resolved is None:
        given = f"format {file_format!r}" if file_format is not None else f"the extension of {os.fspath(path)!r}"
        raise ConfigError(
            f"cannot read {given} as a table: expected .csv, .tsv/.tab or .jsonl/.ndjson/.json, "
            "or pass the format explicitly (csv, tsv, jsonl)"
        )
    return resolved


def _delimited_rows(path: PathLike, encoding: str, file_format: str, headerless: bool) -> Iterator[Tuple[int, Row]]:
    # TSV quoting is off: SST-2-style texts contain unbalanced quotes and never a tab.
    options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if file_format == "tsv" else {}
    reader = csv.reader(iter_lines(path, encoding), **options)
    names: Optional[List[Column]] = None
    line = 1
    while True:
        try:
            fields = next(reader, None)
        except csv.Error as error:
            reason = str(error).split(" - ")[0]  # drop csv's advice about opening files, which does not apply
            raise DataFormatError(f"cannot parse {file_format.upper()} row: {reason}", path, reader.line_num) from None
        if fields is None:
            break
        fields = [field.strip() for field in fields]
        if any(fields):
            if names is None and not headerless:
                names = list(fields)
                _refuse_repeated(names, "the header names the column", path, line)
            else:
                if names is None:
                    names = list(range(len(fields)))
                if len(fields) != len(names):
                    like = "the first row" if headerless else "the header"
                    raise DataFormatError(
                        f"expected {len(names)} fields like {like}, got {len(fields)}", path, line
                    )
                yield line, dict(zip(names, fields))
        line = reader.line_num + 1  # a quoted CSV field may span lines
    if names is None:
        raise DataFormatError("the file is empty", path)


def _json_rows(path: PathLike, encoding: str) -> Iterator[Tuple[int, Row]]:
    for line, text in enumerate(iter_lines(path, encoding), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text, object_pairs_hook=lambda pairs: _object(pairs, path, line))
        except json.JSONDecodeError as error:
            raise DataFormatError(f"invalid JSON: {error.msg} (column {error.colno})", path, line) from None
        if not isinstance(row, dict):
            raise DataFormatError(f"expected a JSON object per line, got {type(row).__name__}", path, line)
        yield line, row


def _refuse_repeated(names: Sequence[str], what: str, path: PathLike, line: int) -> None:
    """A column (or key) named twice is refused: a reader would silently use one of the two."""
    seen = set()
    for name in names:
        if name in seen:
            raise DataFormatError(f"{what} {name!r} twice; rename or remove one of them", path, line)
        seen.add(name)


def _object(pairs: List[Tuple[str, object]], path: PathLike, line: int) -> dict:
    _refuse_repeated([key for key, _ in pairs], "the object has the key", path, line)
    return dict(pairs)


def _value(row: Row, column: Column, path: PathLike, line: int) -> object:
    try:
        return row[column]
    except KeyError:
        available = ", ".join(repr(name) for name in row)
        raise DataFormatError(f"no column {column!r}; the columns are {available}", path, line) from None


TEXT_COLUMN_CANDIDATES = ("text", "sentence", "review", "content", "document")


def _guess_text_column(row: dict, path: PathLike, line: int) -> str:
    for candidate in TEXT_COLUMN_CANDIDATES:
        if candidate in row:
            return candidate
    available = ", ".join(repr(name) for name in row)
    raise DataFormatError(
        f"no text column found (looked for {', '.join(TEXT_COLUMN_CANDIDATES)}); the columns are {available}; "
        "name it with --text-column", path, line)


def read_table(
    path: PathLike,
    *,
    text_column: Optional[Column] = "text",
    text_pair_column: Optional[Column] = None,
    label_column: Optional[Column] = "label",
    file_format: Optional[str] = None,
    encoding: str = "utf-8",
    labelled: bool = True,
    task: str = SEQUENCE_CLASSIFICATION,
    label_columns: Optional[Sequence[Column]] = None,
    label_separator: str = ",",
) -> List[TextExample]:
    """Read a CSV, TSV or JSON Lines file of texts (or text pairs) and their labels.

    Columns are named by the header (CSV/TSV) or the object keys (JSON Lines). Integer
    columns mean the CSV/TSV file has no header; every column must then be an index.
    Texts and string labels are stripped; integer labels become their decimal string.
    With ``labelled=False`` the label column is not read and labels are None.
    ``text_column=None`` picks the first of TEXT_COLUMN_CANDIDATES the file has.

    ``task`` decides what a label is (see :class:`TextExample`): multi-label labels come from
    ``label_column`` as names or ids joined by ``label_separator`` (or a JSON list), or from
    ``label_columns``, one 0/1 column per label (the label is the column's name); regression
    targets are numbers.
    """
    check_task(task)
    if label_columns is not None and task != MULTI_LABEL_CLASSIFICATION:
        raise ConfigError(f"label_columns (one 0/1 column per label) is for {MULTI_LABEL_CLASSIFICATION}, "
                          f"not {task}")
    if label_columns is not None and not label_columns:
        raise ConfigError("label_columns names no column")
    resolved = table_format(path, file_format)
    label_source: Sequence[Optional[Column]] = (label_column,) if label_columns is None else tuple(label_columns)
    columns: Sequence[Optional[Column]] = (text_column, text_pair_column, *(label_source if labelled else ()))
    used = [column for column in columns if column is not None]
    headerless = isinstance(text_column, int)
    if any(isinstance(column, int) != headerless for column in used):
        raise ConfigError(
            "columns must be all names (a file with a header) or all indices (a file without one), "
            f"got text_column={text_column!r}, text_pair_column={text_pair_column!r}, label_column={label_column!r}"
        )
    if labelled and label_column is None and label_columns is None:
        raise ConfigError("label_column is needed for labelled data (or pass labelled=False)")
    clean = label_cleaner(task, label_separator)
    if resolved == "jsonl":
        if headerless:
            raise ConfigError("JSON Lines rows are objects: name the columns by key, not by index")
        rows = _json_rows(path, encoding)
    else:
        rows = _delimited_rows(path, encoding, resolved, headerless)

    source = os.fspath(path)
    examples = []
    for line, row in rows:
        if text_column is None:
            text_column = _guess_text_column(row, path, line)
        text = clean_text(_value(row, text_column, path, line), f"text in column {text_column!r}", path, line)
        pair = None
        if text_pair_column is not None:
            pair = clean_text(
                _value(row, text_pair_column, path, line), f"text in column {text_pair_column!r}", path, line
            )
        label = None
        if labelled and label_columns is not None:
            label = tuple(sorted(str(column) for column in label_columns
                                 if clean_flag(_value(row, column, path, line), column, path, line)))
        elif labelled:
            label = clean(_value(row, label_column, path, line), path, line)
        examples.append(TextExample(text, pair, label, f"{source}:{line}"))
    if not examples:
        raise DataFormatError("contains no rows" + ("" if resolved == "jsonl" else " after the header"), path)
    return examples
