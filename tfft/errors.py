"""The errors tfft raises, so callers can catch one family and tests can match messages.

Messages say where (file and line when there is one) and what was expected, e.g.
``train.txt:1043: expected 'TOKEN ... TAG' (at least 2 columns), got 1 column: 'EU'``.
"""

from __future__ import annotations

import errno
import os
import re
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


# TensorFlow's file ops raise an OpError, not an OSError, whose message ends "<path>; <strerror> [Op:...]".
_TENSORFLOW_OS_FAILURE = re.compile(
    r"(\S+); (" + "|".join(re.escape(os.strerror(code)) for code in (
        errno.ENOSPC, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT, errno.ENOTDIR, errno.EIO,
        errno.ENAMETOOLONG, errno.ENOENT, errno.EISDIR)) + r")\b")


def os_failure(error: BaseException) -> Optional[str]:
    """``PATH: problem`` for an operating-system failure (no space left, file too large, permission
    denied, ...), from Python or TensorFlow; None for any other error.

    The command line prints it as one line instead of a traceback."""
    if isinstance(error, OSError) and error.errno:
        problem = os.strerror(error.errno)
        return f"{os.fsdecode(error.filename)}: {problem}" if error.filename else problem
    found = type(error).__module__.startswith("tensorflow") and _TENSORFLOW_OS_FAILURE.search(str(error))
    return f"{found.group(1)}: {found.group(2)}" if found else None


class TrainingDivergedError(TfftError, ArithmeticError):
    """A fit whose training loss became NaN or infinite: its weights are no longer numbers."""
