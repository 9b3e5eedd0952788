"""The local target's record of what was applied: `<workdir>/state.json`, written atomically.

Keys: `plan` (the last successfully applied Plan, which `specml plan --target local` diffs
against), `spec_hash`, `data_hash`, `source_hashes`, `status` of the last attempt, `runs` (newest
last), `model_versions`, `aliases` and `serving`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from specml.compiler.ir import Plan
from specml.runtime.files import write_json_atomic
from specml.runtime.layout import Workdir

STATE_FILE = Workdir(Path()).state_file.name
MAX_RUNS = 50


def workdir(plan: Plan, base_dir: str | Path) -> Path:
    """`<base_dir>/<targets.local.workdir>`, where runs, the registry and serving/ live."""
    return Path(base_dir).resolve() / plan.targets.local.workdir


def load_state(folder: Path) -> dict[str, Any] | None:
    """The recorded state, or None before the first apply (or when the file is unreadable)."""
    path = Workdir(Path(folder)).state_file
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def save_state(folder: Path, state: dict[str, Any]) -> Path:
    """Write state.json atomically (temp file + rename in the same folder)."""
    state = {**state, "runs": state.get("runs", [])[-MAX_RUNS:]}
    return write_json_atomic(Workdir(Path(folder)).state_file, state)


def source_hashes(plan: Plan, base_dir: Path) -> dict[str, str]:
    """sha256 of each source file (or 'missing'), by source id."""
    from specml.runtime.steps.common import source_path

    out = {}
    for source in plan.features.sources:
        path = source_path(source, Path(base_dir))
        if not path.exists():
            out[source.id] = "missing"
            continue
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out[source.id] = "sha256:" + h.hexdigest()
    return dict(sorted(out.items()))


def is_up_to_date(state: dict[str, Any] | None, plan: Plan, data_hash: str) -> bool:
    """True when the last apply succeeded with this spec hash and this data hash."""
    return bool(
        state
        and state.get("status") == "applied"
        and state.get("spec_hash") == plan.spec_hash
        and state.get("data_hash") == data_hash
    )


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"+ {sub}: {json.dumps(new[key], sort_keys=True)}")
            elif key not in new:
                out.append(f"- {sub}")
            else:
                _diff(old[key], new[key], sub, out)
    elif old != new:
        out.append(
            f"~ {path}: {json.dumps(old, sort_keys=True)} -> {json.dumps(new, sort_keys=True)}"
        )


def plan_changes(plan: Plan, base_dir: str | Path) -> list[str]:
    """What `apply` would do against the recorded state, one human-readable line per change."""
    from specml.runtime.steps.common import data_hash

    folder = workdir(plan, base_dir)
    state = load_state(folder)
    current = data_hash(plan, Path(base_dir))
    if state is None:
        return [
            f"first apply: validate data, materialize {len(plan.features.views)} feature "
            f"view(s), train {plan.training.model.type}, evaluate, export ONNX, register "
            f"'{plan.registry.name}' (state: {Workdir(folder).state_file})"
        ]
    if is_up_to_date(state, plan, current):
        return []
    changes: list[str] = []
    if state.get("status") != "applied":
        changes.append(
            f"the last apply ended with status '{state.get('status')}' "
            f"(run {state.get('last_run_id')}): it will run again"
        )
    if state.get("spec_hash") != plan.spec_hash:
        lines: list[str] = []
        recorded = state.get("plan")
        if isinstance(recorded, dict):
            old = {k: v for k, v in recorded.items() if k != "spec_hash"}
            new = {k: v for k, v in plan.model_dump(mode="json").items() if k != "spec_hash"}
            _diff(old, new, "", lines)
        changes.append(f"spec changed ({state.get('spec_hash')} -> {plan.spec_hash}): retrain")
        changes += [f"  {line}" for line in lines[:40]]
        if len(lines) > 40:
            changes.append(f"  ... and {len(lines) - 40} more")
    if state.get("data_hash") != current:
        now = source_hashes(plan, Path(base_dir))
        before = state.get("source_hashes", {})
        changed = [sid for sid in now if before.get(sid) != now[sid]]
        changes.append(
            f"data changed (sources: {', '.join(changed) or 'unknown'}): "
            "re-materialize features and retrain"
        )
    return changes
