"""A run directory's lifecycle: who may write it, and whether an unfinished run may be resumed.

A run works in a hidden sibling directory (``.<name>.partial``, :func:`tfft.run_dir.work_dir_of`)
and is moved onto the run directory only when everything is written, so the run directory is
never half written. A lock file beside the run directory keeps two processes from writing the
same run. The work directory keeps the run's options and data digests (``run_key.json``):
running the same command after a crash resumes from the last finished epoch, while a command
with other options, or on a data file edited since, is refused rather than continuing stale
state.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Iterator, Optional

from tfft.config import TrainConfig
from tfft.errors import ConfigError
from tfft.files import sha256_of, write_json
from tfft.ownership import RUN, check_owned, mark, remove_owned, resolved
from tfft.run_dir import RUN_KEY_FILE

DATA_KEY = "data_sha256"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``.<name>.lock`` beside ``run_dir``, or refuse at once."""
    run_dir = Path(run_dir)
    created = [p for p in (run_dir.parent, *run_dir.parent.parents) if not p.exists()]
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    path = run_dir.parent / f".{run_dir.name}.lock"
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Locked a file that a finishing process has just removed: another one may lock a new file.
            if not path.exists() or os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino:
                raise BlockingIOError
        except BlockingIOError:
            raise ConfigError(f"{run_dir} is being written by another tfft process (lock file {path}); wait for "
                              "it to finish or choose another --output-dir") from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
            for directory in created:  # a run refused before writing anything leaves no empty directories
                with contextlib.suppress(OSError):
                    directory.rmdir()


def claim_work_dir(work_dir: Path, config: TrainConfig, overwrite: bool) -> None:
    """Start or resume the run in ``work_dir``: resume only the same options on the same data, refuse others.

    The options (all but the output directory) and a digest of each data file's content are
    kept in ``run_key.json``: a file edited after a kill would otherwise resume on other rows.
    ``overwrite`` discards an unfinished run instead.
    """
    key = json.loads(json.dumps({k: v for k, v in config.to_dict().items() if k != "output_dir"}))
    key[DATA_KEY] = {name: data_digest(path) for name, path in (("train", config.train),
                                                                 ("validation", config.validation)) if path}
    # A folder or link of that name that tfft did not make is refused, kept as it is.
    if check_owned(work_dir, RUN, follow_link=False):
        if overwrite:
            remove_owned(work_dir, RUN)
        else:
            path = work_dir / RUN_KEY_FILE
            saved = json.loads(path.read_text()) if path.is_file() else {}
            options = {k: v for k, v in key.items() if k != DATA_KEY}
            if {k: v for k, v in saved.items() if k != DATA_KEY} == options and saved.get(DATA_KEY) != key[DATA_KEY]:
                if DATA_KEY not in saved:
                    raise ConfigError(
                        f"{work_dir} holds an unfinished run started by an earlier tfft, which recorded no digest "
                        "of its data, so it cannot be checked to resume on the same rows; pass --overwrite to "
                        "start afresh")
                changed = [getattr(config, name) for name in key[DATA_KEY]
                           if saved[DATA_KEY].get(name) != key[DATA_KEY][name]]
                raise ConfigError(
                    f"{', '.join(changed)} changed since the unfinished run in {work_dir} started (its content "
                    "differs), so the run cannot resume on the same rows; restore the file to resume, or pass "
                    "--overwrite to start afresh on the data as it is now")
            if saved != key:
                changes = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in options.items() if saved.get(k) != v]
                raise ConfigError(
                    f"{work_dir} holds an unfinished run started with other options ({'; '.join(changes[:4])}"
                    f"{'; ...' if len(changes) > 4 else ''}); rerun the original command to resume it, or pass "
                    "--overwrite to start afresh")
            print(f"Resuming the unfinished run in {work_dir}", flush=True)
    mark(work_dir, RUN)  # carried onto the run directory by the final rename
    write_json(work_dir / RUN_KEY_FILE, key)


def refuse_data_inside(config: TrainConfig, directory: Path, replaced: str = "the run replaces") -> None:
    """Refuse a directory tfft replaces (a run's; a search's, whose ``search/`` and ``best/`` go) holding the
    run's own data files: replacing it would delete them. ``directory`` as the user gave it."""
    place = resolved(directory)
    for name, path in (("train", config.train), ("validation", config.validation)):
        if path and not path.startswith("tfds:") and resolved(path).is_relative_to(place):
            raise ConfigError(f"--{name} {path} is inside --output-dir {directory}, which {replaced}; "
                              "choose another --output-dir")


def data_digest(path: str) -> Optional[str]:
    """SHA-256 of a data file's bytes (None for ``tfds:`` data, whose prepared files TFDS versions)."""
    return None if path.startswith("tfds:") else sha256_of(path)

