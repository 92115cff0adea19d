"""The lifecycle owner on a real MLflow registry (SQLite): every alias and traffic change goes
through it and leaves a record of who changed what, when and why."""

from __future__ import annotations

import pytest

from pipeline import registry
from pipeline.lifecycle import ALL_CONTROL, Lifecycle, Traffic
from pipeline.spec import ABTesting, Tracking


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A registry with versions 1..3 of `churn` (no model files needed to move aliases)."""
    import mlflow

    root = tmp_path_factory.mktemp("lifecycle")
    experiment = registry.configure(Tracking(uri=f"sqlite:///{root}/mlflow.db"), "churn")
    client = mlflow.MlflowClient()
    client.create_registered_model("churn")
    for i in range(3):
        run = client.create_run(experiment)
        source = root / f"v{i + 1}"
        source.mkdir()
        client.create_model_version("churn", source=str(source), run_id=run.info.run_id)
    return root


def test_promote_moves_champion_and_keeps_the_old_one_as_previous(store):
    life = Lifecycle("churn", "churn", actor="tester@ci")
    first = life.promote("1", reason="first run")
    assert first.before["champion"] is None and first.after["champion"] == "1"
    second = life.promote("2", reason="better auc")
    assert second.moved == {"champion": ("1", "2"), "previous": (None, "1")}
    assert registry.alias_version("churn", "champion") == "2"
    assert registry.alias_version("churn", "previous") == "1"


def test_a_challenger_comes_and_goes_and_a_promoted_one_stops_being_one(store):
    life = Lifecycle("churn", "churn", actor="tester@ci")
    life.challenge("3", reason="ab start")
    assert life.aliases()["challenger"] == "3"
    life.end_challenge(reason="ab stop")
    assert life.aliases()["challenger"] is None
    life.challenge("3")
    life.promote("3", reason="the challenger won")
    assert life.aliases() == {"champion": "3", "previous": "2", "challenger": None}


def test_unknown_versions_are_refused_before_anything_moves(store):
    life = Lifecycle("churn", "churn")
    before = life.aliases()
    with pytest.raises(registry.NotRegistered):
        life.promote("99")
    assert life.aliases() == before


def test_traffic_is_recorded_only_once_applied(store):
    life = Lifecycle("churn", "churn", actor="tester@ci")
    applied = []
    change = life.change_traffic(Traffic(0.1), applied.append, reason="ramp to 10%")
    assert applied == [{"traffic_split": {"control": 0.9, "treatment": 0.1}, "mode": "split"}]
    assert change.traffic == applied[0]

    def failing(config):
        raise RuntimeError("the app did not take it")

    with pytest.raises(RuntimeError):
        life.change_traffic(Traffic(0.5), failing, reason="never applied")
    assert all(c.reason != "never applied" for c in life.history())


def test_history_says_who_changed_what_when_and_why_newest_first(store):
    history = Lifecycle("churn", "churn").history()
    assert [c.action for c in history][:2] == ["traffic", "promote"]
    assert all(c.actor == "tester@ci" for c in history[:2])
    promote = next(c for c in history if c.reason == "better auc")
    assert promote.moved == {"champion": ("1", "2"), "previous": (None, "1")} and promote.at > 0
    assert Lifecycle("other-model", "churn").history() == []


def test_traffic_is_the_one_format_of_the_split():
    assert Traffic.from_user_config(Traffic(0.25, "shadow").to_user_config()) == Traffic(0.25, "shadow")
    assert Traffic.from_user_config(None) == ALL_CONTROL
    ab = ABTesting(traffic_split={"control": "80%", "treatment": "20%"}, mode="shadow")
    assert Traffic.from_spec(ab) == Traffic(0.2, "shadow")
    assert Traffic.from_spec(ab, treatment=0.5, mode="split") == Traffic(0.5, "split")
    assert Traffic.from_spec(None) == ALL_CONTROL
    assert Traffic(0.3).replace(mode="shadow") == Traffic(0.3, "shadow")
    with pytest.raises(ValueError):
        Traffic(1.5)
    with pytest.raises(ValueError):
        Traffic(0.5, "canary")
