"""What a transformation is, for the spec and for `from_spec`: its keys, the rules no single key
states, and a transformation written as a plain dict.

The spec (pipeline.spec.features) builds its pydantic model from the registry and applies
`rules`; the feature pipeline sits below the spec and never imports it, so a dict handed to
`FeaturePipeline.from_spec` (tests, scripts) is read here, with the same keys, aliases, defaults
and rules but without the spec's type checks.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Mapping

from pipeline.features.errors import FeatureError
from pipeline.features.steps import registry

BASE_KEYS = ("name", "columns", "method", "derived")


def keys() -> tuple[str, ...]:
    return (*BASE_KEYS, *(o.key for o in registry.spec_options()))


def rules(t) -> dict[str, Any]:
    """The values to set on the transformation `t` (defaults of its method's options); raises
    ValueError with the spec's wording when `t` breaks a rule."""
    if t.derived is not None:
        if t.method is not None or t.columns is not None:
            raise ValueError("a transformation has either derived or method+columns, not both")
        return {}
    if t.method is None or not t.columns:
        raise ValueError("a transformation needs method and columns (or derived)")
    step = registry.step_class(t.method)
    defaults = step.spec_defaults(t)
    view = SimpleNamespace(**{**vars_of(t), **defaults})
    for option in registry.spec_options():  # a key's own rule holds whatever the method
        problem = option.check(view) if option.check else None
        if problem:
            raise ValueError(problem)
    problem = step.check_spec(view)
    if problem:
        raise ValueError(problem)
    return defaults


def vars_of(t) -> dict[str, Any]:
    return {key: getattr(t, key, None) for key in keys()}


def from_mapping(d: Mapping[str, Any]) -> SimpleNamespace:
    """A transformation written as a dict, read as the spec reads one."""
    name = d.get("name")
    where = f"transformation {name!r}"
    unknown = sorted(set(d) - set(keys()), key=str)
    if unknown:
        raise FeatureError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}",
                           transformation=name)
    if not isinstance(name, str):
        raise FeatureError(f"a transformation needs a name, got {name!r}")
    values = {key: d.get(key) for key in keys()}
    method = values["method"]
    if isinstance(method, str):
        method = values["method"] = registry.aliases().get(method, method)
    if method is not None and method not in registry.methods(spec_only=True):
        raise FeatureError(f"{where}: method {method!r} is not one of "
                           f"{', '.join(registry.methods(spec_only=True))}", transformation=name)
    columns = values["columns"]
    if columns is not None and not (isinstance(columns, list)
                                    and all(isinstance(c, str) for c in columns)):
        raise FeatureError(f"{where}: columns must be a list of column names", transformation=name)
    if values["derived"] is not None:
        values["derived"] = [SimpleNamespace(name=x["name"], formula=x["formula"])
                             for x in values["derived"]]
    t = SimpleNamespace(**values)
    try:
        vars(t).update(rules(t))
    except ValueError as exc:
        raise FeatureError(f"{where}: {exc}", transformation=name) from None
    return t
