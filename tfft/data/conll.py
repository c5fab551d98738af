"""CoNLL-style token files: one token per line, its tag in a column, a blank line between sentences.

The layout follows CoNLL-2003 (``EU NNP B-NP B-ORG``) but the reader is deliberately
tolerant of the variants found in the wild: tabs or runs of spaces between columns,
trailing whitespace, CRLF line endings, ``-DOCSTART-`` lines, ``#`` comment lines
before a sentence (CoNLL-U style) and a missing final blank line.
"""

from __future__ import annotations

import os
from typing import Iterator, List, Optional, Tuple

from tfft.data._common import iter_lines
from tfft.data.examples import TokenExample
from tfft.data.tags import TagError, normalise_sequences, split_tag
from tfft.errors import DataFormatError, PathLike

# tokens, tags, line of the first token, document index (None in a file without -DOCSTART- lines)
_Sentence = Tuple[List[str], Optional[List[str]], int, Optional[int]]


def _columns_needed(column: int) -> int:
    return column + 1 if column >= 0 else -column


def _sentences(
    path: PathLike,
    token_column: int,
    tag_column: int,
    encoding: str,
    delimiter: Optional[str],
    labelled: bool,
) -> Iterator[_Sentence]:
    """Yield each sentence with the line of its first token, so later errors can point at it."""
    needed = _columns_needed(token_column)
    layout = "a token"
    if labelled:
        needed = max(needed, _columns_needed(tag_column), 2)
        layout = "'TOKEN ... TAG'"
        if (token_column, tag_column) != (0, -1):
            layout += f" with the token in column {token_column} and the tag in column {tag_column}"

    def is_token_line(fields: List[str]) -> bool:
        # "# O" is the token "#" tagged O; "# text = ..." and a lone "#" are comments.
        if not labelled:
            return len(fields) == 1
        if len(fields) < needed:
            return False
        try:
            split_tag(fields[tag_column])
        except TagError:
            return False
        return True

    tokens: List[str] = []
    tags: List[str] = []
    first_line = 0  # stays 0 until a token is read
    only_blank = True
    document: Optional[int] = None
    for number, raw in enumerate(iter_lines(path, encoding), start=1):
        fields = [field.strip() for field in raw.rstrip().split(delimiter)]
        blank = not any(fields)
        if blank or fields[0] == "-DOCSTART-":
            only_blank = only_blank and blank
            if tokens:
                yield tokens, tags if labelled else None, first_line, document
                tokens, tags = [], []
            if not blank:
                document = 0 if document is None else document + 1
            continue
        only_blank = False
        if not tokens and fields[0].startswith("#") and not is_token_line(fields):
            continue
        if len(fields) < needed:
            count = f"{len(fields)} column" + ("s" if len(fields) != 1 else "")
            raise DataFormatError(
                f"expected {layout} (at least {needed} columns), got {count}: {raw.strip()!r}", path, number
            )
        token = fields[token_column]
        if not token:
            raise DataFormatError(f"empty token in column {token_column}: {raw.rstrip()!r}", path, number)
        if labelled:
            tag = fields[tag_column]
            try:
                split_tag(tag)
            except TagError as error:
                raise DataFormatError(error.reason, path, number) from None
            tags.append(tag)
        if not tokens:
            first_line = number
        tokens.append(token)
    if tokens:
        yield tokens, tags if labelled else None, first_line, document
    elif first_line == 0:
        raise DataFormatError(
            "the file is empty" if only_blank else "contains no sentences (only -DOCSTART- or comment lines)",
            path,
        )


def iter_conll(
    path: PathLike,
    *,
    token_column: int = 0,
    tag_column: int = -1,
    encoding: str = "utf-8",
    delimiter: Optional[str] = None,
    labelled: bool = True,
) -> Iterator[TokenExample]:
    """Stream the sentences of a CoNLL file as TokenExamples with the tags as written.

    Columns are split on ``delimiter`` (None: any run of whitespace; pass "\\t" when
    tokens contain spaces). ``token_column`` and ``tag_column`` may be negative. With
    ``labelled=False`` only the token column is needed and ``tags`` is None. Tags are
    checked for shape but not converted: ``read_conll`` converts, because detecting
    the scheme needs the whole file. Raises DataFormatError at the offending line.
    """
    for tokens, tags, first_line, document in _sentences(path, token_column, tag_column, encoding, delimiter,
                                                         labelled):
        yield TokenExample(tokens, tags, f"{os.fspath(path)}:{first_line}", document)


def read_conll(
    path: PathLike,
    *,
    token_column: int = 0,
    tag_column: int = -1,
    encoding: str = "utf-8",
    delimiter: Optional[str] = None,
    labelled: bool = True,
    scheme: str = "auto",
) -> List[TokenExample]:
    """Read a whole CoNLL file with its tags converted to IOB2.

    ``scheme`` is "auto" (detected over the whole file), "IOB1", "IOB2" or "BIOES"; a
    tag that contradicts an explicit scheme is reported at its file and line.
    """
    sentences = list(_sentences(path, token_column, tag_column, encoding, delimiter, labelled))
    source = os.fspath(path)
    if not labelled:
        return [TokenExample(tokens, None, f"{source}:{first_line}", document)
                for tokens, _, first_line, document in sentences]
    try:
        tag_lists = normalise_sequences([tags for _, tags, _, _ in sentences], scheme)
    except TagError as error:
        first_line = sentences[error.sequence][2]
        raise DataFormatError(error.reason, path, first_line + error.index) from None
    return [
        TokenExample(tokens, tags, f"{source}:{first_line}", document)
        for (tokens, _, first_line, document), tags in zip(sentences, tag_lists)
    ]
