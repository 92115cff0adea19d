"""From the spec's `transformations` to the steps of an unfitted pipeline: derived features, the
spec's steps, and the pipeline's own defaults around them. Every mistake that needs no data (an
unknown column, a step that cannot read a column's kind, ...) is found here, before any data is
read, naming the transformation."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from pipeline.features.errors import FeatureError
from pipeline.features.steps import Step, registry
from pipeline.features.steps.boolean import Boolean
from pipeline.features.steps.impute import Impute
from pipeline.features.steps.one_hot import OneHot
from pipeline.features.transformation import from_mapping
from pipeline.features.values import BOOLEAN, CATEGORICAL, NUMERIC, normalise_kind
from pipeline.formula import Formula

AUTO_ONE_HOT_MAX_CATEGORIES = 100


def plan(transformations: Iterable[Any], input_columns: Sequence[str],
         column_kinds: Mapping[str, str]) -> tuple[dict, list[dict], list[Step]]:
    """(kinds of the columns read, derived features, steps) for FeaturePipeline's constructor.
    A transformation is the spec's Transformation or a dict of the same keys."""
    input_columns = list(input_columns)
    if len(set(input_columns)) != len(input_columns):
        raise FeatureError("input_columns lists a column twice")
    transformations = [from_mapping(t) if isinstance(t, Mapping) else t for t in transformations]
    derived = _derived(transformations, input_columns, column_kinds)

    for c in input_columns:
        if c not in column_kinds:
            raise FeatureError(f"column_kinds has no kind for input column {c!r}", column=c)
    derived_names = {d["name"] for d in derived}
    read = {n for d in derived for n in Formula.parse(d["formula"]).names} - derived_names
    kinds = {c: normalise_kind(column_kinds[c], c) for c in [*input_columns, *sorted(read)]}

    # Track each column's kind through the steps, so mistakes surface before any data is read.
    state: dict[str, str] = {c: (CATEGORICAL if kinds[c] == CATEGORICAL else NUMERIC)
                             for c in input_columns}
    state.update({d["name"]: NUMERIC for d in derived})
    replaced_by: dict[str, tuple[str, str]] = {}   # column -> (transformation, how)
    steps: list[Step] = []
    booleans = [c for c in input_columns if kinds[c] == BOOLEAN]
    if booleans:
        steps.append(Boolean("auto_boolean", booleans, {}, auto=True))
    for t in transformations:
        if t.derived is not None:
            continue
        steps.append(_step(t, state, replaced_by))

    leftover = [c for c, k in state.items() if k == CATEGORICAL]
    if leftover:
        steps.append(OneHot("auto_one_hot", leftover,
                            {"categories": {}, "max_categories": AUTO_ONE_HOT_MAX_CATEGORIES},
                            auto=True))
        for c in leftover:
            del state[c]
    numeric = [c for c, k in state.items() if k == NUMERIC]
    if numeric:
        steps.append(Impute("auto_impute", numeric, {"strategy": "median", "fill_value": None},
                            auto=True))
    return kinds, derived, steps


def _derived(transformations: list, input_columns: list[str],
             column_kinds: Mapping[str, str]) -> list[dict]:
    derived: list[dict] = []
    for t in transformations:
        for d in t.derived or []:
            if d.name in input_columns:
                raise FeatureError(f"derived feature {d.name!r} (transformation {t.name!r}) "
                                   f"has the name of an input column", transformation=t.name)
            if any(x["name"] == d.name for x in derived):
                raise FeatureError(f"derived feature {d.name!r} is defined twice",
                                   transformation=t.name)
            formula = Formula.parse(d.formula)
            known = set(column_kinds) | set(input_columns) | {x["name"] for x in derived}
            unknown = sorted(formula.names - known)
            if unknown:
                raise FeatureError(
                    f"derived feature {d.name!r} (transformation {t.name!r}) reads "
                    f"{', '.join(map(repr, unknown))}: not an input column, an earlier derived "
                    f"feature or a column of known kind", transformation=t.name)
            derived.append({"step": t.name, "name": d.name, "formula": d.formula})
    return derived


def _step(t, state: dict[str, str], replaced_by: dict[str, tuple[str, str]]) -> Step:
    """The step of one transformation; updates the kinds in `state`."""
    cls = registry.step_class(t.method)
    columns = list(t.columns or [])
    if len(set(columns)) != len(columns):
        raise FeatureError(f"transformation {t.name!r} lists a column twice",
                           transformation=t.name)
    where = f"transformation {t.name!r} ({t.method})"
    values = {option.key: getattr(t, option.key) for option in cls.options}
    for col in columns:
        if col in replaced_by:
            by, how = replaced_by[col]
            raise FeatureError(f"{where}: column {col!r} was already {how} by transformation "
                               f"{by!r}", transformation=t.name, column=col)
        if col not in state:
            raise FeatureError(
                f"{where}: column {col!r} is not an input column (it is missing from the data "
                f"or excluded as target, id or by features) nor a derived feature",
                transformation=t.name, column=col)
        try:
            kind = cls.kind_after(col, state[col], values)
        except FeatureError as exc:
            raise FeatureError(f"{where}: {exc}", transformation=t.name, column=col) from None
        if kind is None:
            replaced_by[col] = (t.name, cls.replaces)
            del state[col]
        else:
            state[col] = kind
    try:
        options = cls.state_options(values, columns)
    except FeatureError as exc:
        raise FeatureError(f"{where}: {exc}", transformation=t.name, column=exc.column) from None
    return cls(t.name, columns, options)
