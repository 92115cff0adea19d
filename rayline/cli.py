"""The typer app behind `rayline`, its shared helpers, and the spec and data commands (check,
schema, validate, features, data versions). Training commands are in rayline/training.py,
serving commands in rayline/serving.py; both register on this app.

Heavy libraries (Ray, MLflow, Great Expectations) are imported inside the commands that need
them, so `rayline check` answers in about a second.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="rayline: one YAML spec from raw data to a served model on Ray.")
# Piped output (CI logs, `| less`) gets a wide fixed width instead of rich's 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


@app.callback()
def _setup(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the libraries' own "
                                        "logs and warnings (Ray, MLflow, Great Expectations).")) -> None:
    from pipeline.execution import quiet_libraries

    quiet_libraries(verbose)


SpecArg = typer.Argument(..., exists=False, help="Path to the pipeline spec (YAML).")


def fail(title: str, problems: list[str], code: int = 1):
    err.print(f"[bold red]error:[/] {title}", soft_wrap=True)
    for line in problems:
        err.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def reporting(outcome: Optional[str] = None, titles: Optional[Mapping[type, str]] = None,
              before: Optional[Callable[[BaseException], None]] = None) -> Iterator[None]:
    """Every error rayline expects, printed through pipeline.errors.describe with its exit
    code; anything else is a bug and keeps its traceback. `before(exc)` prints what goes
    above the error (e.g. the validation report)."""
    from pipeline.errors import describe

    try:
        yield
    except typer.Exit:
        raise
    except Exception as exc:
        failure = describe(exc, outcome, titles)
        if failure is None:
            raise
        if before is not None:
            before(exc)
        fail(failure.title, failure.problems, failure.exit_code)


def load(spec_path: Path):
    from pipeline.spec import load_spec

    with reporting():
        return load_spec(spec_path)


def spec_mismatch():
    """A SpecError found once the data is read: the spec names what the data does not have."""
    from pipeline.spec import SpecError

    return {SpecError: "the spec does not match the data"}


@app.command()
def check(spec_path: Path = SpecArg) -> None:
    """Validate a spec and print what it will do."""
    from rayline.summary import summarize

    spec = load(spec_path)
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
def validate(spec_path: Path = SpecArg,
             data_version: Optional[int] = typer.Option(None, "--data-version",
                                                        help="Validate this raw_data version."),
             verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Ingest and validate only: the report, the quarantine, the data versions. Nothing is trained."""
    from pipeline.progress import Stages
    from pipeline.data import validate_only
    from pipeline.execution import quiet_libraries
    from pipeline.validation import ValidationFailed

    spec = load(spec_path)
    quiet_libraries(verbose)

    def report_first(exc: BaseException) -> None:
        if isinstance(exc, ValidationFailed):
            out.print(report_table(exc.report))

    with reporting(titles=spec_mismatch(), before=report_first):
        report, run_id = validate_only(spec, Stages(err), verbose=verbose, data_version=data_version)
    out.print(report_table(report))
    out.print(f"[green]✓[/] {report.rows:,} rows: {report.passed_rows:,} passed, "
              f"{report.bad_rows:,} quarantined; report in MLflow run {run_id}")


def report_table(report):
    from rich.table import Table

    table = Table(title="Validation", title_justify="left")
    for name, justify in (("column", "left"), ("rule", "left"), ("detail", "left"),
                          ("checked", "right"), ("failed", "right")):
        table.add_column(name, justify=justify)
    for r in report.results:
        table.add_row(r.column, r.rule, r.detail, f"{r.checked:,}",
                      f"[red]{r.failed:,}[/]" if r.failed else "0")
    return table


@app.command()
def features(spec_path: Path = SpecArg,
             model: str = typer.Option("champion", help="Registry alias or version number.")) -> None:
    """Show the fitted feature pipeline that travels with a registered model."""
    from rich.table import Table

    from pipeline import registry

    spec = load(spec_path)
    with reporting():
        registry.configure_for(spec)
        version, pipeline = registry.registered_features(spec.name, model)
    table = Table(title=f"{spec.name} v{version}: features", title_justify="left")
    for name in ("step", "method", "columns", "fitted"):
        table.add_column(name, overflow="fold")
    for row in pipeline.describe():
        table.add_row(str(row.get("step")) + (" (auto)" if row.get("auto") else ""),
                      str(row.get("method")), _text(row.get("columns")),
                      str(row.get("params", "")))
    out.print(table)
    out.print(f"{len(pipeline.required_columns)} input columns -> {len(pipeline.output_columns)} features: "
              + ", ".join(pipeline.output_columns), soft_wrap=True)


def _text(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value or "")


data_app = typer.Typer(help="Data versions (Delta Lake tables).", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("versions")
def data_versions(spec_path: Path = SpecArg) -> None:
    """List every version of raw_data, processed_data, feature_store and quarantine."""
    from rich.table import Table

    from pipeline import registry
    from pipeline.versioning import TableStore, all_versions

    spec = load(spec_path)
    with reporting():
        rows = all_versions(TableStore.of(spec.data_versioning, spec.name),
                            connect=lambda: registry.configure_for(spec))
    if not rows:
        fail("no data versions yet", [f"nothing under {spec.data_versioning.storage}: run `rayline run` first"])
    table = Table(title=f"{spec.name}: data versions", title_justify="left")
    for name, justify in (("table", "left"), ("version", "right"), ("written (UTC)", "left"),
                          ("rows", "right"), ("hash", "left"), ("run", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    for row in rows:
        table.add_row(row["table"], str(row["version"]), row["timestamp"][:19].replace("T", " "),
                      f"{row['rows']:,}" if row["rows"] is not None else "-",
                      (row["hash"] or "-")[:12], (row["run_id"] or "-")[:8])
    out.print(table)


def main() -> None:
    app()


# The training and serving commands register on `app` when their modules load.
from rayline import serving, training  # noqa: E402,F401


if __name__ == "__main__":
    main()
