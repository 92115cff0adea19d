"""A safe expression language for `derived` features and `formula` metrics.

Written by hand on purpose: pandas.eval and numexpr allow attribute access and evaluate through
`eval`, and simpleeval works on Python scalars. A spec is untrusted text, so a formula is parsed
with `ast`, checked against a whitelist of node types and functions, and evaluated by walking the
tree over numpy arrays; nothing in it is ever handed to `eval`/`exec`. The same code evaluates a
column batch and a single serving record (a 1-element array), so both give identical numbers.

Language: numbers, column names, + - * / // % **, unary -, comparisons (chains allowed), `and`,
`or`, `not`, `x if cond else y`, and the functions in FUNCTIONS. Strings are allowed only as
operands of == and != (`contract == 'two_year'`). Division by zero gives null (NaN) and is counted.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np

from pipeline.errors import RaylineError

MAX_LENGTH = 1000
MAX_NODES = 200


def _safe_log(x: np.ndarray) -> np.ndarray:
    return np.log(np.where(x > 0, x, np.nan))


def _safe_sqrt(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.where(x >= 0, x, np.nan))


FUNCTIONS: dict[str, tuple[Callable[..., np.ndarray], int, int]] = {
    # name: (implementation, min args, max args)
    "abs": (np.abs, 1, 1),
    "log": (_safe_log, 1, 1),
    "log1p": (lambda x: _safe_log(1.0 + x), 1, 1),
    "exp": (np.exp, 1, 1),
    "sqrt": (_safe_sqrt, 1, 1),
    "floor": (np.floor, 1, 1),
    "ceil": (np.ceil, 1, 1),
    "round": (lambda x, d=np.float64(0): np.round(x, int(np.asarray(d).flat[0])), 1, 2),
    "min": (lambda *xs: np.minimum.reduce(np.broadcast_arrays(*xs)), 2, 8),
    "max": (lambda *xs: np.maximum.reduce(np.broadcast_arrays(*xs)), 2, 8),
    "clip": (np.clip, 3, 3),
    "isnull": (lambda x: np.isnan(x).astype(np.float64), 1, 1),
    "fillnull": (lambda x, v: np.where(np.isnan(x), v, x), 2, 2),
}

_BINOPS = {
    ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Pow: np.power,
    ast.Div: None, ast.FloorDiv: None, ast.Mod: None,  # zero-guarded below
}
_COMPARE = {
    ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal,
    ast.Eq: None, ast.NotEq: None,  # may compare strings, handled below
}
_ALLOWED_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.IfExp, ast.Call,
    ast.Name, ast.Constant, ast.Load, ast.USub, ast.UAdd, ast.Not, ast.And, ast.Or,
    *_BINOPS, *_COMPARE,
)


class FormulaError(RaylineError, ValueError):
    """A formula that is not in the language, or names something it may not."""

    title = "not a valid formula"


@dataclass(frozen=True)
class Formula:
    text: str
    tree: ast.Expression = field(repr=False, compare=False)
    names: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str, allowed_names: Iterable[str] | None = None) -> "Formula":
        if not isinstance(text, str) or not text.strip():
            raise FormulaError("a formula must be a non-empty string")
        if len(text) > MAX_LENGTH:
            raise FormulaError(f"a formula may be at most {MAX_LENGTH} characters")
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise FormulaError(f"not a valid expression: {exc.msg} in {text!r}") from None
        nodes = list(ast.walk(tree))
        if len(nodes) > MAX_NODES:
            raise FormulaError(f"a formula may have at most {MAX_NODES} terms")
        names: set[str] = set()
        for node in nodes:
            _check_node(node, text)
            if isinstance(node, ast.Name) and not _is_function_position(node, tree):
                names.add(node.id)
        _check_text_operands(tree, text)
        if allowed_names is not None:
            unknown = sorted(names - set(allowed_names))
            if unknown:
                raise FormulaError(
                    f"unknown name(s) {', '.join(unknown)} in {text!r}; "
                    f"available: {', '.join(sorted(allowed_names))}"
                )
        return cls(text=text.strip(), tree=tree, names=frozenset(names))

    def evaluate(self, columns: Mapping[str, object]) -> tuple[np.ndarray, int]:
        """(values as float64, number of rows where a division by zero gave null)."""
        zero_rows: list = [False]  # one mask, or-ed over every division in the formula
        out = _eval(self.tree.body, columns, zero_rows)
        out = np.asarray(out)
        if out.dtype.kind in "UO":
            raise FormulaError(f"{self.text!r} gives text, not a number")
        return out.astype(np.float64, copy=False), int(np.count_nonzero(zero_rows[0]))


def _check_text_operands(tree: ast.AST, text: str) -> None:
    """Text may only stand beside == or != (`contract == 'two_year'`); anywhere else it is an
    error now rather than when the formula first meets data."""
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and all(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            allowed.update(id(operand) for operand in (node.left, *node.comparators))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in allowed:
            raise FormulaError(f"text can only be compared with == or != (found {node.value!r}) "
                               f"in {text!r}")


def _is_function_position(name: ast.Name, tree: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and n.func is name for n in ast.walk(tree))


def _check_node(node: ast.AST, text: str) -> None:
    if isinstance(node, ast.Attribute):
        raise FormulaError(f"attribute access is not allowed in a formula: {text!r}")
    if isinstance(node, (ast.Subscript, ast.Lambda, ast.comprehension, ast.Starred,
                         ast.NamedExpr, ast.JoinedStr, ast.List, ast.Tuple, ast.Dict, ast.Set)):
        raise FormulaError(f"{type(node).__name__.lower()} is not allowed in a formula: {text!r}")
    if not isinstance(node, _ALLOWED_NODES):
        raise FormulaError(f"{type(node).__name__} is not allowed in a formula: {text!r}")
    if isinstance(node, ast.Name) and node.id.startswith("_"):
        raise FormulaError(f"names starting with '_' are not allowed: {node.id!r} in {text!r}")
    if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str)):
        raise FormulaError(f"constant {node.value!r} is not allowed in {text!r}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            called = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise FormulaError(
                f"function {called!r} is not allowed in {text!r}; "
                f"allowed: {', '.join(sorted(FUNCTIONS))}"
            )
        if node.keywords:
            raise FormulaError(f"keyword arguments are not allowed in {text!r}")
        _, low, high = FUNCTIONS[node.func.id]
        if not low <= len(node.args) <= high:
            raise FormulaError(f"{node.func.id}() takes {low}-{high} arguments in {text!r}")


def _eval(node: ast.AST, columns: Mapping[str, object], counter: list[int]):
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            return node.value
        # float64 before any arithmetic: Python ints would make 10**10**10 run forever.
        return np.float64(node.value)
    if isinstance(node, ast.Name):
        if node.id not in columns:
            raise FormulaError(f"column {node.id!r} is not in the data")
        return _as_array(columns[node.id])
    if isinstance(node, ast.UnaryOp):
        value = _numeric(_eval(node.operand, columns, counter))
        if isinstance(node.op, ast.Not):
            return (~_truthy(value)).astype(np.float64)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp):
        left = _numeric(_eval(node.left, columns, counter))
        right = _numeric(_eval(node.right, columns, counter))
        func = _BINOPS[type(node.op)]
        if func is not None:
            with np.errstate(all="ignore"):
                return func(left, right)
        return _guarded_division(type(node.op), left, right, counter)
    if isinstance(node, ast.Compare):
        result = None
        left = _eval(node.left, columns, counter)
        for op, comparator in zip(node.ops, node.comparators):
            right = _eval(comparator, columns, counter)
            step = _compare(type(op), left, right)
            result = step if result is None else (result & step)
            left = right
        return result.astype(np.float64)
    if isinstance(node, ast.BoolOp):
        values = [_truthy(_numeric(_eval(v, columns, counter))) for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        return combine.reduce(np.broadcast_arrays(*values)).astype(np.float64)
    if isinstance(node, ast.IfExp):
        cond = _truthy(_numeric(_eval(node.test, columns, counter)))
        return np.where(cond, _numeric(_eval(node.body, columns, counter)),
                        _numeric(_eval(node.orelse, columns, counter)))
    if isinstance(node, ast.Call):
        func = FUNCTIONS[node.func.id][0]
        args = [_numeric(_eval(a, columns, counter)) for a in node.args]
        with np.errstate(all="ignore"):
            return func(*args)
    raise FormulaError(f"{type(node).__name__} is not allowed")  # unreachable after parse()


def _as_array(value: object) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind in "biuf":
        return array.astype(np.float64, copy=False)
    if array.dtype.kind == "O":
        # Nullable pandas columns arrive as objects holding None/NA: numbers become float, the
        # rest stay text for == / != comparisons.
        try:
            return np.array([np.nan if _is_missing(v) else float(v) for v in array.ravel()],
                            dtype=np.float64).reshape(array.shape)
        except (TypeError, ValueError):
            return array
    return array


def _is_missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or str(v) in ("<NA>", "NaT")


def _numeric(value):
    array = np.asarray(value)
    if array.dtype.kind in "UO":
        raise FormulaError("text can only be compared with == or !=")
    return array.astype(np.float64, copy=False)


def _truthy(value: np.ndarray) -> np.ndarray:
    return np.nan_to_num(value, nan=0.0) != 0


def _compare(op: type, left, right) -> np.ndarray:
    if op in (ast.Eq, ast.NotEq):
        left_a, right_a = np.asarray(left), np.asarray(right)
        if left_a.dtype.kind in "UO" or right_a.dtype.kind in "UO":
            equal = np.asarray(left_a.astype(object) == right_a.astype(object), dtype=bool)
        else:
            equal = np.asarray(left_a == right_a, dtype=bool)
        return equal if op is ast.Eq else ~equal
    with np.errstate(invalid="ignore"):
        return np.asarray(_COMPARE[op](_numeric(left), _numeric(right)), dtype=bool)


def _guarded_division(op: type, left: np.ndarray, right: np.ndarray, counter: list[int]):
    left, right = np.broadcast_arrays(left, right)
    zero = right == 0
    counter[0] = np.logical_or(counter[0], zero & ~np.isnan(left))
    safe = np.where(zero, 1.0, right)
    with np.errstate(all="ignore"):
        if op is ast.Div:
            out = left / safe
        elif op is ast.FloorDiv:
            out = np.floor_divide(left, safe)
        else:
            out = np.mod(left, safe)
    return np.where(zero, np.nan, out)
