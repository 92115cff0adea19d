"""What the spec's search means: the tuned families, one search space per family, the objective
and how many trials run side by side. No Ray here beyond building Tune domains.

Keys of `tuning.search_space`:

* a plain key (`max_depth`) applies to every tuned family that takes that parameter (`TUNABLE`);
* a dotted key (`xgboost.max_depth`, Ludwig style) applies to that family only, and wins over a
  plain key for it;
* a key that no tuned family takes, or a dotted key naming a family the spec does not train (or
  one outside `tuning.models`), is a SpecError naming its line.

Tuned families: `tuning.models` when given; otherwise every family of the spec that some key
applies to; with an empty search space, every tunable family of the spec. A tuned family that no
key applies to searches `DEFAULT_SPACES[family]`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.spec import SearchChoice, SearchRange, Spec, SpecError

# Parameters each family takes (scikit-learn's names; xgboost's native names and the spec's
# aliases n_estimators/learning_rate, which booster_params maps).
TUNABLE: dict[str, frozenset[str]] = {
    "logistic_regression": frozenset({"C", "l1_ratio", "penalty", "solver", "max_iter", "tol",
                                      "class_weight", "fit_intercept", "intercept_scaling"}),
    "linear_regression": frozenset({"alpha", "fit_intercept", "solver", "tol", "max_iter", "positive"}),
    "random_forest": frozenset({"n_estimators", "max_depth", "min_samples_split", "min_samples_leaf",
                                "min_weight_fraction_leaf", "max_features", "max_leaf_nodes",
                                "min_impurity_decrease", "bootstrap", "max_samples", "criterion",
                                "class_weight", "ccp_alpha"}),
    "xgboost": frozenset({"n_estimators", "num_boost_round", "learning_rate", "eta", "max_depth",
                          "min_child_weight", "subsample", "colsample_bytree", "colsample_bylevel",
                          "colsample_bynode", "gamma", "min_split_loss", "reg_lambda", "lambda",
                          "reg_alpha", "alpha", "max_leaves", "max_bin", "grow_policy",
                          "scale_pos_weight", "max_delta_step", "early_stopping_rounds"}),
}

DEFAULT_SPACES: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": SearchRange(low=1e-3, high=100, log=True)},
    "linear_regression": {"alpha": SearchRange(low=1e-3, high=100, log=True)},
    "random_forest": {"n_estimators": SearchRange(low=50, high=400, integer=True),
                      "max_depth": SearchRange(low=3, high=20, integer=True),
                      "min_samples_leaf": SearchRange(low=1, high=20, integer=True)},
    "xgboost": {"learning_rate": SearchRange(low=0.01, high=0.3, log=True),
                "max_depth": SearchRange(low=3, high=10, integer=True),
                "min_child_weight": SearchRange(low=1, high=10, log=True),
                "subsample": SearchRange(low=0.5, high=1.0),
                "colsample_bytree": SearchRange(low=0.5, high=1.0)},
}

# --------------------------------------------------------------------------- the plan

@dataclass(frozen=True)
class SearchPlan:
    families: list[str]                       # in the order trials are handed out
    spaces: dict[str, dict[str, Any]]         # family -> {param: SearchRange | SearchChoice}
    metric: str                               # objective metric (a key of compute_metrics)
    mode: str                                 # "max" | "min"
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The name trials report the objective under."""
        return f"val_{self.metric}"


def search_plan(spec: Spec) -> SearchPlan:
    """Resolve the spec's search space into one space per tuned family (see the module doc)."""
    tuning = spec.tuning
    if tuning is None:
        raise ValueError("the spec has no tuning section")
    mode, metric = tuning.objective_parts(spec.problem_type)
    problems: list[str] = []
    trained = spec.model_families
    if tuning.models is not None:
        candidates = []
        for i, family in enumerate(tuning.models):
            if family not in trained:
                problems.append(f"{spec.where('tuning', 'models', i)}: tuning.models names {family}, "
                                f"which the spec does not train (models: {', '.join(trained)})")
            elif family not in TUNABLE:
                problems.append(f"{spec.where('tuning', 'models', i)}: {family} cannot be tuned yet "
                                f"(tunable: {', '.join(TUNABLE)})")
            else:
                candidates.append(family)
    else:
        candidates = [f for f in trained if f in TUNABLE]
    plain: dict[str, dict[str, Any]] = {}
    dotted: dict[str, dict[str, Any]] = {}
    for key, dim in tuning.search_space.items():
        where = spec.where("tuning", "search_space", key)
        if "." in key:
            family, param = key.split(".", 1)
            if family not in trained:
                problems.append(f"{where}: {key}: {family} is not a model family of this spec "
                                f"(models: {', '.join(trained)})")
            elif tuning.models is not None and family not in tuning.models:
                problems.append(f"{where}: {key}: {family} is not in tuning.models")
            elif family not in TUNABLE:
                problems.append(f"{where}: {key}: {family} cannot be tuned yet")
            elif param not in TUNABLE[family]:
                problems.append(f"{where}: {key}: {family} has no parameter {param!r} "
                                f"(known: {', '.join(sorted(TUNABLE[family]))})")
            else:
                dotted.setdefault(family, {})[param] = dim
            continue
        takers = [f for f in candidates if key in TUNABLE[f]]
        if not takers:
            problems.append(f"{where}: no tuned model family takes {key!r} "
                            f"(tuned: {', '.join(candidates) or 'none'}; write family.{key} "
                            "to name one)")
        for family in takers:
            plain.setdefault(family, {})[key] = dim
    if problems:
        raise SpecError(problems)
    notes: list[str] = []
    if tuning.models is not None:
        families = list(candidates)
    elif tuning.search_space:
        families = [f for f in trained if f in plain or f in dotted]
    else:
        families = list(candidates)
    if not families:
        raise SpecError([f"{spec.where('tuning')}: nothing to tune: none of the spec's models "
                         f"({', '.join(trained)}) can be tuned (tunable: {', '.join(TUNABLE)})"])
    spaces = {}
    for family in families:
        space = {**plain.get(family, {}), **dotted.get(family, {})}
        if not space:
            space = dict(DEFAULT_SPACES[family])
            notes.append(f"{family}: no search-space key for it, using its default space "
                         f"({', '.join(space)})")
        spaces[family] = space
    if tuning.n_trials < len(families):
        notes.append(f"n_trials {tuning.n_trials} < {len(families)} tuned families: "
                     f"{', '.join(families[tuning.n_trials:])} keep their model_params")
    return SearchPlan(families, spaces, metric, mode, notes)


def to_domain(dim: Any):
    """A spec search dimension as a Ray Tune domain. Integer upper bounds are inclusive (the
    Optuna and HyperOpt converters map randint/lograndint's exclusive bound back to `high`).
    Choices sample an index (see `decode`), so any value (a list, None) can be a choice."""
    from ray import tune

    if isinstance(dim, SearchChoice):
        return tune.choice(list(range(len(dim.values))))
    if dim.integer:
        low, high = math.ceil(dim.low), math.floor(dim.high)
        if high < low:
            raise ValueError(f"integer range [{dim.low}, {dim.high}] holds no integer")
        return tune.lograndint(low, high + 1) if dim.log else tune.randint(low, high + 1)
    return tune.loguniform(dim.low, dim.high) if dim.log else tune.uniform(dim.low, dim.high)


def decode(space: dict[str, Any], sampled: dict[str, Any]) -> dict[str, Any]:
    """Searcher output -> plain Python hyperparameters (choice indices -> values)."""
    out = {}
    for name, dim in space.items():
        value = sampled[name]
        value = value.item() if isinstance(value, np.generic) else value
        if isinstance(dim, SearchChoice):
            value = dim.values[int(value)]
        elif dim.integer:
            value = int(round(value))
        else:
            value = float(value)
        out[name] = value
    return out


def trial_resources(setting: Any, n_trials: int, cpus: float) -> tuple[int, int, str]:
    """(concurrent trials, CPUs per trial, why). One CPU always stays free (Ray Data, the Tune
    driver's own tasks): a search that holds every CPU starves them. `auto` runs one-CPU trials
    side by side; a number given in the spec splits the spare CPUs between that many trials."""
    spare = max(1, int(cpus) - 1)
    if setting == "auto":
        concurrent = max(1, min(n_trials, spare))
        return concurrent, 1, (f"{concurrent} trial(s) at a time x 1 CPU: {cpus:g} CPUs, one kept free")
    concurrent = max(1, min(int(setting), n_trials))
    why = "max_concurrent_trials from the spec"
    if concurrent > spare:
        why = (f"max_concurrent_trials {concurrent} cut to {spare}: the cluster has {cpus:g} CPUs "
               "and one stays free")
        concurrent = spare
    per = max(1, spare // concurrent)
    return concurrent, per, f"{concurrent} trial(s) at a time x {per} CPU: {why}"


def trial_threads(concurrent: int, per: int, cpus: float, nodes: int = 1) -> int:
    """Threads each trial's model trains with: its CPUs, or an equal share of all the CPUs when
    that is more. The CPU kept free has nothing to run while trials fit (their data is already
    in the object store, nothing reads through Ray Data): on 2 CPUs one trial at a time trains
    with 2 threads, not 1. On one node, never more than the cores this process may use (Ray's
    CPUs are labels; an OpenMP team larger than the cores only spins)."""
    threads = max(per, int(cpus) // max(1, concurrent))
    if nodes == 1:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or threads
        threads = min(threads, max(per, cores))
    return max(1, threads)
