"""Writing files and folders so that a crash leaves the old version or the new one, never
half of either; and a lock so that only one process builds a given folder."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write_file(path: Path, write: Callable[[str], None]) -> None:
    """Let `write(tmp)` fill a temp file beside `path`, flush it to disk, then rename it over
    `path` (the temp file goes if `write` fails)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (see `atomic_write_file`)."""
    atomic_write_file(path, lambda tmp: Path(tmp).write_text(text))


def write_folder_atomically(target: Path, fill: Callable[[Path], None]) -> Path:
    """Run `fill(tmp)` on a temp folder beside `target`, then swap it in with a rename
    (an existing `target` is replaced only once the new folder is complete)."""
    target = Path(target).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp.", dir=target.parent))
    try:
        fill(tmp)
        tmp.chmod(0o755)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def file_lock(target: Path):
    """Hold an exclusive lock on `.<name>.lock` beside `target` (across processes)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
