"""The feature steps, one class per method, and their registry (see base.py for the contract).

Importing this package registers every method. This package imports numpy but not pandas: the
spec reads the registry, and loading a spec must stay fast.
"""

from importlib import import_module

from pipeline.features.steps.base import (
    Option,
    Registry,
    Step,
    count,
    register,
    registry,
    summary,
)

# One module per method, each registering its class. The order is the order the spec lists the
# methods in (its error messages, its JSON Schema), hence a list and not import statements that
# an import sorter would reorder.
METHOD_MODULES = (
    "standard_scaler",
    "min_max_scaler",
    "one_hot",
    "ordinal",
    "impute",
    "log",
    "clip",
    "robust_scaler",
    "boolean",
)
for _module in METHOD_MODULES:
    import_module(f"{__name__}.{_module}")

# The order the spec listed these keys in before they came from the registry: its JSON Schema
# and the order of its errors stay as they were. Keys of later methods follow.
registry.order_options(("strategy", "fill_value", "lower", "upper", "categories", "max_categories"))

__all__ = ["METHOD_MODULES", "Option", "Registry", "Step", "count", "register", "registry", "summary"]
