"""What tfft may delete or replace, and which names may become paths.

tfft replaces or deletes only directories it made. Each one it makes to own (a run directory and
its hidden ``.NAME.partial`` work directory, a search directory, an export version) carries a
marker file, :data:`MARKER_FILE`, naming its kind. ``--overwrite`` replaces a directory with the
right marker, or an empty one, and nothing else: a folder of the user's files, a plain file or the
current directory is refused with one line that says what is there, before any work. Directories
written by a tfft older than the marker are recognised by the files every one of them holds
(:attr:`Kind.legacy`).

Names that become one path component (an export's ``--name`` and version, a trial id) are checked
in :func:`checked_name` and :func:`checked_version`, so none of them leads outside its folder.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

from tfft.errors import ConfigError
from tfft.files import write_json
from tfft.run_dir import CONFIG_FILE, METRICS_FILE, MODEL_SUBDIR, RUN_KEY_FILE

MARKER_FILE = ".tfft"
# A version number TF Serving can load: a positive int64.
MAX_VERSION = 2 ** 63 - 1


@dataclass(frozen=True)
class Kind:
    """A kind of directory tfft makes: its name in the marker, and the files that show a directory
    of that kind written before markers existed (any one group complete is enough)."""

    name: str
    legacy: Tuple[Tuple[str, ...], ...] = ()


# A finished run, or an unfinished one's work directory (it becomes the run directory by a rename).
RUN = Kind("run", legacy=((CONFIG_FILE, MODEL_SUBDIR, METRICS_FILE), (RUN_KEY_FILE,)))
EXPORT = Kind("export")


def resolved(path: Union[str, os.PathLike]) -> Path:
    """``path`` as the directory it names: ``.``, ``x/``, ``./x``, ``x/../x`` and a symlink to ``x``
    are one directory, with one lock, one work directory and one marker."""
    return Path(os.path.realpath(path))


def mark(directory: Union[str, os.PathLike], kind: Kind) -> None:
    """Create ``directory`` if needed and record that tfft made it, as ``kind``."""
    from tfft import __version__

    Path(directory).mkdir(parents=True, exist_ok=True)
    write_json(Path(directory) / MARKER_FILE, {"made_by": "tfft", "kind": kind.name, "tfft_version": __version__})


def marked_kind(directory: Union[str, os.PathLike]) -> Optional[str]:
    """The kind recorded in ``directory``'s marker; None without a readable marker."""
    try:
        record = json.loads((Path(directory) / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record.get("kind") if isinstance(record, dict) and record.get("made_by") == "tfft" else None


def check_owned(path: Union[str, os.PathLike], kind: Kind, option: str = "--output-dir",
                follow_link: bool = True) -> bool:
    """Refuse ``path`` unless it is absent, an empty directory or a directory tfft made as ``kind``.

    Returns True when it holds such a directory (False: absent or empty). The refusal names
    ``path`` as given and says what is there. Without ``follow_link``, a symbolic link is refused
    too: tfft makes no links, so one at a name tfft deletes or moves (a ``.NAME.partial`` work
    directory) was put there by someone else."""
    if not follow_link and os.path.islink(path):
        raise ConfigError(f"{path} is a symbolic link (to {os.readlink(path)}), not a directory tfft made; tfft "
                          f"deletes and moves only directories it made: remove the link, or choose another {option}")
    place = resolved(path)
    if not place.exists():
        if os.path.lexists(place):  # still a link once resolved: a loop, or a link that leads nowhere
            raise ConfigError(f"{path} is a symbolic link that leads to no directory (a loop, or a missing target); "
                              f"choose another {option}")
        blocking = next((p for p in place.parents if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise ConfigError(f"{path} cannot be made: {blocking} is a file, not a folder; choose another {option}")
        return False
    if not place.is_dir():
        raise ConfigError(f"{path} is a file, not a tfft {kind.name} directory; tfft replaces only directories "
                          f"it made; choose another {option}")
    entries = sorted(place.iterdir())
    if not entries:
        return False
    found = marked_kind(place)
    if found is None and any(all((place / name).exists() for name in group) for group in kind.legacy):
        found = kind.name
    if found == kind.name:
        return True
    if found is not None:
        raise ConfigError(f"{path} is a tfft {found} directory, not a {kind.name} directory; choose another {option}")
    raise ConfigError(f"{path} has no tfft marker ({MARKER_FILE}) and holds {_contents(entries)}; tfft replaces "
                      f"only directories it made: choose another {option}, or an empty or new directory")


def check_outside_owned(path: Union[str, os.PathLike], option: str) -> None:
    """Refuse ``path`` inside a directory that tfft replaces as a whole (a run, a search): its ``--overwrite``
    would delete what was written there (an export inside a run directory, say)."""
    place = resolved(path)
    for folder in (place, *place.parents):
        kind = marked_kind(folder)
        if kind is not None and kind != EXPORT.name:
            raise ConfigError(f"{option} {path} is inside {folder}, a tfft {kind} directory, which --overwrite "
                              f"replaces as a whole; choose another {option}")


def remove_owned(path: Union[str, os.PathLike], kind: Kind, option: str = "--output-dir") -> None:
    """Delete ``path`` if tfft made it as ``kind`` (or it is empty); refuse anything else, a symbolic link
    included (:func:`check_owned`)."""
    check_owned(path, kind, option, follow_link=False)
    if os.path.lexists(path):
        shutil.rmtree(path)


def checked_name(name: str, what: str) -> str:
    """``name`` if it is one path component that stays inside its folder, else a one-line refusal.

    Refused: empty, a path separator, a leading ``.`` (``.``, ``..`` and tfft's own hidden staging
    names), control characters, and more than 255 bytes (the file system's limit)."""
    text = str(name)
    problem = None
    if not text.strip():
        problem = "it is empty"
    elif "/" in text or os.sep in text or (os.altsep and os.altsep in text):
        problem = "it holds a path separator"
    elif text.startswith("."):
        problem = "it starts with '.' (., .. and tfft's hidden staging directories)"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        problem = "it holds a control character"
    elif len(text.encode("utf-8", "surrogateescape")) > 255:
        problem = "it is longer than 255 bytes"
    if problem:
        raise ConfigError(f"{what} must be a plain name (a directory inside its folder), got {text!r}: {problem}")
    return text


def checked_version(version, what: str = "--version") -> int:
    """``version`` if it is a whole number from 1 (TF Serving loads no other), else a one-line refusal."""
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise ConfigError(f"{what} must be a whole number from 1 to {MAX_VERSION} (TF Serving loads no other "
                          f"version directory), got {version!r}")
    return version


def _contents(entries) -> str:
    """``3 files and 1 folder: a.txt, b.txt, c.txt, notes/``, naming at most five."""
    folders = sum(entry.is_dir() for entry in entries)
    files = len(entries) - folders
    counts = " and ".join(f"{n} {word}{'s' if n != 1 else ''}" for n, word in ((files, "file"), (folders, "folder"))
                          if n)
    names = [entry.name + ("/" if entry.is_dir() else "") for entry in entries[:5]]
    return f"{counts}: {', '.join(names)}{', ...' if len(entries) > 5 else ''}"
