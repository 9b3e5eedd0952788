"""compiler/check.py: cross-reference and semantic rules on a spec that has a valid shape."""

from __future__ import annotations

from pathlib import Path

import pytest
from specml.compiler.api import validate_text
from specml.compiler.check import check_spec
from specml.compiler.compose import compose
from specml.compiler.errors import SpecValidationError
from specml.compiler.load import load_text
from specml.compiler.validate import validate_document

ROOT = Path(__file__).resolve().parents[2]
CHURN = (ROOT / "specs" / "churn.yaml").read_text()


def _check(text: str) -> list:
    composed = compose(load_text(text, "spec.yaml"), (), ())
    spec, problems = validate_document(composed)
    assert spec is not None, problems
    return check_spec(spec, composed)


def test_the_examples_pass_every_check() -> None:
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        assert not [d for d in _check(path.read_text()) if d.severity == "error"], path


@pytest.mark.parametrize(
    ("edit", "path", "fragment"),
    [
        (
            ("source: customers", "source: customerz"),
            "features.views.customer_stats.source",
            "customers",
        ),
        (("min: {roc_auc:", "min: {roc_aucc:"), "training.gates.min.roc_aucc", "roc_auc"),
    ],
)
def test_a_broken_reference_names_the_field_and_suggests_the_fix(
    edit: tuple[str, str], path: str, fragment: str
) -> None:
    text = CHURN.replace(*edit, 1)
    assert text != CHURN
    with pytest.raises(SpecValidationError) as caught:
        validate_text(text, "spec.yaml")
    found = [d for d in caught.value.diagnostics if d.yaml_path == path]
    assert found and found[0].line is not None and fragment in (found[0].hint or "")


def test_check_results_come_in_file_order() -> None:
    text = CHURN.replace("source: customers", "source: customerz", 1).replace(
        "source: usage", "source: usagez", 1
    )
    composed = compose(load_text(text, "spec.yaml"), (), ())
    spec, _ = validate_document(composed)
    assert spec is not None
    lines = [d.line or 0 for d in check_spec(spec, composed)]
    assert len(lines) >= 2 and lines == sorted(lines)


def test_a_removed_bad_value_adds_no_error_of_its_own() -> None:
    # the only searched name is unknown: dropping it to look further must not report the emptied
    # `space` as a second problem the author never made
    overrides = ["+training.tuning={space: {model.nope: {low: 1, high: 2}}}"]
    with pytest.raises(SpecValidationError) as caught:
        validate_text(CHURN, "spec.yaml", overrides)
    errors = [d for d in caught.value.diagnostics if d.severity == "error"]
    assert [d.yaml_path for d in errors] == ["training.tuning.space.model.nope"]
