"""Helpers every reader shares, so that files, texts and labels fail the same way everywhere.

Files are read as bytes and decoded line by line, because a decoding error raised by
a text-mode file object only says which buffered chunk failed; decoding each line
ourselves lets the error name the exact line and the encoding that was tried.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import math
import numbers
import os
import re
import sys
from typing import Callable, Iterator, Optional, Tuple

from tfft.errors import ConfigError, DataFormatError, PathLike

TOKEN_CLASSIFICATION = "token-classification"
SEQUENCE_CLASSIFICATION = "sequence-classification"  # one class per text (softmax)
MULTI_LABEL_CLASSIFICATION = "multi-label-classification"  # any set of labels per text (sigmoids)
REGRESSION = "regression"  # one number per text
TASKS = (TOKEN_CLASSIFICATION, SEQUENCE_CLASSIFICATION, MULTI_LABEL_CLASSIFICATION, REGRESSION)
# The tasks with one output per text (or text pair): a sequence classification head.
SEQUENCE_TASKS = (SEQUENCE_CLASSIFICATION, MULTI_LABEL_CLASSIFICATION, REGRESSION)


def check_task(task: str) -> str:
    """Return ``task`` if it is one tfft knows, else raise ConfigError listing the known ones."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of: {', '.join(TASKS)}")
    return task


_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
              (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _wide_encoding(path: PathLike, name: str) -> Optional[str]:
    """``utf-16``/``utf-32`` when asked for or announced by the file's byte-order mark, else None."""
    if name.startswith(("utf-16", "utf-32")):
        return name
    if os.fspath(path) == "-" or not os.path.isfile(path):
        return None
    with open(path, "rb") as handle:
        head = handle.read(4)
    return next((wide for bom, wide in _WIDE_BOMS if head.startswith(bom)), None)


def _wide_lines(path: PathLike, encoding: str) -> Iterator[str]:
    """Lines of a UTF-16/UTF-32 file or stdin (whose newlines are not the byte 0x0A), decoded as text."""
    number = 0
    stdin = os.fspath(path) == "-"
    source = io.TextIOWrapper(sys.stdin.buffer, encoding=encoding, newline="") if stdin else \
        open(path, encoding=encoding, newline="")
    if stdin:
        path = "<stdin>"
    with source as handle:
        try:
            for number, line in enumerate(handle, start=1):
                yield line.lstrip("\ufeff") if number == 1 else line
        except UnicodeError as error:  # also "UTF-16 stream does not start with BOM"
            reason = getattr(error, "reason", str(error))
            raise DataFormatError(f"cannot decode the file as {encoding}: {reason}; pass the file's encoding with "
                                  "--encoding", path, number + 1) from None


def iter_lines(path: PathLike, encoding: str) -> Iterator[str]:
    """Yield the lines of a text file (``-``: standard input) one at a time, each with its line ending.

    Streaming keeps memory flat for large corpora. A byte-order mark at the start is
    dropped (spreadsheet exports add one, and it would otherwise become part of the
    first token or header name); a UTF-16 or UTF-32 byte-order mark (Windows "Unicode"
    exports) selects that encoding. Raises DataFormatError for a missing file and for
    bytes that are not valid in ``encoding``, naming the line.
    """
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r}") from None
    stdin = os.fspath(path) == "-"
    if not stdin and not os.path.isfile(path):
        raise DataFormatError("no such file" if not os.path.exists(path) else "not a file", path)
    wide = _wide_encoding(path, codec.name)
    if wide:
        yield from _wide_lines(path, wide)
        return
    if "\n".encode(codec.name) != b"\n":
        # Splitting bytes on b"\n" is only sound for encodings that share ASCII's newline.
        raise ConfigError(
            f"encoding {encoding!r} is not supported: tfft reads line-based files in "
            "ASCII-compatible encodings (utf-8, latin-1, cp1252, ...); convert the file first"
        )
    decoder = codec.incrementaldecoder("strict")
    number = 0
    if stdin:
        path = "<stdin>"  # what errors name
    with contextlib.nullcontext(sys.stdin.buffer) if stdin else open(path, "rb") as raw:
        for number, data in enumerate(raw, start=1):
            try:
                line = decoder.decode(data, final=False)
            except UnicodeDecodeError as error:
                bad = data[error.start : error.end].hex()
                raise DataFormatError(
                    f"cannot decode byte 0x{bad} (byte {error.start + 1} of the line) as {encoding}; "
                    "if the file uses another encoding, pass it with --encoding "
                    "(e.g. --encoding latin-1)",
                    path,
                    number,
                ) from None
            if number == 1:
                line = line.lstrip("\ufeff")
            yield line
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise DataFormatError(
                f"the file ends in the middle of a {encoding} character; "
                "pass the file's encoding with --encoding",
                path,
                number,
            ) from None


def clean_text(value: object, what: str, path: PathLike, line: Optional[int]) -> str:
    """Return ``value`` as a stripped, non-empty string.

    Surrounding whitespace carries no meaning for a subword tokenizer, and SST-2-style
    TSV rows end their text with a space, so texts are stripped everywhere.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise DataFormatError(f"{what} must be a string, got {type(value).__name__} {value!r}", path, line)
    text = value.strip()
    if not text:
        raise DataFormatError(f"empty {what}", path, line)
    return text


def clean_label(value: object, path: PathLike, line: Optional[int]) -> str:
    """Return a class label as the string tfft uses for it.

    Labels are strings everywhere so that ``1`` in a JSON file, ``"1"`` in a TSV file and
    ``1.0`` from a pandas column all name the same class; booleans become "true"/"false".
    Missing values (None, NaN, an empty string) raise DataFormatError.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str):
        label = value.strip()
    elif isinstance(value, bool):
        label = "true" if value else "false"
    elif isinstance(value, numbers.Integral):
        label = str(int(value))
    elif isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        label = str(int(value))
    elif value is None or (isinstance(value, numbers.Real) and math.isnan(value)):
        label = ""
    else:
        raise DataFormatError(
            f"label {value!r} is not a class name: expected a string, an integer or a boolean", path, line
        )
    if not label:
        raise DataFormatError("missing label", path, line)
    return label


# A number with a fraction or an exponent: not a label name or id in a label list.
_FRACTION = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+(?:\.\d*)?[eE][+-]?\d+)")


def clean_label_set(value: object, separator: str, path: PathLike, line: Optional[int]) -> Tuple[str, ...]:
    """Return the labels of a multi-label example, sorted and without repeats.

    ``value`` is a list of labels (JSON Lines, Python) or a string of labels joined by
    ``separator`` (``anger,joy``). An empty string or a missing value is the empty set: texts
    with no label are normal in multi-label data. A number with a fraction (``0.5``) is refused:
    it is a score or a probability, not a label name or id.
    """
    if value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isnan(value)):
        return ()
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    parts = value.split(separator) if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)):
        raise DataFormatError(f"labels {value!r} are not a list: expected label names or ids joined by "
                              f"{separator!r}, or a JSON list", path, line)
    labels = set()
    for part in parts:
        if isinstance(part, str) and not part.strip():
            continue
        label = clean_label(part, path, line)
        if _FRACTION.fullmatch(label):
            raise DataFormatError(f"label {label!r} is a number with a fraction, not a label name or id; "
                                  "multi-label data holds label lists (--label-separator) or 0/1 columns "
                                  "(--label-columns)", path, line)
        labels.add(label)
    return tuple(sorted(labels))


_TRUE_FLAGS, _FALSE_FLAGS = ("1", "1.0", "true", "yes"), ("0", "0.0", "false", "no")


def clean_flag(value: object, column: object, path: PathLike, line: Optional[int]) -> bool:
    """Whether a 0/1 label column marks its label (``1``/``0``, ``true``/``false``, ``yes``/``no``)."""
    text = str(value).strip().lower() if not isinstance(value, bool) else str(value).lower()
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    if text in _TRUE_FLAGS or text in _FALSE_FLAGS:
        return text in _TRUE_FLAGS
    raise DataFormatError(f"label column {column!r} must hold 0 or 1 (or true/false), got {value!r}", path, line)


def clean_target(value: object, path: PathLike, line: Optional[int]) -> float:
    """Return a regression target as a finite float; a clear error for text, an empty value, NaN or inf."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise DataFormatError(f"missing or non-numeric regression target {value!r}", path, line)
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise DataFormatError(f"regression target {value!r} is not a number", path, line) from None
    if not math.isfinite(number):
        raise DataFormatError(f"regression target {value!r} is not a finite number", path, line)
    return number


def label_cleaner(task: str, separator: str = ",") -> Callable[[object, PathLike, Optional[int]], object]:
    """The function that turns a raw label value into ``task``'s label: a class name (str), a
    label set (tuple of str) or a target (float)."""
    if task == MULTI_LABEL_CLASSIFICATION:
        return lambda value, path, line: clean_label_set(value, separator, path, line)
    if task == REGRESSION:
        return clean_target
    return clean_label


def is_in_memory(path: Optional[str]) -> bool:
    """Whether a source path names in-memory data (``"<texts>"``, ``"<tfds:imdb_reviews:train>"``).

    Such sources use the item's 0-based index as their "line", shared by all its tokens.
    """
    return path is not None and path.startswith("<")


def split_source(source: Optional[str]) -> tuple[Optional[str], Optional[int]]:
    """Split an example's ``"path:line"`` source back into its parts (line None if absent)."""
    if source is None:
        return None, None
    path, _, line = source.rpartition(":")
    if path and line.isdigit():
        return path, int(line)
    return source, None
