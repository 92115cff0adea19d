"""The searchers behind `tuning.method`, one per family, handed trials in turn."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
from ray.tune.search import Searcher

from pipeline.tuning.space import SearchPlan, decode, to_domain


def make_searcher(method: str, plan: SearchPlan, seed: int):
    """The spec's method over the plan's families: a round-robin of one searcher per family."""
    subs = {}
    for i, family in enumerate(plan.families):
        space = {name: to_domain(dim) for name, dim in plan.spaces[family].items()}
        subs[family] = _family_searcher(method, space, plan.key, plan.mode, seed + i)
    return FamilyRoundRobin(subs, {f: plan.spaces[f] for f in plan.families}, plan.key, plan.mode)


def _family_searcher(method: str, space: dict, metric: str, mode: str, seed: int):
    if method == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return OptunaSearch(space=OptunaSearch.convert_search_space(space), metric=metric,
                            mode=mode, seed=seed)
    if method == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(space=HyperOptSearch.convert_search_space(space), metric=metric,
                              mode=mode, random_state_seed=seed)
    if method == "random":
        return RandomSearcher(space, metric, mode, seed)
    raise ValueError(f"unknown tuning method {method!r}")


class RandomSearcher(Searcher):
    """Independent random sampling of Tune domains from a seeded generator (what Tune's
    BasicVariantGenerator does), as a Searcher so it can sit in the round-robin."""

    def __init__(self, space: dict, metric: str, mode: str, seed: int):
        super().__init__(metric=metric, mode=mode)
        self._space = space
        self._rng = np.random.default_rng(seed)

    def suggest(self, trial_id: str) -> Optional[dict]:
        return {name: domain.sample(random_state=self._rng) for name, domain in self._space.items()}

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False):
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self._rng.bit_generator.state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self._rng.bit_generator.state = pickle.load(f)


class FamilyRoundRobin(Searcher):
    """Hands trials to the families in turn; each family's searcher sees only its own trials
    and its own space (families' landscapes share nothing, so one joint space would only add
    noise). Suggestions come back as {"family", "params", "index"}, index counting from 1."""

    def __init__(self, subs: dict, spaces: dict[str, dict[str, Any]], metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self._subs = subs
        self._spaces = spaces
        self._families = list(subs)
        self._next = 0
        self._owner: dict[str, str] = {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> Optional[dict]:
        family = self._families[self._next % len(self._families)]
        sampled = self._subs[family].suggest(trial_id)
        if sampled is None or sampled == self.FINISHED:
            return sampled
        self._owner[trial_id] = family
        self._next += 1
        return {"family": family, "index": self._next, "params": decode(self._spaces[family], sampled)}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._owner:
            self._subs[self._owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False):
        if trial_id in self._owner:
            self._subs[self._owner[trial_id]].on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        subs = {}
        with tempfile.TemporaryDirectory() as tmp:
            for family, sub in self._subs.items():
                path = Path(tmp) / family
                sub.save(str(path))
                subs[family] = path.read_bytes()
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"next": self._next, "owner": self._owner, "subs": subs}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self._next, self._owner = state["next"], state["owner"]
        with tempfile.TemporaryDirectory() as tmp:
            for family, blob in state["subs"].items():
                path = Path(tmp) / family
                path.write_bytes(blob)
                self._subs[family].restore(str(path))
