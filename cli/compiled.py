"""Writing compiled output atomically, and `--check`: is the committed output what we would emit?

Every compile also records the Plan it compiled as `PLAN_RECORD` in the output folder, so
`specml plan --target T` can show what changed since the last compile.
"""

from __future__ import annotations

import filecmp
import shutil
import tempfile
from pathlib import Path
from typing import Any

PLAN_RECORD = ".specml-plan.json"


def _emit(target: Any, plan: Any, out_dir: Path) -> Any:
    result = target.emit(plan, out_dir)
    (out_dir / PLAN_RECORD).write_text(plan.to_json())
    return result


def _tree(root: Path) -> set[str]:
    return (
        {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
        if root.exists()
        else set()
    )


def emit_into(target: Any, plan: Any, out_dir: Path) -> Any:
    """Emit into a fresh temp folder, then swap it in: a failed compile never leaves half a tree."""
    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        result = _emit(target, plan, staging)
        backup = None
        if out_dir.exists():
            backup = out_dir.with_name(f".{out_dir.name}.old")
            if backup.exists():
                shutil.rmtree(backup)
            out_dir.rename(backup)
        staging.rename(out_dir)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = tuple(sorted(_tree(out_dir)))
    return type(result)(out_dir=out_dir, files=files, notes=getattr(result, "notes", ()))


def compare_trees(target: Any, plan: Any, out_dir: Path) -> list[str]:
    """Differences between OUT_DIR and a fresh emit: 'PATH (missing|changed|unexpected)'."""
    with tempfile.TemporaryDirectory(prefix="specml-check-") as tmp:
        fresh = Path(tmp) / "out"
        fresh.mkdir()
        _emit(target, plan, fresh)
        want, have = _tree(fresh), _tree(out_dir)
        diffs = [f"{p} (missing)" for p in sorted(want - have)]
        diffs += [f"{p} (unexpected)" for p in sorted(have - want)]
        diffs += [
            f"{p} (changed)"
            for p in sorted(want & have)
            if not filecmp.cmp(fresh / p, out_dir / p, shallow=False)
        ]
        return diffs
