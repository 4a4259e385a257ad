"""One trainer per run directory: an exclusive advisory lock (`flock`) on RUN_DIR/.lock for the whole run.

Two `evor-edge train` processes writing the same run directory (a script started twice, a second `--resume`
while the first still runs) would interleave checkpoints and metrics. The second one is refused with one
line instead. The kernel drops the lock when its holder dies (SIGKILL included), so a stale `.lock` file
never blocks a later `--resume`; torchrun's restarted rank 0 takes it again. The file itself is left in
place (its content names the last holder) and is ignored wherever a run directory's contents are checked.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"


class RunLockedError(ValueError):
    """Another live process holds the run directory."""


@contextmanager
def run_directory_lock(run_dir: Path) -> Iterator[None]:
    """Hold RUN_DIR/.lock while the body runs. A directory created only for the lock is removed again if the
    body raises (a refused run leaves nothing behind)."""
    import fcntl  # POSIX; training runs on Linux

    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
        os.close(fd)
        raise RunLockedError(f"{run_dir} is being trained by another process ({holder}); wait for it to end "
                             "or pass another --out") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    try:
        yield
    except BaseException:
        if created and [p.name for p in run_dir.iterdir()] == [LOCK_NAME]:
            path.unlink()
            run_dir.rmdir()
        raise
    finally:
        os.close(fd)  # releases the lock
