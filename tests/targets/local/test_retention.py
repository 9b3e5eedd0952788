"""Online-store retention: the champion's and challenger's stores stay, older ones go."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from specml.compiler.api import plan_file
from specml.runtime.layout import Workdir
from specml.targets.local.retention import online_stores, prune_online_stores

ROOT = Path(__file__).resolve().parents[3]


def _store(wd: Workdir, run_id: str) -> Path:
    db = wd.run(run_id) / "materialize_features" / "feature_repo" / "data" / "online_store.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"sqlite")
    (db.parent / "sources").mkdir()
    return db


def _publish(wd: Workdir, slot: str, db: Path) -> None:
    folder = wd.slot(slot)
    folder.mkdir(parents=True)
    repo = db.parent.parent
    (folder / "serving.json").write_text(json.dumps({"feature_repo": str(repo)}))


@pytest.mark.parametrize("keep", [0, 1, 3])
def test_keeps_champion_challenger_and_the_newest_others(tmp_path: Path, keep: int) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text((ROOT / "specs" / "churn.yaml").read_text())
    overrides = [f"+targets.local.keep_online_stores={keep}"]
    plan = plan_file(spec, overrides=overrides)
    assert plan.targets.local.keep_online_stores == keep
    wd = Workdir(tmp_path / plan.targets.local.workdir)
    runs = [f"2026010{i}T000000Z-aaaaaa" for i in range(1, 6)]
    stores = {r: _store(wd, r) for r in runs}
    _publish(wd, "current", stores[runs[1]])  # the champion: an old run
    _publish(wd, "challenger", stores[runs[3]])
    removed = prune_online_stores(plan, tmp_path)
    others = [runs[0], runs[2], runs[4]]  # oldest first
    gone = others[: max(len(others) - keep, 0)]
    assert sorted(removed) == sorted(stores[r] for r in gone)
    left = {p.resolve() for p in online_stores(wd)}
    assert stores[runs[1]].resolve() in left and stores[runs[3]].resolve() in left
    assert left == {stores[r].resolve() for r in runs if r not in gone}
    assert all(not (stores[r].parent / "sources").exists() for r in gone)


def test_default_keeps_one_older_store(tmp_path: Path) -> None:
    plan = plan_file(ROOT / "specs" / "churn.yaml")
    assert plan.targets.local.keep_online_stores == 1
