"""`rayline run`, `rayline tune`, `rayline leaderboard`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rayline.cli import SpecArg, app, err, load, out, reporting, spec_mismatch


@app.command()
def run(spec_path: Path = SpecArg,
        data_version: Optional[int] = typer.Option(
            None, "--data-version", help="Re-run from this raw_data version (see `rayline data "
                                         "versions`) instead of reading the sources."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Ray's own logs.")) -> None:
    """Ingest, validate, build features, train, evaluate, track and register."""
    from pipeline.progress import Stages
    from pipeline.execution import quiet_libraries
    from pipeline.training import run_pipeline

    spec = load(spec_path)
    quiet_libraries(verbose)
    with reporting("nothing was trained", titles=spec_mismatch()):
        result = run_pipeline(spec, stages=Stages(err), verbose=verbose, data_version=data_version)
    out.print(f"[bold green]done[/]: {result.model_name} v{result.model_version} "
              f"({result.champion}) is @champion; MLflow run {result.run_id}")
    out.print(f"  tracking: {spec.tracking.uri}")
    out.print(f"  see it:   mlflow ui --backend-store-uri {spec.tracking.uri}")


@app.command()
def leaderboard(spec_path: Path = SpecArg,
                run_id: Optional[str] = typer.Option(None, "--run", help="A run id (default: the latest run "
                                                                        "that trained models).")) -> None:
    """Print the leaderboard of the latest training run (validation metrics, latency)."""
    from pipeline import registry
    from pipeline.evaluation import leaderboard_table

    spec = load(spec_path)
    with reporting(titles={LookupError: "no leaderboard"}):
        registry.configure_for(spec)
        found_run, board = registry.latest_leaderboard(spec.experiment_name, run_id)
    out.print(leaderboard_table(spec.evaluation_plan, board, title=f"Leaderboard (validation), run {found_run}"))


@app.command()
def tune(spec_path: Path = SpecArg,
         resume: bool = typer.Option(False, "--resume", help="Continue the interrupted search in "
                                     ".rayline/ray_results/<name>-tune instead of starting over."),
         verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Ray's own logs.")) -> None:
    """Ingest, validate, split, build features and run the spec's hyperparameter search only."""
    from pipeline.progress import Stages
    from pipeline.spec import SpecError
    from pipeline.training.tune import tune_only
    from pipeline.tuning import best_table, trials_table

    spec = load(spec_path)
    if spec.tuning is None:
        from rayline.cli import fail

        fail("nothing to tune", [f"{spec_path}: the spec has no tuning section"])
    with reporting("nothing was tuned", titles={SpecError: "the spec cannot be tuned"}):
        result, run_id = tune_only(spec, Stages(err), resume=resume, verbose=verbose)
    out.print(trials_table(result))
    out.print(best_table(result, spec.model_params))
    out.print(f"[bold green]done[/]: {len(result.trials)} trials; MLflow run {run_id} "
              f"(tuning/trials.json); Tune state in {result.experiment_path}")
