"""Online feature lookup that reads Feast's SQLite online store directly.

`FeatureStore.get_online_features` costs milliseconds per call (registry lookups, response protos,
pandas-free but generic code). For a fixed list of `view:field` refs the work is one indexed
SELECT per feature view, so this reader resolves everything once from Feast's own registry and
config (table names, join keys and their value types, db path, key serialisation version), then
per request: builds the entity key with Feast's `serialize_entity_key`, runs a prepared query and
decodes the values with Feast's `ValueProto` / `feast_value_type_to_python_type`.
Tests keep `get_online_features` as the reference: same values, same missing (None) values.

TTL: unlike Feast's SQLite read path, a value whose event timestamp is older than its view's TTL
(as of the reader's clock: the wall clock, or a fixed time for replays and skew checks) is
returned as missing, exactly as the offline point-in-time join treats it in training; the model
then imputes it like any other missing value (NaN -> the training means inside the ONNX graph).
A view with no TTL (0) never expires. `lookup` also says, per entity row, which features were
imputed and whether the store knew the entity at all.

Availability: `available()` says whether the online store's database file is there (the server's
readiness asks it); a lookup against a store that went away (file deleted, table dropped) raises
`StoreUnavailable`, which the server answers with a 503. A database file replaced by a new one
(same path, new inode: a fresh materialization) is reopened on the next read.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from specml.runtime.serving.tensors import TensorSpec, column_from_values

POINTER = "specml_repo.json"  # written by materialize_features: holds `materialized_until`


class EntityError(Exception):
    """An entity row the lookup cannot use (missing or mistyped join key)."""


class StoreUnavailable(Exception):
    """The online store cannot be read now (its database is gone or unreadable)."""


@dataclass(frozen=True)
class Lookup:
    """One read: values per entity row and feature ref (None = imputed), and why."""

    values: list[list[Any]]
    missing: list[list[str]]  # per row: refs the model imputes (absent, null or expired)
    expired: list[list[str]]  # per row: refs whose stored value is older than the view's TTL
    found: list[bool]  # per row: the store holds at least one (unexpired) value for the entity


def parse_as_of(value: str | datetime | None, repo_path: Path) -> datetime | None:
    """The TTL clock: None for the wall clock ("now"), else a fixed UTC time ("materialized":
    the end of the repo's last materialization, from its specml_repo.json; or ISO-8601)."""
    if value is None or value == "now":
        return None
    if isinstance(value, datetime):
        when = value
    elif value == "materialized":
        pointer = Path(repo_path) / POINTER
        try:
            when = datetime.fromisoformat(json.loads(pointer.read_text())["materialized_until"])
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"cannot read materialized_until from {pointer}: {exc}") from None
    else:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"features as-of {value!r} is not now, materialized or ISO-8601"
            ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _stored_cutoff(cutoff: datetime) -> int:
    """A UTC time as Feast's SQLite store encodes event_ts (its datetime adapter: naive UTC,
    then `int(.timestamp())`), so stored values compare without decoding each one."""
    return int(cutoff.astimezone(UTC).replace(tzinfo=None).timestamp())


def _expired(stored: Any, cutoff: int) -> bool:
    if isinstance(stored, int):
        return stored < cutoff
    if isinstance(stored, (str, bytes)):  # an ISO text timestamp (other Feast versions)
        text = stored.decode() if isinstance(stored, bytes) else stored
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return False
        return _stored_cutoff(when if when.tzinfo else when.replace(tzinfo=UTC)) < cutoff
    return False  # no timestamp stored: nothing to expire by


@dataclass(frozen=True)
class _ViewLookup:
    view: str
    table: str
    join_keys: tuple[str, ...]
    key_types: tuple[Any, ...]  # feast ValueType per join key
    fields: tuple[str, ...]
    columns: tuple[int, ...]  # position of each field in the model's input row
    ttl: timedelta | None  # None: the view's values never expire


class OnlineFeatureReader:
    """Reads `view:field` features for entity rows, in model input order, as float32."""

    def __init__(
        self,
        repo_path: str | Path,
        feature_refs: tuple[str, ...],
        as_of: str | datetime | None = None,
        apply_ttl: bool = True,
    ) -> None:
        from feast import FeatureStore
        from feast.infra.online_stores.helpers import compute_table_id

        self.repo_path = Path(repo_path)
        self.feature_refs = tuple(feature_refs)
        self.as_of = parse_as_of(as_of, self.repo_path)  # None: the wall clock at each read
        self.apply_ttl = apply_ttl
        self.store = FeatureStore(repo_path=str(self.repo_path))
        config = self.store.config
        if config.online_store.type not in ("sqlite",) and not str(
            config.online_store.type
        ).endswith("SqliteOnlineStore"):
            raise ValueError(f"online store {config.online_store.type!r} is not SQLite")
        db = Path(config.online_store.path)
        self.db_path = db if db.is_absolute() else self.repo_path / db
        self.key_version = int(config.entity_key_serialization_version)
        versioning = bool(getattr(config.registry, "enable_online_feature_view_versioning", False))

        by_view: dict[str, list[tuple[str, int]]] = {}
        for column, ref in enumerate(self.feature_refs):
            view, _, field = ref.partition(":")
            by_view.setdefault(view, []).append((field, column))
        lookups = []
        for view, fields in by_view.items():
            fv = self.store.get_feature_view(view)
            keys = tuple(c.name for c in fv.entity_columns)
            types = tuple(c.dtype.to_value_type() for c in fv.entity_columns)
            ttl = fv.ttl if fv.ttl and fv.ttl.total_seconds() > 0 else None
            lookups.append(
                _ViewLookup(
                    view=view,
                    table=compute_table_id(config.project, fv, versioning),
                    join_keys=keys,
                    key_types=types,
                    fields=tuple(f for f, _ in fields),
                    columns=tuple(c for _, c in fields),
                    ttl=ttl,
                )
            )
        self.views = tuple(lookups)
        self.join_keys = tuple(sorted({k for v in self.views for k in v.join_keys}))
        self._local = threading.local()
        self._failed = False  # the last read failed: readiness probes the tables until they answer

    def _identity(self) -> tuple[int, int] | None:
        """(device, inode) of the database file; None when it is not there."""
        try:
            st = self.db_path.stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def available(self) -> bool:
        """The online store can be read (readiness): its database file exists (a stat) and,
        after a failed read, its tables answer again (a probe per call until they do)."""
        if self._identity() is None:
            return False
        if not self._failed:
            return True
        try:
            conn = self._conn()
            for view in self.views:
                conn.execute(f'SELECT 1 FROM "{view.table}" LIMIT 0').fetchall()
        except (StoreUnavailable, sqlite3.Error):
            return False
        self._failed = False
        return True

    # -- per thread: sqlite3 connections are cheap, read-only, never shared across threads
    def _conn(self) -> sqlite3.Connection:
        identity = self._identity()
        if identity is None:
            raise StoreUnavailable(f"the online store {self.db_path} does not exist")
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "identity", None) != identity:
            conn.close()  # the file was replaced: read the new one
            conn = None
        if conn is None:
            try:
                conn = sqlite3.connect(
                    f"file:{self.db_path}?mode=ro", uri=True, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise StoreUnavailable(
                    f"cannot open the online store {self.db_path}: {exc}"
                ) from None
            self._local.conn = conn
            self._local.identity = identity
        return conn

    def _entity_key(self, lookup: _ViewLookup, row: dict[str, Any]) -> bytes:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
        from feast.type_map import python_values_to_proto_values

        values = []
        for key, value_type in zip(lookup.join_keys, lookup.key_types, strict=True):
            if key not in row:
                raise EntityError(
                    f"entity row lacks join key '{key}' (needs {list(lookup.join_keys)})"
                )
            value = row[key]
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise EntityError(f"join key '{key}' must be an integer or string, got {value!r}")
            try:
                values.append(python_values_to_proto_values([value], value_type)[0])
            except (TypeError, ValueError) as exc:
                raise EntityError(f"join key '{key}' value {value!r}: {exc}") from None
        proto = EntityKeyProto(join_keys=list(lookup.join_keys), entity_values=values)
        return serialize_entity_key(proto, entity_key_serialization_version=self.key_version)

    def read_values(self, rows: list[dict[str, Any]]) -> list[list[Any]]:
        """Python values per entity row and feature ref (None where the store has nothing, or
        only a value older than the view's TTL)."""
        return self.lookup(rows).values

    def lookup(self, rows: list[dict[str, Any]]) -> Lookup:
        """Values per entity row and feature ref, with what was imputed and why (raises
        StoreUnavailable when the store cannot be read)."""
        try:
            found = self._lookup(rows)
        except sqlite3.Error as exc:  # e.g. the table went away with a rebuilt store
            self._failed = True
            raise StoreUnavailable(f"cannot read the online store {self.db_path}: {exc}") from None
        self._failed = False
        return found

    def _lookup(self, rows: list[dict[str, Any]]) -> Lookup:
        from feast.protos.feast.types.Value_pb2 import Value as ValueProto
        from feast.type_map import feast_value_type_to_python_type

        n_refs = len(self.feature_refs)
        result: list[list[Any]] = [[None] * n_refs for _ in rows]
        expired: list[list[int]] = [[] for _ in rows]
        conn = self._conn()
        now = self.as_of or datetime.now(UTC)
        for lookup in self.views:
            keys = [self._entity_key(lookup, row) for row in rows]
            wanted = {name: col for name, col in zip(lookup.fields, lookup.columns, strict=True)}
            cutoff = None
            if self.apply_ttl and lookup.ttl is not None:
                cutoff = _stored_cutoff(now - lookup.ttl)
            # One indexed query per view; the statement text depends only on the row count,
            # so sqlite3's statement cache keeps it prepared.
            sql = (
                f'SELECT entity_key, feature_name, value, event_ts FROM "{lookup.table}" '
                f"WHERE entity_key IN ({','.join('?' * len(set(keys)))})"
            )
            positions: dict[bytes, list[int]] = {}
            for i, key in enumerate(keys):
                positions.setdefault(key, []).append(i)
            for key, name, blob, event_ts in conn.execute(sql, list(positions)):
                col = wanted.get(name)
                if col is None:
                    continue
                if cutoff is not None and _expired(event_ts, cutoff):
                    for i in positions[key]:
                        expired[i].append(col)
                    continue
                value = feast_value_type_to_python_type(ValueProto.FromString(blob))
                for i in positions[key]:
                    result[i][col] = value
        refs = self.feature_refs
        return Lookup(
            values=result,
            missing=[[refs[c] for c in range(n_refs) if row[c] is None] for row in result],
            expired=[[refs[c] for c in sorted(cols)] for cols in expired],
            found=[any(v is not None for v in row) for row in result],
        )

    def read(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, list[list[Any]]]:
        """float32 [len(rows), F] model input (NaN where missing) and the raw values."""
        values = self.read_values(rows)
        return self.to_matrix(values), values

    def to_matrix(self, values: list[list[Any]]) -> np.ndarray:
        """float32 [len(values), F] (all-numeric features), NaN where a value is missing."""
        return np.array(
            [[math.nan if v is None else float(v) for v in row] for row in values],
            dtype=np.float32,
        ).reshape(len(values), len(self.feature_refs))

    def to_inputs(
        self, values: list[list[Any]], inputs: tuple[TensorSpec, ...]
    ) -> dict[str, np.ndarray]:
        """The model's input dict from looked-up values (`inputs` in feature-ref order): numbers
        as float32 (missing: NaN), strings as str (missing: ""), integer categories as int64."""
        return {
            spec.name: column_from_values(
                spec, [row[col] for row in values], f"online feature '{self.feature_refs[col]}'"
            )
            for col, spec in enumerate(inputs)
        }

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
