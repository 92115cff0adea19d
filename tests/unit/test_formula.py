"""pipeline.formula: what the safe expression language computes, and everything it refuses."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from pipeline.formula import FUNCTIONS, MAX_LENGTH, MAX_NODES, Formula, FormulaError

A = np.array([1.0, 2.0, 3.0, 4.0])
B = np.array([2.0, 0.0, 4.0, -1.0])


def ev(text: str, **columns):
    values, zeros = Formula.parse(text).evaluate(columns)
    return values, zeros


def values(text: str, **columns) -> list:
    out, _ = ev(text, **columns)
    return np.asarray(out, dtype=np.float64).tolist()


def same(got, expected) -> bool:
    return np.array_equal(np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                          equal_nan=True)


# --------------------------------------------------------------------------- parsing

def test_parse_keeps_text_and_names():
    f = Formula.parse("  log(total_charges) / tenure_months + max(a, 1)  ")
    assert f.text == "log(total_charges) / tenure_months + max(a, 1)"
    assert f.names == frozenset({"total_charges", "tenure_months", "a"})  # function names are not columns


def test_parse_is_pure_data():
    f = Formula.parse("a + 1")
    assert f == Formula.parse("a + 1")
    assert "tree" not in repr(f)


# --------------------------------------------------------------------------- arithmetic

@pytest.mark.parametrize("text, expected", [
    ("a + b", [3.0, 2.0, 7.0, 3.0]),
    ("a - b", [-1.0, 2.0, -1.0, 5.0]),
    ("a * b", [2.0, 0.0, 12.0, -4.0]),
    ("a ** 2", [1.0, 4.0, 9.0, 16.0]),
    ("-a", [-1.0, -2.0, -3.0, -4.0]),
    ("+a", [1.0, 2.0, 3.0, 4.0]),
    ("a + b * 2 - 1", [4.0, 1.0, 10.0, 1.0]),
    ("(a + b) * 2", [6.0, 4.0, 14.0, 6.0]),
    ("2 ** 3 ** 2", [512.0]),           # right-associative, as in Python
    ("-2 ** 2", [-4.0]),
    ("7 // 2 + 7 % 2", [4.0]),
    ("-7 // 2", [-4.0]),                 # floor division, as in Python
    ("-7 % 3", [2.0]),                   # sign of the divisor, as in Python
    ("1.5e2 + 0.5", [150.5]),
])
def test_arithmetic(text, expected):
    out = np.ravel(ev(text, a=A, b=B)[0]).tolist()
    assert out == pytest.approx(expected)


def test_result_is_float64_array():
    out, zeros = ev("a + 1", a=np.array([1, 2, 3], dtype=np.int64))
    assert out.dtype == np.float64
    assert out.tolist() == [2.0, 3.0, 4.0]
    assert zeros == 0


def test_constant_only_formula():
    out, zeros = ev("2 + 3")
    assert out.dtype == np.float64 and float(out) == 5.0 and zeros == 0


def test_pandas_series_and_lists_are_columns():
    out, _ = ev("a * 10", a=pd.Series([1, 2, 3]))
    assert out.tolist() == [10.0, 20.0, 30.0]
    out, _ = ev("a + 1", a=[1, 2, None])
    assert same(out, [2.0, 3.0, np.nan])
    out, _ = ev("a + 1", a=pd.Series([1, None], dtype="Int64").astype(object))
    assert same(out, [2.0, np.nan])


def test_single_record_matches_batch():
    """The serving path evaluates one record as 1-element arrays: identical numbers."""
    f = Formula.parse("log(a) * 2 + (b / a if a > 2 else -b) + clip(b, -1, 3)")
    batch, _ = f.evaluate({"a": A, "b": B})
    rows = [f.evaluate({"a": np.array([a]), "b": np.array([b])})[0][0] for a, b in zip(A, B)]
    assert same(batch, rows)


# --------------------------------------------------------------------------- comparisons and logic

@pytest.mark.parametrize("text, expected", [
    ("a > 2", [0, 0, 1, 1]),
    ("a >= 2", [0, 1, 1, 1]),
    ("a < 2", [1, 0, 0, 0]),
    ("a <= 2", [1, 1, 0, 0]),
    ("a == 2", [0, 1, 0, 0]),
    ("a != 2", [1, 0, 1, 1]),
    ("1 < a < 4", [0, 1, 1, 0]),
    ("1 < a <= 3 > b", [0, 1, 0, 0]),    # 3 > b fails where b is 4
    ("b < a < 3", [0, 1, 0, 0]),        # 2 < 1 fails in the first row
    ("a > 1 and b > 0", [0, 0, 1, 0]),
    ("a > 3 or b > 1", [1, 0, 1, 1]),
    ("not a > 2", [1, 1, 0, 0]),
    ("not (a > 1 and b >= 0)", [1, 0, 0, 1]),
    ("a > 1 and b > 0 or a == 1", [1, 0, 1, 0]),
    ("a if b > 0 else -1", [1, -1, 3, -1]),
    ("(a if a > 2 else 0) + 1", [1, 1, 4, 5]),
    ("1 if a > 3 else 2 if a > 1 else 3", [3, 2, 2, 1]),
    ("b and a", [1, 0, 1, 1]),           # numbers are truthy when non-zero
])
def test_comparisons_and_logic(text, expected):
    assert values(text, a=A, b=B) == [float(x) for x in expected]


def test_nan_compares_false_and_is_falsy():
    x = np.array([np.nan, 1.0])
    assert values("x > 0", x=x) == [0.0, 1.0]
    assert values("x == x", x=x) == [0.0, 1.0]
    assert values("1 if x else 2", x=x) == [2.0, 1.0]
    assert values("not x", x=x) == [1.0, 0.0]


def test_string_equality():
    contract = np.array(["two_year", "one_year", "month-to-month", None], dtype=object)
    assert values("contract == 'two_year'", contract=contract) == [1.0, 0.0, 0.0, 0.0]
    assert values("contract != 'two_year'", contract=contract) == [0.0, 1.0, 1.0, 1.0]
    assert values("'one_year' == contract", contract=contract) == [0.0, 1.0, 0.0, 0.0]
    # unicode arrays as well as object arrays
    assert values("c == 'x'", c=np.array(["x", "y"])) == [1.0, 0.0]
    # a comparison result is a number, usable in arithmetic
    assert values("(contract == 'two_year') * 10 + 1", contract=contract) == [11.0, 1.0, 1.0, 1.0]
    assert values("1 if contract == 'one_year' else 0", contract=contract) == [0.0, 1.0, 0.0, 0.0]


def test_text_outside_equality_is_an_error():
    c = np.array(["x", "y"], dtype=object)
    with pytest.raises(FormulaError, match="text can only be compared with == or !="):
        ev("c + 1", c=c)
    with pytest.raises(FormulaError, match="text can only be compared with == or !="):
        ev("c > 'a'", c=c)
    with pytest.raises(FormulaError, match="gives text, not a number"):
        ev("c", c=c)


def test_missing_column_is_an_error():
    with pytest.raises(FormulaError, match="column 'q' is not in the data"):
        ev("a + q", a=A)


@pytest.mark.parametrize("text", ["a + 'x'", "'x'", "log('x')", "'a' if b else 'c'"])
def test_string_outside_equality_rejected_at_parse(text):
    with pytest.raises(FormulaError):
        Formula.parse(text)


# --------------------------------------------------------------------------- functions

@pytest.mark.parametrize("text, x, expected", [
    ("abs(x)", [-1.5, 2.0], [1.5, 2.0]),
    ("log(x)", [1.0, np.e, 0.0, -1.0], [0.0, 1.0, np.nan, np.nan]),
    ("log1p(x)", [0.0, np.e - 1, -1.0], [0.0, 1.0, np.nan]),
    ("exp(x)", [0.0, 1.0], [1.0, np.e]),
    ("sqrt(x)", [4.0, 0.0, -1.0], [2.0, 0.0, np.nan]),
    ("floor(x)", [1.7, -1.2], [1.0, -2.0]),
    ("ceil(x)", [1.2, -1.7], [2.0, -1.0]),
    ("round(x)", [1.26, 2.5, -0.4], [1.0, 2.0, -0.0]),
    ("round(x, 1)", [1.26, 2.34], [1.3, 2.3]),
    ("min(x, 1)", [0.5, 3.0], [0.5, 1.0]),
    ("max(x, 1, 2)", [0.5, 3.0], [2.0, 3.0]),
    ("clip(x, 0, 10)", [-5.0, 5.0, 50.0], [0.0, 5.0, 10.0]),
    ("isnull(x)", [np.nan, 1.0], [1.0, 0.0]),
    ("fillnull(x, -1)", [np.nan, 1.0], [-1.0, 1.0]),
])
def test_functions(text, x, expected):
    out, zeros = ev(text, x=np.array(x))
    assert zeros == 0
    assert np.allclose(out, expected, equal_nan=True)


def test_function_table():
    assert sorted(FUNCTIONS) == ["abs", "ceil", "clip", "exp", "fillnull", "floor", "isnull", "log",
                                 "log1p", "max", "min", "round", "sqrt"]


@pytest.mark.parametrize("text, arity", [
    ("abs()", "1-1"), ("abs(a, b)", "1-1"), ("min(a)", "2-8"), ("clip(a, 1)", "3-3"),
    ("round(a, 1, 2)", "1-2"), ("max(a, a, a, a, a, a, a, a, a)", "2-8"),
])
def test_function_arity(text, arity):
    with pytest.raises(FormulaError, match=rf"takes {arity} arguments"):
        Formula.parse(text)


# --------------------------------------------------------------------------- division by zero

@pytest.mark.parametrize("op, expected", [
    ("/", [0.5, np.nan, 0.75, -4.0]),
    ("//", [0.0, np.nan, 0.0, -4.0]),
    ("%", [1.0, np.nan, 3.0, 0.0]),
])
def test_division_by_zero_is_nan_and_counted(op, expected):
    out, zeros = ev(f"a {op} b", a=A, b=B)
    assert same(out, expected)
    assert zeros == 1


def test_division_by_zero_counts_every_zero_row():
    out, zeros = ev("a / b", a=np.array([1.0, 2.0, 3.0]), b=np.array([0.0, 0.0, 1.0]))
    assert same(out, [np.nan, np.nan, 3.0])
    assert zeros == 2


def test_division_by_zero_with_scalars_and_nested():
    out, zeros = ev("0 / 0")
    assert np.isnan(out) and zeros == 1
    out, zeros = ev("1 / (a - a)", a=A)
    assert np.isnan(out).all() and zeros == 4
    out, zeros = ev("fillnull(a / b, 0)", a=A, b=B)
    assert same(out, [0.5, 0.0, 0.75, -4.0]) and zeros == 1


def test_no_division_no_count():
    assert ev("a * b + 1", a=A, b=B)[1] == 0
    assert ev("a / 2", a=A)[1] == 0


def test_division_by_zero_count_is_rows_not_operations():
    out, zeros = ev("a / b + a % b", a=np.array([1.0, 2.0]), b=np.array([0.0, 1.0]))
    assert same(out, [np.nan, 2.0])
    assert zeros == 1


# --------------------------------------------------------------------------- limits

@pytest.mark.parametrize("text", ["10 ** 10 ** 10", "9 ** 9 ** 9 ** 9", "a ** 99999999999", "2 ** 2 ** 2 ** 2 ** 2 ** 2"])
def test_huge_powers_do_not_hang(text):
    start = time.perf_counter()
    out, _ = ev(text, a=A)
    assert time.perf_counter() - start < 1.0
    assert np.all(np.isinf(out) | (np.asarray(out) == 1.0))


def test_length_limit():
    text = "a + " * ((MAX_LENGTH // 4) - 1) + "1"
    assert len(text) <= MAX_LENGTH
    with pytest.raises(FormulaError, match=f"at most {MAX_LENGTH} characters"):
        Formula.parse(text + " + 1")
    with pytest.raises(FormulaError, match=f"at most {MAX_LENGTH} characters"):
        Formula.parse("1" * (MAX_LENGTH + 1))


def test_node_limit():
    # "a + a + ... (n terms)": Expression + (n-1) x (BinOp, Add) + n x (Name, Load) = 4n - 1 nodes
    assert MAX_NODES == 200
    Formula.parse(" + ".join(["a"] * 50))          # 199 nodes
    with pytest.raises(FormulaError, match=f"at most {MAX_NODES} terms"):
        Formula.parse(" + ".join(["a"] * 51))      # 203 nodes


@pytest.mark.parametrize("text", ["-" * 900 + "1", "not " * 240 + "a", "(" * 300 + "1" + ")" * 300,
                                  "a < " * 240 + "a"])
def test_deep_nesting_is_a_formula_error(text):
    with pytest.raises(FormulaError):
        Formula.parse(text)


@pytest.mark.parametrize("text", [None, "", "   ", 42])
def test_empty_or_non_string(text):
    with pytest.raises(FormulaError, match="non-empty string"):
        Formula.parse(text)


# --------------------------------------------------------------------------- rejected constructs

@pytest.mark.parametrize("text, needle", [
    ("a.real", "attribute access is not allowed"),
    ("a.__class__", "attribute access is not allowed"),
    ("x.__class__.__bases__[0].__subclasses__()", "not allowed"),
    ("a[0]", "subscript is not allowed"),
    ("lambda: 1", "lambda is not allowed"),
    ("(lambda x: x)(1)", "not allowed"),
    ("[x for x in a]", "is not allowed"),
    ("{x for x in a}", "is not allowed"),
    ("sum(x for x in a)", "is not allowed"),
    ("__import__('os')", "function '__import__' is not allowed"),
    ("__import__('os').system('x')", "is not allowed"),
    ("import os", "not a valid expression"),
    ("_a + 1", "names starting with '_' are not allowed: '_a'"),
    ("__builtins__", "names starting with '_' are not allowed"),
    ("round(a, ndigits=2)", "keyword arguments are not allowed"),
    ("max(a, b, key=abs)", "keyword arguments are not allowed"),
    ("eval('1')", "function 'eval' is not allowed"),
    ("exec('1')", "function 'exec' is not allowed"),
    ("open('/etc/passwd')", "function 'open' is not allowed"),
    ("getattr(a, 'b')", "function 'getattr' is not allowed"),
    ("sum(a)", "function 'sum' is not allowed"),
    ("pow(a, 2)", "function 'pow' is not allowed"),
    ("f'{a}'", "joinedstr is not allowed"),
    ("(a, b)", "tuple is not allowed"),
    ("[1, 2]", "list is not allowed"),
    ("{1: 2}", "dict is not allowed"),
    ("{1}", "set is not allowed"),
    ("(y := 1)", "namedexpr is not allowed"),
    ("max(a, *b)", "starred is not allowed"),
    ("None", "constant None is not allowed"),
    ("b'x'", "constant b'x' is not allowed"),
    ("1j", "constant 1j is not allowed"),
    ("...", "constant Ellipsis is not allowed"),
    ("a is b", "Is is not allowed"),
    ("a in b", "In is not allowed"),
    ("~a", "Invert is not allowed"),
    ("a << 1", "LShift is not allowed"),
    ("a & b", "BitAnd is not allowed"),
    ("a @ b", "MatMult is not allowed"),
    ("await a", "Await is not allowed"),
    ("a; b", "not a valid expression"),
    ("a = 1", "not a valid expression"),
    ("1 +", "not a valid expression"),
])
def test_rejected_constructs(text, needle):
    with pytest.raises(FormulaError) as info:
        Formula.parse(text)
    assert needle in str(info.value)


def test_rejections_never_run_code(tmp_path):
    marker = tmp_path / "pwned"
    for text in (f"__import__('os').system('touch {marker}')",
                 f"open('{marker}', 'w')",
                 f"(lambda: __import__('os').system('touch {marker}'))()"):
        with pytest.raises(FormulaError):
            Formula.parse(text).evaluate({})
    assert not marker.exists()


# --------------------------------------------------------------------------- allowed_names

def test_allowed_names_accepts_known_names():
    f = Formula.parse("120 * tp - 20 * fp", allowed_names=("tp", "fp", "tn", "fn"))
    assert f.names == frozenset({"tp", "fp"})
    out, _ = f.evaluate({"tp": np.float64(10), "fp": np.float64(3)})
    assert float(out) == 1140.0


def test_allowed_names_rejects_unknown_names():
    with pytest.raises(FormulaError) as info:
        Formula.parse("120 * tp - cost + revenue", allowed_names=["tp", "fp"])
    message = str(info.value)
    assert "unknown name(s) cost, revenue" in message
    assert "available: fp, tp" in message


def test_allowed_names_does_not_restrict_functions():
    Formula.parse("log(tp) + max(tp, fp)", allowed_names=["tp", "fp"])


def test_allowed_names_still_rejects_functions_outside_whitelist():
    with pytest.raises(FormulaError, match="function 'tp' is not allowed"):
        Formula.parse("tp(1)", allowed_names=["tp"])
