"""Writing files as huggingface_hub does: to a temporary name, then renamed into place, with the mode a new file in
that folder gets (0666 less the umask, or what the folder's default ACL says), so a cache or a saved model shared
between the users of one machine (a JupyterHub) is readable by them, and a failed write leaves nothing behind.

tempfile.mkstemp creates files 0600 and so does the safetensors library; `publish` fixes the mode as
huggingface_hub's _chmod_and_move does.
"""

from __future__ import annotations

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
