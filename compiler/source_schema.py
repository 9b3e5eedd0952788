"""What a source file's schema says, read without scanning the table: a parquet footer, the first
block of a csv. A path that is not a regular file is reported, never opened (a FIFO would block).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Kind = Literal["int", "float", "bool", "string", "timestamp", "date", "null", "other"]
CSV_HEAD_BYTES = 1 << 20  # a csv's schema is inferred from its first block only


@dataclass(frozen=True)
class Column:
    """A source column as its schema describes it."""

    kind: Kind
    type_name: str  # the file's own type name (`double`, `large_string`, `timestamp[us]`)


def _kind(arrow_type: Any) -> Kind:
    import pyarrow as pa

    t = pa.types
    if t.is_dictionary(arrow_type):
        return _kind(arrow_type.value_type)
    checks: list[tuple[Any, Kind]] = [
        (t.is_boolean, "bool"),
        (t.is_integer, "int"),
        (t.is_floating, "float"),
        (t.is_decimal, "float"),
        (t.is_timestamp, "timestamp"),
        (t.is_date, "date"),
        (t.is_null, "null"),
        (lambda x: t.is_string(x) or t.is_large_string(x), "string"),
    ]
    for test, kind in checks:
        if test(arrow_type):
            return kind
    if str(arrow_type) == "string_view":
        return "string"
    return "other"


def read_columns(path: Path, fmt: str, timestamps: tuple[str, ...] = ()) -> dict[str, Column]:
    """Column name -> Column from a file's schema only; csv timestamp columns that parse as
    times in the first block count as timestamps. Raises OSError/ValueError when unreadable."""
    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        return {f.name: Column(_kind(f.type), str(f.type)) for f in schema}
    import pyarrow.csv as pc

    reader = pc.open_csv(path, read_options=pc.ReadOptions(block_size=CSV_HEAD_BYTES))
    columns = {f.name: Column(_kind(f.type), str(f.type)) for f in reader.schema}
    try:
        head = reader.read_next_batch()
    except StopIteration:
        head = pa.RecordBatch.from_pylist([], schema=reader.schema)
    for name in timestamps:
        col = columns.get(name)
        if col is not None and col.kind == "string" and _parses_as_times(head.column(name)):
            columns[name] = Column("timestamp", "string (parses as times)")
    return columns


def _parses_as_times(values: Any) -> bool:
    """Whether csv text parses as event times the way the runtime reads them (pandas, UTC)."""
    import warnings

    import pandas as pd

    try:
        with warnings.catch_warnings():  # pandas warns when it falls back to dateutil per value
            warnings.simplefilter("ignore", UserWarning)
            pd.to_datetime(pd.Series(values.to_pylist(), dtype=object), utc=True)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def not_regular(path: Path) -> str | None:
    """What a path is when it is not a regular file (never opened: a FIFO would block)."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    kinds = [
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((what for test, what in kinds if test(mode)), "not a regular file")


def source_location(path: str, base_dir: Path) -> Path | None:
    """Where a source's file is (relative to the spec's folder), or None for a remote URI."""
    if "://" in path:
        return None
    p = Path(path)
    return p if p.is_absolute() else base_dir / p
