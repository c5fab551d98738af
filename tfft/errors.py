"""The errors tfft raises, so callers can catch one family and tests can match messages.

Messages say where (file and line when there is one) and what was expected, e.g.
``train.txt:1043: expected 'TOKEN ... TAG' (at least 2 columns), got 1 column: 'EU'``.
"""

from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class TfftError(Exception):
    """Base class of every error tfft raises on purpose."""


class DataFormatError(TfftError, ValueError):
    """Input data that does not have the expected shape, labels or encoding.

    ``path`` and ``line`` (1-based) locate the problem when it has a place in a file.
    """

    def __init__(self, message: str, path: Optional[PathLike] = None, line: Optional[int] = None):
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        self.reason = message
        location = ""
        if self.path is not None:
            location = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(location + message)


class ConfigError(TfftError, ValueError):
    """An option or configuration value that cannot be used."""


class ModelLoadError(TfftError, OSError):
    """A model, tokenizer or run directory that cannot be found or read."""


class TrainingDivergedError(TfftError, ArithmeticError):
    """A fit whose training loss became NaN or infinite: its weights are no longer numbers."""
