"""The layering of docs/architecture.md, written as import-linter contracts in pyproject.toml:
they hold on the tree, and they catch a forbidden import when one is added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "serve", "rayline", "jobs")
LINT = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the packages and the contracts, to break on purpose."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_hold():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, line, contract, reported", [
    # the library importing the serving app
    ("pipeline/registry.py", "import serve.app  # noqa", "serving app above the library",
     "pipeline.registry -> serve.app"),
    # a room reaching up to the workload that composes it
    ("pipeline/evaluation.py", "from pipeline.training import run_pipeline  # noqa",
     "rooms never reach up", "pipeline.evaluation -> pipeline.training"),
    # the spec depending on what it configures
    ("pipeline/spec/root.py", "import pipeline.registry  # noqa", "rooms never reach up",
     "pipeline.spec.root -> pipeline.registry"),
    # a private module used from another package
    ("serve/app.py", "from pipeline._internal import yamlspec  # noqa", "Private modules",
     "serve.app -> pipeline._internal.yamlspec"),
])
def test_a_forbidden_import_breaks_a_contract(tree, module, line, contract, reported):
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}\n")
    result = lint(tree)
    assert result.returncode != 0, result.stdout
    assert f"{contract}" in result.stdout and reported in result.stdout, result.stdout
