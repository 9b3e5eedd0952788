"""The real yaml-language-server (what VS Code's YAML extension runs) against our generated schema.

The test installs the pinned server itself with npm (into ~/.cache/specml/, or $SPECML_LSP_CACHE;
never into the repository) on first use and reuses it offline after that; CI can cache that
folder. Skipped only when node or npm is missing. About 10 s with the server cached, plus the
npm install (about 6-8 s from the registry) the first time.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from specml.cli.authoring import TASKS, starter_spec

from .lsp import LspClient, cache_dir, ensure_server

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
SETTINGS = {
    "yaml": {
        "validate": True,
        "hover": True,
        "completion": True,
        "schemaStore": {"enable": False},  # offline: only the schema the modeline names
        "schemas": {},
    }
}

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are needed to run yaml-language-server (install Node.js 18+)",
)


@pytest.fixture(scope="module")
def server() -> Iterator[LspClient]:
    try:
        script = ensure_server()
    except Exception as exc:  # no cache and no registry: say so, do not hide it
        pytest.fail(f"could not install yaml-language-server with npm into {cache_dir()}: {exc}")
    client = LspClient(["node", str(script), "--stdio"], SETTINGS)
    client.initialize(ROOT)
    yield client
    client.close()


def _example_specs() -> list[Path]:
    return sorted((ROOT / "specs").glob("*.yaml")) + sorted(
        (ROOT / "specs" / "overlays").glob("*.yaml")
    )


@pytest.mark.parametrize("spec", _example_specs(), ids=lambda p: p.name)
def test_example_spec_has_no_editor_diagnostics(server: LspClient, spec: Path) -> None:
    assert spec.read_text().startswith("# yaml-language-server: $schema="), "modeline missing"
    assert server.diagnostics(server.open(spec)) == []


def test_misspelt_key_and_wrong_type_are_flagged_at_their_lines(server: LspClient) -> None:
    spec = FIXTURES / "misspelt_and_wrong_type.yaml"
    lines = spec.read_text().splitlines()
    found = server.diagnostics(server.open(spec))
    by_line = {d["range"]["start"]["line"]: d for d in found}
    epoch, lr = lines.index("    epoch: 20"), lines.index("    lr: fast")  # 0-based, as LSP counts
    assert set(by_line) == {epoch, lr}, found
    assert "epoch" in by_line[epoch]["message"] and "not allowed" in by_line[epoch]["message"]
    assert "epochs" in by_line[epoch]["data"]["properties"]  # what a quick fix would offer
    assert "number" in by_line[lr]["message"]
    assert by_line[lr]["range"]["start"]["character"] == lines[lr].index("fast")
    assert all(d["severity"] == 1 for d in found)


def test_hover_on_a_key_shows_the_model_description(server: LspClient) -> None:
    spec = ROOT / "specs" / "churn.yaml"
    lines = spec.read_text().splitlines()
    line = next(i for i, text in enumerate(lines) if text.strip().startswith("hyperparameters:"))
    column = lines[line].index("lr:")
    uri = server.open(spec)
    server.diagnostics(uri)
    hover = server.request(
        "textDocument/hover",
        {"textDocument": {"uri": uri}, "position": {"line": line, "character": column}},
    )
    assert hover is not None
    text = hover["contents"]["value"]
    assert "Learning rate." in text  # Field(description=...) on Hyperparameters.lr
    assert "0.001" in text  # its example


def test_completion_offers_missing_keys_with_their_descriptions(server: LspClient) -> None:
    text = (FIXTURES / "misspelt_and_wrong_type.yaml").read_text()
    text = text.replace("    epoch: 20\n    lr: fast\n", "    lr: 0.01\n    \n")
    line = text.splitlines().index("    ")
    uri = server.open(FIXTURES / "_completion_probe.yaml", text)  # in memory only
    server.diagnostics(uri)
    result = server.request(
        "textDocument/completion",
        {"textDocument": {"uri": uri}, "position": {"line": line, "character": 4}},
    )
    items = result["items"] if isinstance(result, dict) else result
    docs = {item["label"]: str(item.get("documentation", "")) for item in items}
    assert {"epochs", "batch_size", "optimizer", "weight_decay"} <= set(docs)
    assert "lr" not in docs  # already set
    assert "Training epochs." in docs["epochs"]


@pytest.mark.parametrize("task", TASKS)
def test_init_starter_is_clean_in_the_editor(server: LspClient, task: str) -> None:
    where = ROOT / "specs" / f"_starter_{task}.yaml"  # in memory only; its modeline is ../schemas
    text = starter_spec(task, where)
    assert text.startswith("# yaml-language-server: $schema=../schemas/specml.schema.json")
    assert server.diagnostics(server.open(where, text)) == []
