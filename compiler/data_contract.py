"""Data contracts: every column the spec names, checked against the real schemas of its sources.

Only schemas are read (a parquet footer; the first block of a csv), never a whole table, so
`specml validate --data` and `specml plan` stay fast on big files. Each problem points at the
spec field concerned (FILE:LINE:COL). A source path that is not a regular file (a FIFO,
/dev/zero, a folder) is refused without being opened.
"""

from __future__ import annotations

from pathlib import Path

from specml.compiler.compose import Composed
from specml.compiler.errors import Diagnostic, Severity, YamlPath, did_you_mean, has_child
from specml.compiler.source_schema import Column, Kind, not_regular, read_columns, source_location
from specml.compiler.spec import MLSystem

# Column kinds each declared dtype accepts (`null`: a column with no value yet fits anything).
_FITS: dict[str, set[Kind]] = {
    "int32": {"int", "null"},
    "int64": {"int", "null"},
    "float32": {"int", "float", "null"},
    "float64": {"int", "float", "null"},
    "bool": {"bool", "int", "null"},
    "string": {"string", "null"},
}


class _Contract:
    def __init__(self, spec: MLSystem, composed: Composed, base_dir: Path, require: bool) -> None:
        self.spec, self.composed, self.base_dir, self.require = spec, composed, base_dir, require
        self.diagnostics: list[Diagnostic] = []
        self.tables: dict[str, dict[str, Column]] = {}

    def report(
        self,
        path: YamlPath,
        message: str,
        hint: str | None,
        code: str,
        severity: Severity = "error",
        key: bool = False,
    ) -> None:
        self.diagnostics.append(
            self.composed.diagnostic(
                path, message, hint=hint, code=code, stage="check", severity=severity, key=key
            )
        )

    def exists(self, path: YamlPath) -> bool:
        node = self.composed.data
        for part in path:
            if not has_child(node, part):
                return False
            node = node[part]
        return True

    # ---- reading ---------------------------------------------------------------------------
    def read_sources(self) -> None:
        for name, source in self.spec.data.sources.items():
            where = ("data", "sources", name, "path")
            path = source_location(source.path, self.base_dir)
            if path is None:
                if self.require:
                    self.report(
                        where,
                        f"data source '{name}' is remote ({source.path}): its columns are not "
                        "checked here",
                        hint="run `specml validate --data` where the file is local",
                        code="remote_source",
                        severity="warning",
                    )
                continue
            if not path.exists():
                if self.require:
                    self.report(
                        where,
                        f"data source '{name}' not found at {path}",
                        hint="fix the path, or write demo data with `specml demo-data SPEC`",
                        code="missing_source",
                    )
                continue
            what = not_regular(path)
            if what is not None:
                self.report(
                    where,
                    f"data source '{name}' path {path} is {what}, not a regular file",
                    hint=f"point data.sources.{name}.path at a {source.format} file",
                    code="not_a_file",
                )
                continue
            times = tuple(c for c in (source.timestamp, source.created_timestamp) if c)
            try:
                self.tables[name] = read_columns(path, source.format, times)
            except (OSError, ValueError) as exc:
                self.report(
                    where,
                    f"cannot read the schema of data source '{name}' ({source.format}): {exc}",
                    hint=f"is {path} really a {source.format} file?",
                    code="unreadable_source",
                )

    # ---- columns ---------------------------------------------------------------------------
    def column(
        self, source: str, name: str, path: YamlPath, what: str, key: bool = False, why: str = ""
    ) -> Column | None:
        """The source's column, or None (reported when the source was read and lacks it)."""
        table = self.tables.get(source)
        if table is None:
            return None
        if name in table:
            return table[name]
        guess = did_you_mean(name, list(table))
        shown = ", ".join(list(table)[:20]) + (", ..." if len(table) > 20 else "")
        self.report(
            path,
            f"{what} '{name}' is not a column of data source '{source}'{why}",
            hint=f"did you mean '{guess}'?" if guess else f"its columns: {shown}",
            code="missing_column",
            key=key,
        )
        return None

    def timestamps(self) -> None:
        for name, source in self.spec.data.sources.items():
            for key in ("timestamp", "created_timestamp"):
                column_name = getattr(source, key)
                if column_name is None:
                    continue
                path = ("data", "sources", name, key)
                col = self.column(name, column_name, path, "timestamp column")
                if col is None or col.kind in ("timestamp", "null"):
                    continue
                if col.kind == "date" and source.format == "csv":
                    continue  # the runtime parses csv dates into times
                text = (
                    "does not parse as times"
                    if col.kind == "string" and source.format == "csv"
                    else f"is {col.type_name}"
                )
                self.report(
                    path,
                    f"timestamp column '{column_name}' of data source '{name}' {text}, "
                    "not a timestamp",
                    hint="store event times as timestamps (UTC)"
                    + (", e.g. 2024-01-31T12:00:00Z" if source.format == "csv" else ""),
                    code="bad_timestamp",
                )

    def fields(self) -> None:
        for view_name, view in self.spec.features.views.items():
            for field_name, fld in view.fields.items():
                path: YamlPath = ("features", "views", view_name, "fields", field_name)
                col = self.column(view.source, field_name, path, "feature", key=True)
                if col is None or col.kind in _FITS[fld.dtype]:
                    continue
                dtype_path = (*path, "dtype") if self.exists((*path, "dtype")) else path
                # A numeric int field over floats still trains (its input is FP32 either way):
                # pandas stores ints with missing values as floats. A category code must be int.
                lenient = col.kind == "float" and not fld.is_categorical
                self.report(
                    dtype_path,
                    f"feature '{field_name}' is declared {fld.dtype}, but column '{field_name}' "
                    f"of data source '{view.source}' is {col.type_name}"
                    + (": fractional values would be kept as they are" if lenient else ""),
                    hint=_dtype_hint(fld.dtype, col),
                    code="dtype",
                    severity="warning" if lenient else "error",
                )

    def join_keys(self) -> None:
        entities = self.spec.features.entities
        for view_name, view in self.spec.features.views.items():
            entity = entities.get(view.entity)
            if entity is None:
                continue
            for i, key in enumerate(entity.join_keys):
                self.key_column(view.source, view.entity, i, key, f"view '{view_name}'")
        label = self.spec.features.label
        for entity_name in self.model_entities():
            for i, key in enumerate(entities[entity_name].join_keys):
                self.key_column(label.source, entity_name, i, key, "the label")

    def key_column(self, source: str, entity: str, i: int, key: str, user: str) -> None:
        path = ("features", "entities", entity, "join_keys", i)
        dtype = self.spec.features.entities[entity].dtype
        col = self.column(source, key, path, "join key", why=f" (entity '{entity}', for {user})")
        want: Kind = "int" if dtype == "int64" else "string"
        if col is not None and col.kind not in (want, "null"):
            self.report(
                path,
                f"join key '{key}' of entity '{entity}' is {dtype}, but column '{key}' of "
                f"data source '{source}' is {col.type_name}",
                hint=f"set features.entities.{entity}.dtype to match the column, or cast it",
                code="dtype",
            )

    def model_entities(self) -> list[str]:
        """Entities of the views the model reads: the label source carries their keys."""
        views = self.spec.features.views
        selected = self.spec.training.features or list(views)
        entities = [views[n].entity for n in (r.partition(":")[0] for r in selected) if n in views]
        known = [e for e in entities if e in self.spec.features.entities]
        return list(dict.fromkeys(known))

    def label(self) -> None:
        label, task = self.spec.features.label, self.spec.training.task
        path = ("features", "label", "field")
        col = self.column(label.source, label.field, path, "label")
        if col is None or col.kind == "null":
            return
        if task == "regression" and col.kind not in ("int", "float"):
            self.report(
                path,
                f"regression needs a numeric label, but column '{label.field}' of data source "
                f"'{label.source}' is {col.type_name}",
                hint="use task binary_classification or multiclass_classification for classes",
                code="label",
            )
        elif task != "regression" and col.kind == "float":
            self.report(
                path,
                f"label '{label.field}' is {col.type_name}: classes must be whole numbers, "
                "strings or booleans",
                hint="store the label as int64 or string",
                code="label",
                severity="warning",
            )
        elif task != "regression" and col.kind not in ("int", "string", "bool"):
            self.report(
                path,
                f"{task} needs class labels (strings, integers or booleans), but column "
                f"'{label.field}' of data source '{label.source}' is {col.type_name}",
                hint="store the label as int64 or string",
                code="label",
            )
        elif col.kind in ("int", "string"):
            self.class_values(col)

    def class_values(self, col: Column) -> None:
        """Declared classes and the positive class must be values the label column can hold."""
        label = self.spec.features.label
        want = str if col.kind == "string" else int
        hint = "write the classes as they appear in the column" + (
            " (quote them)" if want is str else ""
        )
        bad = [c for c in label.classes or [] if not isinstance(c, want)]
        if bad:
            self.report(
                ("features", "label", "classes"),
                f"classes {', '.join(map(repr, bad))} cannot occur: label column "
                f"'{label.field}' is {col.type_name}",
                hint=hint,
                code="classes",
            )
        elif label.positive is not None and not isinstance(label.positive, want):
            self.report(
                ("features", "label", "positive"),
                f"positive class {label.positive!r} cannot occur: label column "
                f"'{label.field}' is {col.type_name}",
                hint=hint,
                code="classes",
            )

    def run(self) -> list[Diagnostic]:
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:  # the light install: no table reader
            if self.require:
                self.report(
                    ("data", "sources"),
                    "checking the data needs pyarrow, which this install lacks",
                    hint="pip install 'specml[local]'",
                    code="missing_extra",
                )
            return self.diagnostics
        self.read_sources()
        if self.tables:
            self.timestamps()
            self.fields()
            self.join_keys()
            self.label()
        return sorted(self.diagnostics, key=lambda d: (d.file or "", d.line or 0, d.col or 0))


def _dtype_hint(dtype: str, col: Column) -> str:
    if col.kind == "string":
        return "a text column is a categorical feature: declare `dtype: string`"
    if dtype == "string" and col.kind == "int":
        return "declare `{dtype: int64, categorical: true}` for integer codes, or store strings"
    if dtype in ("int32", "int64") and col.kind == "float":
        return (
            "declare float64, or store whole numbers as int64 (pandas: the nullable Int64 dtype "
            "keeps missing values out of floats)"
        )
    return f"declare the field with the column's type, or cast the column to {dtype}"


def check_data(
    spec: MLSystem, composed: Composed, base_dir: Path, *, require_sources: bool = True
) -> list[Diagnostic]:
    """Every column the spec names against its source's schema; `require_sources=False` skips
    sources that do not exist (for `plan`), True reports them (for `validate --data`)."""
    return _Contract(spec, composed, base_dir, require_sources).run()
