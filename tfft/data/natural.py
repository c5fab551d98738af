"""Token-per-word NER data written back as people write it, with each token's character span.

Why: CoNLL files hold tokens, and tokens joined with single spaces are text that a
whitespace splitter rebuilds exactly, by construction, so measuring raw-text prediction on
them hides every error a user meets with ``Paris.``, ``(Reuters)`` or ``Apple's``. This
writes the tokens the way a newspaper prints them: no space before ``, . ; : ! ? ) ] } %``,
closing quotes and clitics (``'s``, ``n't``), none after ``( [ { $`` (and ``US$``) or opening
quotes; straight quotes alternate between opening and closing within a sentence. The gold
entities then stay exact character spans of that text (``tfft.data.natural_entity_spans``).

It is written independently of :mod:`tfft.words` (which goes the other way) so that the
benchmark and tests that use it do not share the word rule's mistakes.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

from tfft.data.tags import iob2_spans

_NO_SPACE_BEFORE = frozenset([",", ".", ";", ":", "!", "?", ")", "]", "}", "%", "...", "''", "\u201d", "\u2019"])
_NO_SPACE_AFTER = frozenset(["(", "[", "{", "$", "``", "\u201c", "\u2018"])
_CLITICS = frozenset(["'s", "'re", "'ve", "'ll", "'m", "'d", "n't"])
_STRAIGHT_QUOTES = ('"', "'")


def natural_text(tokens: Sequence[str]) -> Tuple[str, List[Tuple[int, int]]]:
    """The sentence ``tokens`` as written text, and each token's ``(start, end)`` in it."""
    pieces: List[str] = []
    spans: List[Tuple[int, int]] = []
    open_quotes = {quote: False for quote in _STRAIGHT_QUOTES}
    glue_next = True  # no space before the first token
    length = 0
    for token in tokens:
        closing_quote = token in _STRAIGHT_QUOTES and open_quotes[token]
        opening_quote = token in _STRAIGHT_QUOTES and not closing_quote
        if token in _STRAIGHT_QUOTES:
            open_quotes[token] = opening_quote
        attach = token in _NO_SPACE_BEFORE or token.lower() in _CLITICS or closing_quote
        if not (glue_next or attach):
            pieces.append(" ")
            length += 1
        spans.append((length, length + len(token)))
        pieces.append(token)
        length += len(token)
        glue_next = token in _NO_SPACE_AFTER or opening_quote or (token.endswith("$") and token.isupper())
    return "".join(pieces), spans


def natural_entity_spans(tokens: Sequence[str], tags: Sequence[str]) -> Tuple[str, List[Tuple[str, int, int]]]:
    """The written sentence and its gold entities as ``(type, start, end)`` character spans (IOB2 ``tags``)."""
    text, spans = natural_text(tokens)
    return text, [(entity_type, spans[first][0], spans[last - 1][1]) for entity_type, first, last in iob2_spans(tags)]
