"""Atomic file writes (a reader never sees a half-written file), output folders checked before the first
write, and the lock files that keep two processes out of one folder."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from rsearch.errors import RsearchError, one_line
from rsearch.record import Record

log = logging.getLogger("rsearch.io")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temp path beside `path`; renames it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes it 0600: give it the mode a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json_default(obj: Any) -> Any:
    return obj.to_dict() if isinstance(obj, Record) else str(obj)


def write_json(path: str | Path, obj: Any) -> None:
    """JSON (records as their mappings, anything else unknown as its str), written atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Appends one line and fsyncs it, so a crash loses at most the line being written."""
    with open(path, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Reads complete lines; a torn last line (a crash mid-write) is dropped."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def save_figure(fig, path: str | Path, dpi: int = 100) -> None:
    """Writes a matplotlib figure as PNG atomically, then closes it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


# ----- output folders -----

def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """Checks, writing nothing, that `path` is (or can be created as) a writable directory. Call it before
    the first write and before loading a model, so a bad --out fails at once with one line."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise RsearchError(f"{flag} {path}: exists and is not a directory")
    probe = path
    while not probe.exists():  # the deepest existing ancestor decides whether it can be created
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise RsearchError(f"{flag} {path}: cannot be created, {probe} is a file")
    # a real write (removed at once): permission bits alone say nothing for root or an immutable directory
    try:
        fd, tmp = tempfile.mkstemp(prefix=".rsearch-write-check-", dir=probe)
    except OSError as e:
        what = "is not writable" if probe == path else f"cannot be created, {probe} is not writable"
        raise RsearchError(f"{flag} {path}: {what} ({e.strerror or one_line(e)})") from None
    os.close(fd)
    os.unlink(tmp)
    return path


LOCK_NAME = ".rsearch.lock"


def _holder(lock_path: Path) -> str:
    try:
        return lock_path.read_text().strip() or "?"
    except OSError:
        return "?"


@contextlib.contextmanager
def file_lock(lock_path: str | Path, *, wait: bool = False, what: str = "") -> Iterator[None]:
    """Holds an exclusive lock on `lock_path` (created, holding this pid, removed on release).

    The lock is an flock, which the kernel releases when the holder dies: a lock file left by a killed process
    is taken over. Args: wait: block until the holder releases it (else fail at once with one line naming the
    holder's pid); what: how the message names the locked thing (default: the lock file).
    """
    lock_path = Path(lock_path)
    what = what or str(lock_path)
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RsearchError(f"cannot lock {what}: {one_line(e)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise RsearchError(f"cannot lock {what}: {one_line(e)}") from None
            if not wait:
                os.close(fd)
                raise RsearchError(f"{what} is in use by another rsearch process (pid {_holder(lock_path)}); "
                                   "wait for it to finish or choose another --out") from None
            log.info(f"waiting for {what}, held by pid {_holder(lock_path)}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        # the previous holder may have removed the file between our open and our lock: lock the file that is there
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def output_dir(path: str | Path, flag: str = "--out") -> Iterator[Path]:
    """Checks `path` (see check_out_dir), creates it and holds its lock (`path/.rsearch.lock`) while the
    block runs: a second run on the same folder fails at once naming the first one's pid. A folder this call
    created and that is still empty at the end (the job failed before writing) is removed again."""
    path = check_out_dir(path, flag)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RsearchError(f"{flag} {path}: cannot be created ({one_line(e)})") from None
    try:
        with file_lock(path / LOCK_NAME, what=f"{flag} {path}"):
            yield path
    finally:
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()  # only succeeds when empty
