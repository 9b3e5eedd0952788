"""Authoring help behind the CLI: `specml init` starter specs, `specml explain PATH`, `specml docs`,
and the `plan --target` diff view. The CLI commands are thin shells over these functions.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from specml.cli.common import usage_error
from specml.compiler.errors import SpecError, did_you_mean

TASKS = ("binary_classification", "multiclass_classification", "regression")

_HEAD = """\
# yaml-language-server: $schema={schema}
# A starter specml spec ({task}). Every key is documented: `specml explain KEY`
# (e.g. `specml explain rollout.steps`) or docs/reference.md. Next steps:
#   specml validate {file}
#   specml demo-data {file}        # synthetic data for the sources below
#   specml apply {file} --target local
apiVersion: specml/v1
kind: MLSystem
metadata:
  name: {name}                    # lowercase letters, digits and '-': names every resource
  owner: my-team                  # who is paged by the alerts
  description: {description}

data:
  sources:                        # named tables of time-stamped rows (paths relative to this file)
    events: {{format: parquet, path: data/{name}/events.parquet, timestamp: event_ts}}

features:
  entities:                       # what the features describe; join_keys identify one of them
    {entity}: {{join_keys: [{entity}_id], dtype: int64}}
  views:                          # feature views: fields computed from one source for one entity
    {entity}_stats:
      entity: {entity}
      source: events
      ttl: 30d                    # how long a value stays valid for point-in-time joins
      fields: {{{fields}}}
  label: {{source: events, field: {label}}}

training:
  task: {task}
{task_lines}\
  model: {{type: mlp, hidden: [64, 32], dropout: 0.1}}   # or {{type: linear}}
  hyperparameters: {{lr: 1.0e-3, epochs: 20, batch_size: 256}}
  split: {{method: time, holdout: 0.2}}   # time: the newest rows are the holdout
  seed: 7
  gates:                          # a model failing a gate is never registered
{gates}
serving:
  slo: {{p95_latency_ms: 50, error_rate: 0.001}}
  batching: {{max_batch_size: 64, max_delay_ms: 2}}
  replicas: {{min: 1, max: 2}}

rollout:                          # shadow first, then a canary that ends at 100% traffic
  strategy: canary
  steps:
    - shadow: 10m
    - {{traffic: 10, hold: 30m}}
    - traffic: 100
  rollback_when: [slo_breach, {{alert: feature_drift}}]

alerts:
  feature_drift: {{metric: psi, on: features, warn: 0.1, critical: 0.2, action: retrain}}
  slow: {{metric: p95_latency_ms, critical: 200, action: rollback}}

retraining:
  triggers: [{{schedule: "0 3 * * 1"}}, {{alert: feature_drift}}]

targets:
  local: {{workdir: .specml/{name}}}
"""

_TASKS: dict[str, dict[str, str]] = {
    "binary_classification": {
        "name": "churn",
        "description": "Predicts which customers will cancel in the next 30 days.",
        "entity": "customer",
        "fields": "tenure_months: int64, monthly_spend: float32, support_calls_30d: int64",
        "label": "churned",
        "task_lines": "",
        "gates": "    min: {roc_auc: 0.75}\n    must_beat_production: {metric: roc_auc, by: 0.005}\n",
    },
    "multiclass_classification": {
        "name": "ticket-routing",
        "description": "Routes support tickets to one of five queues.",
        "entity": "ticket",
        "fields": "length_chars: int64, attachments: int64, customer_tier: string, channel: string",
        "label": "queue, classes: [billing, technical, shipping, returns, other]",
        "task_lines": "  num_classes: 5                # as many as label.classes\n",
        "gates": "    min: {accuracy: 0.6, macro_f1: 0.5}\n",
    },
    "regression": {
        "name": "demand",
        "description": "Forecasts next-day unit sales per store.",
        "entity": "store",
        "fields": "sales_lag_1d: float64, sales_lag_7d: float64, promo_share: float32",
        "label": "units_sold",
        "task_lines": "",
        "gates": "    max: {rmse: 25.0}         # lower-is-better metrics go under max\n",
    },
}


def _find_schema(start: Path) -> Path | None:
    """The nearest schemas/specml.schema.json at or above `start`, then under the working folder."""
    for folder in (start, *start.parents, Path.cwd()):
        candidate = folder / "schemas" / "specml.schema.json"
        if candidate.is_file():
            return candidate
    return None


def system_name(file: Path) -> str | None:
    """A system name from a spec file name: `specs/My Churn_v2.yaml` -> `my-churn-v2`,
    `2024_churn.yaml` -> `churn`; None when no valid name is left."""
    from specml.compiler.spec.types import NAME_RE

    words = re.sub(r"[^a-z0-9]+", "-", file.stem.lower())
    name = re.sub(r"^[^a-z]+", "", words)[:52].rstrip("-")  # starts with a letter, fits 52
    return name if re.fullmatch(NAME_RE, name) else None


def starter_spec(task: str, file: Path | None = None, schema: Path | None = None) -> str:
    """A commented starter spec for a task; its modeline points at the schema relative to `file`."""
    if task not in _TASKS:
        guess = did_you_mean(task, TASKS)
        raise usage_error(
            f"unknown task '{task}'",
            f"did you mean '{guess}'?" if guess else f"one of: {', '.join(TASKS)}",
        )
    where = file.resolve().parent if file else Path.cwd()
    found = schema or _find_schema(where)
    schema = found or Path.cwd() / "schemas" / "specml.schema.json"
    modeline = Path(os.path.relpath(schema.resolve(), where)).as_posix()
    shown = str(file) if file else "spec.yaml"
    fields = dict(_TASKS[task])
    name = system_name(file) if file is not None else None
    if name is not None:  # its own system and workdir, not an example's
        fields["name"] = name
    text = _HEAD.format(schema=modeline, task=task, file=shown, **fields)
    if found is None:  # the modeline names a schema that is not there yet: say how to get it
        first, rest = text.split("\n", 1)
        text = (
            f"{first}\n# (for editor completion, write that schema once: `specml schema`)\n{rest}"
        )
    return text


def write_starter(task: str, output: Path | None, force: bool = False) -> str:
    """Write a starter spec to OUTPUT (or return it for stdout); refuse to overwrite without force."""
    text = starter_spec(task, output)
    if output is not None:
        if output.exists() and not force:
            raise usage_error(
                f"{output} already exists", "pass --force to overwrite it, or pick another -o"
            )
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    return text


def _segments(path: str) -> list[str]:
    """`rollout.steps[0].traffic` -> ['rollout', 'steps', 'traffic']; list indexes are dropped."""
    cleaned = re.sub(r"\[[^\]]*\]", "", path.strip())
    return [s for s in cleaned.split(".") if s]


def _match_cost(pattern: list[str], given: list[str]) -> int | None:
    """None if `given` does not name `pattern`; else how many `<name>` wildcards it used."""
    if len(pattern) != len(given):
        return None
    cost = 0
    for want, got in zip(pattern, given, strict=True):
        if want == "<name>":
            cost += got != "<name>"
        elif want != got:
            return None
    return cost


def lookup(path: str) -> list[Any]:
    """The reference entries (FieldDoc) a user path names; raise a usage error with did-you-mean."""
    from specml.compiler.docs import all_fields

    fields = all_fields()
    given = _segments(path)
    scored = [(c, f) for f in fields if (c := _match_cost(_segments(f.path), given)) is not None]
    if scored and given:
        best = min(c for c, _ in scored)
        return [f for c, f in scored if c == best]
    guess = _closest_path(given, fields)
    hint = (
        f"did you mean '{guess}'?"
        if guess
        else "see docs/reference.md, or `specml explain training`"
    )
    raise usage_error(f"no spec field at '{path}'", hint)


def _closest_path(given: list[str], fields: list[Any]) -> str | None:
    """A did-you-mean for a path: the whole path, else the last key under the same parent."""
    if not given:
        return None
    known = sorted({".".join(_segments(f.path)).replace("<name>", "NAME"): f for f in fields})
    whole = did_you_mean(".".join(given), known, cutoff=0.85)
    if whole:
        return whole
    siblings = [f for f in fields if _match_cost(_segments(f.path)[:-1], given[:-1]) is not None]
    for pool in (siblings, fields):
        last = did_you_mean(given[-1], {f.key for f in pool})
        if last:
            parents = [f for f in pool if f.key == last]
            return ".".join(_segments(parents[0].path)).replace("<name>", "NAME")
    return did_you_mean(".".join(given), known)


def explain_text(path: str) -> str:
    """Type, default, required, description and examples of the field at PATH, plus its sub-keys."""
    from specml.compiler.docs import _yaml_flow, sections

    entries = lookup(path)
    by_path: dict[str, list[Any]] = {}
    for s in sections():
        by_path.setdefault(s.path, []).append(s)
    out: list[str] = []
    for f in entries:
        title = f.path + (f"  (in {f.variant})" if f.variant else "")
        out += [
            title,
            "  type:        " + f.type,
            "  required:    " + ("yes" if f.required else "no"),
        ]
        if f.default is not None:
            out.append("  default:     " + f.default)
        out.append("  description: " + (f.description or "-"))
        for example in f.examples:
            out.append(
                "  example:     " + (example if isinstance(example, str) else _yaml_flow(example))
            )
        for sub in by_path.get(f.section or "", []) if f.section else []:
            label = f" ({sub.variant})" if sub.variant else ""
            out.append(f"  keys of {sub.path}{label}: " + ", ".join(x.key for x in sub.fields))
        out.append("")
    return "\n".join(out)


def explain_json(path: str) -> str:
    """The entries for PATH as JSON (for editors and scripts)."""
    entries = lookup(path)
    return (
        json.dumps(
            [
                {
                    "path": f.path,
                    "type": f.type,
                    "required": f.required,
                    "default": f.default,
                    "description": f.description,
                    "examples": list(f.examples),
                    "variant": f.variant,
                }
                for f in entries
            ],
            indent=2,
            default=str,
        )
        + "\n"
    )


def show_plan_diff(
    reporter: Any, target: Any, plan: Any, base_dir: Path, against: Path | None
) -> None:
    """Diff the Plan against the target's last recorded Plan and report it (human or JSON):
    `--against DIR` (a compiled tree), else what an `OperableTarget` recorded at its last apply."""
    from specml.compiler.diff import diff_plans, read_recorded_plan, recorded_plan_in, render
    from specml.targets.base import OperableTarget

    operable = isinstance(target, OperableTarget)
    if against is not None:
        where: Path | None = recorded_plan_in(against)
    else:
        where = target.recorded_plan(plan, base_dir) if operable else None
    try:
        previous = read_recorded_plan(where) if where is not None else None
    except (
        SpecError
    ) as exc:  # an unreadable record must not block planning: warn, diff from scratch
        reporter.diagnostics([replace(d, severity="warning") for d in exc.diagnostics])
        previous = None
    diff = diff_plans(previous, plan, str(where) if previous is not None else None)
    notes = _target_notes(target, plan, base_dir) if against is None and operable else []
    if reporter.fmt == "json":
        reporter.document.update(
            {
                "target": target.name,
                **diff.to_json(),
                "target_notes": notes,
                "up_to_date": previous is not None and diff.empty and not notes,
            }
        )
        return
    if reporter.fmt != "human":
        return
    for line in render(diff, target.name, pending=notes):
        reporter.out.print(line)
    if where is None:
        reporter.note(
            f"hint: compare with a compiled tree: specml plan SPEC --target {target.name} "
            f"--against DIR (DIR from `specml compile --target {target.name} -o DIR`)"
        )
    elif previous is None:
        reporter.note(f"(nothing recorded at {where})")


def _target_notes(target: Any, plan: Any, base_dir: Path) -> list[str]:
    """What a target says beyond the spec diff (the local one: data changed, last apply failed)."""
    lines = target.plan_changes(plan, base_dir) or []
    # its own spec diff and first-apply summary repeat what the Plan diff already shows
    return [line for line in lines if not line.startswith((" ", "spec changed", "first apply"))]
