"""The SageMaker target's compile warnings: what the Plan asks that AWS does differently."""

from __future__ import annotations

from specml.compiler.errors import Diagnostic


def unsupported(
    message: str, path: tuple[str | int, ...], hint: str | None = None, code: str = "sagemaker_note"
) -> Diagnostic:
    """A warning `sagemaker: <message>` at the spec field `path` (stage `unsupported`)."""
    return Diagnostic(
        f"sagemaker: {message}",
        path=path,
        hint=hint,
        severity="warning",
        stage="unsupported",
        code=code,
    )
