"""How the CLI talks: human text (Rich) by default, one JSON document for CI, or GitHub annotations."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from specml.compiler.errors import Diagnostic


class Reporter:
    """Collects what a command has to say and renders it in the chosen format."""

    def __init__(self, fmt: str = "human") -> None:
        self.fmt = fmt
        self.document: dict[str, Any] = {"diagnostics": [], "messages": []}
        self._console: Any = None
        self._err: Any = None
        self._raw = False
        self._flushed = False
        # stdout as the command started: while it runs, what libraries print goes to stderr
        self.stdout = sys.stdout
        self._seen: set[tuple[str, str, str, str]] = set()

    # rich is imported only when something is printed for humans
    def _consoles(self) -> tuple[Any, Any]:
        if self._console is None:
            from rich.console import Console

            # emoji off: Rich would turn `FILE:100:COL` into `FILE💯COL`
            self._console = Console(file=self.stdout, highlight=False, soft_wrap=True, emoji=False)
            self._err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
        return self._console, self._err

    @property
    def out(self) -> Any:
        """The stdout console (human output)."""
        return self._consoles()[0]

    def diagnostics(self, items: Sequence[Diagnostic]) -> None:
        """Report problems (errors and warnings); each one once, however often it is found."""
        for d in items:
            key = (d.location, d.severity, d.yaml_path, d.message)
            if key in self._seen:
                continue
            self._seen.add(key)
            if self.fmt == "json":
                self.document["diagnostics"].append(d.to_json())
            elif self.fmt == "github":
                self.line(d.github())
            else:
                from rich.markup import escape

                _, err = self._consoles()
                colour = "red" if d.severity == "error" else "yellow"
                where = f"[bold]{escape(d.yaml_path)}[/]: " if d.path else ""
                err.print(
                    f"{escape(d.location)}: [bold {colour}]{d.severity}[/]: "
                    f"{where}{escape(d.message)}"
                )
                if d.hint:
                    err.print(f"    [cyan]hint:[/] {escape(d.hint)}")

    def ok(self, message: str, **fields: Any) -> None:
        """A success line."""
        if self.fmt == "json":
            self.document["messages"].append({"message": message, **fields})
        elif self.fmt == "human":
            from rich.markup import escape

            out, _ = self._consoles()
            out.print(f"[green]✓[/] {escape(message)}")

    def note(self, message: str) -> None:
        """An informational line."""
        if self.fmt == "json":
            self.document["messages"].append({"message": message})
        elif self.fmt == "human":
            _, err = self._consoles()
            err.print(message, markup=False)

    def summary(self, specs: int, invalid: int, problems: Sequence[Diagnostic]) -> None:
        """The closing line of `validate`."""
        errors = sum(1 for p in problems if p.severity == "error")
        warnings = len(problems) - errors
        self.document.update(
            {
                "specs": specs,
                "invalid": invalid,
                "errors": errors,
                "warnings": warnings,
                "ok": invalid == 0,
            }
        )
        if self.fmt == "human" and (invalid or warnings):
            _, err = self._consoles()
            err.print(
                f"{invalid} of {specs} spec(s) invalid: {errors} error(s), {warnings} warning(s)",
                markup=False,
            )

    def plan_summary(self, plan: Any) -> None:
        """A short human view of a Plan."""
        out, _ = self._consoles()
        out.print(f"[bold]{plan.system.name}[/] ({plan.spec_hash[:19]}…) owner {plan.system.owner}")
        t = plan.training
        out.print(
            f"  training: {t.task}, {t.model.type} {list(t.model.hidden)}, "
            f"{len(t.features)} features, accelerator {t.resources.accelerator}"
        )
        out.print(
            "  steps: "
            + " → ".join(s.name + (" [if gate]" if s.condition else "") for s in plan.steps)
        )
        gates = ", ".join(f"{g.metric} {g.op} {g.threshold:g}" for g in plan.evaluation.gates)
        out.print(f"  gates: {gates or 'none'}")
        if plan.rollout:
            steps = ", ".join(
                f"shadow {s.duration_seconds}s" if s.kind == "shadow" else f"{s.traffic_percent:g}%"
                for s in plan.rollout.steps
            )
            out.print(f"  rollout: {plan.rollout.strategy}: {steps}")
        out.print(f"  alerts: {', '.join(a.id for a in plan.alerts) or 'none'}")
        out.print("  (--format json prints the whole Plan)", style="dim")

    def changes(self, target: str, changes: Any) -> None:
        """What applying to a target would change."""
        if self.fmt == "json":
            self.document["target"] = target
            self.document["changes"] = changes
            return
        out, _ = self._consoles()
        if changes is None:
            out.print(
                f"target {target}: no recorded state to compare with; apply/compile would create everything"
            )
        elif not changes:
            out.print(f"target {target}: up to date, nothing to change")
        else:
            out.print(f"target {target}: {len(changes)} change(s)")
            for change in changes:
                out.print(f"  {change}", markup=False)

    def emitted(self, target: str, result: Any, repeated: set[str] | None = None) -> None:
        """Files a compile wrote, and the target's notes (less those in `repeated`)."""
        files = list(getattr(result, "files", []) or [])
        if self.fmt == "json":
            self.document.update({"target": target, "out_dir": str(result.out_dir), "files": files})
            return
        self.ok(f"compiled for {target} into {result.out_dir} ({len(files)} files)")
        out, _ = self._consoles()
        for f in files:
            out.print(f"  {f}", markup=False)
        for note in getattr(result, "notes", ()) or ():
            if note not in (repeated or set()):
                out.print(f"  note: {note}", markup=False)

    def applied(self, target: str, result: Any) -> None:
        """The outcome of an apply."""
        summary = getattr(result, "summary", None)
        payload = summary() if callable(summary) else (result if isinstance(result, dict) else {})
        if self.fmt == "json":
            self.document.update({"target": target, "result": payload})
            return
        dry = bool((payload or {}).get("dry_run"))
        self.ok(f"dry run against {target}: nothing changed" if dry else f"applied to {target}")
        out, _ = self._consoles()
        for key, value in (payload or {}).items():
            if isinstance(value, list):  # e.g. the actions of a (dry) run, one per line
                out.print(f"  {key}:", markup=False)
                for item in value:
                    out.print(f"    - {item}", markup=False)
            else:
                out.print(f"  {key}: {value}", markup=False)

    def runs(self, system: str, records: Sequence[dict[str, Any]], aliases: dict[str, str]) -> None:
        """The history of applies (newest first)."""
        if self.fmt == "json":
            self.document.update({"system": system, "aliases": aliases, "runs": list(records)})
            return
        out, _ = self._consoles()
        if not records:
            out.print(f"{system}: no runs yet (specml apply SPEC --target local)", markup=False)
            return
        from rich.table import Table

        table = Table(
            title=f"{system} runs (aliases: "
            + (", ".join(f"{k}=v{v}" for k, v in sorted(aliases.items())) or "none")
            + ")"
        )
        for column in ("run", "started", "status", "version", "metrics", "seconds"):
            table.add_column(column)
        for r in records:
            metrics = ", ".join(
                f"{k} {v:.4g}"
                for k, v in sorted((r.get("metrics") or {}).items())
                if isinstance(v, int | float)
            )
            seconds = sum((r.get("step_seconds") or {}).values())
            table.add_row(
                str(r.get("run_id", "?")),
                str(r.get("started", ""))[:19],
                str(r.get("status", "?")),
                str(r.get("model_version") or "-"),
                metrics or "-",
                f"{seconds:.1f}",
            )
        out.print(table)

    def line(self, text: str) -> None:
        """One line on the command's stdout (never a library's)."""
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def raw(self, text: str) -> None:
        """Print a finished artefact (e.g. the Plan) as the whole output; no JSON wrapper."""
        self._raw = True
        self.stdout.write(text)
        self.stdout.flush()

    def flush(self) -> None:
        """Print the JSON document (json format only)."""
        if self.fmt == "json" and not self._raw and not self._flushed:
            self._flushed = True
            self.line(json.dumps(self.document, indent=2, sort_keys=True, default=str))
