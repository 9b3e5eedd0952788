"""The compiled alert PromQL parses with Prometheus's own grammar, and our parser agrees with it.

Prometheus publishes its PromQL grammar as @prometheus-io/lezer-promql (the web UI's parser);
promql_official.py installs a pinned version with npm into a user cache and parses every
expression of this module in one node process. Skipped only when node (or npm, with an empty
cache) is missing; a failed npm install fails the tests with npm's error.
"""

from __future__ import annotations

import re

import pytest
import yaml
from kubeflow_testlib import GOLDEN_SPECS, rendered
from promql_official import (
    VERSION,
    NpmInstallError,
    OfficialResult,
    ensure_grammar,
    missing_tools,
    parse_official,
)
from specml.targets.kubeflow.promql import PromQLError, validate_promql

# known-bad syntax -> offset of the first error node the official grammar reports
OFFICIAL_REJECTS: dict[str, int] = {
    "": 0,
    ">": 0,
    "x >": 3,
    "> 1": 0,
    "(x": 2,
    "((x)": 4,
    "x)": 1,
    "rate(x[5m]": 10,
    "rate(x[5m]))": 11,
    "histogram_quantile(0.95, )": 25,
    "histogram_quantile(0.95 x)": 24,
    "sum by (le (x)": 11,
    "sum by le (x)": 7,
    "sum by (a,,b) (x)": 10,
    "x{a=1}": 4,
    "x{a}": 3,
    'x{a="b" c="d"}': 8,
    'x{a="b",,}': 8,
    'x{a="b"': 7,
    'x{a="b}': 4,  # the string never closes
    'x{a=="b"}': 4,
    "x[5 m]": 4,
    "x[5m": 4,
    "x[]": 2,
    "x offset": 8,
    "x + * y": 4,
    "x > bool": 8,
    "x 1": 2,
    "1 2": 2,
    "()": 1,
    "x{{}": 2,
    "foo(x)": 3,  # not a PromQL function
    "x > 1e": 5,
    'x > "abc': 4,  # unterminated string: promql_check.mjs's one addition to the grammar
    "'abc": 0,
    "x[1s1h]": 4,  # duration units out of order
    "x[5m5m]": 4,  # a duration unit repeated
    "x offset 5m5m": 11,
    'x{a:b="c"}': 3,  # label names cannot contain ':' (metric names can)
    "sum by (a:b) (x)": 9,
    "sum by (a) (x) by (b)": 15,  # one grouping clause only
    "rate(x[5m],)": 11,  # no trailing comma in a call
    "histogram_quantile(0.9, x,)": 26,
    'x{a="b\nc"}': 4,  # a raw newline inside a string
}

# valid PromQL in the subset we emit: both parsers must accept
SHARED_GOOD = (
    "x",
    "x_total{}",
    'x{a="b"}',
    'x{a=\'b\', c!="d", e=~"f.*", g!~"h|i",}',
    '{__name__="up"}',
    "job:request_rate:5m",
    'job:x:sum{by="a", _b1="c"}',
    "rate(x[5m])",
    "irate(x[1h30m])",
    "x[5ms]",
    "x[1y2w3d4h5m6s7ms]",
    "x[1h5ms] offset 1w1s",
    "increase(x_total[1d]) / 86400",
    "avg_over_time(x[2w] offset 1d)",
    "rate(x[5m] offset 1m)",
    "x offset 5m",
    "histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m]))) > 0.5",
    "sum without (pod, instance) (x)",
    "sum(x) by (job)",
    "sum by () (x)",
    "sum by (a,) (x)",
    "topk(3, x)",
    "bottomk(2, max_over_time(y[1d]))",
    "quantile(0.9, x)",
    "count(x) + avg(x) - min(x) * max(x) / stddev(x) % stdvar(x)",
    "group(x)",
    "clamp_min(x, 0) and clamp_max(y, 1)",
    "abs(x) or absent(y) unless z",
    "vector(1) + scalar(x)",
    "-x",
    "+x",
    "- -x",
    "x ^ 2 ^ 3",
    "2 ^ -x",
    "x > bool 1",
    "1 == bool 1",
    "x >= y",
    "x <= y != z",
    "x == 1e-9",
    "x < .5",
    "x > 1E3",
    "((x))",
    "(x + y) * 2",
    "'single quoted'",
    'x{a="with \\"escaped\\" quote"}',
    "on_y + bool_x",
    "x > Inf",
)

# valid syntax the lezer grammar accepts (it does not type-check) and promql.py rejects on types
TYPE_ERRORS = (
    "rate(x)",  # needs a range vector
    "histogram_quantile(x, y)",  # the quantile is a scalar
    "x[5m] > 1",  # comparison on a range vector
    "1 > 2",  # scalar comparison needs bool
    'x{a=~"("}',  # bad regex
    "{}",  # a selector needs a matcher
    "x and bool y",  # bool only on comparisons
    "sum()",
    "abs()",
    "abs(x, y)",
    "x offset 5m [1m]",
)

# valid PromQL outside the subset promql.py implements (it rejects rather than guesses)
OUTSIDE_OUR_SUBSET = (
    "x[5m:1m]",  # subquery
    'label_replace(x, "a", "$1", "b", "(.*)")',
    "predict_linear(x[1h], 60)",
    "time() - x",
    "x @ 100",
    "a * on(b) group_left c",
    "a / ignoring(c) b",
    'count_values("v", x)',
    "x # comment",
    "0x1f > x",
    "1_000 < x",
    "x > 5m",  # durations as numbers
    'x{"a"="b"}',  # quoted label names
    "x{a=`raw`}",
    "x offset -5m",
    "SUM(x)",  # keywords are case-insensitive
    'x{__foo="b"}',
)

# a range [..] may only follow a vector selector (a rule of the Go parser, read off the official
# tree), so lezer accepts these and both promql.py and the Go parser reject them
RANGE_ON_NON_SELECTOR = ("(x)[5m]", "rate(abs(x)[5m])", "topk(1, x)[5m]", "sum(x)[5m]")
_RANGE_NOT_ON_SELECTOR = re.compile(r"MatrixSelector\((?!VectorSelector\()")


def _compiled_exprs(name: str) -> list[tuple[str, str]]:
    doc = yaml.safe_load(rendered(name)["prometheusrule.yaml"])
    return [(r["alert"], r["expr"]) for g in doc["spec"]["groups"] for r in g["rules"]]


def _all_expressions() -> list[str]:
    corpus = [
        *OFFICIAL_REJECTS,
        *SHARED_GOOD,
        *TYPE_ERRORS,
        *OUTSIDE_OUR_SUBSET,
        *RANGE_ON_NON_SELECTOR,
        "x > 1.",
    ]
    corpus += [expr for name in GOLDEN_SPECS for _, expr in _compiled_exprs(name)]
    return list(dict.fromkeys(corpus))


@pytest.fixture(scope="module")
def official() -> dict[str, OfficialResult]:
    """Every expression of this module parsed by the pinned official grammar (one node run)."""
    why = missing_tools()
    if why:
        pytest.skip(why)
    try:
        prefix = ensure_grammar()
    except NpmInstallError as exc:
        pytest.fail(str(exc), pytrace=False)
    version, results = parse_official(_all_expressions(), prefix)
    assert version == VERSION, f"{prefix} holds lezer-promql {version}, not the pinned {VERSION}"
    return {r.expr: r for r in results}


def _ours_accepts(expr: str) -> bool:
    try:
        validate_promql(expr)
    except PromQLError:
        return False
    return True


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_compiled_alert_expressions_parse_with_the_official_grammar(
    official: dict[str, OfficialResult], name: str
) -> None:
    exprs = _compiled_exprs(name)
    assert len(exprs) >= 5, f"{name}: expected the SLO and alert rules"
    for alert, expr in exprs:
        result = official[expr]
        assert result.ok, f"{name} {alert}: {result.describe()}"
        # the threshold comparison is the outermost operator, as the rule intends
        assert result.tree.startswith("PromQL(BinaryExpr("), f"{alert}: {result.tree}"
        assert result.tree.endswith(",Gtr,NumberDurationLiteral))"), f"{alert}: {result.tree}"
        assert not _RANGE_NOT_ON_SELECTOR.search(result.tree), f"{alert}: {result.tree}"


@pytest.mark.parametrize("expr", list(OFFICIAL_REJECTS))
def test_official_grammar_rejects_known_bad_syntax(
    official: dict[str, OfficialResult], expr: str
) -> None:
    result = official[expr]
    assert not result.ok, result.describe()
    assert result.error_at == OFFICIAL_REJECTS[expr], result.describe()


@pytest.mark.parametrize("expr", [*SHARED_GOOD, *OFFICIAL_REJECTS])
def test_our_parser_agrees_with_the_official_grammar(
    official: dict[str, OfficialResult], expr: str
) -> None:
    assert _ours_accepts(expr) == official[expr].ok, official[expr].describe()


@pytest.mark.parametrize("expr", [*TYPE_ERRORS, *OUTSIDE_OUR_SUBSET])
def test_where_our_parser_is_stricter_by_design(
    official: dict[str, OfficialResult], expr: str
) -> None:
    """Valid syntax our parser rejects: type errors the grammar cannot see, or PromQL we never emit."""
    assert official[expr].ok, official[expr].describe()
    assert not _ours_accepts(expr)


@pytest.mark.parametrize("expr", RANGE_ON_NON_SELECTOR)
def test_official_tree_shows_a_range_over_a_non_selector(
    official: dict[str, OfficialResult], expr: str
) -> None:
    """The grammar parses these; the check on its tree is what the Go parser rejects them for."""
    result = official[expr]
    assert result.ok and _RANGE_NOT_ON_SELECTOR.search(result.tree), result.describe()
    assert not _RANGE_NOT_ON_SELECTOR.search(official["rate(x[5m] offset 1m)"].tree)


@pytest.mark.parametrize("expr", RANGE_ON_NON_SELECTOR)
def test_our_parser_rejects_a_range_over_a_non_selector(expr: str) -> None:
    assert not _ours_accepts(expr)


def test_trailing_dot_number_is_where_lezer_and_the_go_parser_differ(
    official: dict[str, OfficialResult],
) -> None:
    """`1.` is a number to the Prometheus server's Go lexer (scanNumber) and to promql.py, not to lezer."""
    assert not official["x > 1."].ok
    assert _ours_accepts("x > 1.")
