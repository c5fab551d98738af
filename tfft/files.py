"""Write-then-rename helpers, so no reader ever sees a half-written file or directory; file digests."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux ``/proc``).

    Files and directories tfft renames into place get the modes a plain ``open``/``mkdir``
    would give them, so that another user (a model server's) can read an export.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: the only portable way to read it
    os.umask(mask)
    return mask


def atomic_write(path: os.PathLike, write: Callable[[str], Any]) -> None:
    """Call ``write(temporary_path)`` in ``path``'s directory, then rename onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp's 0600 is for the temporary only
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text(path: os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_directory(path: os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling directory that becomes ``path`` when the block succeeds.

    On error the temporary directory is removed and ``path`` is untouched. With
    ``replace``, an existing ``path`` is swapped out only after the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide it from other users
        yield staging
        replace_directory(staging, path, replace=replace)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def replace_directory(source: os.PathLike, path: os.PathLike, replace: bool = True) -> None:
    """Rename a finished directory onto ``path``; an older ``path`` is removed only afterwards."""
    source, path = Path(source), Path(path)
    if not path.exists():
        os.replace(source, path)
        return
    if not replace:
        raise FileExistsError(f"{path} already exists")
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
    os.replace(path, old / path.name)
    os.replace(source, path)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def hdf5_written_in_memory() -> Iterator[None]:
    """Build the HDF5 files opened for writing in the block (Keras' ``save_weights``, ``save_pretrained``'s
    ``tf_model.h5``) in memory, then write each with one plain write.

    Why: HDF5 that meets a full disk or a file-size limit mid-file is left unable to close the file,
    and the process ends in a segmentation fault. Written from memory, a full disk is an ordinary
    ``OSError`` naming the file, which the command line reports in one line. It costs one copy of
    the file in memory while it is written.
    """
    import h5py

    original = h5py.File

    class InMemoryFile(original):
        def __init__(self, name, mode: str = "r", *args, **kwargs):
            self.target = os.fspath(name) if mode in ("w", "w-", "x") and isinstance(name, (str, os.PathLike)) else None
            self.buffer = io.BytesIO() if self.target is not None else None
            super().__init__(self.buffer if self.target is not None else name, mode, *args, **kwargs)

        def close(self) -> None:
            super().close()
            if self.buffer is not None:
                buffer, self.buffer = self.buffer, None
                try:
                    with open(self.target, "wb") as handle:
                        handle.write(buffer.getbuffer())
                except OSError as error:  # a write() error names no file
                    raise OSError(error.errno, error.strerror, self.target) from None

    h5py.File = InMemoryFile
    try:
        yield
    finally:
        h5py.File = original


def add_file_to_digest(digest: Any, path: os.PathLike) -> None:
    """Feed a file's bytes to ``digest`` (a hashlib hash) in 1 MiB blocks: model weights run to
    hundreds of MB."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def sha256_of(path: os.PathLike) -> str:
    """The hex SHA-256 of a file's contents."""
    digest = hashlib.sha256()
    add_file_to_digest(digest, path)
    return digest.hexdigest()
