"""The one error root and the one handler: every error rayline expects is a RaylineError with its
exit code; `describe` words it for the CLI and the jobs alike; anything else is a bug and keeps
its traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.errors import NotFound, RaylineError, describe
from pipeline.formula import FormulaError
from pipeline.registry import NotRegistered
from pipeline.schedule import ScheduleError
from pipeline.scoring import ScoringError
from pipeline.sources import SourceError
from pipeline.sources.api import ApiError
from pipeline.sources.database import DatabaseError
from pipeline.spec import SpecError, parse_spec
from pipeline.training import RunRefused
from pipeline.tuning.driver import CannotResume
from pipeline.versioning import VersionError
from rayline.cli import app
from serve.run import ServeError
from serve.stream import StreamError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cls, base, code", [
    (SpecError, ValueError, 1), (SourceError, RuntimeError, 1), (ApiError, RuntimeError, 1),
    (DatabaseError, RuntimeError, 1), (ScoringError, RuntimeError, 1), (FormulaError, ValueError, 1),
    (ScheduleError, ValueError, 1), (VersionError, LookupError, 1), (NotRegistered, LookupError, 1),
    (CannotResume, LookupError, 1), (ServeError, RuntimeError, 1), (StreamError, RuntimeError, 2),
    (RunRefused, RuntimeError, 3),
])
def test_every_expected_error_has_the_root_its_old_base_and_an_exit_code(cls, base, code):
    exc = cls(["one problem"]) if cls in (SpecError, RunRefused) else cls("one problem")
    assert isinstance(exc, RaylineError) and isinstance(exc, base)
    failure = describe(exc)
    assert failure.exit_code == code
    assert failure.problems == ["one problem"]
    assert failure.title.startswith(cls.title)


def test_the_validation_and_feature_errors_share_the_root():
    from pipeline.features import FeatureError
    from pipeline.validation import ValidationFailed

    assert issubclass(FeatureError, RaylineError) and issubclass(FeatureError, ValueError)
    assert issubclass(ValidationFailed, RaylineError)


def test_describe_appends_what_did_not_happen_and_lets_a_command_rename():
    failure = describe(SourceError("sources[0]: no such file"), "nothing was trained")
    assert failure.title == "a source could not be read; nothing was trained"
    renamed = describe(SpecError(["spec.yaml:3: target column 'x' is not in the data"]),
                       "nothing was trained", {SpecError: "the spec does not match the data"})
    assert renamed.title == "the spec does not match the data; nothing was trained"
    # A refused run did train: its own outcome wins over the command's.
    refused = describe(RunRefused(["auc_roc 0.7 is below the threshold 0.9 by 0.2"]), "nothing was trained")
    assert refused.title == "the champion did not meet evaluation.thresholds; nothing was registered"
    assert refused.exit_code == 3
    # A title for a base class applies to its subclasses.
    assert describe(NotRegistered("model 'x' has no version 'champion'"),
                    titles={LookupError: "cannot serve"}).title == "cannot serve"


def test_a_bug_is_not_described():
    assert describe(ZeroDivisionError("division by zero")) is None
    assert describe(KeyError("x")) is None


def test_multi_line_problems_keep_their_lines():
    exc = SpecError(["spec.yaml:2: a", "spec.yaml:5: b"])
    assert str(exc) == "spec.yaml:2: a\nspec.yaml:5: b"
    assert describe(exc).problems == ["spec.yaml:2: a", "spec.yaml:5: b"]
    assert NotFound("gone").problems == ["gone"]


def test_the_cli_prints_a_spec_error_with_its_line_and_exits_1(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\nsources: [{type: files, path: d.csv}]\ntarget: y\n"
                    "problem_type: classification\nsplit: {ratio: [0.7, 0.3]}\n")
    result = CliRunner().invoke(app, ["check", str(spec)])
    assert result.exit_code == 1
    assert "error: the spec is not valid" in result.output
    assert "spec.yaml:5: split.ratio: unknown key 'ratio' (did you mean 'ratios'?)" in result.output


def test_the_cli_lets_a_bug_through_as_a_traceback(tmp_path, monkeypatch):
    import rayline.summary

    def broken(spec):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(rayline.summary, "summarize", broken)
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\nsources: [{type: files, path: d.csv}]\ntarget: y\nproblem_type: regression\n"
                    "baseline_models: [linear_regression]\n")
    result = CliRunner().invoke(app, ["check", str(spec)])
    assert isinstance(result.exception, ZeroDivisionError)


def test_a_job_prints_the_reason_last_and_exits_with_the_error_code(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""\
        name: x
        sources: [{type: files, path: data.csv}]
        target: y
        problem_type: classification
        baseline_models: [linear_regression]
        """))
    result = subprocess.run([sys.executable, "-m", "jobs.train", "--spec", str(spec)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "error: the spec is not valid; nothing was trained"
    assert "model family linear_regression does not fit problem_type classification" in result.stderr


def test_parse_errors_are_the_same_spec_error_as_load_errors():
    with pytest.raises(SpecError) as info:
        parse_spec("name: [unclosed", "spec.yaml")
    assert info.value.problems[0].startswith("spec.yaml:1: not valid YAML")
