"""The contract of a feature step, and the registry that the pipeline and the spec read.

A step class is one method (`standard_scaler`, `one_hot`, ...). The class describes the method
to the spec (aliases, option keys and their types, the checks on them) and to `from_spec` (which
column kinds it reads and what it turns them into). An instance is one step of a pipeline: a
transformation's name, columns and options, and once fitted its JSON state per column.

Adding a method: subclass Step in a module of this package, decorate it with `@register`, and
import the module in `steps/__init__.py`. The spec and the contract test
(tests/unit/test_feature_steps.py) pick it up from the registry.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

import numpy as np

from pipeline.features.errors import FeatureError
from pipeline.features.values import CATEGORICAL, NUMERIC

# Keys of a transformation that are not a method's options.
RESERVED_KEYS = frozenset({"name", "columns", "method", "derived"})


@dataclass(frozen=True, eq=False)
class Option:
    """A spec key a step reads. One Option object per key: steps that share a key share the
    object (one_hot and ordinal both read `categories`), as the spec has one field for it.

    `annotation` is the pydantic type of the field, `constraints` the keyword arguments of its
    pydantic Field (kept as a dict so step modules need not import pydantic). `check` is the
    key's own rule, applied whichever method the transformation names: it gets the
    transformation and returns why it is invalid, or None."""

    key: str
    annotation: Any
    default: Any = None
    constraints: Mapping[str, Any] = field(default_factory=dict)
    check: Optional[Callable[[Any], Optional[str]]] = None


def summary(value: float) -> str:
    return f"{value:.6g}"


def count(counters: dict, key: str, column: str, n) -> None:
    bucket = counters[key]
    bucket[column] = bucket.get(column, 0) + int(n)


class Step:
    """One method. Class attributes describe it; an instance is one step of a pipeline.

    A step reads its columns one at a time: `fit_column` turns the training values of one
    column into a JSON-able dict, `apply` transforms an array of that column with it. Both
    paths (a frame, JSON records) call the same `apply` on the same canonical arrays: float64
    for numbers (NaN for null), object arrays of canonical strings (None for null) for
    categories that are not encoded yet. `small` says the array comes from a handful of
    records (pure Python beats pandas there); it must never change the result.
    """

    method: ClassVar[str] = ""                 # its name in the spec and the saved state
    aliases: ClassVar[tuple[str, ...]] = ()    # other spellings the spec accepts
    options: ClassVar[tuple[Option, ...]] = ()
    accepts: ClassVar[frozenset] = frozenset({NUMERIC})  # kinds of column it reads
    produces: ClassVar[Optional[str]] = None   # the kind its column has afterwards (None: same)
    replaces: ClassVar[Optional[str]] = None   # how it replaces its column by new ones ("one-hot
    #                                            encoded"); the column cannot be read again
    counts: ClassVar[tuple[str, ...]] = ()     # the pipeline.stats counters it adds to
    in_spec: ClassVar[bool] = True             # False: added by the pipeline only
    applies: ClassVar[bool] = True             # False: nothing to do after reading the raw values
    # Spec option sets the contract test runs the step with (each valid for some kind it
    # accepts; a `categories` option may name the column "x").
    examples: ClassVar[tuple[Mapping[str, Any], ...]] = ({},)

    def __init__(self, name: str, columns: Sequence[str], options: Optional[Mapping] = None, *,
                 auto: Any = False, fitted: Optional[Mapping] = None):
        self.name = name
        self.columns = list(columns)
        self.options = copy.deepcopy(dict(options or {}))
        self.auto = auto
        self.fitted: Optional[dict] = None
        self._compiled: dict = {}
        if fitted is not None:
            self.set_fitted(copy.deepcopy(dict(fitted)))

    # ------------------------------------------------------------------ the spec's side

    @classmethod
    def spec_defaults(cls, t) -> dict:
        """Values for options the transformation `t` left out."""
        return {}

    @classmethod
    def check_spec(cls, t) -> Optional[str]:
        """Why the transformation `t` cannot run as written, or None."""
        return None

    @classmethod
    def kind_after(cls, column: str, kind: str, values: Mapping[str, Any]) -> Optional[str]:
        """The kind `column` has after this step (None: it is replaced); raises FeatureError
        when the step cannot read a column of `kind` with the spec's option `values`."""
        if kind not in cls.accepts:
            if kind == CATEGORICAL:
                raise FeatureError(f"column {column!r} is categorical; encode it with "
                                   f"{' or '.join(registry.encoders())} first", column=column)
            raise FeatureError(f"column {column!r} is {kind}; {cls.method} reads "
                               f"{' or '.join(sorted(cls.accepts))} columns", column=column)
        if cls.replaces:
            return None
        return cls.produces or kind

    @classmethod
    def state_options(cls, values: Mapping[str, Any], columns: Sequence[str]) -> dict:
        """The options saved in the state, from the spec's option values."""
        return {option.key: values[option.key] for option in cls.options}

    # ------------------------------------------------------------------ data

    def fit_column(self, column: str, x: np.ndarray) -> dict:
        """The JSON-able fitted state of one column, from its training values."""
        raise NotImplementedError

    def compile_column(self, column: str, fitted: dict) -> Any:
        """What `apply` reads for the column, built once at fit/load (the record path runs
        on every request and must not rebuild lookup tables)."""
        return fitted

    def apply(self, column: str, x: np.ndarray, small: bool, counters: Optional[dict]):
        """The transformed column, or {output name: column} when the step replaces it. Numeric
        arrays reaching a step belong to this pipeline run (read fresh from the input, or a
        step's own result): numeric steps may work in place."""
        raise NotImplementedError

    def output_names(self, column: str) -> list[str]:
        return [column]

    def describe_column(self, column: str, fitted: dict) -> str:
        return ""

    def describe(self) -> str:
        if self.fitted is None:
            return "not fitted"
        return "; ".join(f"{col}: {self.describe_column(col, f)}" for col, f in self.fitted.items())

    @property
    def label(self) -> str:
        """The method as a describe() row shows it."""
        return self.method

    def known_categories(self) -> dict[str, set[str]]:
        """Per column the categories it was fitted on (encoders only)."""
        return {}

    # ------------------------------------------------------------------ state

    def set_fitted(self, fitted: dict) -> None:
        self._compiled = {col: self.compile_column(col, f) for col, f in fitted.items()}
        self.fitted = fitted

    def unfitted(self) -> "Step":
        return type(self)(self.name, self.columns, self.options, auto=self.auto)

    def to_dict(self) -> dict:
        return {"name": self.name, "method": self.method, "columns": list(self.columns),
                "options": copy.deepcopy(self.options), "auto": self.auto,
                "fitted": copy.deepcopy(self.fitted)}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Step":
        method = d["method"]
        try:
            cls = registry.step_class(method)
        except (KeyError, TypeError):  # TypeError: a method that is not a string (unhashable)
            raise FeatureError(f"unknown method {method!r} in step {d['name']!r}") from None
        return cls(d["name"], d["columns"], d["options"], auto=d["auto"], fitted=d["fitted"])


class Registry:
    """Step classes by method name, in registration order (the order the spec lists them)."""

    def __init__(self):
        self._steps: dict[str, type[Step]] = {}
        self._aliases: dict[str, str] = {}
        self._options: dict[str, Option] = {}
        self._key_order: tuple[str, ...] = ()

    def register(self, cls: type[Step]) -> type[Step]:
        """Class decorator: add a step class. Refuses a name or alias already taken, and an
        option key some other step declares with another Option object."""
        method = cls.method
        if not method or not isinstance(method, str):
            raise TypeError(f"{cls.__name__} has no method name")
        for name in (method, *cls.aliases):
            if name in self._steps or name in self._aliases:
                raise ValueError(f"{cls.__name__}: {name!r} is already a registered method or alias")
        for option in cls.options:
            if option.key in RESERVED_KEYS:
                raise ValueError(f"{cls.__name__}: option {option.key!r} is a transformation key")
            known = self._options.get(option.key)
            if known is not None and known is not option:
                raise ValueError(f"{cls.__name__}: option {option.key!r} is declared differently "
                                 f"by another step; share its Option object")
        self._steps[method] = cls
        self._aliases.update({alias: method for alias in cls.aliases})
        for option in cls.options:
            self._options.setdefault(option.key, option)
        return cls

    def step_class(self, method: str) -> type[Step]:
        return self._steps[method]

    def methods(self, spec_only: bool = False) -> tuple[str, ...]:
        return tuple(m for m, cls in self._steps.items() if cls.in_spec or not spec_only)

    def aliases(self) -> dict[str, str]:
        """Other spelling -> method name."""
        return dict(self._aliases)

    def order_options(self, keys: Sequence[str]) -> None:
        """List these option keys first in the spec (the rest follow in declaration order)."""
        self._key_order = tuple(keys)

    def spec_options(self) -> tuple[Option, ...]:
        """Every option key of a spec method: those `order_options` names first, then in the
        order steps first declare them."""
        used = [o for o in self._options.values()
                if any(o in cls.options for cls in self._steps.values() if cls.in_spec)]
        first = {key: i for i, key in enumerate(self._key_order)}
        return tuple(sorted(used, key=lambda o: first.get(o.key, len(first))))

    def counters(self) -> tuple[str, ...]:
        """Every pipeline.stats counter a step adds to."""
        return tuple(dict.fromkeys(k for cls in self._steps.values() for k in cls.counts))

    def encoders(self) -> tuple[str, ...]:
        """Spec methods that turn a categorical column into numbers."""
        return tuple(m for m, cls in self._steps.items() if cls.in_spec
                     and CATEGORICAL in cls.accepts and (cls.replaces or cls.produces == NUMERIC))


registry = Registry()
register = registry.register
