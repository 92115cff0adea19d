"""The `rayline` command. Thin: parse arguments, call the workload, print the outcome.

Heavy libraries (Ray, MLflow, Great Expectations) are imported inside the commands that need
them, so `rayline check` answers in about a second.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="rayline: one YAML spec from raw data to a served model on Ray.")
out = Console()
err = Console(stderr=True)

SpecArg = typer.Argument(..., exists=False, help="Path to the pipeline spec (YAML).")


def _load(spec_path: Path):
    from pipeline.spec import SpecError, load_spec

    try:
        return load_spec(spec_path)
    except SpecError as exc:
        _fail("spec is not valid", exc.problems)


def _fail(title: str, problems: list[str], code: int = 1):
    err.print(f"[bold red]error:[/] {title}")
    for line in problems:
        err.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def check(spec_path: Path = SpecArg) -> None:
    """Validate a spec and print what it will do."""
    from pipeline._internal.summary import summarize

    spec = _load(spec_path)
    out.print(summarize(spec))
    out.print(f"[green]✓[/] {spec_path} is valid")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec."""
    from pipeline.spec import Spec

    document = Spec.model_json_schema(mode="validation")
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "rayline pipeline spec"
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


@app.command()
def run(spec_path: Path = SpecArg,
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Ray's own logs.")) -> None:
    """Ingest, validate, build features, train, evaluate, track and register."""
    from pipeline._internal.progress import Stages
    from pipeline.spec import SpecError
    from pipeline.train import RunRefused, run_pipeline
    from pipeline._internal.runtime import quiet_libraries
    from pipeline.validation import ValidationFailed

    spec = _load(spec_path)
    quiet_libraries(verbose)
    stages = Stages(err)
    try:
        result = run_pipeline(spec, stages=stages, verbose=verbose)
    except SpecError as exc:
        _fail("the spec does not match the data", exc.problems)
    except ValidationFailed as exc:
        _fail("data validation failed; nothing was trained", exc.report.failure_lines())
    except RunRefused as exc:
        _fail("the champion did not meet evaluation.thresholds; nothing was registered",
              str(exc).removeprefix("nothing registered: ").split("; "), code=3)
    out.print(f"[bold green]done[/]: {result.model_name} v{result.model_version} "
              f"({result.champion}) is @champion; MLflow run {result.run_id}")
    out.print(f"  tracking: {spec.tracking.uri}")
    out.print(f"  see it:   mlflow ui --backend-store-uri {spec.tracking.uri}")


@app.command()
def serve(spec_path: Path = SpecArg,
          host: Optional[str] = typer.Option(None, help="Bind address (default: the spec's, 127.0.0.1)."),
          port: Optional[int] = typer.Option(None, help="HTTP port (default: the spec's, 8000)."),
          model: str = typer.Option("champion", help="Registry alias or version number to serve."),
          detach: bool = typer.Option(False, help="Deploy and return, leaving the app on the "
                                                  "cluster at RAY_ADDRESS."),
          verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Serve the registered model over HTTP with Ray Serve (FastAPI ingress)."""
    from pipeline._internal.runtime import quiet_libraries
    from serve.run import ServeError, serve_forever

    spec = _load(spec_path)
    quiet_libraries(verbose)
    try:
        serve_forever(spec, host=host, port=port, model_ref=model, detach=detach,
                      verbose=verbose, console=err)
    except (ServeError, LookupError) as exc:
        _fail("cannot serve", [str(exc)])


def main() -> None:
    app()


if __name__ == "__main__":
    main()
