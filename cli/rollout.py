"""`specml rollout status|promote|rollback|run SPEC`: drive the local target's rollout."""

from __future__ import annotations

import typer

rollout_app = typer.Typer(
    name="rollout",
    help="Show or drive the rollout of a challenger against the champion (local target).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
