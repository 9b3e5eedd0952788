"""specml.compiler: load, compose, validate, check and lower a spec into the IR (see README.md)."""

from specml.compiler.errors import Diagnostic, SpecError

__all__ = ["Diagnostic", "SpecError", "plan_file", "validate_file", "validate_text"]


def __getattr__(name: str):  # lazy: keep `import specml.compiler` cheap
    if name in ("validate_file", "validate_text", "plan_file", "validate_doc"):
        from specml.compiler import api

        return getattr(api, name)
    raise AttributeError(name)
