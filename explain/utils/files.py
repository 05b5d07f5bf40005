"""Writing files as huggingface_hub does: to a temporary name, then renamed into place, with the mode a new file in
that folder gets (0666 less the umask, or what the folder's default ACL says), so a cache or a saved model shared
between the users of one machine (a JupyterHub) is readable by them, and a failed write leaves nothing behind.

tempfile.mkstemp creates files 0600 and so does the safetensors library; `publish` fixes the mode as
huggingface_hub's _chmod_and_move does.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import uuid

from ..errors import CacheWriteError


def new_file_mode(folder: str) -> int:
    """The permission bits a file created in `folder` gets (touching a file there, as huggingface_hub does: it
    honours the umask and a default ACL alike)."""
    probe = os.path.join(folder, f".explain-mode-{uuid.uuid4().hex}")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        os.close(fd)
        return stat.S_IMODE(os.stat(probe).st_mode)
    finally:
        if os.path.lexists(probe):
            os.unlink(probe)


def publish(temporary: str, path: str) -> str:
    """Give `temporary` the mode a new file beside `path` gets, then rename it to `path` (atomic)."""
    os.chmod(temporary, new_file_mode(os.path.dirname(os.path.abspath(path))))
    os.replace(temporary, path)
    return path


def _temporary(path: str, prefix: str) -> str:
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=prefix)
    os.close(fd)
    return temporary


def write_atomic(path: str, text: str, prefix: str = ".tmp-") -> str:
    """Write `text` to `path` through a temporary file in the same folder; nothing is left behind on failure."""
    temporary = _temporary(path, prefix)
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
        return publish(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def copy_atomic(source: str, path: str, prefix: str = ".incomplete-") -> str:
    """Copy `source` to `path` through a temporary file in the same folder; nothing is left behind on failure."""
    temporary = _temporary(path, prefix)
    try:
        shutil.copyfile(source, temporary)
        return publish(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def cannot_write(where: str, error: OSError, needs: str = "") -> CacheWriteError:
    """The error for an OSError while writing under `where`: what failed, and what to do about it."""
    reason = error.strerror or str(error)
    if error.errno in (28, 122):  # ENOSPC, EDQUOT
        fix = f"free space there{' (' + needs + ')' if needs else ''}, or point HF_HOME at a disk with room"
    elif error.errno in (1, 13, 30):  # EPERM, EACCES, EROFS
        fix = "point HF_HOME (or HF_HUB_CACHE) at a folder you can write to, e.g. HF_HOME=~/hf-cache"
    else:
        fix = "check the folder, or point HF_HOME at another one"
    return CacheWriteError(f"cannot write into {where} ({reason}: {error.filename or where}); {fix}")


# -- files a user names: a saved trace, an exported page ------------------------------------------------------------
FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words ("a character device" for /dev/null and /dev/stdout)."""
    for test, words in FILE_KINDS:
        if test(mode):
            return words
    return "not a regular file"


def writable_target(path: str | os.PathLike, what: str) -> str:
    """The file a write to `path` replaces: `path` itself, or the file a symbolic link there leads to (followed, so
    the link stays a link). Refused, naming what it is, when that is anything but a regular file or a new path: a
    device (/dev/null, /dev/stdout), a FIFO, a socket or a folder would otherwise be replaced by a regular file (or
    block the write). `what` names the file in the message ("the trace file", "--save-trace")."""
    path = os.fspath(path)
    target = os.path.realpath(path)  # a symbolic link is followed to its end, as open(path, "w") would
    try:
        info = os.stat(path)  # what open() would reach, /proc/self/fd links (/dev/stdout) included
    except FileNotFoundError:
        folder = os.path.dirname(target)
        if not os.path.isdir(folder):
            raise CacheWriteError(
                f"cannot write {what} {path}: the folder {folder} does not exist; create it or write the file elsewhere"
            ) from None
        return target
    except OSError as error:
        raise cannot_write_file(path, error, what) from None
    via = f" (a symbolic link to {target})" if target != os.path.abspath(path) else ""
    if not stat.S_ISREG(info.st_mode):
        raise CacheWriteError(
            f"cannot write {what} {path}{via}: it is {file_kind(info.st_mode)}, not a regular "
            "file; explain replaces a file whole and would not replace it, so name a new or "
            "regular file, e.g. trace.json or run.html"
        )
    try:
        same = os.stat(target)
    except OSError:
        same = None
    if same is None or (same.st_dev, same.st_ino) != (info.st_dev, info.st_ino):
        raise CacheWriteError(
            f"cannot write {what} {path}{via}: it leads to an open file (a /proc/self/fd link such "
            "as /dev/stdout) or a deleted one, not a file with a name explain could replace; name a "
            "new or regular file, e.g. trace.json or run.html"
        )
    return target


def save_file(path: str | os.PathLike, content: str | bytes, what: str = "the file") -> str:
    """Write `content` to `path` whole or not at all: checked with writable_target, written under a temporary name in
    the same folder, then renamed into place with the old file's mode (or a new file's: 0666 less the umask), so a
    failure keeps the old file and leaves nothing behind. Every OSError (a read-only or full disk, a file-size limit)
    is a CacheWriteError naming the path and the cause. Returns `path` as given."""
    path = os.fspath(path)
    data = content.encode("utf-8") if isinstance(content, str) else content  # a lone surrogate fails before the disk
    target = writable_target(path, what)
    temporary = None
    try:
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            mode = new_file_mode(os.path.dirname(target))
        fd, temporary = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".explain-", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temporary, mode)  # mkstemp makes 0600; a trace or a page is meant to be shared like any file
        os.replace(temporary, target)
        temporary = None
    except OSError as error:
        raise cannot_write_file(path, error, what) from None
    finally:
        if temporary is not None and os.path.lexists(temporary):
            os.unlink(temporary)
    return path


def cannot_write_file(path: str, error: OSError, what: str) -> CacheWriteError:
    """The error for an OSError while writing a file the user named: the path, the cause and what to do."""
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space on that disk, or write the file to another one"
    elif error.errno == errno.EFBIG:
        fix = "the file is larger than this process may write (a file-size limit, ulimit -f): raise the limit"
    elif error.errno in (errno.EPERM, errno.EACCES, errno.EROFS):
        fix = "write it into a folder you can write to"
    else:
        fix = "check the path, or write the file elsewhere"
    return CacheWriteError(f"cannot write {what} {path} ({reason}); {fix} (any older file there is kept)")
