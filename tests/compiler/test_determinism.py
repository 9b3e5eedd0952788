"""Plans are deterministic: same bytes across runs and processes, independent of YAML key order."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from specml.compiler.api import plan_file
from specml.compiler.load import load_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "specs").glob("*.yaml"))
IDS = [p.stem for p in EXAMPLES]


# Mappings whose order means something: views and their fields are the model's input order.
ORDERED = ("views", "fields")


def _reorder(node: Any, rng: random.Random, key: Any = None) -> Any:
    """The same document with every mapping's keys in a new (seeded random) order, except the
    mappings whose order is the model's input order."""
    if isinstance(node, dict):
        keys = list(node)
        original = list(keys)
        while key not in ORDERED and len(keys) > 1 and keys == original:
            rng.shuffle(keys)
        return {k: _reorder(node[k], rng, k) for k in keys}
    if isinstance(node, list):
        return [_reorder(v, rng) for v in node]
    return node


def _key_orders(node: Any) -> list[list[str]]:
    if isinstance(node, dict):
        return [list(node)] + [o for v in node.values() for o in _key_orders(v)]
    if isinstance(node, list):
        return [o for v in node for o in _key_orders(v)]
    return []


@pytest.mark.parametrize("spec", EXAMPLES, ids=IDS)
def test_plan_json_is_identical_across_runs(spec: Path) -> None:
    assert plan_file(spec).to_json() == plan_file(spec).to_json()


@pytest.mark.parametrize("spec", EXAMPLES, ids=IDS)
@pytest.mark.parametrize("seed", [1, 2])
def test_plan_is_independent_of_key_order(spec: Path, seed: int, tmp_path: Path) -> None:
    data = load_file(spec).data
    shuffled = _reorder(data, random.Random(seed))
    assert _key_orders(shuffled) != _key_orders(data)  # the copy really is reordered
    copy = tmp_path / spec.name
    copy.write_text(yaml.safe_dump(shuffled, sort_keys=False, allow_unicode=True))
    assert load_file(copy).data == data  # same document, different order
    original, reordered = plan_file(spec), plan_file(copy)
    assert reordered.spec_hash == original.spec_hash
    assert reordered.to_json() == original.to_json()


def test_spec_hash_changes_when_a_value_changes() -> None:
    spec = ROOT / "specs" / "churn.yaml"
    base = plan_file(spec).spec_hash
    hashes = {
        base,
        plan_file(spec, overrides=["training.seed=8"]).spec_hash,
        plan_file(spec, overrides=["metadata.description=other"]).spec_hash,
        plan_file(spec, overrides=["features.views.usage.ttl=8d"]).spec_hash,
    }
    assert len(hashes) == 4
    assert base.startswith("sha256:") and len(base) == len("sha256:") + 64


def test_plan_json_is_identical_across_processes_with_different_hash_seeds() -> None:
    script = (
        "import json, sys\n"
        "from specml.compiler.api import plan_file\n"
        "print(json.dumps([plan_file(p).to_json() for p in sys.argv[1:]]))\n"
    )
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script, *map(str, EXAMPLES)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
            check=True,
        )
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]
    assert outputs[0] == [plan_file(p).to_json() for p in EXAMPLES]


def test_field_order_is_the_input_order_and_changes_the_hash(tmp_path: Path) -> None:
    """Fields in the spec's order (not sorted) are the model's inputs; reordering them is a
    different model, so a different spec_hash."""
    spec = ROOT / "specs" / "churn.yaml"
    data = load_file(spec).data
    view = data["features"]["views"]["customer_stats"]
    written = list(view["fields"])
    plan = plan_file(spec)
    inputs = [f.field for f in plan.training.features if f.view_id == "customer_stats"]
    assert inputs == written and written != sorted(written)
    view["fields"] = dict(reversed(list(view["fields"].items())))
    copy = tmp_path / spec.name
    copy.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    reordered = plan_file(copy)
    again = [f.field for f in reordered.training.features if f.view_id == "customer_stats"]
    assert again == written[::-1]
    assert reordered.spec_hash != plan.spec_hash
    ir_fields = {v.id: [f.name for f in v.fields] for v in reordered.features.views}
    assert ir_fields["customer_stats"] == written[::-1]
