"""`specml monitor SPEC` and `specml labels SPEC FILE`: drift, alerts and retraining triggers."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the monitoring commands to the main app (imports stay lazy: validate starts fast)."""
