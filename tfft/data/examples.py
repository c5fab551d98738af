"""Plain records that every reader produces and every later stage consumes.

They hold strings only (labels included), so readers stay free of TensorFlow and of
any label-id decision: label ids are assigned once, from the training data, by
``LabelMap``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple, Union


@dataclass(frozen=True)
class TokenExample:
    """One sentence for token classification: words and their IOB2 tags (None when unlabelled)."""

    tokens: List[str]
    tags: Optional[List[str]] = None
    source: Optional[str] = field(default=None, compare=False)  # "path:line" of the first token
    # Index of the document the sentence belongs to (-DOCSTART- boundaries); None when unknown.
    # Consecutive sentences of one document give each other context (``--context-window``).
    document: Optional[int] = field(default=None, compare=False)


@dataclass(frozen=True)
class TextExample:
    """One text (or text pair) with its label: a class name (sequence classification), a sorted
    tuple of label names, possibly empty (multi-label classification), or a float (regression)."""

    text: str
    text_pair: Optional[str] = None
    label: Union[str, Tuple[str, ...], float, None] = None
    source: Optional[str] = field(default=None, compare=False)  # "path:line"
