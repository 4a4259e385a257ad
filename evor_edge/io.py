"""Atomic file writes shared by every stage (checkpoint, export, calibrate, datagen, the runtime's records).

Standard library only, so the torch-free runtime imports it too. A file is written to a temporary file
beside its target, fsync'ed and renamed over it (`os.replace`, atomic on one filesystem): a reader sees
the old file or the new one, never half of one. A directory of files (an engine directory, a checkpoint)
is assembled in a temporary sibling directory and renamed into place the same way (`staged_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_many",
    "fsync_tree",
    "move_dir_into_place",
    "read_json",
    "sha256_file",
    "staged_dir",
]

PathLike = str | os.PathLike[str]


def read_json(path: PathLike, error: type[Exception] = ValueError) -> Any:
    """The JSON document in `path`; `error` (one line) when it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON: {exc}") from None


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_many(files: Sequence[tuple[PathLike, Callable[[IO[bytes]], Any]]], mode: int = 0o644) -> None:
    """Write each ``(path, writer)`` through a temp file beside it, then rename them all into place.

    ``writer(handle)`` writes the content to a binary file handle. On any exception (KeyboardInterrupt
    included) no temp file remains and none of the targets this call already placed remains either.
    """
    temps: list[str] = []
    placed: list[Path] = []
    try:
        for path, writer in files:
            final = Path(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
            temps.append(tmp)
            with os.fdopen(fd, "wb") as handle:
                writer(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
        for (path, _), tmp in zip(files, temps, strict=True):
            os.replace(tmp, path)
            placed.append(Path(path))
    except BaseException:
        for name in [*temps, *placed]:
            with contextlib.suppress(OSError):
                os.unlink(name)
        raise


def atomic_write(path: PathLike, writer: Callable[[IO[bytes]], Any], mode: int = 0o644) -> None:
    """One file through `atomic_write_many`: never half-written, nothing left behind on failure."""
    atomic_write_many([(path, writer)], mode)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(path: PathLike, obj: Any, indent: int | None = 2, **dumps: Any) -> None:
    """Write `obj` as JSON (plus a final newline) to `path` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=indent, **dumps) + "\n").encode())


def fsync_tree(root: PathLike) -> None:
    """fsync every regular file under `root` (durable before a rename makes them visible)."""
    for child in Path(root).rglob("*"):
        if child.is_file():
            with open(child, "rb") as handle:
                os.fsync(handle.fileno())


def move_dir_into_place(tmp: PathLike, out: PathLike, overwrite: bool, exists_error: Exception) -> None:
    """Rename a finished sibling temp directory to `out`; an existing `out` is replaced only with
    `overwrite` (moved aside first and restored if the rename fails), else `exists_error` is raised."""
    tmp, out = Path(tmp), Path(out)
    if not out.exists():
        os.rename(tmp, out)  # atomic on one filesystem; tmp is a sibling of out
        return
    if not overwrite:
        raise exists_error
    backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rmdir(backup)
    os.rename(out, backup)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(backup, out)
        raise
    shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(out: PathLike, overwrite: bool, exists_error: Exception, tag: str = "staged") -> Iterator[Path]:
    """Assemble a directory in a temporary sibling of `out` and rename it into place when the block ends.

    Yields the temporary directory (mode 0755). On a normal exit its files are fsync'ed and it replaces
    `out` (`move_dir_into_place`); on any exception it is removed and nothing appears at `out`.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{tag}-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700; the result is an ordinary shared artefact
    try:
        yield tmp
        fsync_tree(tmp)
        move_dir_into_place(tmp, out, overwrite, exists_error)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
