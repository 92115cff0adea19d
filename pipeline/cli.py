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
# Piped output (CI logs, `| less`) gets a wide fixed width instead of rich's 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


@app.callback()
def _setup(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the libraries' own "
                                        "logs and warnings (Ray, MLflow, Great Expectations).")) -> None:
    from pipeline.execution import quiet_libraries

    quiet_libraries(verbose)

SpecArg = typer.Argument(..., exists=False, help="Path to the pipeline spec (YAML).")


def _load(spec_path: Path):
    from pipeline.spec import SpecError, load_spec

    try:
        return load_spec(spec_path)
    except SpecError as exc:
        _fail("spec is not valid", exc.problems)


def _fail(title: str, problems: list[str], code: int = 1):
    err.print(f"[bold red]error:[/] {title}", soft_wrap=True)
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
        data_version: Optional[int] = typer.Option(
            None, "--data-version", help="Re-run from this raw_data version (see `rayline data "
                                         "versions`) instead of reading the sources."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Ray's own logs.")) -> None:
    """Ingest, validate, build features, train, evaluate, track and register."""
    from pipeline._internal.progress import Stages
    from pipeline.spec import SpecError
    from pipeline.sources import SourceError
    from pipeline.train import RunRefused, run_pipeline
    from pipeline.execution import quiet_libraries
    from pipeline.validation import ValidationFailed

    spec = _load(spec_path)
    quiet_libraries(verbose)
    stages = Stages(err)
    try:
        result = run_pipeline(spec, stages=stages, verbose=verbose, data_version=data_version)
    except SpecError as exc:
        _fail("the spec does not match the data", exc.problems)
    except SourceError as exc:
        _fail("a source could not be read; nothing was trained", [str(exc)])
    except LookupError as exc:
        _fail("no such data version", [str(exc)])
    except ValidationFailed as exc:
        _fail(f"{exc.headline}; nothing was trained", exc.report.failure_lines())
    except RunRefused as exc:
        _fail("the champion did not meet evaluation.thresholds; nothing was registered",
              str(exc).removeprefix("nothing registered: ").split("; "), code=3)
    out.print(f"[bold green]done[/]: {result.model_name} v{result.model_version} "
              f"({result.champion}) is @champion; MLflow run {result.run_id}")
    out.print(f"  tracking: {spec.tracking.uri}")
    out.print(f"  see it:   mlflow ui --backend-store-uri {spec.tracking.uri}")


@app.command()
def validate(spec_path: Path = SpecArg,
             data_version: Optional[int] = typer.Option(None, "--data-version",
                                                        help="Validate this raw_data version."),
             verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Ingest and validate only: the report, the quarantine, the data versions. Nothing is trained."""
    from pipeline.execution import quiet_libraries
    from pipeline.spec import SpecError
    from pipeline.validation import ValidationFailed
    from pipeline.data import validate_only
    from pipeline.sources import SourceError

    spec = _load(spec_path)
    quiet_libraries(verbose)
    from pipeline._internal.progress import Stages

    try:
        report, run_id = validate_only(spec, Stages(err), verbose=verbose, data_version=data_version)
    except SpecError as exc:
        _fail("the spec does not match the data", exc.problems)
    except SourceError as exc:
        _fail("a source could not be read", [str(exc)])
    except ValidationFailed as exc:
        out.print(_report_table(exc.report))
        _fail(exc.headline, exc.report.failure_lines())
    except LookupError as exc:
        _fail("no such data version", [str(exc)])
    out.print(_report_table(report))
    out.print(f"[green]✓[/] {report.rows:,} rows: {report.passed_rows:,} passed, "
              f"{report.bad_rows:,} quarantined; report in MLflow run {run_id}")


def _report_table(report):
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

    from pipeline.registry import registered_features

    spec = _load(spec_path)
    try:
        version, pipeline = registered_features(spec, model)
    except LookupError as exc:
        _fail("no registered model", [str(exc)])
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


@app.command()
def leaderboard(spec_path: Path = SpecArg,
                run_id: Optional[str] = typer.Option(None, "--run", help="A run id (default: the latest run "
                                                                        "that trained models).")) -> None:
    """Print the leaderboard of the latest training run (validation metrics, latency)."""
    from pipeline.evaluation import leaderboard_table
    from pipeline.registry import latest_leaderboard

    spec = _load(spec_path)
    try:
        found_run, board = latest_leaderboard(spec, run_id)
    except LookupError as exc:
        _fail("no leaderboard", [str(exc)])
    out.print(leaderboard_table(spec, board, title=f"Leaderboard (validation), run {found_run}"))


@app.command()
def tune(spec_path: Path = SpecArg,
         resume: bool = typer.Option(False, "--resume", help="Continue the interrupted search in "
                                     ".rayline/ray_results/<name>-tune instead of starting over."),
         verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Ray's own logs.")) -> None:
    """Ingest, validate, split, build features and run the spec's hyperparameter search only."""
    from pipeline._internal.progress import Stages
    from pipeline.sources import SourceError
    from pipeline.spec import SpecError
    from pipeline.tuning import best_table, trials_table, tune_only
    from pipeline.validation import ValidationFailed

    spec = _load(spec_path)
    if spec.tuning is None:
        _fail("nothing to tune", [f"{spec_path}: the spec has no tuning section"])
    try:
        result, run_id = tune_only(spec, Stages(err), resume=resume, verbose=verbose)
    except SpecError as exc:
        _fail("the spec cannot be tuned", exc.problems)
    except SourceError as exc:
        _fail("a source could not be read; nothing was tuned", [str(exc)])
    except ValidationFailed as exc:
        _fail(f"{exc.headline}; nothing was tuned", exc.report.failure_lines())
    except LookupError as exc:
        _fail("cannot resume", [str(exc)])
    out.print(trials_table(result))
    out.print(best_table(result, spec.model_params))
    out.print(f"[bold green]done[/]: {len(result.trials)} trials; MLflow run {run_id} "
              f"(tuning/trials.json); Tune state in {result.experiment_path}")


data_app = typer.Typer(help="Data versions (Delta Lake tables).", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("versions")
def data_versions(spec_path: Path = SpecArg) -> None:
    """List every version of raw_data, processed_data, feature_store and quarantine."""
    from rich.table import Table

    from pipeline.versioning import all_versions as list_versions

    spec = _load(spec_path)
    rows = list_versions(spec)
    if not rows:
        _fail("no data versions yet", [f"nothing under {spec.data_versioning.storage}: run `rayline run` first"])
    table = Table(title=f"{spec.name}: data versions", title_justify="left")
    for name, justify in (("table", "left"), ("version", "right"), ("written (UTC)", "left"),
                          ("rows", "right"), ("hash", "left"), ("run", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    for row in rows:
        table.add_row(row["table"], str(row["version"]), row["timestamp"][:19].replace("T", " "),
                      f"{row['rows']:,}" if row["rows"] is not None else "-",
                      (row["hash"] or "-")[:12], (row["run_id"] or "-")[:8])
    out.print(table)


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def serve(spec_or_build: str = typer.Argument(..., metavar="SPEC | build SPEC",
                                              help="The spec to serve; or `build SPEC` to write its Serve config."),
          build_spec: Optional[Path] = typer.Argument(None, hidden=True),
          host: Optional[str] = typer.Option(None, help="Bind address (default: the spec's, 127.0.0.1)."),
          port: Optional[int] = typer.Option(None, help="HTTP port (default: the spec's, 8000)."),
          model: str = typer.Option("champion", help="Registry alias or version number to serve as control."),
          treatment: Optional[str] = typer.Option(None, help="A version (or alias) to serve as the A/B "
                                                             "treatment (default: @challenger, with ab_testing)."),
          output: Path = typer.Option(Path("serve_config.yaml"), "--output", "-o",
                                      help="With `build`: where to write the Serve config."),
          detach: bool = typer.Option(False, help="Deploy and return, leaving the app on the "
                                                  "cluster at RAY_ADDRESS."),
          verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Serve the registered model over HTTP with Ray Serve, or `serve build` its Serve config."""
    from serve.run import ServeError, serve_forever

    if spec_or_build == "build":
        if build_spec is None:
            _fail("missing spec", ["usage: rayline serve build SPEC [-o serve_config.yaml]"])
        return _serve_build(_load(build_spec), host, port, model, treatment, output)
    if build_spec is not None:
        _fail("unexpected argument", [f"{build_spec}: did you mean `rayline serve build {spec_or_build}`?"])
    spec = _load(Path(spec_or_build))
    try:
        serve_forever(spec, host=host, port=port, model_ref=model, treatment=treatment, detach=detach,
                      verbose=verbose, console=err)
    except (ServeError, LookupError) as exc:
        _fail("cannot serve", [str(exc)])


def _serve_build(spec, host, port, model, treatment, output: Path) -> None:
    import yaml

    from serve.run import ingress_config, resolve_variants, serve_config

    rest = spec.serving("rest_api")
    try:
        variants = resolve_variants(spec, model, treatment)
    except LookupError as exc:
        _fail("cannot build", [str(exc)])
    config = serve_config(spec, variants, host or (rest.host if rest else "0.0.0.0"),
                          port or (rest.port if rest else 8000), ingress_config(spec))
    output.write_text("# Ray Serve config for `serve deploy` or a KubeRay RayService (spec.serveConfigV2).\n"
                      "# The spec's ${VAR}s are read from the cluster's environment.\n"
                      + yaml.safe_dump(config, sort_keys=False, width=100))
    out.print(f"[green]✓[/] wrote {output}: {spec.name} "
              + ", ".join(f"{k} v{v}" for k, v in variants.items()))
    out.print(f"  deploy it: serve deploy {output} --address http://<head>:8265")


ab_app = typer.Typer(help="A/B testing on the running Serve app.", no_args_is_help=True)
app.add_typer(ab_app, name="ab")


def _share(text: str) -> float:
    from pipeline._internal.units import parse_fraction

    try:
        return parse_fraction(text)
    except ValueError as exc:
        _fail("not a share", [str(exc)])


@ab_app.command("set")
def ab_set(spec_path: Path = SpecArg,
           treatment: Optional[str] = typer.Option(None, help="Treatment's share of traffic, e.g. 10%."),
           mode: Optional[str] = typer.Option(None, help="split | shadow")) -> None:
    """Change the live traffic split (or mode) without restarting replicas."""
    from serve.run import ServeError, connect, set_traffic

    spec = _load(spec_path)
    if mode not in (None, "split", "shadow"):
        _fail("bad mode", [f"--mode is split or shadow, not {mode}"])
    try:
        connect()
        config = set_traffic(spec, _share(treatment) if treatment is not None else None, mode)
    except ServeError as exc:
        _fail("cannot change the split", [str(exc)])
    split = config["traffic_split"]
    out.print(f"[green]✓[/] {spec.name}: control {split['control']:.0%} / treatment "
              f"{split['treatment']:.0%} ({config['mode']})")


@ab_app.command("start")
def ab_start(spec_path: Path = SpecArg,
             treatment: str = typer.Option(..., help="The registered version to test as treatment."),
             share: Optional[str] = typer.Option(None, help="Its share of traffic (default: the spec's).")) -> None:
    """Put a registered version in as the treatment (it becomes @challenger)."""
    from serve.run import ServeError, connect, set_variants

    spec = _load(spec_path)
    try:
        connect()
        variants = set_variants(spec, treatment, _share(share) if share else None)
    except (ServeError, LookupError) as exc:
        _fail("cannot start the test", [str(exc)])
    out.print(f"[green]✓[/] {spec.name}: control v{variants['control']}, treatment v{variants['treatment']}")


@ab_app.command("stop")
def ab_stop(spec_path: Path = SpecArg) -> None:
    """Take the treatment out: all traffic to the control."""
    from serve.run import ServeError, connect, set_variants

    spec = _load(spec_path)
    try:
        connect()
        variants = set_variants(spec, None)
    except ServeError as exc:
        _fail("cannot stop the test", [str(exc)])
    out.print(f"[green]✓[/] {spec.name}: control v{variants['control']} takes all traffic")


@app.command()
def stream(spec_path: Path = SpecArg,
           model: Optional[str] = typer.Option(None, help="Registry alias or version number "
                                               "(default: the spec's, champion)."),
           max_messages: Optional[int] = typer.Option(None, "--max-messages", min=1,
                                                      help="Stop after this many input messages."),
           idle_exit: Optional[float] = typer.Option(None, "--idle-exit", min=0, metavar="SECONDS",
                                                     help="Stop after this long with no message."),
           assign: Optional[bool] = typer.Option(None, "--assign/--subscribe", help="Read every partition "
                                                 "directly (no group join; offsets still go to the group) "
                                                 "or join the consumer group (default: the spec's)."),
           partitions: Optional[str] = typer.Option(None, help="Only these input partitions, e.g. 0,2 "
                                                    "(implies --assign)."),
           metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Serve Prometheus "
                                                      "metrics on this port (default: off)."),
           metrics_host: str = typer.Option("127.0.0.1", "--metrics-host"),
           verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Score JSON records from the spec's Kafka input topic (serving_options: streaming)."""
    from pipeline.execution import quiet_libraries
    from serve.stream import StreamError, stream_forever

    spec = _load(spec_path)
    quiet_libraries(verbose)
    if spec.serving("streaming") is None:
        _fail("nothing to stream", [f"{spec_path}: serving_options has no `name: streaming` entry "
                                    "(bootstrap_servers, input_topic, output_topic, ...)"])
    try:
        parts = [int(p) for p in partitions.split(",")] if partitions else None
    except ValueError:
        _fail("bad --partitions", [f"{partitions!r}: expected numbers separated by commas, e.g. 0,2"])
    try:
        stats = stream_forever(spec, console=err, model_ref=model, max_messages=max_messages,
                               idle_exit=idle_exit, assign=assign, partitions=parts,
                               metrics_port=metrics_port, metrics_host=metrics_host)
    except LookupError as exc:
        _fail("cannot stream", [str(exc)])
    except StreamError as exc:
        _fail("stream failed", [str(exc)], code=2)
    out.print(json.dumps({"stream": stats.as_dict()}), markup=False, highlight=False, soft_wrap=True)


@app.command()
def score(spec_path: Path = SpecArg,
          model: Optional[str] = typer.Option(None, help="Registry alias or version number "
                                              "(default: the batch option's, champion)."),
          input: Optional[str] = typer.Option(None, "--input", help="Files to score: a path, glob, "
                                              "s3:// or gs:// (default: the batch option's input, "
                                              "else the spec's sources)."),
          output: Optional[str] = typer.Option(None, "--output", help="Where to write (default: the "
                                               "batch option's output)."),
          format: Optional[str] = typer.Option(None, "--format", help="parquet (a folder per run) or "
                                               "delta (appended to the table at the output)."),
          emit_schedule: Optional[Path] = typer.Option(
              None, "--emit-schedule", metavar="DIR", help="Score nothing: write the KubeRay RayJob "
              "and the Kubernetes CronJob for the batch option's frequency into DIR."),
          frequency: Optional[str] = typer.Option(None, help="With --emit-schedule: instead of the "
                                                  "spec's frequency (hourly, daily, weekly, cron)."),
          image: Optional[str] = typer.Option(None, help="With --emit-schedule: the Ray image "
                                              "(default rayproject/ray:2.60.0-py311)."),
          working_dir: Optional[str] = typer.Option(None, "--working-dir", help="With --emit-schedule: "
                                                    "a URL of the project archive for the RayJob's "
                                                    "runtime env (https://, s3://, gs://)."),
          namespace: Optional[str] = typer.Option(None, help="With --emit-schedule: a namespace."),
          verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Score a dataset with a registered model (Ray Data actor pool), or emit its schedule."""
    spec = _load(spec_path)
    if format not in (None, "parquet", "delta"):
        _fail("bad --format", [f"{format!r}: use parquet or delta"])
    if emit_schedule is not None:
        from pipeline.schedule import RAY_IMAGE, ScheduleError, emit_schedule as emit

        try:
            paths = emit(spec, str(spec_path), emit_schedule, image=image or RAY_IMAGE,
                         working_dir=working_dir, model=model, namespace=namespace,
                         frequency=frequency)
        except ScheduleError as exc:
            _fail("cannot emit a schedule", [str(exc)])
        for path in paths:
            out.print(f"[green]✓[/] wrote {path}")
        if not working_dir and (image or RAY_IMAGE).startswith("rayproject/ray"):
            err.print("[yellow]note:[/] no --working-dir: the RayJob runs in the image's working "
                      "directory, which must hold the project (see cluster/README.md)")
        return
    from pipeline.execution import quiet_libraries
    from pipeline.scoring import ScoringError, score as run_scoring
    from pipeline.sources import SourceError

    quiet_libraries(verbose)
    try:
        result = run_scoring(spec, model=model, input=input, output=output, format=format,
                             verbose=verbose,
                             progress=lambda line: err.print(line, markup=False, highlight=False))
    except (ScoringError, SourceError) as exc:
        _fail("cannot score", [str(exc)])
    for line in result.summary_lines():
        out.print(line, markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
