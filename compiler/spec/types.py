"""Typed scalar values of the spec: durations, cron strings, quantities, names, secret references."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

DURATION_RE = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class SpecModel(BaseModel):
    """Base for every spec model: mirrors the YAML exactly, unknown keys are errors."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )


def duration_seconds(text: str) -> float:
    """Seconds in a duration string like `30m` or `7d`."""
    match = DURATION_RE.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _check_duration(value: str) -> str:
    if not DURATION_RE.match(value):
        raise ValueError(
            f"'{value}' is not a duration; write a whole number and a unit: "
            "ms, s, m, h, d or w (e.g. '30m', '7d')"
        )
    return value


Duration = Annotated[
    str,
    AfterValidator(_check_duration),
    Field(
        json_schema_extra={"pattern": DURATION_RE.pattern, "examples": ["30s", "10m", "1h", "30d"]}
    ),
]

_CRON_ALIASES = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"}
_CRON_FIELDS = [
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    (
        "month",
        1,
        12,
        {
            m: i + 1
            for i, m in enumerate(
                ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
            )
        },
    ),
    (
        "day of week",
        0,
        7,
        {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
    ),
]


def _cron_value(token: str, lo: int, hi: int, names: dict[str, int], what: str) -> int:
    value = names.get(token.lower()) if not token.isdigit() else int(token)
    if value is None or not lo <= value <= hi:
        raise ValueError(f"cron {what} '{token}' is out of range {lo}-{hi}")
    return value


def _check_cron_field(text: str, what: str, lo: int, hi: int, names: dict[str, int]) -> None:
    for part in text.split(","):
        base, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            raise ValueError(f"cron {what} step '{step}' must be a positive whole number")
        if base == "*":
            continue
        start, dash, end = base.partition("-")
        a = _cron_value(start, lo, hi, names, what)
        if dash:
            b = _cron_value(end, lo, hi, names, what)
            if b < a:
                raise ValueError(f"cron {what} range '{base}' runs backwards")


def check_cron(value: str) -> str:
    """Validate a 5-field cron expression (or an @alias); raise ValueError with the bad field."""
    text = value.strip()
    if text in _CRON_ALIASES:
        return value
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(
            f"'{value}' is not a cron expression: it needs 5 fields "
            "(minute hour day-of-month month day-of-week), e.g. '0 3 * * 1'"
        )
    for token, (what, lo, hi, names) in zip(fields, _CRON_FIELDS, strict=True):
        if not re.fullmatch(r"[\w*,/\-]+", token):
            raise ValueError(f"cron {what} '{token}' has characters cron does not allow")
        _check_cron_field(token, what, lo, hi, names)
    return value


Cron = Annotated[
    str,
    AfterValidator(check_cron),
    Field(json_schema_extra={"examples": ["0 3 * * 1", "@daily", "*/15 * * * *"]}),
]

QUANTITY_RE = r"^([0-9]+(\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
Quantity = Annotated[
    str,
    StringConstraints(pattern=QUANTITY_RE),
    Field(json_schema_extra={"examples": ["2", "500m", "4Gi"]}),
]

# DNS-1123 label: what Kubernetes, SageMaker and MLflow all accept as a resource name.
NAME_RE = r"^[a-z]([a-z0-9-]{0,50}[a-z0-9])?$"
SystemName = Annotated[
    str,
    StringConstraints(pattern=NAME_RE),
    Field(json_schema_extra={"examples": ["churn", "fraud-scorer"]}),
]

# Names of sources, entities, views, fields, alerts: identifiers usable as columns and ids.
IDENT_RE = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
Identifier = Annotated[str, StringConstraints(pattern=IDENT_RE)]

Percentage = Annotated[float, Field(ge=0, le=100)]
Fraction = Annotated[float, Field(ge=0, le=1)]

Dtype = Literal["int32", "int64", "float32", "float64", "bool", "string"]


class EnvSecret(SpecModel):
    """A secret read from an environment variable at apply time."""

    env: str = Field(
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Name of the environment variable holding the secret.",
        examples=["ALERT_WEBHOOK_URL"],
    )


class NamedSecret(SpecModel):
    """A secret held by the platform's secret store (Kubernetes Secret, AWS Secrets Manager)."""

    secret: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,252}$",
        description="Name of the secret in the target platform's secret store.",
        examples=["ml/alert-webhook"],
    )


SecretReference = Annotated[
    EnvSecret | NamedSecret,
    Field(
        description="A reference to a secret, never its value: `{env: NAME}` or `{secret: name}`.",
        examples=[{"env": "ALERT_WEBHOOK_URL"}, {"secret": "ml/alert-webhook"}],
    ),
]


class RuleError(ValueError):
    """A cross-field rule broken at a sub-path of the model that owns the rule."""

    def __init__(self, subpath: tuple[str | int, ...], message: str, hint: str | None = None):
        super().__init__(message)
        self.subpath = subpath
        self.hint = hint
