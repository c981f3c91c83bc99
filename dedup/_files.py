"""Files written the way a crash cannot tear them: a new temporary file beside the target,
fsynced, renamed over it, the directory fsynced (snapshots, checkpoints)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import Any

from . import _args


def create_temporary(directory: str, name: str) -> tuple[int, str]:
    """A new, empty file beside the target, created with the umask's permissions (as the
    target's would be), that no one else can have opened: O_EXCL with a random name,
    ``.NAME.<hex>.tmp`` (the log removes such leftovers when it opens a directory)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temporary = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:  # pragma: no cover - 64 random bits collided
            continue
    raise FileExistsError(f"cannot create a temporary file beside {name!r} in {directory!r}")  # pragma: no cover


def fsync_directory(directory: str) -> None:
    """Make a rename or a new entry durable: fsync the directory that holds it (POSIX)."""
    if os.name != "posix":  # pragma: no cover - Windows cannot open a directory
        return
    descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_all(descriptor: int, data: Any) -> None:
    view = memoryview(data)
    while view:  # os.write may write less than asked
        view = view[os.write(descriptor, view) :]


def write_atomically(path: Any, write: Callable[[int], None], *, sync: bool) -> None:
    """Replace ``path`` with what ``write(descriptor)`` writes, atomically: readers see the
    old file or the new one, whole. On any error before the rename the temporary file is
    removed and ``path`` is untouched. ``sync=False`` skips both fsyncs (atomic for readers,
    not durable across a power loss)."""
    target = _args.path("path", path)
    directory, name = os.path.split(os.path.abspath(target))
    descriptor, temporary = create_temporary(directory, name)
    try:
        write(descriptor)
        if sync:
            os.fsync(descriptor)
        os.close(descriptor)
        descriptor = -1
        os.replace(temporary, target)
    except BaseException:
        if descriptor >= 0:
            os.close(descriptor)
        try:
            os.unlink(temporary)
        except OSError:  # pragma: no cover - already gone
            pass
        raise
    if sync:
        fsync_directory(directory)
