"""A small recursive-descent PromQL parser and type checker for the subset this target emits.

No PromQL parser is on PyPI for Python without a Prometheus server, so the emitted rules are
checked here: tokens, operator precedence, label matchers (regexes compiled), range durations,
known functions and aggregations with their argument types (instant vector, range vector,
scalar, string). Anything outside the subset is rejected, not guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCALAR, VECTOR, RANGE, STRING = "scalar", "instant vector", "range vector", "string"

# function -> argument types (a trailing "*" makes the last type optional); result type
FUNCTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "rate": ((RANGE,), VECTOR),
    "irate": ((RANGE,), VECTOR),
    "increase": ((RANGE,), VECTOR),
    "avg_over_time": ((RANGE,), VECTOR),
    "max_over_time": ((RANGE,), VECTOR),
    "min_over_time": ((RANGE,), VECTOR),
    "histogram_quantile": ((SCALAR, VECTOR), VECTOR),
    "clamp_min": ((VECTOR, SCALAR), VECTOR),
    "clamp_max": ((VECTOR, SCALAR), VECTOR),
    "abs": ((VECTOR,), VECTOR),
    "absent": ((VECTOR,), VECTOR),
    "vector": ((SCALAR,), VECTOR),
    "scalar": ((VECTOR,), SCALAR),
}
AGGREGATIONS = {"sum", "avg", "min", "max", "count", "stddev", "stdvar", "group"}
PARAM_AGGREGATIONS = {"topk": SCALAR, "bottomk": SCALAR, "quantile": SCALAR}
COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}
KEYWORDS = {"by", "without", "bool", "and", "or", "unless", "offset", "on", "ignoring"}

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|==|!=|>=|<=|[-+*/%^<>=(){}\[\],])
    """,
    re.VERBOSE,
)
# units in this order, each at most once (the duration token above only finds where one ends)
_DURATION = re.compile(r"(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?")
# label names; only metric names may also contain ':'
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class PromQLError(ValueError):
    """The expression is not valid PromQL (in the subset this target emits)."""


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


def tokenize(expr: str) -> list[Token]:
    """Split an expression into tokens; an unknown character is an error with its position."""
    tokens, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            what = "unterminated string" if expr[pos] in "\"'" else "unexpected character"
            raise PromQLError(f"{what} {expr[pos]!r} at {pos} in {expr!r}")
        if m.lastgroup != "ws":
            tokens.append(Token(m.lastgroup or "", m.group(), pos))
        pos = m.end()
    tokens.append(Token("eof", "", pos))
    return tokens


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = tokenize(expr)
        self.i = 0

    # -- helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def fail(self, what: str) -> PromQLError:
        return PromQLError(f"{what} at {self.tok.pos} ({self.tok.text!r}) in {self.expr!r}")

    def take(self, text: str | None = None, kind: str | None = None) -> Token:
        tok = self.tok
        if (text is not None and tok.text != text) or (kind is not None and tok.kind != kind):
            raise self.fail(f"expected {text or kind}")
        self.i += 1
        return tok

    def at(self, *texts: str) -> bool:
        return self.tok.text in texts and self.tok.kind in ("op", "ident")

    def duration(self) -> None:
        if not _DURATION.fullmatch(self.tok.text):
            raise self.fail(
                "duration units must be in order y, w, d, h, m, s, ms, each at most once"
            )
        self.take(kind="duration")

    def label_name(self) -> str:
        if self.tok.kind != "ident" or not _LABEL_NAME.fullmatch(self.tok.text):
            raise self.fail("expected a label name")
        return self.take().text

    # -- grammar (lowest precedence first)
    def parse(self) -> str:
        kind = self.binary(0)
        if self.tok.kind != "eof":
            raise self.fail("unexpected trailing input")
        return kind

    LEVELS: tuple[tuple[str, ...], ...] = (
        ("or",),
        ("and", "unless"),
        tuple(sorted(COMPARISONS)),
        ("+", "-"),
        ("*", "/", "%"),
    )

    def binary(self, level: int) -> str:
        if level == len(self.LEVELS):
            return self.power()
        left = self.binary(level + 1)
        while self.at(*self.LEVELS[level]):
            op = self.take().text
            is_bool = False
            if op in COMPARISONS and self.at("bool"):
                self.take()
                is_bool = True
            right = self.binary(level + 1)
            left = self.combine(op, left, right, is_bool)
        return left

    def combine(self, op: str, left: str, right: str, is_bool: bool) -> str:
        for side in (left, right):
            if side in (RANGE, STRING):
                raise self.fail(f"operator {op!r} cannot take a {side}")
        if op in ("and", "or", "unless"):
            if left != VECTOR or right != VECTOR:
                raise self.fail(f"set operator {op!r} needs vectors on both sides")
            return VECTOR
        if op in COMPARISONS and left == SCALAR and right == SCALAR and not is_bool:
            raise self.fail("comparisons between scalars need `bool`")
        return VECTOR if VECTOR in (left, right) else SCALAR

    def power(self) -> str:
        base = self.unary()
        if self.at("^"):
            self.take()
            exponent = self.power()  # right-associative
            return self.combine("^", base, exponent, False)
        return base

    def unary(self) -> str:
        if self.at("-", "+"):
            self.take()
            kind = self.unary()
            if kind not in (SCALAR, VECTOR):
                raise self.fail("unary sign needs a scalar or vector")
            return kind
        return self.postfix(self.primary())

    def postfix(self, kind: str) -> str:
        # consume the flag: a selector nested in (...), a call or an aggregation must not leak out
        is_selector, self._last_was_selector = self._last_was_selector, False
        if self.at("["):
            if kind != VECTOR or not is_selector:
                raise self.fail("a range [..] must follow a vector selector")
            self.take("[")
            self.duration()
            self.take("]")
            kind = RANGE
        if self.at("offset"):
            self.take()
            self.duration()
        return kind

    _last_was_selector = False

    def primary(self) -> str:
        self._last_was_selector = False
        tok = self.tok
        if tok.kind == "number":
            self.take()
            return SCALAR
        if tok.kind == "string":
            self.take()
            return STRING
        if self.at("("):
            self.take("(")
            kind = self.binary(0)
            self.take(")")
            return kind
        if self.at("{"):
            self.matchers(require_one=True)
            self._last_was_selector = True
            return VECTOR
        if tok.kind == "ident":
            name = tok.text
            if name in AGGREGATIONS or name in PARAM_AGGREGATIONS:
                return self.aggregation()
            if name in FUNCTIONS and self.tokens[self.i + 1].text == "(":
                return self.call()
            if name in KEYWORDS:
                raise self.fail(f"keyword {name!r} where an expression was expected")
            if self.tokens[self.i + 1].text == "(":
                raise self.fail(f"unknown function {name!r}")
            self.take()
            if self.at("{"):
                self.matchers(require_one=False)
            self._last_was_selector = True
            return VECTOR
        raise self.fail("expected an expression")

    def matchers(self, require_one: bool) -> None:
        self.take("{")
        count = 0
        while not self.at("}"):
            label = self.label_name()
            if label.startswith("__") and label != "__name__":
                raise self.fail(f"reserved label {label!r}")
            op = self.take().text
            if op not in ("=", "!=", "=~", "!~"):
                raise self.fail(f"bad label matcher operator {op!r}")
            value = _unquote(self.take(kind="string").text)
            if op in ("=~", "!~"):
                try:
                    re.compile(value)
                except re.error as exc:
                    raise self.fail(f"bad regex {value!r}: {exc}") from None
            count += 1
            if not self.at("}"):
                self.take(",")
        self.take("}")
        if require_one and count == 0:
            raise self.fail("a selector without a metric name needs a matcher")

    def grouping(self) -> None:
        self.take()  # by | without
        self.take("(")
        while not self.at(")"):
            self.label_name()
            if not self.at(")"):
                self.take(",")
        self.take(")")

    def aggregation(self) -> str:
        name = self.take().text
        grouped = self.at("by", "without")
        if grouped:
            self.grouping()
        self.take("(")
        if name in PARAM_AGGREGATIONS:
            if self.binary(0) != PARAM_AGGREGATIONS[name]:
                raise self.fail(f"{name} needs a {PARAM_AGGREGATIONS[name]} parameter")
            self.take(",")
        if self.binary(0) != VECTOR:
            raise self.fail(f"aggregation {name!r} needs an instant vector")
        self.take(")")
        if not grouped and self.at("by", "without"):  # one grouping clause, before or after
            self.grouping()
        return VECTOR

    def call(self) -> str:
        name = self.take().text
        arg_types, result = FUNCTIONS[name]
        self.take("(")
        args: list[str] = []
        if not self.at(")"):  # comma-separated, no trailing comma
            args.append(self.binary(0))
            while self.at(","):
                self.take()
                args.append(self.binary(0))
        self.take(")")
        if tuple(args) != arg_types:
            raise self.fail(f"{name}() takes ({', '.join(arg_types)}), got ({', '.join(args)})")
        return result


def validate_promql(expr: str) -> str:
    """Parse and type-check an expression; return its type or raise PromQLError."""
    return _Parser(expr).parse()
