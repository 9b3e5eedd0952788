"""The target interface: every target is a `Target`; those that run a system are also
`OperableTarget`s, and the CLI reaches operations only through that protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
from specml.cli.common import operable
from specml.compiler.errors import TargetError
from specml.targets import get_target, target_names
from specml.targets.base import OperableTarget, Target

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name", target_names())
def test_every_target_is_a_target(name: str) -> None:
    assert isinstance(get_target(name), Target)


def test_the_local_target_operates() -> None:
    assert isinstance(get_target("local"), OperableTarget)


class _CompileOnly:
    name = "compile-only"
    extra = "none"

    def check(self, plan: object) -> list:
        return []

    def emit(self, plan: object, out_dir: Path) -> object:
        return None


def test_the_cli_refuses_to_operate_a_compile_only_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("specml.targets.get_target", lambda name: _CompileOnly())
    assert isinstance(_CompileOnly(), Target) and not isinstance(_CompileOnly(), OperableTarget)
    with pytest.raises(TargetError) as caught:
        operable("compile-only")
    d = caught.value.diagnostics[0]
    assert d.code == "usage" and "specml compile" in (d.hint or "")


def test_cli_and_diff_name_no_target_and_no_workdir_file() -> None:
    """Operations go through the protocol: no target hard-coded, no state file name copied."""
    for path in [*(ROOT / "cli").glob("*.py"), ROOT / "compiler" / "diff.py"]:
        text = path.read_text()
        assert "STATE_FILE" not in text and "sys.modules[" not in text, path
        assert 'target == "local"' not in text and "targets.local.target" not in text, path
        assert "from specml.cli.main import _" not in text, path
