"""Atomic file writes: a temp file in the same folder, fsynced, then renamed over the target.

Readers never see half a file, and a crash leaves either the old content or the new one. Every
step, the server, the monitor and the targets write their records through `write_atomic`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["replace_atomic", "write_atomic", "write_json_atomic"]


def replace_atomic(path: str | Path, write: Callable[[Path], None], durable: bool = True) -> Path:
    """Call `write(tmp)` on a temp path beside `path`, then rename it over `path`.

    `durable` fsyncs the file and the folder (state that must survive a power cut)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if durable:
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(path.parent)
    return path


def write_atomic(path: str | Path, content: str | bytes, durable: bool = True) -> Path:
    """Write text or bytes to `path` atomically (see `replace_atomic`)."""
    if isinstance(content, bytes):
        return replace_atomic(path, lambda tmp: tmp.write_bytes(content), durable)
    return replace_atomic(path, lambda tmp: tmp.write_text(content, encoding="utf-8"), durable)


def write_json_atomic(path: str | Path, payload: Any, durable: bool = True) -> Path:
    """Canonical JSON (sorted keys, 2-space indent, trailing newline), written atomically."""
    text = json.dumps(payload, sort_keys=True, indent=2, default=str) + "\n"
    return write_atomic(path, text, durable)


def fsync_path(path: Path) -> None:
    """Flush a file or a folder (a rename in it) to disk; a no-op where it cannot be opened
    (folders on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
