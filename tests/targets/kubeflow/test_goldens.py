"""Golden files for every example spec with kubeflow settings, and byte-identical output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubeflow_testlib import GOLDEN_SPECS, GOLDENS, ROOT, bare_plan, plan_for, rendered
from specml.compiler.errors import TargetError
from specml.targets.kubeflow.pipeline import normalise_versions
from specml.targets.kubeflow.target import KubeflowTarget


@pytest.mark.parametrize("spec", GOLDEN_SPECS)
def test_output_matches_goldens(spec: str, request: pytest.FixtureRequest) -> None:
    files = {rel: normalise_versions(text) for rel, text in rendered(spec).items()}
    golden_dir = GOLDENS / spec
    if request.config.getoption("--update-goldens"):
        for old in sorted(golden_dir.rglob("*")):
            if old.is_file():
                old.unlink()
        for rel, text in files.items():
            (golden_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (golden_dir / rel).write_text(text, encoding="utf-8")
    expected = {
        p.relative_to(golden_dir).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(golden_dir.rglob("*"))
        if p.is_file()
    }
    assert sorted(files) == sorted(expected), "file set changed: run pytest --update-goldens"
    for rel, text in files.items():
        assert text == expected[rel], f"{spec}/{rel} differs from its golden (--update-goldens)"


def test_emit_writes_the_rendered_files(tmp_path: Path) -> None:
    plan = plan_for("fraud")
    stale = tmp_path / "rollout" / "step-09-traffic-7.yaml"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    result = KubeflowTarget().emit(plan, tmp_path)
    assert not stale.exists(), "a rollout manifest from an older compile must not linger"
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(result.files) == sorted(rendered("fraud"))
    for rel in result.files:
        assert (tmp_path / rel).read_text() == rendered("fraud")[rel]
    assert any("shadow" in note for note in result.notes)


def test_output_is_byte_identical_across_processes() -> None:
    """Another interpreter (other hash seed) compiles exactly the same bytes."""
    code = (
        "import hashlib, sys\n"
        "from specml.compiler.api import plan_file\n"
        "from specml.targets.kubeflow.target import KubeflowTarget\n"
        "files = KubeflowTarget().render(plan_file(sys.argv[1]))\n"
        "for rel, text in files.items():\n"
        "    print(rel, hashlib.sha256(text.encode()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "specs" / "churn.yaml")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
    ).stdout
    import hashlib

    here = "".join(
        f"{rel} {hashlib.sha256(text.encode()).hexdigest()}\n"
        for rel, text in rendered("churn").items()
    )
    assert out == here


def test_demand_without_kubeflow_settings_is_a_clear_error(tmp_path: Path) -> None:
    plan = bare_plan("demand")  # the spec as written has no targets.kubeflow section
    diags = KubeflowTarget().check(plan)
    assert [d.code for d in diags] == ["kubeflow_image_required"]
    assert diags[0].severity == "error"
    assert diags[0].yaml_path == "targets.kubeflow.image"
    assert "targets:" in (diags[0].hint or "")
    with pytest.raises(TargetError) as err:
        KubeflowTarget().emit(plan, tmp_path)
    assert "targets.kubeflow.image" in str(err.value)
    assert not any(tmp_path.iterdir()), "nothing is written when the target cannot compile"
