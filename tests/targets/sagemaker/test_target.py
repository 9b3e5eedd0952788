"""The SageMaker target: goldens per example spec, determinism, check() and the error paths."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from sagemaker_testlib import GOLDEN_SPECS, plan_for
from specml.compiler.errors import TargetError
from specml.targets import get_target
from specml.targets.sagemaker.target import FILES, SagemakerTarget

GOLDENS = Path(__file__).parent / "goldens"
# plan.json is the compiler's output (checked against Plan.to_json below), not this target's.
GOLDEN_FILES = tuple(f for f in FILES if f != "plan.json")


def normalise(name: str, text: str) -> str:
    """Strip what legitimately varies between releases: the specml version and spec hashes."""
    text = re.sub(r"sha256:[0-9a-f]{64}", "sha256:<hash>", text)
    if name == "requirements.txt":
        text = re.sub(r"==\S+", "==<version>", text)
    return text


@pytest.mark.parametrize("spec", GOLDEN_SPECS)
def test_emit_matches_goldens(spec: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    result = SagemakerTarget().emit(plan_for(spec), tmp_path)
    assert result.files == FILES
    assert (tmp_path / "plan.json").read_text() == plan_for(spec).to_json()
    update = request.config.getoption("--update-goldens")
    for name in GOLDEN_FILES:
        got = normalise(name, (tmp_path / name).read_text())
        golden = GOLDENS / spec / name
        if update:
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(got)
        assert golden.exists(), f"missing golden {golden}; run pytest with --update-goldens"
        assert got == golden.read_text(), f"{spec}/{name} differs from its golden"


@pytest.mark.parametrize("spec", GOLDEN_SPECS)
def test_two_emits_are_byte_identical(spec: str, tmp_path: Path) -> None:
    target = SagemakerTarget()
    target.emit(plan_for(spec), tmp_path / "a")
    target.emit(plan_for(spec), tmp_path / "b")
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert str(tmp_path) not in "".join((tmp_path / "a" / n).read_text() for n in FILES)


def test_main_py_is_a_thin_call_into_the_installed_program(tmp_path: Path) -> None:
    SagemakerTarget().emit(plan_for("churn"), tmp_path)
    source = (tmp_path / "__main__.py").read_text()
    tree = ast.parse(source)
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert ("specml.targets.sagemaker.program", "build") in {
        (n.module, a.name) for n in imports for a in n.names
    }
    assert len(source.splitlines()) < 15
    pulumi_yaml = (tmp_path / "Pulumi.yaml").read_text()
    assert "name: python" in pulumi_yaml and "name: specml-churn" in pulumi_yaml


def test_registry_returns_the_sagemaker_target() -> None:
    target = get_target("sagemaker")
    assert isinstance(target, SagemakerTarget)
    assert (target.name, target.extra) == ("sagemaker", "sagemaker")


def _without_sagemaker():
    plan = plan_for("churn")
    return plan.model_copy(update={"targets": plan.targets.model_copy(update={"sagemaker": None})})


def test_plan_without_sagemaker_settings_is_a_target_error(tmp_path: Path) -> None:
    plan = _without_sagemaker()
    with pytest.raises(TargetError) as info:
        SagemakerTarget().emit(plan, tmp_path)
    (diag,) = info.value.diagnostics
    assert diag.yaml_path == "targets.sagemaker" and "region" in (diag.hint or "")
    assert not list(tmp_path.iterdir())
    (issue,) = SagemakerTarget().check(plan)
    assert issue.severity == "error" and issue.code == "sagemaker_missing_settings"


def test_program_refuses_a_plan_without_settings_with_the_same_error() -> None:
    from sagemaker_testlib import run_program

    with pytest.raises(Exception, match="no targets.sagemaker settings"):
        run_program(_without_sagemaker().to_json())


def test_check_names_every_approximation_and_readme_lists_them(tmp_path: Path) -> None:
    issues = SagemakerTarget().check(plan_for("churn"))
    assert all(d.severity == "warning" for d in issues)
    paths = {d.yaml_path for d in issues}
    assert {
        "rollout.steps[2]",
        "alerts.accuracy",
        "retraining.triggers[2]",  # new_rows: nothing in AWS sees rows arrive
        "retraining.cooldown",  # EventBridge rules have no cooldown
        "targets.sagemaker.image",
        "targets.sagemaker.role",
    } <= paths
    SagemakerTarget().emit(plan_for("churn"), tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert "the 20% step (hold 3600 s) is dropped" in readme
    assert "pulumi config set image <value>" in readme


def test_composite_join_keys_are_an_error() -> None:
    plan = plan_for("churn")
    entity = plan.features.entities[0].model_copy(update={"join_keys": ("customer_id", "region")})
    features = plan.features.model_copy(update={"entities": (entity,)})
    plan = plan.model_copy(update={"features": features})
    errors = [d for d in SagemakerTarget().check(plan) if d.severity == "error"]
    assert [d.code for d in errors] == ["sagemaker_composite_key"]
    with pytest.raises(TargetError):
        SagemakerTarget().emit(plan, Path("/nonexistent/never-written"))


def test_feature_store_limits_are_errors_naming_the_field() -> None:
    plan = plan_for("churn")
    entity = plan.features.entities[0].model_copy(update={"dtype": "float64"})
    view = plan.features.views[0]
    field = view.fields[0].model_copy(update={"name": "write_time"})
    view = view.model_copy(update={"fields": (field, *view.fields[1:])})
    features = plan.features.model_copy(
        update={"entities": (entity,), "views": (view, *plan.features.views[1:])}
    )
    errors = [
        d
        for d in SagemakerTarget().check(plan.model_copy(update={"features": features}))
        if d.severity == "error"
    ]
    assert {(d.code, d.yaml_path) for d in errors} == {
        ("sagemaker_fractional_key", "features.entities.customer.dtype"),
        ("sagemaker_reserved_feature_name", f"features.views.{view.id}.fields.write_time"),
    }
