"""Hyperparameter search: the spec's `tuning` section run by Ray Tune.

What the spec means here:

* **Families.** `tuning.models` names the families to tune; without it, every family of the spec
  that takes at least one key of the search space (every tunable family when the space is
  empty). `n_trials` is the total over those families, handed out round-robin, each family
  with its own searcher (Optuna TPE / HyperOpt TPE / random), seeded from `spec.seed`.
* **Keys.** A plain key (`max_depth`) applies to every tuned family that takes that parameter
  (`TUNABLE`); a dotted key (`xgboost.max_depth`, Ludwig style) to that family only, and wins
  over a plain key for it. A key no tuned family takes, or a dotted key for a family the spec
  does not train, is a SpecError naming its line. A tuned family with no key gets
  `DEFAULT_SPACES[family]`; an empty search space means the default space of every family.
* **Ranges.** `[lo, hi, log]` -> loguniform, `[lo, hi]`/`uniform` -> uniform, `[lo, hi, int]` ->
  randint with `hi` included, `[lo, hi, log_int]` -> lograndint with `hi` included, any other
  list -> choice. Sampled values override `model_params` for that family; the rest of
  `model_params` still applies inside every trial and in the final retraining.
* **Objective.** `tuning.objective` (`auto` = maximize f1_score / minimize rmse), any built-in or
  custom metric of the spec, measured on the validation split with `compute_metrics`.
* **Trials.** One Tune function trial per configuration, `cpus_per_trial` CPUs each, training
  in-process on arrays put in the object store once; xgboost / random forest threads: those
  CPUs, or an equal share of all of them when more (`trial_threads`: the CPU kept free idles
  while trials fit).
  xgboost reports the objective every `report_every` rounds, so ASHA (`early_stopping: asha`)
  can stop a poor trial early; scikit-learn trials are one fit and one report.
* **Records.** After the Tuner finishes, the driver logs one MLflow child run per trial under the
  active run (SQLite has one writer that way), `tuning/trials.json`, `tuning/best.json` and the
  `tuning.best.<family>.<param>` params. Tune keeps its state in
  `.rayline/ray_results/<spec.name>-tune`, which `rayline tune --resume` continues.

Modules: `space` (the plan: families, spaces, objective, concurrency; no Ray needed),
`searchers` (Optuna / HyperOpt / random per family, round-robin), `trial` (the Tune function
trainable), `driver` (the Tuner, the trials table, the best trials), `records` (MLflow, rich
tables, and `tune_families`, the tuning step of `rayline run`). `rayline tune` composes the
training stages with the search: pipeline.training.tune.
"""

from __future__ import annotations

from pipeline.tuning.space import (
    DEFAULT_SPACES, TUNABLE, SearchPlan, decode, search_plan, to_domain, trial_resources,
)

__all__ = ["DEFAULT_SPACES", "TUNABLE", "SearchPlan", "TuningResult", "best_table", "decode",
           "experiment_path", "run_tuning", "search_plan", "to_domain", "trial_resources",
           "trials_table", "tune_families"]

_LAZY = {"TuningResult": "driver", "experiment_path": "driver", "run_tuning": "driver",
         "best_table": "records", "trials_table": "records", "tune_families": "records"}


def __getattr__(name: str):
    # Ray Tune takes seconds to import: only the names that run a search pull it in.
    if name in _LAZY:
        from importlib import import_module
        return getattr(import_module(f"pipeline.tuning.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'pipeline.tuning' has no attribute {name!r}")
