"""The one owner of a model's lifecycle: which registered version is @champion, @previous and
@challenger, and how live traffic is split between control and treatment.

Every change goes through `Lifecycle` and leaves a record: who (user@host, or the component
that decided, e.g. a rollback controller), what (the aliases before and after, the traffic
split), when and why. The records are MLflow runs in an experiment of their own
(`<experiment>-lifecycle`, tag `rayline.kind=lifecycle`): the same store as the model, so every
node that can reach the registry can read and write them, and the MLflow UI lists them.

The traffic split is the Serve app's; this module does not know Serve (the library never imports
the serving app). `change_traffic` takes the function that applies the split, calls it, and
records the change only once it was applied.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from pipeline.registry import CHALLENGER, CHAMPION, PREVIOUS, alias_version, resolve_version

ALIASES = (CHAMPION, PREVIOUS, CHALLENGER)


@dataclass(frozen=True)
class Traffic:
    """The live split between the control (@champion) and the treatment (@challenger), and the
    mode (split: each request goes to one; shadow: the treatment scores a copy, never answers).
    As the Serve ingress' `user_config`, this is the only format of it."""
    treatment: float = 0.0
    mode: str = "split"

    def __post_init__(self) -> None:
        if not 0.0 <= self.treatment <= 1.0:
            raise ValueError(f"the treatment's share must lie between 0% and 100%, got {self.treatment!r}")
        if self.mode not in ("split", "shadow"):
            raise ValueError(f"mode is split or shadow, not {self.mode!r}")

    @property
    def weights(self) -> dict[str, float]:
        return {"control": round(1.0 - self.treatment, 6), "treatment": round(self.treatment, 6)}

    def to_user_config(self) -> dict[str, Any]:
        return {"traffic_split": self.weights, "mode": self.mode}

    @classmethod
    def from_user_config(cls, config: Optional[dict[str, Any]]) -> "Traffic":
        config = config or {}
        split = config.get("traffic_split") or {}
        return cls(float(split.get("treatment", 0.0)), config.get("mode", "split"))

    @classmethod
    def from_spec(cls, ab_testing, treatment: Optional[float] = None,
                  mode: Optional[str] = None) -> "Traffic":
        """The spec's `ab_testing` split and mode, either replaced when given."""
        share = treatment if treatment is not None else (
            ab_testing.traffic_split.treatment if ab_testing else 0.0)
        return cls(share, mode or (ab_testing.mode if ab_testing else "split"))

    def replace(self, treatment: Optional[float] = None, mode: Optional[str] = None) -> "Traffic":
        return Traffic(self.treatment if treatment is None else treatment, mode or self.mode)


ALL_CONTROL = Traffic(0.0, "split")


@dataclass(frozen=True)
class Change:
    """One recorded lifecycle change."""
    action: str                                   # promote | challenge | end_challenge | traffic
    model: str
    before: dict[str, Optional[str]]              # alias -> version before the change
    after: dict[str, Optional[str]]               # alias -> version after it
    actor: str
    reason: str = ""
    at: float = field(default_factory=time.time)
    traffic: Optional[dict[str, Any]] = None      # the user_config applied (traffic changes)

    @property
    def moved(self) -> dict[str, tuple[Optional[str], Optional[str]]]:
        return {a: (self.before.get(a), self.after.get(a)) for a in ALIASES
                if self.before.get(a) != self.after.get(a)}


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class Lifecycle:
    """Alias and traffic changes of one registered model; MLflow must point at its registry
    (`registry.configure`) before use."""

    def __init__(self, model_name: str, experiment: str, actor: Optional[str] = None):
        self.model = model_name
        self.experiment = f"{experiment}-lifecycle"
        self.actor = actor or default_actor()

    def aliases(self) -> dict[str, Optional[str]]:
        return {alias: alias_version(self.model, alias) for alias in ALIASES}

    def promote(self, version: str, reason: str = "") -> Change:
        """`version` becomes @champion; the champion it replaces becomes @previous (what a
        rollback returns to). A version that was @challenger stops being one."""
        version = resolve_version(self.model, str(version))[0]
        before = self.aliases()
        client = _client()
        if before[CHAMPION] is not None and before[CHAMPION] != version:
            client.set_registered_model_alias(self.model, PREVIOUS, before[CHAMPION])
        client.set_registered_model_alias(self.model, CHAMPION, version)
        if before[CHALLENGER] == version:
            client.delete_registered_model_alias(self.model, CHALLENGER)
        return self._record("promote", before, reason)

    def challenge(self, version: str, reason: str = "") -> Change:
        """`version` becomes @challenger (the A/B treatment)."""
        version = resolve_version(self.model, str(version))[0]
        before = self.aliases()
        _client().set_registered_model_alias(self.model, CHALLENGER, version)
        return self._record("challenge", before, reason)

    def end_challenge(self, reason: str = "") -> Change:
        """No @challenger any more."""
        before = self.aliases()
        if before[CHALLENGER] is not None:
            _client().delete_registered_model_alias(self.model, CHALLENGER)
        return self._record("end_challenge", before, reason)

    def change_traffic(self, traffic: Traffic, apply: Callable[[dict[str, Any]], Any],
                       reason: str = "") -> Change:
        """Apply `traffic` with `apply(user_config)` (the Serve app's reconfiguration), then
        record it. Nothing is recorded if applying fails."""
        config = traffic.to_user_config()
        before = self.aliases()
        apply(config)
        return self._record("traffic", before, reason, traffic=config)

    def history(self, limit: int = 100) -> list[Change]:
        """The recorded changes, newest first."""
        client = _client()
        found = client.get_experiment_by_name(self.experiment)
        if found is None:
            return []
        runs = client.search_runs([found.experiment_id], f"tags.`rayline.model` = '{_quote(self.model)}'",
                                  order_by=["attributes.start_time DESC"], max_results=limit)
        return [Change(**json.loads(r.data.tags["rayline.change"])) for r in runs
                if "rayline.change" in r.data.tags]

    def _record(self, action: str, before: dict, reason: str,
                traffic: Optional[dict[str, Any]] = None) -> Change:
        change = Change(action=action, model=self.model, before=before, after=self.aliases(),
                        actor=self.actor, reason=reason, traffic=traffic)
        client = _client()
        found = client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(self.experiment)
        moved = ", ".join(f"@{a} {old or '-'} -> {new or '-'}" for a, (old, new) in change.moved.items())
        run = client.create_run(experiment_id, start_time=int(change.at * 1000), run_name=(
            f"{action} {self.model}" + (f": {moved}" if moved else "")), tags={
            "rayline.kind": "lifecycle", "rayline.model": self.model, "rayline.action": action,
            "rayline.actor": self.actor, "rayline.reason": reason[:4000],
            "rayline.change": json.dumps(asdict(change), default=str)[:7000]})
        client.set_terminated(run.info.run_id, "FINISHED")
        return change


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")
