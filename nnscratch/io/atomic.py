"""Atomic file writes: the file is written to a temporary file in the same directory, flushed and
fsync'ed, then renamed over the destination (``os.replace``), so a crash or an error never leaves a
half-written file and never destroys the previous one.

A process killed mid-write leaves its temporary file ``.<name>.<12 hex digits>.tmp`` behind; the next
write to the same path removes such leftovers of that path (and only those: the name must match
exactly, and a temporary file still locked by a write in progress is left alone). Weight files,
checkpoints and the examples' JSON results are all written this way.
"""
import os
import re
import secrets
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: an open file cannot be deleted there anyway
    fcntl = None


def write_atomic(path, content):
    """
    Write the bytes `content` to `path` atomically (temporary file in the same directory,
    flush, fsync, ``os.replace``). The temporary file is removed if anything fails; the
    previous file at `path`, if any, is then left untouched. Leftover temporary files of
    earlier, interrupted writes to `path` are removed first (:func:`remove_leftovers`).
    """
    path = Path(path)
    remove_leftovers(path)
    try:
        mode = path.stat().st_mode & 0o7777  # keep an existing file's permissions
    except FileNotFoundError:
        mode = None
    while not _write_via_temporary(path, content, mode):  # pragma: no cover - see below
        pass
    _fsync_directory(path.parent)


def _write_via_temporary(path, content, mode):
    """One attempt of :func:`write_atomic`: False if another save's :func:`remove_leftovers`
    deleted our temporary file in the instant between its creation and its lock."""
    while True:
        tmp_path = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            # 0o666 and the kernel applies the umask: the permissions of a plain open().
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:  # pragma: no cover - a 48-bit random name collided
            continue
    try:
        with os.fdopen(fd, "wb") as file:
            if fcntl is not None:  # held until the rename: marks the file as in use
                fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            if mode is not None:
                os.chmod(tmp_path, mode)
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
            try:
                os.replace(tmp_path, path)
            except FileNotFoundError:  # pragma: no cover - a race lost to remove_leftovers
                if not tmp_path.exists() and path.parent.is_dir():
                    return False
                raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return True


def remove_leftovers(path):
    """
    Remove the temporary files that interrupted :func:`write_atomic` calls to `path` left in
    its directory: regular files named exactly ``.<name of path>.<12 hex digits>.tmp`` that no
    save in progress holds locked. Nothing else is touched; errors are ignored.

    Returns
    -------
    removed : list of :class:`pathlib.Path`
    """
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"[0-9a-f]{12}\.tmp")
    removed = []
    try:
        entries = [e for e in os.scandir(path.parent) if pattern.fullmatch(e.name)]
    except OSError:
        return removed
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and _remove_if_unlocked(entry.path):
                removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _remove_if_unlocked(name):
    if fcntl is None:  # pragma: no cover - Windows refuses to delete a file a writer has open
        os.unlink(name)
        return True
    fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        os.unlink(name)
    finally:
        os.close(fd)
    return True


def _fsync_directory(directory):
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)
