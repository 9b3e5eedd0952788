"""Publishing a model folder to a serving slot atomically: a complete copy beside it, then one swap.

On Linux the swap is one renameat2(RENAME_EXCHANGE): the slot holds the old folder or the whole new
one, never neither and never a half-copied one. Elsewhere two renames leave a moment without the
slot; the promotion journal (promotion.py) redoes the publish after a crash there.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from specml.runtime.files import fsync_path

STAGING_PREFIX = ".promote-"
_STALE_STAGING_S = 60.0  # a staging folder this old belongs to a killed promotion
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def folder_version(folder: Path) -> str | None:
    """The registry version a published model folder holds (None: no complete folder there)."""
    try:
        version = json.loads((folder / "serving.json").read_text())["model_version"]
    except (OSError, ValueError, KeyError):
        return None
    return None if version is None else str(version)


def copy_in(
    source: Path, target: Path, version: str, before_swap: Callable[[], None] | None = None
) -> Path:
    """Copy `source` (holding `version`) beside `target`, fsync it, then swap it in at once."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target.parent))
    try:
        copy = Path(shutil.copytree(source, staging / "model"))
        if folder_version(copy) != str(version):  # the source was replaced meanwhile
            raise RuntimeError(f"{source} no longer holds v{version}")
        _fsync_tree(copy)
        if before_swap is not None:
            before_swap()
        swap_in(copy, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def swap_in(new: Path, target: Path) -> None:
    """Put the folder `new` at `target` at once; the old folder (if any) ends up at `new` or is
    removed. Linux: one renameat2(RENAME_EXCHANGE), so `target` is never absent."""
    if not target.exists():
        os.replace(new, target)
    elif not _exchange(new, target):
        old = target.with_name(f".{target.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    fsync_path(target.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the OS or libc cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # e.g. musl without renameat2
        return False
    at, name = ctypes.c_int, ctypes.c_char_p
    renameat2.argtypes = [at, name, at, name, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # a filesystem without exchange
        return False
    raise OSError(code, os.strerror(code), str(b))


def _fsync_tree(folder: Path) -> None:
    """The copy is on disk before it is swapped in (a power cut never serves empty files)."""
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(Path(root))


def remove_stale_staging(serving: Path) -> None:
    """Staging copies a killed promotion left behind (never served: they were not swapped in)."""
    if not serving.is_dir():
        return
    now = time.time()
    for folder in serving.glob(f"{STAGING_PREFIX}*"):
        try:
            if now - folder.stat().st_mtime > _STALE_STAGING_S:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue
