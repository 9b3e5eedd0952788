"""Retention of online stores: each apply materializes a fresh one, and they are big.

Kept: the stores the published models read (serving/current: the champion, which a rollback
returns to; serving/challenger: the rollout's), plus the newest `targets.local.keep_online_stores`
others. The rest of an old run (its training set, model, metrics) stays for lineage; the registry
keeps its models in MLflow's artefact store, which retention does not touch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from specml.compiler.ir import Plan
from specml.runtime.layout import Workdir
from specml.targets.local.state import workdir

ONLINE_STORE = "online_store.db"


def _served_repos(wd: Workdir) -> set[Path]:
    """Feature repos the published model folders read (from their serving.json)."""
    repos = set()
    for slot in (wd.current, wd.challenger):
        try:
            repo = json.loads((slot / "serving.json").read_text()).get("feature_repo")
        except (OSError, ValueError):
            continue
        if repo:
            repos.add(Path(repo).resolve())
    return repos


def online_stores(wd: Workdir) -> list[Path]:
    """Every run's online store file, oldest run first (run ids sort by time)."""
    if not wd.runs.exists():
        return []
    return sorted(wd.runs.glob(f"*/materialize_features/*/data/{ONLINE_STORE}"))


def prune_online_stores(plan: Plan, base_dir: Path) -> list[Path]:
    """Remove online stores no published model reads, beyond the newest kept ones; the removed."""
    wd = Workdir(workdir(plan, base_dir))
    served = _served_repos(wd)
    others = [db for db in online_stores(wd) if db.parent.parent.resolve() not in served]
    keep = plan.targets.local.keep_online_stores
    doomed = others[: max(len(others) - keep, 0)]
    for db in doomed:
        db.unlink(missing_ok=True)
        shutil.rmtree(db.parent / "sources", ignore_errors=True)  # csv sources converted for Feast
    return doomed
