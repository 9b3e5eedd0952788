"""Every spec in tests/specs/invalid/ is rejected with the diagnostics its sidecar expects.

Each `NAME.yaml` has a `NAME.expected.json` beside it: a list of
`{"line", "col", "path", "message_fragment", "hint_fragment"?}`; `line`/`col` null means the
position is not part of the contract (e.g. where an alias bomb is cut off).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from specml.compiler.api import validate_file
from specml.compiler.errors import Diagnostic, SpecError
from typer.testing import CliRunner

INVALID = Path(__file__).resolve().parents[1] / "specs" / "invalid"
CORPUS = sorted(INVALID.glob("*.yaml"))
runner = CliRunner()


def _expected(spec: Path) -> list[dict[str, Any]]:
    return json.loads(spec.with_name(spec.stem + ".expected.json").read_text())


def _matches(d: Diagnostic, want: dict[str, Any]) -> bool:
    if want["line"] is not None and (d.line, d.col) != (want["line"], want["col"]):
        return False
    hint = want.get("hint_fragment")
    return (
        d.severity == "error"
        and d.yaml_path == want["path"]
        and want["message_fragment"] in d.message
        and (hint is None or hint in (d.hint or ""))
    )


def _rejection(spec: Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        validate_file(spec)
    return info.value


def test_corpus_is_big_enough_and_every_spec_has_a_sidecar() -> None:
    assert len(CORPUS) >= 35
    missing = [s.name for s in CORPUS if not s.with_name(s.stem + ".expected.json").exists()]
    assert missing == []
    orphans = [
        j.name
        for j in INVALID.glob("*.expected.json")
        if not j.with_name(j.name.removesuffix(".expected.json") + ".yaml").exists()
    ]
    assert orphans == []


@pytest.mark.parametrize("spec", CORPUS, ids=[s.stem for s in CORPUS])
def test_invalid_spec_reports_expected_diagnostics(spec: Path) -> None:
    error = _rejection(spec)
    assert error.errors, "rejected without any error-severity diagnostic"
    for d in error.diagnostics:
        assert d.file == str(spec), f"diagnostic points at {d.file}, not the spec"
    rendered = "\n".join(
        f"  {d.line}:{d.col} {d.yaml_path}: {d.message} (hint: {d.hint})" for d in error.diagnostics
    )
    for want in _expected(spec):
        assert any(_matches(d, want) for d in error.diagnostics), (
            f"expected {want}\nbut got:\n{rendered}"
        )


@pytest.mark.parametrize("spec", CORPUS, ids=[s.stem for s in CORPUS])
def test_cli_validate_rejects_with_location(spec: Path) -> None:
    from specml.cli.main import app

    result = runner.invoke(app, ["validate", str(spec)])
    output = result.output
    assert result.exit_code == 1, output
    assert "Traceback" not in output
    assert "internal error" not in output
    for want in _expected(spec):
        where = str(spec) if want["line"] is None else f"{spec}:{want['line']}:{want['col']}"
        assert where in output, f"{where} not in CLI output:\n{output}"


def test_cli_json_format_lists_the_same_diagnostics() -> None:
    from specml.cli.main import app

    spec = INVALID / "many_errors_reported_together.yaml"
    result = runner.invoke(app, ["validate", str(spec), "--format", "json"])
    assert result.exit_code == 1
    found = {(d.line, d.col, d.yaml_path) for d in _rejection(spec).errors}
    text = result.output
    payload = json.loads(text[text.index("{") :])
    listed = {
        (d["line"], d["col"], d["path"])
        for d in _walk_diagnostics(payload)
        if d.get("severity") == "error"
    }
    assert found <= listed


def _walk_diagnostics(node: Any) -> list[dict[str, Any]]:
    """Every dict that looks like a serialised Diagnostic, wherever the JSON report nests it."""
    if isinstance(node, dict):
        own = [node] if {"line", "col", "path", "message"} <= node.keys() else []
        return own + [d for v in node.values() for d in _walk_diagnostics(v)]
    if isinstance(node, list):
        return [d for v in node for d in _walk_diagnostics(v)]
    return []


def test_errors_come_in_file_order() -> None:
    error = _rejection(INVALID / "many_errors_reported_together.yaml")
    lines = [d.line or 0 for d in error.errors]
    assert lines == sorted(lines) and len(lines) == 3


def test_unknown_keys_get_did_you_mean_at_every_depth() -> None:
    """Misspelt keys at depth 1, 3, 4 and 5 all get a suggestion naming the real key."""
    depths = {}
    for name in (
        "misspelt_top_level_key",
        "misspelt_hyperparameter",
        "misspelt_view_key",
        "misspelt_batching_key",
        "misspelt_sagemaker_key",
    ):
        for d in _rejection(INVALID / f"{name}.yaml").errors:
            if d.code == "extra_forbidden":
                assert d.hint and re.search(r"did you mean '\w+'\?", d.hint)
                depths[len(d.path)] = name
    assert {1, 3, 4} <= set(depths)
