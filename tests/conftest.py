"""Shared pytest options: `--update-goldens` regenerates golden files instead of comparing."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register `--update-goldens` (default off); tests read it via request.config.getoption."""
    parser.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="rewrite golden files from the current output instead of comparing against them",
    )


@pytest.fixture(autouse=True)
def _no_shared_metrics_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing feast sets PROMETHEUS_MULTIPROC_DIR in this process; a server process started
    by a test would inherit it and sum its counters with every other server writing there.
    Servers started here get a clean environment, as a user's shell gives them."""
    for name in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):
        monkeypatch.delenv(name, raising=False)
