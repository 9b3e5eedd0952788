"""compiler/load.py: YAML text -> SourceDoc with a position for every key and value."""

from __future__ import annotations

from pathlib import Path

import pytest
from specml.compiler.errors import LoadError
from specml.compiler.load import load_file, load_text

TEXT = """\
apiVersion: specml/v1
metadata:
  name: churn
training:
  hyperparameters: {lr: 0.001, epochs: 20}
  features: [a, b]
"""


def test_positions_of_keys_and_values_are_one_based() -> None:
    doc = load_text(TEXT, "spec.yaml")
    assert doc.data["training"]["hyperparameters"] == {"lr": 0.001, "epochs": 20}
    assert doc.locate(("metadata", "name")) == (3, 9)
    assert doc.locate(("metadata", "name"), key=True) == (3, 3)
    assert doc.locate(("training", "hyperparameters", "epochs")) == (5, 40)
    assert doc.locate(("training", "features", 1)) == (6, 17)


def test_an_unknown_path_falls_back_to_its_nearest_ancestor() -> None:
    doc = load_text(TEXT, "spec.yaml")
    assert doc.locate(("training", "hyperparameters", "nope")) == doc.locate(
        ("training", "hyperparameters")
    )


@pytest.mark.parametrize(
    ("text", "fragment", "line"),
    [
        ("a: [1, 2\n", "invalid YAML", 2),
        ("a: 1\n\tb: 2\n", "tab character", 2),
        ("a: 1\n---\nb: 2\n", "more than one", 2),
    ],
)
def test_broken_yaml_is_a_load_error_at_its_line(text: str, fragment: str, line: int) -> None:
    with pytest.raises(LoadError) as caught:
        load_text(text, "broken.yaml")
    d = caught.value.diagnostics[0]
    assert fragment in d.message and d.file == "broken.yaml" and d.line == line


def test_files_that_are_not_specs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="file not found"):
        load_file(tmp_path / "absent.yaml")
    with pytest.raises(LoadError, match="folder"):
        load_file(tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(LoadError, match="not UTF-8"):
        load_file(binary)


def test_empty_text_loads_as_nothing() -> None:
    assert load_text("", "empty.yaml").data is None
