"""Fuzzing: mutated example specs and random text only ever fail with a SpecError.

Whatever the input, `validate_text` either returns a spec that lowers to a Plan, or raises a
`SpecError` whose diagnostics render; never a raw exception. Bounded (derandomized, a few
hundred examples per property) so it runs in well under a minute.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specml.compiler.api import validate_doc, validate_text
from specml.compiler.errors import SpecError
from specml.compiler.load import SourceDoc, load_file
from specml.compiler.lower import lower

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {p.stem: load_file(p).data for p in sorted((ROOT / "specs").glob("*.yaml"))}
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Path_ = tuple[str | int, ...]


def _paths(node: Any, at: Path_ = ()) -> list[Path_]:
    """Every path in a document (mapping keys and list indexes), root excluded."""
    out: list[Path_] = []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else []
    )
    for key, child in items:
        out.append((*at, key))
        out += _paths(child, (*at, key))
    return out


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


WEIRD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([10**30, -1, 0, 1e308, float("nan"), float("inf"), "", " ", "~", "null"]),
    st.text(max_size=30),
    st.text(alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x2FFFF), max_size=12),
    st.sampled_from(
        [
            "30 days",
            "7d",
            "0 3 * * 1",
            "* * *",
            "AKIAIOSFODNN7EXAMPLE",
            "psi",
            "roc_auc_drop",
            "slo_breach",
            "ml.g5.xlarge",
            "gpu",
            "{env: X}",
        ]
    ),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
    st.integers(min_value=1, max_value=90).map(_nested),
)


def _parent(doc: Any, path: Path_) -> Any:
    node = doc
    for part in path[:-1]:
        node = node[part]
    return node


def _mutate(doc: Any, data: st.DataObject) -> Any:
    """Apply one random mutation at one random path."""
    paths = _paths(doc)
    path = data.draw(st.sampled_from(paths), label="path")
    parent, last = _parent(doc, path), path[-1]
    kind = data.draw(st.sampled_from(["delete", "replace", "rename", "duplicate", "wrap"]))
    if kind == "delete":
        del parent[last]
    elif kind == "replace":
        parent[last] = data.draw(WEIRD_VALUES, label="value")
    elif kind == "rename" and isinstance(parent, dict):
        new = data.draw(
            st.one_of(
                st.text(min_size=1, max_size=12),
                st.just(str(last) + "x"),
                st.just(str(last)[:-1] or "k"),
            ),
            label="new key",
        )
        parent[new] = parent.pop(last)
    elif kind == "duplicate" and isinstance(parent, list):
        parent.insert(last, copy.deepcopy(parent[last]))
    elif kind == "wrap":
        parent[last] = data.draw(st.sampled_from([[parent[last]], {"value": parent[last]}]))
    return doc


def _assert_valid_or_spec_error(run: Any) -> None:
    try:
        result = run()
    except SpecError as error:
        assert error.diagnostics, "SpecError without diagnostics"
        for d in error.diagnostics:
            assert d.message and d.render()
            json.dumps(d.to_json())
        return
    plan = lower(result.spec)
    assert plan.spec_hash.startswith("sha256:")
    json.loads(plan.to_json())


@FUZZ
@given(name=st.sampled_from(sorted(EXAMPLES)), count=st.integers(1, 3), data=st.data())
def test_mutated_example_specs_fail_only_with_spec_error(
    name: str, count: int, data: st.DataObject
) -> None:
    doc = copy.deepcopy(EXAMPLES[name])
    for _ in range(count):
        if _paths(doc):
            doc = _mutate(doc, data)
    try:
        text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    except (yaml.YAMLError, RecursionError):
        return  # PyYAML cannot write it; nothing to feed the compiler
    _assert_valid_or_spec_error(lambda: validate_text(text, file=f"{name}.yaml"))


@FUZZ
@given(name=st.sampled_from(sorted(EXAMPLES)), data=st.data())
def test_mutated_documents_without_positions_fail_only_with_spec_error(
    name: str, data: st.DataObject
) -> None:
    """The same, bypassing YAML: data with no known positions (and NaN/inf kept as floats)."""
    doc = _mutate(copy.deepcopy(EXAMPLES[name]), data)
    _assert_valid_or_spec_error(lambda: validate_doc(SourceDoc(file="x.yaml", data=doc)))


YAML_TOKENS = [
    *":-[]{}&*!|>'\"#?,%@` \n\tab01.~<=",
    "apiVersion",
    "kind",
    "\u00e9",
    "  ",
    "- ",
    ": ",
]
YAMLISH = st.lists(st.sampled_from(YAML_TOKENS), max_size=80).map("".join)


@FUZZ
@given(text=st.one_of(st.text(max_size=200), YAMLISH))
def test_random_text_fails_only_with_spec_error(text: str) -> None:
    _assert_valid_or_spec_error(lambda: validate_text(text))


@FUZZ
@given(name=st.sampled_from(sorted(EXAMPLES)), cut=st.floats(0, 1), junk=st.text(max_size=10))
def test_truncated_and_spliced_spec_text_fails_only_with_spec_error(
    name: str, cut: float, junk: str
) -> None:
    text = (ROOT / "specs" / f"{name}.yaml").read_text()
    at = math.floor(cut * len(text))
    _assert_valid_or_spec_error(lambda: validate_text(text[:at] + junk + text[at:]))
