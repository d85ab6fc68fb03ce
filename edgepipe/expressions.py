"""Validation expressions: a small, safe language of boolean rules over a row's outputs.

A rule such as ``max(detections[:, 4]) > 0.9`` or ``not any(isnan(output0))`` is parsed
with Python's own parser (so the syntax is familiar) and then checked against a short
whitelist of node kinds before anything runs; it is then compiled once into closures
over numpy, never run by ``eval``. There is no attribute access, no imports, no
comprehensions, lambdas, keywords or starred arguments, no ``**`` (whose results can be
made huge), and a call may only name one of ``FUNCTIONS``, which are never values. Names are the outputs of the pipeline's last
step. Length and size are capped so that a rule cannot be a denial of service.

A rule holds when its value is true; an array value holds when all its elements are
true, and an empty array holds.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class _Numpy:
    """numpy, imported on first use: the operator parses rules with this module to check
    the names they read, and its image has no numpy; only running a rule needs it."""

    def __getattr__(self, name: str) -> Any:
        import numpy

        return getattr(numpy, name)


np = _Numpy()

MAX_LENGTH = 500
MAX_NODES = 100

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "any": lambda a: bool(np.any(a)),
    "all": lambda a: bool(np.all(a)),
    "max": lambda a: np.max(a) if np.size(a) else -np.inf,
    "min": lambda a: np.min(a) if np.size(a) else np.inf,
    "mean": lambda a: np.mean(a) if np.size(a) else np.nan,
    "sum": lambda a: np.sum(a),
    "count": lambda a: np.shape(a)[0] if np.ndim(a) else 1,  # rows: boxes, for detections
    "abs": lambda a: np.abs(a),
    "isnan": lambda a: np.isnan(a),
    "isfinite": lambda a: np.isfinite(a),
}

_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


def _divide(a: Any, b: Any) -> Any:
    """a / b, NaN where b is 0 (so that a rule over it does not hold)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    out = np.full(np.broadcast_shapes(a.shape, b.shape), np.nan)
    return np.divide(a, b, out=out, where=b != 0)


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: _divide,
}
_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.Compare,
    ast.Call,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Subscript,
    ast.Slice,
    ast.Tuple,
    *_COMPARE,
    *_BINARY,
)


class ExpressionError(ValueError):
    """A rule that is not in the language (caught at load, with the reason)."""


@dataclass(frozen=True)
class Rule:
    """A parsed, checked rule; ``names`` are the outputs it reads."""

    source: str
    names: frozenset[str]
    fn: Fn

    def holds(self, outputs: Mapping[str, np.ndarray]) -> bool:
        """Whether the rule holds for one row's outputs. Numerical trouble (a division by
        zero, a NaN) makes it not hold rather than fail the request."""
        with np.errstate(all="ignore"):
            try:
                value = self.fn(outputs)
            except (IndexError, KeyError, ValueError, TypeError, ZeroDivisionError):
                return False
        return bool(np.all(value))


def parse(source: str, names: frozenset[str] | None = None) -> Rule:
    """Parse and check a rule; ``names``, when given, are the only names it may read."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("expected a non-empty expression")
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not a valid expression: {exc.msg}") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise ExpressionError(f"more than {MAX_NODES} parts; keep rules short")
    used = set()
    callees = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
    for node in nodes:
        if not isinstance(node, _ALLOWED):
            raise ExpressionError(f"{_describe(node)} is not allowed in a rule")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                raise ExpressionError(
                    f"only these functions may be called: {', '.join(sorted(FUNCTIONS))}"
                )
            if node.keywords or len(node.args) != 1:
                raise ExpressionError(f"{node.func.id}() takes exactly one argument")
        elif isinstance(node, ast.Name) and node.id in FUNCTIONS and id(node) not in callees:
            raise ExpressionError(f"{node.id} is a function; call it, as in {node.id}(y)")
        elif isinstance(node, ast.Name) and node.id not in FUNCTIONS:
            if node.id.startswith("_"):
                raise ExpressionError(f"name {node.id!r} is not allowed")
            used.add(node.id)
        elif isinstance(node, ast.Constant) and (
            isinstance(node.value, bool) or not isinstance(node.value, int | float)
        ):
            raise ExpressionError(f"constant {node.value!r} is not a number")
        elif isinstance(node, ast.Subscript) and not _plain_index(node.slice):
            raise ExpressionError("indexes must be whole numbers or slices of them")
    if names is not None and not used <= names:
        unknown = ", ".join(sorted(used - names))
        raise ExpressionError(
            f"unknown name(s) {unknown}; the outputs are {', '.join(sorted(names))}"
        )
    return Rule(source, frozenset(used), _compile(tree.body))


def _plain_index(node: ast.AST) -> bool:
    if isinstance(node, ast.Tuple):
        return all(_plain_index(e) for e in node.elts)
    if isinstance(node, ast.Slice):
        parts = [p for p in (node.lower, node.upper, node.step) if p is not None]
        return all(_is_int(p) for p in parts)
    return _is_int(node)


def _is_int(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) is int


def _describe(node: ast.AST) -> str:
    kinds = {
        ast.Attribute: "attribute access",
        ast.Pow: "the ** operator",
        ast.Lambda: "lambda",
        ast.IfExp: "if-else",
        ast.NamedExpr: "the := operator",
    }
    for kind, words in kinds.items():
        if isinstance(node, kind):
            return words
    return type(node).__name__


Fn = Callable[[Mapping[str, Any]], Any]  # outputs by name (numpy arrays) -> a value


def _compile(node: ast.AST) -> Fn:
    """The checked tree as nested closures: each node's kind is looked at once, at load,
    not on every row."""
    if isinstance(node, ast.Constant):
        value = node.value
        return lambda env: value
    if isinstance(node, ast.Name):
        name = node.id
        return lambda env: env[name]
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda env: all(bool(np.all(p(env))) for p in parts)
        return lambda env: any(bool(np.all(p(env))) for p in parts)
    if isinstance(node, ast.UnaryOp):
        operand = _compile(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda env: not bool(np.all(operand(env)))
        if isinstance(node.op, ast.USub):
            return lambda env: -operand(env)
        return operand
    if isinstance(node, ast.BinOp):
        op, left, right = _BINARY[type(node.op)], _compile(node.left), _compile(node.right)
        return lambda env: op(left(env), right(env))
    if isinstance(node, ast.Compare):
        first = _compile(node.left)
        links = [
            (_COMPARE[type(o)], _compile(c))
            for o, c in zip(node.ops, node.comparators, strict=True)
        ]
        if len(links) == 1:
            ((op, right),) = links
            return lambda env: op(first(env), right(env))

        def chain(env: Mapping[str, np.ndarray]) -> Any:
            left, result = first(env), True
            for op, right_fn in links:
                right = right_fn(env)
                result = np.logical_and(result, op(left, right))
                left = right
            return result

        return chain
    if isinstance(node, ast.Call):
        fn, arg = FUNCTIONS[node.func.id], _compile(node.args[0])  # type: ignore[attr-defined]
        return lambda env: fn(arg(env))
    if isinstance(node, ast.Subscript):
        value, index = _compile(node.value), _index(node.slice)
        return lambda env: np.asarray(value(env))[index]
    raise ExpressionError(f"{type(node).__name__} cannot be evaluated")


def _index(node: ast.AST) -> Any:
    if isinstance(node, ast.Tuple):
        return tuple(_index(e) for e in node.elts)
    if isinstance(node, ast.Slice):
        parts = (node.lower, node.upper, node.step)
        return slice(*(None if p is None else _index(p) for p in parts))
    if isinstance(node, ast.UnaryOp):
        return -_index(node.operand)
    return node.value  # type: ignore[attr-defined]
